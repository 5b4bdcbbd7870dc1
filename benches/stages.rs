//! Where compile time goes, stage by stage: `cargo bench --bench stages -- MODEL.onnx [RUNS]`.
//!
//! Loading is timed against a baseline measured in the same run: reading the file into memory
//! (`std::fs::read`), which is the floor for any loader that copies weights. The memory-mapped,
//! zero-copy decode should be far below it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use detrc::pass::Pipeline;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let model = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bench-out/detr_r50_op17_b1_800x800.onnx"));
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    if !model.exists() {
        eprintln!(
            "{} not found: generate it with benches/compile_vs_onnxsim.sh or scripts/make_fixtures.py --config r50",
            model.display()
        );
        std::process::exit(1);
    }
    let size = std::fs::metadata(&model).unwrap().len();
    let read = time(runs, || std::fs::read(&model).unwrap());
    let load = time(runs, || detrc::load::load_proto(&model).unwrap());
    let proto = detrc::load::load_proto(&model).unwrap();
    let import = time(runs, || {
        detrc::ir::from_onnx::import(proto.clone()).unwrap()
    });
    let g0 = detrc::ir::from_onnx::import(proto.clone()).unwrap();
    let mut reports = Vec::new();
    let passes = time(runs.min(3), || {
        let mut g = g0.clone();
        reports = Pipeline::new(detrc::passes::registry())
            .run(&mut g, &mut |_| {})
            .unwrap();
        g
    });
    let mut g = g0.clone();
    Pipeline::new(detrc::passes::registry())
        .run(&mut g, &mut |_| {})
        .unwrap();
    let exported = g.export();
    let emit = time(runs, || {
        let mut v = Vec::with_capacity(size as usize);
        detrc::emit::write_model(&exported, &mut v).unwrap();
        v
    });
    println!(
        "{} ({:.1} MB), median of {runs} runs",
        model.display(),
        size as f64 / 1e6
    );
    println!("{:<34} {:>10}", "stage", "ms");
    let row = |name: &str, d: Duration| println!("{name:<34} {:>10.2}", d.as_secs_f64() * 1e3);
    row("baseline: std::fs::read", read);
    row("load (mmap + zero-copy decode)", load);
    row("import into the IR", import);
    row("passes (default pipeline)", passes);
    row("encode output (in memory)", emit);
    println!(
        "load is {:.0}x faster than reading the file",
        read.as_secs_f64() / load.as_secs_f64().max(1e-9)
    );
    println!("slowest pass steps (last run):");
    let mut steps: Vec<_> = reports.iter().collect();
    steps.sort_by(|a, b| b.millis.total_cmp(&a.millis));
    for r in steps.iter().take(6) {
        println!(
            "  [{:>2}] {:<22} {:>10.2} ms  {}",
            r.step, r.pass, r.millis, r.status
        );
    }
}
