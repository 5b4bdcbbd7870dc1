//! Argument parsing and dispatch. Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.

mod bench;
mod build;
mod compile;
mod inspect;
mod quantize;
mod run;
mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_VERIFY: u8 = 3;

#[derive(Parser)]
#[command(
    name = "detrc",
    version,
    about = "Prepares DETR-family detection transformers (ONNX) for NVIDIA TensorRT",
    long_about = "Prepares DETR-family detection transformers (ONNX) for NVIDIA TensorRT.\n\n\
        Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rewrite an ONNX model (prune auxiliary heads, fold constants, simplify) and write it.
    Compile(Box<compile::Args>),
    /// Build a TensorRT-RTX engine (fp32, fp16 or int8) from a model, with a JSON sidecar.
    Build(Box<build::Args>),
    /// Quantize a model to INT8 (Q/DQ nodes) from activation ranges calibrated on images.
    Quantize(Box<quantize::Args>),
    /// Show a model's inputs, outputs and operator histogram (ONNX or engine sidecar).
    Inspect(inspect::Args),
    /// List the available passes in default pipeline order.
    Passes,
    /// Detect objects in images with a DETR model (ONNX on the CPU, or a TensorRT engine).
    Run(run::Args),
    /// Measure inference latency and throughput, optionally against the original ONNX model.
    Bench(bench::Args),
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit(EXIT_ERROR, e.into())
    }
}

pub fn main() -> ExitCode {
    ExitCode::from(run_from(std::env::args_os()))
}

/// The whole command on these arguments (the first is the program name); returns the exit
/// code. The Python package's `detrc` command calls this in-process.
pub fn run_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let res = match cli.cmd {
        Cmd::Compile(a) => compile::run(*a),
        Cmd::Build(a) => build::run(*a),
        Cmd::Quantize(a) => quantize::run(*a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Passes => {
            let default = detrc::passes::registry();
            for p in detrc::passes::all() {
                let in_default = default.iter().any(|d| d.name() == p.name());
                let tag = match (p.detr_specific(), in_default) {
                    (_, false) => " [opt-in]",
                    (true, true) => " [detr]",
                    (false, true) => "",
                };
                println!("{:<22} {}{tag}", p.name(), p.about());
            }
            Ok(())
        }
    };
    match res {
        Ok(()) => 0,
        Err(Exit(code, e)) => {
            eprintln!("detrc: error: {e:#}");
            code
        }
    }
}
