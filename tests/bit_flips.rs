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
        let range = if r.next_u64() % 2 == 0 { hot } else { len };
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
        if r.next_u64() % 2 == 0 {
            let bit = (r.next_u64() % 8) as u8;
            bytes[offset] ^= 1 << bit;
            edits.push(Edit::Flip { offset, bit });
        } else {
            // Values that stress varints and lengths more than uniform bytes do.
            const SPECIAL: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
            let byte = if r.next_u64() % 2 == 0 {
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

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

#[test]
fn corrupted_fixtures_are_rejected_or_compiled_never_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut panics = Vec::new();
    let (mut compiled, mut rejected) = (0usize, 0usize);
    let t0 = std::time::Instant::now();
    for (fixture, cases) in PLAN {
        let (c0, r0, t1) = (compiled, rejected, std::time::Instant::now());
        let good = std::fs::read(root.join("fixtures").join(fixture)).expect("fixture");
        let hot = node_section_len(&good).min(good.len());
        for seed in 0..*cases {
            let mut bytes = good.clone();
            let edits = mutate(&mut bytes, hot, seed);
            match catch_unwind(AssertUnwindSafe(|| compile(bytes))) {
                Ok(Ok(out)) => {
                    compiled += 1;
                    // What we write must load again: a compiled model is never a corrupt one.
                    let again = detrc::load::decode(Path::new("out.onnx"), Bytes::from(out))
                        .map_err(|e| e.to_string())
                        .and_then(|m| detrc::ir::from_onnx::import(m).map_err(|e| e.to_string()))
                        .and_then(|g| g.validate());
                    if let Err(e) = again {
                        panics.push(format!(
                            "{fixture} seed {seed} {edits:?}: compiled, but the output does not load: {e}"
                        ));
                    }
                }
                Ok(Err(_)) => rejected += 1,
                Err(p) => panics.push(format!(
                    "{fixture} seed {seed} {edits:?}: panicked: {}",
                    panic_message(&*p)
                )),
            }
        }
        eprintln!(
            "{fixture}: {} compiled, {} rejected, {:.1}s",
            compiled - c0,
            rejected - r0,
            t1.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "{} cases: {compiled} compiled, {rejected} rejected, {} failures, {:.1}s",
        compiled + rejected + panics.len(),
        panics.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(panics.is_empty(), "\n{}", panics.join("\n"));
}
