//! Arbitrary bytes through everything `detrc compile` does before writing a file: decode,
//! external-data resolution, import, validation, the default pass pipeline to a fixed point,
//! export and encoding. Any panic (overflow checks included, with `cargo fuzz run -a`), any
//! allocation past libFuzzer's malloc limit, and any compiled model that does not load again
//! is a crash.

#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// External data is resolved against a folder that does not exist: the location checks and
/// offset/length parsing run, and no input can make the fuzzer read real files.
const NO_DIR: &str = "/nonexistent/detrc-fuzz";

fn compile(data: &[u8]) -> Option<Vec<u8>> {
    let path = Path::new("fuzz.onnx");
    let mut model = detrc::load::decode(path, Bytes::copy_from_slice(data)).ok()?;
    detrc::load::external::locations(&model);
    detrc::load::external::resolve(&mut model, Path::new(NO_DIR)).ok()?;
    let mut g = detrc::ir::from_onnx::import(model).ok()?;
    g.validate().ok()?;
    // The text dump (`--dump-ir`) and the histogram (`inspect`) read every node.
    g.dump();
    g.op_histogram();
    let pipeline = detrc::pass::Pipeline::new(detrc::passes::registry());
    pipeline.run(&mut g, &mut |_| {}).ok()?;
    g.fix_output_names();
    g.validate().ok()?;
    let mut out = Vec::new();
    detrc::emit::write_model(&g.export(), &mut out).ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if let Some(out) = compile(data) {
        // What detrc writes must load again: a compiled model is never a corrupt one.
        let m = detrc::load::decode(Path::new("out.onnx"), Bytes::from(out))
            .unwrap_or_else(|e| panic!("compiled output does not decode: {e}"));
        let g = detrc::ir::from_onnx::import(m)
            .unwrap_or_else(|e| panic!("compiled output does not import: {e}"));
        if let Err(e) = g.validate() {
            panic!("compiled output is invalid: {e}");
        }
    }
});
