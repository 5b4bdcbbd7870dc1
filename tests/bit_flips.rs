//! Seeded corruptions of real fixtures through the whole library: decode, import, validate, the
//! default pass pipeline, export and encoding. A corrupted model must be rejected with an error
//! or compiled; it must never panic. Every case is reproducible from its fixture and seed.
//!
//! The cases run in-process (not through the binary) so that hundreds of them fit in a few
//! seconds, and under `catch_unwind` so that one panic does not hide the others: the test
//! collects every panicking case and reports its seed and offsets at the end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use bytes::Bytes;
use detrc::reference::random::Rng;
use prost::Message;

/// (fixture, cases). The small CNN is cheap, so it takes most of the cases; the DETR fixtures
/// cost far more per compile and get fewer, aimed mostly at the node list (see `mutate`).
const PLAN: &[(&str, u64)] = &[
    ("cnn_tiny_op17_b1.onnx", 300),
    ("detr_tiny_op17_b1.onnxsim.onnx", 120),
    ("detr_tiny_op17_b1.onnx", 80),
];

/// What a case did to the bytes, for the failure report.
enum Edit {
    Flip { offset: usize, bit: u8 },
    Set { offset: usize, byte: u8 },
}

impl std::fmt::Debug for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edit::Flip { offset, bit } => write!(f, "flip bit {bit} at offset {offset}"),
            Edit::Set { offset, byte } => write!(f, "set offset {offset} to {byte:#04x}"),
        }
    }
}

/// Corrupts `bytes` in place from `seed`. Half of the edits land in `hot` (the node list: a
/// flipped weight byte only changes a number, a flipped node byte changes the structure), the
/// rest anywhere in the file.
fn mutate(bytes: &mut [u8], hot: usize, seed: u64) -> Vec<Edit> {
    let mut r = Rng::new(seed);
    let len = bytes.len();
    let pick = |r: &mut Rng| {
        let range = if r.next_u64().is_multiple_of(2) {
            hot
        } else {
            len
        };
        (r.next_u64() % range.max(1) as u64) as usize
    };
    let mut edits = Vec::new();
    // One in three cases is a single bit flip, the rest several flips or overwrites.
    let n = match r.next_u64() % 3 {
        0 => 1,
        _ => 2 + (r.next_u64() % 7) as usize,
    };
    for _ in 0..n {
        let offset = pick(&mut r);
        if r.next_u64().is_multiple_of(2) {
            let bit = (r.next_u64() % 8) as u8;
            bytes[offset] ^= 1 << bit;
            edits.push(Edit::Flip { offset, bit });
        } else {
            // Values that stress varints and lengths more than uniform bytes do.
            const SPECIAL: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
            let byte = if r.next_u64().is_multiple_of(2) {
                SPECIAL[(r.next_u64() % SPECIAL.len() as u64) as usize]
            } else {
                r.next_u64() as u8
            };
            bytes[offset] = byte;
            edits.push(Edit::Set { offset, byte });
        }
    }
    edits
}

/// The library pipeline end to end on bytes. `Err` is a rejection (fine); a panic is the bug.
fn compile(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let path = Path::new("mutated.onnx");
    let model = detrc::load::decode(path, Bytes::from(bytes)).map_err(|e| e.to_string())?;
    let mut g = detrc::ir::from_onnx::import(model).map_err(|e| e.to_string())?;
    g.validate()?;
    let pipeline = detrc::pass::Pipeline::new(detrc::passes::registry());
    pipeline
        .run(&mut g, &mut |_| {})
        .map_err(|e| e.to_string())?;
    g.fix_output_names();
    g.validate()?;
    let mut out = Vec::new();
    detrc::emit::write_model(&g.export(), &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Bytes of the encoded node list, which comes first in the graph message.
fn node_section_len(bytes: &[u8]) -> usize {
    let m = detrc::load::proto::ModelProto::decode(bytes).expect("fixture decodes");
    let g = m.graph.expect("fixture has a graph");
    g.node.iter().map(|n| n.encoded_len() + 4).sum::<usize>() + 64
}

/// `DETRC_HOSTILE_SCALE=N` runs N times as many cases (new seeds; the first ones stay the same):
/// a longer local hunt than the default that CI runs.
fn scale() -> u64 {
    std::env::var("DETRC_HOSTILE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

thread_local! {
    /// Set while a case runs: its panics are recorded here instead of printed.
    static CASE_PANIC: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` catching a panic, and returns the panic's message and source location. Panics
/// inside cases are not printed (with RUST_BACKTRACE set, printing hundreds of backtraces
/// takes minutes); panics elsewhere, such as the final assertion, go to the usual hook.
fn run_case<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let recorded = CASE_PANIC.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let msg = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        let mut at = info
                            .location()
                            .map(|l| format!("{}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        // An overflow inside `sum()`/`product()` points into the standard
                        // library: name the first frame of detrc's own code instead.
                        if at.starts_with("/rustc/") {
                            let bt = std::backtrace::Backtrace::force_capture().to_string();
                            if let Some(l) = bt.lines().map(str::trim).find(|l| {
                                l.starts_with("at ")
                                    && !l.contains("/rustc/")
                                    && !l.contains("/.cargo/")
                                    && !l.contains("tests/bit_flips.rs")
                            }) {
                                at = format!("{at}, called {l}");
                            }
                        }
                        *slot = Some(format!("{msg} (at {at})"));
                        true
                    }
                    None => false,
                }
            });
            if !recorded {
                usual(info);
            }
        }));
    });
    CASE_PANIC.with(|c| *c.borrow_mut() = Some(None));
    let r = catch_unwind(AssertUnwindSafe(f));
    let msg = CASE_PANIC.with(|c| c.borrow_mut().take()).flatten();
    r.map_err(|_| msg.unwrap_or_else(|| "panicked".into()))
}

/// Counts of one test's cases, per fixture and in all; a failure is a panic, or a compiled
/// output that does not load again (what detrc writes is never a corrupt model).
struct Tally {
    what: &'static str,
    compiled: usize,
    rejected: usize,
    failures: Vec<String>,
    t0: std::time::Instant,
    fixture: (&'static str, usize, usize, std::time::Instant),
}

impl Tally {
    fn new(what: &'static str) -> Self {
        let now = std::time::Instant::now();
        Tally {
            what,
            compiled: 0,
            rejected: 0,
            failures: Vec::new(),
            t0: now,
            fixture: ("", 0, 0, now),
        }
    }

    fn start(&mut self, fixture: &'static str) {
        self.fixture = (
            fixture,
            self.compiled,
            self.rejected,
            std::time::Instant::now(),
        );
    }

    fn record(
        &mut self,
        r: Result<Result<Vec<u8>, String>, String>,
        case: impl FnOnce() -> String,
    ) {
        match r {
            Ok(Ok(out)) => {
                self.compiled += 1;
                let again = detrc::load::decode(Path::new("out.onnx"), Bytes::from(out))
                    .map_err(|e| e.to_string())
                    .and_then(|m| detrc::ir::from_onnx::import(m).map_err(|e| e.to_string()))
                    .and_then(|g| g.validate());
                if let Err(e) = again {
                    self.failures.push(format!(
                        "{}: compiled, but the output does not load: {e}",
                        case()
                    ));
                }
            }
            Ok(Err(_)) => self.rejected += 1,
            Err(p) => self.failures.push(format!("{}: panicked: {p}", case())),
        }
    }

    fn finish_fixture(&self) {
        let (name, c0, r0, t1) = self.fixture;
        eprintln!(
            "{name}: {} compiled, {} rejected, {:.1}s",
            self.compiled - c0,
            self.rejected - r0,
            t1.elapsed().as_secs_f64()
        );
    }

    fn assert_no_failures(&self) {
        eprintln!(
            "{} {}: {} compiled, {} rejected, {} failures, {:.1}s",
            self.compiled + self.rejected + self.failures.len(),
            self.what,
            self.compiled,
            self.rejected,
            self.failures.len(),
            self.t0.elapsed().as_secs_f64()
        );
        assert!(self.failures.is_empty(), "\n{}", self.failures.join("\n"));
    }
}

#[test]
fn corrupted_fixtures_are_rejected_or_compiled_never_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tally = Tally::new("byte cases");
    for (fixture, cases) in PLAN {
        tally.start(fixture);
        let good = std::fs::read(root.join("fixtures").join(fixture)).expect("fixture");
        let hot = node_section_len(&good).min(good.len());
        for seed in 0..*cases * scale() {
            let mut bytes = good.clone();
            let edits = mutate(&mut bytes, hot, seed);
            tally.record(run_case(|| compile(bytes)), || {
                format!("{fixture} seed {seed} {edits:?}")
            });
        }
        tally.finish_fixture();
    }
    tally.assert_no_failures();
}

// ---------------------------------------------------------------------------------------------
// Field mutations: random bytes rarely make a model that decodes yet carries a hostile value
// (a stride of 0, a dimension of i64::MIN, an axis of 2^62, an op swapped for another one).
// These cases edit the decoded model directly, so every case reaches the passes.

use detrc::load::proto::{
    tensor_shape_proto::dimension, type_proto, AttributeProto, ModelProto, TensorProto,
};

const EXTREME_INTS: [i64; 16] = [
    0,
    1,
    -1,
    2,
    -2,
    3,
    1 << 20,
    1 << 31,
    -(1 << 31),
    1 << 40,
    1 << 62,
    -(1 << 62),
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    i64::MIN + 1,
];
const EXTREME_FLOATS: [f32; 8] = [
    0.0,
    -0.0,
    -1.0,
    1e30,
    -1e30,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
];
/// Operators the passes and the evaluator have rules for: swapping a node's op for one of these
/// feeds that rule inputs and attributes it never expected.
const OPS: [&str; 36] = [
    "Reshape",
    "Slice",
    "Gather",
    "Concat",
    "Split",
    "Expand",
    "Tile",
    "Pad",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "MatMul",
    "Gemm",
    "Conv",
    "MaxPool",
    "Flatten",
    "Range",
    "ConstantOfShape",
    "CumSum",
    "Where",
    "Resize",
    "ReduceSum",
    "ReduceProd",
    "Softmax",
    "LayerNormalization",
    "BatchNormalization",
    "Shape",
    "Size",
    "Cast",
    "Identity",
    "Add",
    "Mul",
    "Div",
    "Sub",
    "Pow",
    "Dropout",
];
const ATTR_NAMES: [&str; 20] = [
    "axis",
    "axes",
    "perm",
    "kernel_shape",
    "strides",
    "pads",
    "dilations",
    "group",
    "to",
    "keepdims",
    "num_outputs",
    "split",
    "allowzero",
    "start",
    "end",
    "transA",
    "transB",
    "ceil_mode",
    "epsilon",
    "exclusive",
];

fn pick<T: Copy>(r: &mut Rng, v: &[T]) -> T {
    v[(r.next_u64() % v.len() as u64) as usize]
}

fn below(r: &mut Rng, n: usize) -> usize {
    (r.next_u64() % n.max(1) as u64) as usize
}

fn extreme_attr(r: &mut Rng, a: &mut AttributeProto) {
    if a.i.is_some() {
        a.i = Some(pick(r, &EXTREME_INTS));
    } else if a.f.is_some() {
        a.f = Some(pick(r, &EXTREME_FLOATS));
    } else if !a.ints.is_empty() {
        match r.next_u64() % 4 {
            0 => a.ints.push(pick(r, &EXTREME_INTS)),
            1 => {
                a.ints.pop();
            }
            _ => {
                let k = below(r, a.ints.len());
                a.ints[k] = pick(r, &EXTREME_INTS);
            }
        }
    } else if let Some(t) = a.t.as_mut() {
        extreme_tensor(r, t);
    } else if !a.floats.is_empty() {
        let k = below(r, a.floats.len());
        a.floats[k] = pick(r, &EXTREME_FLOATS);
    }
}

/// Overwrites one element of a tensor with an extreme value of its type.
fn extreme_tensor(r: &mut Rng, t: &mut TensorProto) {
    let dtype = detrc::ir::DType(t.data_type.unwrap_or(0));
    if let Some(raw) = &t.raw_data {
        let Some(size) = dtype.size().filter(|&s| s > 0 && raw.len() >= s) else {
            return;
        };
        let mut bytes = raw.to_vec();
        let at = below(r, bytes.len() / size) * size;
        let v: Vec<u8> = if dtype.is_float() && size == 4 {
            pick(r, &EXTREME_FLOATS).to_le_bytes().to_vec()
        } else {
            pick(r, &EXTREME_INTS).to_le_bytes()[..size.min(8)].to_vec()
        };
        bytes[at..at + v.len().min(size)].copy_from_slice(&v[..v.len().min(size)]);
        t.raw_data = Some(Bytes::from(bytes));
    } else if !t.int64_data.is_empty() {
        let k = below(r, t.int64_data.len());
        t.int64_data[k] = pick(r, &EXTREME_INTS);
    } else if !t.float_data.is_empty() {
        let k = below(r, t.float_data.len());
        t.float_data[k] = pick(r, &EXTREME_FLOATS);
    } else if !t.int32_data.is_empty() {
        let k = below(r, t.int32_data.len());
        t.int32_data[k] = pick(r, &EXTREME_INTS) as i32;
    }
}

/// Applies one random edit to the model and says what it did.
fn mutate_field(r: &mut Rng, m: &mut ModelProto) -> String {
    let g = m.graph.as_mut().expect("fixture has a graph");
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.initializer.iter().filter_map(|t| t.name.clone()))
        .chain(g.input.iter().filter_map(|v| v.name.clone()))
        .collect();
    let nn = g.node.len();
    let n = below(r, nn);
    match r.next_u64() % 8 {
        0 | 1 => {
            let node = &mut g.node[n];
            if node.attribute.is_empty() {
                return "nothing (node without attributes)".into();
            }
            let k = below(r, node.attribute.len());
            extreme_attr(r, &mut node.attribute[k]);
            format!(
                "attribute {:?} of node #{n} ({:?}) -> {:?}",
                node.attribute[k].name, node.op_type, node.attribute[k]
            )
        }
        2 => {
            // Small integer initializers are shapes, axes, indices, split sizes.
            let small: Vec<usize> = (0..g.initializer.len())
                .filter(|&i| {
                    let t = &g.initializer[i];
                    t.raw_data.as_ref().map_or(0, |b| b.len()) <= 512
                })
                .collect();
            if small.is_empty() {
                return "nothing (no small initializer)".into();
            }
            let i = pick(r, &small);
            extreme_tensor(r, &mut g.initializer[i]);
            format!("a value of initializer {:?}", g.initializer[i].name)
        }
        3 => {
            let vis: Vec<&mut detrc::load::proto::ValueInfoProto> = g
                .input
                .iter_mut()
                .chain(g.output.iter_mut())
                .chain(g.value_info.iter_mut())
                .collect();
            let count = vis.len();
            let Some(vi) = vis.into_iter().nth(below(r, count)) else {
                return "nothing (no value info)".into();
            };
            let Some(type_proto::Value::TensorType(tt)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                return "nothing (not a tensor type)".into();
            };
            let Some(shape) = tt.shape.as_mut() else {
                return "nothing (no shape)".into();
            };
            match r.next_u64() % 4 {
                0 if !shape.dim.is_empty() => {
                    shape.dim.pop();
                }
                // A scalar where a tensor was: every "axis 0" becomes invalid.
                1 => shape.dim.clear(),
                _ if !shape.dim.is_empty() => {
                    let k = below(r, shape.dim.len());
                    shape.dim[k].value = Some(dimension::Value::DimValue(pick(r, &EXTREME_INTS)));
                }
                _ => shape.dim.push(Default::default()),
            }
            format!("the shape of {:?} -> {:?}", vi.name, shape)
        }
        4 => {
            let node = &mut g.node[n];
            let name = if names.is_empty() || r.next_u64().is_multiple_of(5) {
                String::new()
            } else {
                names[below(r, names.len())].clone()
            };
            if node.input.is_empty() || r.next_u64().is_multiple_of(4) {
                node.input.push(name.clone());
            } else {
                let k = below(r, node.input.len());
                node.input[k] = name.clone();
            }
            format!("node #{n} ({:?}) reads {name:?}", node.op_type)
        }
        5 => {
            let op = pick(r, &OPS);
            let node = &mut g.node[n];
            let old = node.op_type.replace(op.to_string());
            format!("node #{n} {old:?} -> {op}")
        }
        6 => {
            let node = &mut g.node[n];
            if !node.attribute.is_empty() && r.next_u64().is_multiple_of(2) {
                let k = below(r, node.attribute.len());
                let a = node.attribute.remove(k);
                format!("removed attribute {:?} of node #{n}", a.name)
            } else {
                let name = pick(r, &ATTR_NAMES);
                node.attribute.retain(|a| a.name.as_deref() != Some(name));
                let a = if r.next_u64().is_multiple_of(2) {
                    detrc::tensor::attrs::make_int(name, pick(r, &EXTREME_INTS))
                } else {
                    let len = below(r, 5);
                    detrc::tensor::attrs::make_ints(
                        name,
                        (0..len).map(|_| pick(r, &EXTREME_INTS)).collect(),
                    )
                };
                node.attribute.push(a);
                format!("set attribute {name} of node #{n} ({:?})", node.op_type)
            }
        }
        _ => {
            // Same bytes, other meaning: a reshaped or retyped initializer stays loadable.
            if g.initializer.is_empty() {
                return "nothing (no initializer)".into();
            }
            let i = below(r, g.initializer.len());
            let t = &mut g.initializer[i];
            if r.next_u64().is_multiple_of(2) {
                if t.dims.len() > 1 {
                    t.dims.reverse();
                } else {
                    t.dims.insert(0, 1);
                }
            } else {
                // f32 <-> i32, i64 <-> f64: the byte count stays right.
                t.data_type = t.data_type.map(|d| match d {
                    1 => 6,
                    6 => 1,
                    7 => 11,
                    11 => 7,
                    d => d,
                });
            }
            format!(
                "initializer {:?} now {:?} {:?}",
                t.name, t.data_type, t.dims
            )
        }
    }
}

/// Import, validate, pipeline, export on a model (no decoding step: the edits are already in
/// the decoded message).
fn compile_model(m: ModelProto) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    detrc::emit::write_model(&m, &mut bytes).map_err(|e| e.to_string())?;
    compile(bytes)
}

const FIELD_PLAN: &[(&str, u64)] = &[
    ("cnn_tiny_op17_b1.onnx", 800),
    ("detr_tiny_op17_b1.onnxsim.onnx", 40),
    ("detr_tiny_op17_b1.onnx", 10),
];

#[test]
fn hostile_field_values_are_rejected_or_compiled_never_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tally = Tally::new("field cases");
    for (fixture, cases) in FIELD_PLAN {
        tally.start(fixture);
        let path = root.join("fixtures").join(fixture);
        let good = detrc::load::load_proto(&path).expect("fixture loads");
        for seed in 0..*cases * scale() {
            let mut r = Rng::new(seed ^ 0xf1e1d);
            let mut m = good.clone();
            let edits: Vec<String> = (0..1 + below(&mut r, 3))
                .map(|_| mutate_field(&mut r, &mut m))
                .collect();
            tally.record(run_case(|| compile_model(m)), || {
                format!(
                    "{fixture} seed {seed}\n    edits: {}",
                    edits.join("\n           ")
                )
            });
        }
        tally.finish_fixture();
    }
    tally.assert_no_failures();
}
