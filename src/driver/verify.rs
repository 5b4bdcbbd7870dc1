//! Verification: the compiled model and the original run on the same seeded random inputs in
//! the reference runtime, output by output within a tolerance. A model whose batch the compile
//! changed is checked at several batch sizes against the original at its traced batch.

use std::path::Path;

use super::BatchChange;
use crate::error::{Error, Result};
use crate::load::proto::ModelProto;
use crate::reference::compare::{compare, OutputDiff, Tolerance};
use crate::reference::{
    output_names, InputSpec, Model as ModelRef, Purpose, Reference, Runtime, RuntimeChoice,
};

/// Result of running two models on the same seeded inputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub seed: u64,
    pub outputs: Vec<OutputDiff>,
    /// The runtime that ran both models and its version, e.g. "onnxruntime 1.31.1 (...)".
    pub runtime: String,
    /// onnxruntime: the graph transformers that changed either model before it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrites: Option<crate::reference::ort_rewrites::Applied>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.outputs.iter().all(|o| o.ok)
    }

    /// What `detrc compile --verify` says on a mismatch: the seed, the tolerance, and one line
    /// per output with its largest difference.
    pub fn failure_message(&self, tol: Tolerance) -> String {
        let lines: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{}: max |diff| {:.3e}{}{}",
                    o.name,
                    o.max_abs,
                    if o.ok { "" } else { " FAIL" },
                    o.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "outputs differ from the original (seed {}, atol {}, rtol {}, {}); nothing written:\n  {}",
            self.seed,
            tol.atol,
            tol.rtol,
            self.runtime,
            lines.join("\n  ")
        )
    }
}

/// Runs `original` and `candidate` (encoded ONNX) on the same seeded random inputs, with the
/// default runtime choice (onnxruntime when installed, else tract).
pub fn verify(
    original: &Path,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    verify_default(Original::Path(original), candidate, seeds, tol)
}

/// [`verify`] for an original held in memory (encoded ONNX, external data inlined).
pub fn verify_bytes(
    original: &[u8],
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    verify_default(Original::Bytes(original), candidate, seeds, tol)
}

fn verify_default(
    original: Original<'_>,
    candidate: &[u8],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let (runtime, _) = RuntimeChoice::default().resolve()?;
    let candidate = Candidate::Bytes(candidate);
    verify_with(original, candidate, seeds, tol, &runtime)
}

/// The model verification starts from.
#[derive(Clone, Copy)]
pub enum Original<'a> {
    /// A file (external data beside it).
    Path(&'a Path),
    /// Encoded ONNX, external data inlined.
    Bytes(&'a [u8]),
}

/// The model to check against the original.
#[derive(Clone, Copy)]
pub enum Candidate<'a> {
    /// Encoded ONNX.
    Bytes(&'a [u8]),
    /// A model in memory (what `compile` returned): onnxruntime uses its weights where they
    /// are, nothing is encoded or copied.
    Model(&'a ModelProto),
}

/// [`verify`] with a chosen runtime: the original is run, then the candidate checked against it.
pub fn verify_with(
    original: Original<'_>,
    candidate: Candidate<'_>,
    seeds: &[u64],
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    let expected = run_original(original, seeds, runtime)?;
    check_candidate(&expected, candidate, tol, runtime)
}

/// The original's outputs on seeded inputs: the first half of a verification. Holding this
/// instead of the model lets a caller run the original before compiling, so the two models are
/// never in memory together.
pub struct Expected {
    pub seeds: Vec<u64>,
    pub specs: Vec<InputSpec>,
    /// One input set per seed, generated once for both models.
    pub inputs: Vec<Vec<ndarray::ArrayD<f32>>>,
    pub outputs: Vec<Vec<(String, ndarray::ArrayD<f32>)>>,
    /// What onnxruntime changed in the original before running it.
    pub rewrites: Option<crate::reference::ort_rewrites::Applied>,
}

fn decode_original(original: Original<'_>) -> Result<ModelProto> {
    match original {
        // The weights stay in the file's memory map; onnxruntime reads them in place.
        Original::Path(p) => Ok(crate::load::load(p)?.proto),
        Original::Bytes(b) => {
            crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(b))
        }
    }
}

/// The original in `runtime`: onnxruntime from `decoded` (its weights mapped from the file, see
/// [`crate::reference::onnxruntime`]), tract from the file or bytes it parses itself.
fn load_original(
    original: Original<'_>,
    decoded: &ModelProto,
    runtime: &Runtime,
    specs: Vec<InputSpec>,
    names: Vec<String>,
) -> Result<Reference> {
    let model = match (runtime, original) {
        (Runtime::OnnxRuntime(_), _) => ModelRef::Proto(decoded),
        (Runtime::Tract, Original::Path(p)) => ModelRef::Path(p),
        (Runtime::Tract, Original::Bytes(b)) => ModelRef::Bytes(b),
    };
    Reference::load(model, runtime, Purpose::Verify, Some((specs, names)))
}

/// Loads `original` once, runs it on every seed and drops it. A batch left dynamic runs at 1
/// (see [`crate::reference::batch_one_shapes`]).
pub(super) fn run_original(
    original: Original<'_>,
    seeds: &[u64],
    runtime: &Runtime,
) -> Result<Expected> {
    if seeds.is_empty() {
        return Err(Error::Verification("no seed given".into()));
    }
    crate::phases::end("before the original");
    let loaded = decode_original(original)?;
    crate::phases::end("original decoded");
    let shapes = crate::reference::batch_one_shapes(&loaded)?;
    let specs = crate::reference::input_specs_with(&loaded, &shapes)?;
    let names = output_names(&loaded);
    let inputs: Vec<Vec<ndarray::ArrayD<f32>>> = seeds
        .iter()
        .map(|&s| crate::reference::random::inputs(&specs, s))
        .collect();
    crate::phases::end("inputs generated");
    let a = load_original(original, &loaded, runtime, specs.clone(), names)?;
    crate::phases::end("original session");
    let outputs = inputs
        .iter()
        .map(|i| a.run(i))
        .collect::<Result<Vec<_>>>()?;
    crate::phases::end("original runs");
    let rewrites = a.rewrites().cloned();
    drop(a);
    drop(loaded);
    crate::phases::end("original dropped");
    Ok(Expected {
        seeds: seeds.to_vec(),
        specs,
        inputs,
        outputs,
        rewrites,
    })
}

/// Loads `candidate` to run at the shapes of `specs`: its declared inputs must be the same
/// names and types, with every static dimension agreeing.
fn load_candidate(
    candidate: Candidate<'_>,
    specs: &[InputSpec],
    runtime: &Runtime,
) -> Result<Reference> {
    let decoded;
    let proto = match candidate {
        Candidate::Bytes(b) => {
            decoded = crate::load::decode(Path::new("<memory>"), bytes::Bytes::copy_from_slice(b))?;
            &decoded
        }
        Candidate::Model(m) => m,
    };
    let declared = crate::reference::declared_inputs(proto)?;
    let fixed = declared
        .iter()
        .zip(specs)
        .filter(|(d, s)| d.name == s.name && d.dtype == s.dtype)
        .map(|(d, s)| d.fix(s.shape.clone()))
        .collect::<Result<Vec<_>>>();
    match fixed {
        Ok(f) if f.len() == specs.len() && declared.len() == specs.len() => {}
        _ => {
            let mine: Vec<InputSpec> = declared
                .iter()
                .map(|d| InputSpec {
                    name: d.name.clone(),
                    dtype: d.dtype,
                    shape: d.dims.iter().map(|v| v.unwrap_or(0)).collect(),
                })
                .collect();
            return Err(inputs_differ(specs, &mine));
        }
    }
    let names = output_names(proto);
    let model = match candidate {
        Candidate::Bytes(b) => ModelRef::Bytes(b),
        Candidate::Model(m) => ModelRef::Proto(m),
    };
    Reference::load(
        model,
        runtime,
        Purpose::Verify,
        Some((specs.to_vec(), names)),
    )
}

/// Runs `candidate` on the inputs of `expected` and compares: the worst seed's result (the
/// first failing one, else the last).
pub(super) fn check_candidate(
    expected: &Expected,
    candidate: Candidate<'_>,
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    let r = load_candidate(candidate, &expected.specs, runtime)?;
    crate::phases::end("candidate session");
    let mut last = None;
    for ((&seed, inputs), want) in expected
        .seeds
        .iter()
        .zip(&expected.inputs)
        .zip(&expected.outputs)
    {
        let got = r.run(inputs)?;
        let v = Verification {
            seed,
            outputs: compare(want, &got, tol),
            runtime: runtime.describe_for(Purpose::Verify),
            rewrites: merged_rewrites(&[expected.rewrites.as_ref(), r.rewrites()]),
        };
        if !v.ok() {
            return Ok(v);
        }
        last = Some(v);
    }
    last.ok_or_else(|| Error::Verification("no seed given".into()))
}

/// The rewrites of both sessions of a verification, `None` when neither recorded any (tract).
fn merged_rewrites(
    parts: &[Option<&crate::reference::ort_rewrites::Applied>],
) -> Option<crate::reference::ort_rewrites::Applied> {
    parts.iter().flatten().fold(None, |acc, p| {
        let mut acc = acc.unwrap_or_default();
        acc.merge(p);
        Some(acc)
    })
}

fn inputs_differ(want: &[InputSpec], got: &[InputSpec]) -> Error {
    // A dimension shown as 0 is dynamic.
    let show = |v: &[InputSpec]| {
        v.iter()
            .map(|s| format!("{} {}{:?}", s.name, s.dtype, s.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::Verification(format!(
        "the compiled model's inputs ({}) differ from the original's ({})",
        show(got),
        show(want)
    ))
}

/// Verifies a model whose batch `change` changed: the candidate runs at each of `batches`
/// (its own batch if static), the original at its traced batch on the same images, a chunk of
/// images at a time (the last chunk padded by repeating its last image), and every image's
/// outputs are compared. Outputs without a batch axis are compared whole.
pub fn verify_batches(
    original: &Path,
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
) -> Result<Verification> {
    let (runtime, _) = RuntimeChoice::default().resolve()?;
    verify_batches_with(
        Original::Path(original),
        candidate,
        change,
        batches,
        seeds,
        tol,
        &runtime,
    )
}

/// [`verify_batches`] with a chosen runtime, for an original in a file or in memory.
pub fn verify_batches_with(
    original: Original<'_>,
    candidate: &[u8],
    change: &BatchChange,
    batches: &[i64],
    seeds: &[u64],
    tol: Tolerance,
    runtime: &Runtime,
) -> Result<Verification> {
    use ndarray::{Axis, Slice};
    let t = change.traced as usize;
    let a = {
        let loaded = decode_original(original)?;
        let specs = crate::reference::input_specs_with(&loaded, &change.input_shapes)?;
        let names = output_names(&loaded);
        load_original(original, &loaded, runtime, specs, names)?
    };
    // The candidate's inputs at batch k: the original's, with the batch axis resized.
    let batched = |k: usize| -> Vec<InputSpec> {
        a.inputs
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if !s.shape.is_empty() {
                    s.shape[0] = k;
                }
                s
            })
            .collect()
    };
    let batches: Vec<i64> = match change.result {
        Some(n) => vec![n],
        None => batches.to_vec(),
    };
    let mut last: Option<Verification> = None;
    for &k in &batches {
        let k = k as usize;
        let b = load_candidate(Candidate::Bytes(candidate), &batched(k), runtime)?;
        for &seed in seeds {
            let inputs = b.random_inputs(seed);
            let rb = b.run(&inputs)?;
            let mut diffs: Vec<OutputDiff> = Vec::new();
            for c in (0..k).step_by(t) {
                let chunk: Vec<ndarray::ArrayD<f32>> = inputs
                    .iter()
                    .map(|x| {
                        if x.ndim() == 0 {
                            return x.clone();
                        }
                        let rows: Vec<usize> = (c..c + t).map(|i| i.min(k - 1)).collect();
                        x.select(Axis(0), &rows)
                    })
                    .collect();
                let ra = a.run(&chunk)?;
                let valid = t.min(k - c);
                let mut pa = Vec::new();
                let mut pb = Vec::new();
                for (name, x) in &ra {
                    let Some((_, y)) = rb.iter().find(|(n, _)| n == name) else {
                        continue;
                    };
                    let per_image = x.ndim() > 0 && x.shape()[0] == t && y.shape()[0] == k;
                    if per_image {
                        pa.push((
                            name.clone(),
                            x.slice_axis(Axis(0), Slice::from(0..valid)).to_owned(),
                        ));
                        pb.push((
                            name.clone(),
                            y.slice_axis(Axis(0), Slice::from(c..c + valid)).to_owned(),
                        ));
                    } else if c == 0 {
                        pa.push((name.clone(), x.clone()));
                        pb.push((name.clone(), y.clone()));
                    }
                }
                for mut d in compare(&pa, &pb, tol) {
                    d.name = format!("{} (batch {k})", d.name);
                    match diffs.iter_mut().find(|e| e.name == d.name) {
                        Some(e) => {
                            e.max_abs = e.max_abs.max(d.max_abs);
                            e.ok &= d.ok;
                            if e.note.is_none() {
                                e.note = d.note;
                            }
                        }
                        None => diffs.push(d),
                    }
                }
            }
            let v = Verification {
                seed,
                outputs: diffs,
                runtime: runtime.describe_for(Purpose::Verify),
                rewrites: merged_rewrites(&[a.rewrites(), b.rewrites()]),
            };
            if !v.ok() {
                return Ok(v);
            }
            match &mut last {
                Some(l) => l.outputs.extend(v.outputs),
                None => last = Some(v),
            }
        }
    }
    last.ok_or_else(|| Error::Verification("no seed or batch given".into()))
}
