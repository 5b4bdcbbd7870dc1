use std::path::PathBuf;

use anyhow::Context;

use super::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// An ONNX model.
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let (g, _) = detrc::driver::load_graph(&a.model)
        .with_context(|| format!("cannot inspect {}", a.model.display()))?;
    let inputs: Vec<(String, String)> = g
        .graph_inputs()
        .into_iter()
        .map(|n| {
            let v = &g.node(n).outputs[0];
            (
                v.name.clone(),
                v.ty.as_ref().map_or("?".into(), |t| t.to_string()),
            )
        })
        .collect();
    let outputs: Vec<(String, String)> = g
        .outputs
        .iter()
        .map(|o| {
            let ty = o
                .info
                .r#type
                .as_ref()
                .and_then(detrc::ir::TensorType::from_proto)
                .map_or("?".into(), |t| t.to_string());
            (o.name.clone(), ty)
        })
        .collect();
    let hist = g.op_histogram();
    if a.json {
        let j = serde_json::json!({
            "model": a.model,
            "opset": g.opset(),
            "nodes": g.num_ops(),
            "inputs": inputs.iter().map(|(n, t)| serde_json::json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(n, t)| serde_json::json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "ops": hist,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model:   {}", a.model.display());
    println!("opset:   {}", g.opset());
    println!("nodes:   {}", g.num_ops());
    for (n, t) in &inputs {
        println!("input:   {n}: {t}");
    }
    for (n, t) in &outputs {
        println!("output:  {n}: {t}");
    }
    let mut h: Vec<_> = hist.into_iter().collect();
    h.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("ops:");
    for (op, n) in h {
        println!("  {op:<24} {n}");
    }
    Ok(())
}
