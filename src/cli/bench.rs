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
    {
        let mut b = open_backend(&a.model, &a.backend, a.json)?;
        let (decode, norm) = choose_decode(&a.model, b.as_ref(), &a.decode)?;
        detrc::run::check_decode(b.as_ref(), decode, None)
            .with_context(|| format!("cannot benchmark {}", a.model.display()))?;
        let s = measure(b.as_mut(), a.iters, a.warmup, norm)
            .with_context(|| format!("cannot benchmark {}", a.model.display()))?;
        rows.push((a.model.display().to_string(), s));
    }
    if let Some(orig) = &a.compare {
        let cpu = BackendArgs {
            backend: Some(BackendKind::Cpu),
            ..a.backend.clone()
        };
        let mut b = open_backend(orig, &cpu, a.json)?;
        let (_, norm) = choose_decode(orig, b.as_ref(), &a.decode)?;
        let s = measure(b.as_mut(), a.iters, a.warmup, norm)
            .with_context(|| format!("cannot benchmark {}", orig.display()))?;
        rows.push((orig.display().to_string(), s));
    }
    // Throughput ratio rather than latency ratio: the original may have another static batch.
    let speedup = (rows.len() == 2).then(|| rows[0].1.images_per_s / rows[1].1.images_per_s);
    if a.json {
        let j = serde_json::json!({
            "results": rows.iter().map(|(m, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["model"] = serde_json::json!(m);
                v
            }).collect::<Vec<_>>(),
            "speedup_median": speedup,
        });
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    println!(
        "{:<9} {:>5} {:>6} {:>11} {:>11} {:>10}  model",
        "backend", "batch", "iters", "median ms", "p90 ms", "images/s"
    );
    for (m, s) in &rows {
        println!(
            "{:<9} {:>5} {:>6} {:>11.3} {:>11.3} {:>10.1}  {m}",
            s.backend, s.batch, s.iters, s.median_ms, s.p90_ms, s.images_per_s
        );
    }
    if let Some(x) = speedup {
        println!("speed-up over the original (images/s at the median latency): {x:.2}x");
    }
    Ok(())
}
