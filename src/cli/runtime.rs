//! `--reference` and `--onnxruntime`: which CPU reference runtime `compile --verify`, `run` and
//! `bench` use.

use std::path::PathBuf;

use anyhow::Context;
use detrc::reference::{Runtime, RuntimeChoice, RuntimeKind};

use super::Exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceKind {
    /// Built in (pure Rust); slower.
    Tract,
    /// libonnxruntime.so, loaded at run time (scripts/install_onnxruntime.sh).
    Onnxruntime,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuntimeArgs {
    /// CPU runtime: tract or onnxruntime. Default: onnxruntime when its library is found
    /// (--onnxruntime, $DETRC_ONNXRUNTIME, <repo>/.ort, next to detrc, the loader's folders),
    /// else tract.
    #[arg(long, value_enum)]
    pub reference: Option<ReferenceKind>,
    /// The onnxruntime library (libonnxruntime.so.1.x, or a folder holding it); implies
    /// --reference onnxruntime unless tract is asked for.
    #[arg(long, value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
}

impl RuntimeArgs {
    pub fn choice(&self) -> RuntimeChoice {
        RuntimeChoice {
            kind: self.reference.map(|k| match k {
                ReferenceKind::Tract => RuntimeKind::Tract,
                ReferenceKind::Onnxruntime => RuntimeKind::OnnxRuntime,
            }),
            library: self.onnxruntime.clone(),
        }
    }

    /// Resolves the runtime; a fallback note goes to stderr unless `quiet`.
    pub fn resolve(&self, quiet: bool) -> Result<Runtime, Exit> {
        let (rt, note) = self
            .choice()
            .resolve()
            .context("cannot use onnxruntime (--reference tract runs the built-in runtime)")?;
        if let (Some(n), false) = (note, quiet) {
            eprintln!("detrc: note: {n}");
        }
        Ok(rt)
    }
}
