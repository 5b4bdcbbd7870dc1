use std::path::PathBuf;

use anyhow::Context;
use detrc::run::bench::{measure, Stats};

use super::run::{choose_decode, open_backend, BackendArgs, BackendKind, DecodeArgs};
use super::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// An ONNX model (CPU backend) or a TensorRT engine (TensorRT backend).
    model: PathBuf,
    /// Timed inferences.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed inferences first (JIT, caches, clocks).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[command(flatten)]
    backend: BackendArgs,
    /// The decode is checked against the model's outputs and picks the input normalization.
    #[command(flatten)]
    decode: DecodeArgs,
    /// Also time this original ONNX model on the CPU backend, and print the ratio.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.iters == 0 {
        return Err(Exit(
            super::EXIT_USAGE,
            anyhow::anyhow!("--iters must be at least 1"),
        ));
    }
    let mut rows: Vec<(String, Stats)> = Vec::new();
    // The decode chosen for the model is checked once; each model picks its normalization.
    let mut checked = false;
    let mut time = |model: &std::path::Path, args: &BackendArgs| -> Result<Stats, Exit> {
        let mut b = open_backend(model, args, a.json)?;
        let (decode, norm) = choose_decode(model, b.as_ref(), &a.decode)?;
        if !checked {
            detrc::run::check_decode(b.as_ref(), decode, None)
                .with_context(|| format!("cannot benchmark {}", model.display()))?;
            checked = true;
        }
        let s = measure(b.as_mut(), a.iters, a.warmup, norm)
            .with_context(|| format!("cannot benchmark {}", model.display()))?;
        rows.push((model.display().to_string(), s.clone()));
        Ok(s)
    };
    let first = time(&a.model, &a.backend)?;
    if let Some(orig) = &a.compare {
        // The original on the CPU with the same runtime as the model when that ran on the CPU.
        let on_cpu = first.backend == "cpu";
        let cpu = |kind: BackendKind| BackendArgs {
            backend: Some(kind),
            ..a.backend.clone()
        };
        let same = if on_cpu
            && first
                .runtime
                .as_deref()
                .is_some_and(|r| r.starts_with("tract"))
        {
            BackendKind::Tract
        } else if on_cpu {
            BackendKind::Onnxruntime
        } else {
            BackendKind::Cpu
        };
        time(orig, &cpu(same))?;
        // Both runtimes when the user named none and onnxruntime is there: the model and the
        // original on tract as well.
        let named = a.backend.runtime.reference.is_some()
            || a.backend.runtime.onnxruntime.is_some()
            || matches!(
                a.backend.backend,
                Some(BackendKind::Onnxruntime | BackendKind::Tract)
            );
        if on_cpu && same == BackendKind::Onnxruntime && !named {
            time(&a.model, &cpu(BackendKind::Tract))?;
            time(orig, &cpu(BackendKind::Tract))?;
        }
    }
    // Throughput ratio rather than latency ratio: the original may have another static batch.
    // Rows come in (model, original) pairs, one pair per runtime.
    let speedups: Vec<(String, f64)> = rows
        .chunks_exact(2)
        .map(|p| {
            let label = p[0]
                .1
                .runtime
                .clone()
                .unwrap_or_else(|| p[0].1.backend.clone());
            (label, p[0].1.images_per_s / p[1].1.images_per_s)
        })
        .collect();
    let speedup = speedups.first().map(|s| s.1);
    // onnxruntime over tract on the model, when both ran.
    let runtime_ratio = (rows.len() == 4).then(|| rows[0].1.images_per_s / rows[2].1.images_per_s);
    if a.json {
        let j = serde_json::json!({
            "results": rows.iter().map(|(m, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["model"] = serde_json::json!(m);
                v
            }).collect::<Vec<_>>(),
            "speedup_median": speedup,
            "speedups": speedups.iter().map(|(r, x)| serde_json::json!({"runtime": r, "speedup": x})).collect::<Vec<_>>(),
            "onnxruntime_over_tract": runtime_ratio,
        });
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    println!(
        "{:<9} {:<18} {:>5} {:>6} {:>11} {:>11} {:>10}  model",
        "backend", "runtime", "batch", "iters", "median ms", "p90 ms", "images/s"
    );
    for (m, s) in &rows {
        println!(
            "{:<9} {:<18} {:>5} {:>6} {:>11.3} {:>11.3} {:>10.1}  {m}",
            s.backend,
            s.runtime.as_deref().unwrap_or("-"),
            s.batch,
            s.iters,
            s.median_ms,
            s.p90_ms,
            s.images_per_s
        );
    }
    for (r, x) in &speedups {
        println!("speed-up over the original with {r} (images/s at the median latency): {x:.2}x");
    }
    if let Some(x) = runtime_ratio {
        println!("onnxruntime over tract on {}: {x:.2}x", a.model.display());
    }
    Ok(())
}
