use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use detrc::build::{engine_check, looks_like_engine, sidecar_path, Sidecar};

use super::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// An ONNX model, or an engine built by `detrc build` (read from its `.json` sidecar).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    if looks_like_engine(&a.model) {
        return inspect_engine(&a.model, a.json);
    }
    let (g, _) = match detrc::driver::load_graph(&a.model) {
        Ok(g) => g,
        // An engine under another name: its sidecar tells.
        Err(_) if sidecar_path(&a.model).is_file() => return inspect_engine(&a.model, a.json),
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!("cannot inspect {}", a.model.display()))
                .into())
        }
    };
    let s = detrc::driver::summary(&g);
    // What `--verify` and the CPU backend would run this model with, by default.
    let runtime = match detrc::reference::RuntimeChoice::default().resolve() {
        Ok((rt, note)) => {
            let mut s = rt.describe_for(detrc::reference::Purpose::Verify);
            if let Some(n) = note {
                s = format!("{s} ({n})");
            }
            s
        }
        Err(e) => format!("none usable: {e}"),
    };
    if a.json {
        let mut j = serde_json::to_value(&s)?;
        j["model"] = serde_json::json!(a.model);
        j["reference_runtime"] = serde_json::json!(runtime);
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model:   {}", a.model.display());
    println!("opset:   {}", s.opset);
    println!("nodes:   {}", s.nodes);
    println!("runtime: {runtime}");
    for i in &s.inputs {
        println!("input:   {}: {}", i.name, i.ty);
    }
    for o in &s.outputs {
        println!("output:  {}: {}", o.name, o.ty);
    }
    let mut h: Vec<_> = s.ops.into_iter().collect();
    h.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("ops:");
    for (op, n) in h {
        println!("  {op:<24} {n}");
    }
    Ok(())
}

fn inspect_engine(engine: &Path, json: bool) -> Result<(), Exit> {
    let sc_path = sidecar_path(engine);
    let text = match std::fs::read_to_string(&sc_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "{} looks like a TensorRT engine but its sidecar {} is missing; an engine alone \
                 cannot be described without TensorRT and a GPU. Rebuild it with `detrc build`",
                engine.display(),
                sc_path.display()
            )
            .into())
        }
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!("cannot read {}", sc_path.display()))
                .into())
        }
    };
    let sc = Sidecar::from_json(&text)
        .with_context(|| format!("{} is not a detrc engine sidecar", sc_path.display()))?;
    let check = engine_check(engine, &sc);
    if json {
        let mut j = serde_json::to_value(&sc)?;
        j["engine_check"] = serde_json::Value::from(check);
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let io = |v: &[detrc::build::sidecar::Io]| -> Vec<String> {
        v.iter()
            .map(|i| {
                let dims: Vec<String> = i.shape.iter().map(|d| d.to_string()).collect();
                format!("{}: {}[{}]", i.name, i.dtype, dims.join(","))
            })
            .collect()
    };
    println!(
        "engine:    {} ({} bytes, {check})",
        engine.display(),
        sc.engine.bytes
    );
    println!(
        "built by:  detrc {} with {} {}",
        sc.detrc_version, sc.tensorrt.flavor, sc.tensorrt.version
    );
    println!("targets:   {}", sc.targets.join(", "));
    println!("precision: {}", sc.precision);
    for i in io(&sc.inputs) {
        println!("input:     {i}");
    }
    for o in io(&sc.outputs) {
        println!("output:    {o}");
    }
    println!(
        "source:    {} (sha256 {}{})",
        sc.source.path,
        sc.source.sha256,
        if sc.source.compiled_before {
            ""
        } else {
            ", compiled by detrc build"
        }
    );
    println!("engine sha256: {}", sc.engine.sha256);
    println!("content key:   {}", sc.content_key);
    if let Some(w) = sc.options.workspace_mb {
        println!("workspace: {w} MiB");
    }
    if let Some(l) = sc.options.opt_level {
        println!("opt level: {l}");
    }
    for s in &sc.options.shapes {
        println!("shapes:    {s}");
    }
    if !sc.options.fp16_keep.is_empty() {
        println!("fp16 keep: {}", sc.options.fp16_keep.join(", "));
    }
    for s in &sc.steps {
        println!("step:      {s}");
    }
    println!(
        "built in:  {:.2}s prepare + {:.2}s TensorRT",
        sc.timing.prepare_seconds, sc.timing.engine_seconds
    );
    Ok(())
}
