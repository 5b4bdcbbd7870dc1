//! The onnxruntime reference runtime through Rust (`ort`, the library loaded at run time): the
//! cross-checks of the compiled fixtures, agreement with tract, the CLI's `--reference` and
//! `--onnxruntime`, and bad libraries (missing, a text file, a truncated copy, a library that is
//! not onnxruntime, one of the wrong version), each a clear message naming the file and the
//! version needed.
//!
//! The library: $DETRC_ONNXRUNTIME, else <repo>/.ort (scripts/install_onnxruntime.sh). Without
//! it the tests that need it skip, unless DETRC_REQUIRE_ONNXRUNTIME is set (scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use detrc::driver::{verify_with, Candidate, Original};
use detrc::pass::Pipeline;
use detrc::reference::compare::{compare, Tolerance};
use detrc::reference::onnxruntime::{self, Library};
use detrc::reference::{Model, Purpose, Reference, Runtime, RuntimeChoice, RuntimeKind};

fn library() -> Option<Library> {
    match ort_runtime()? {
        Runtime::OnnxRuntime(l) => Some(l),
        Runtime::Tract => None,
    }
}

fn detrc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args(args)
        .env_remove("DETRC_ONNXRUNTIME")
        .output()
        .expect("detrc runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn compile(path: &Path) -> detrc::load::proto::ModelProto {
    let p = Pipeline::new(detrc::passes::registry());
    detrc::driver::compile(path, &p, &mut |_| {}).unwrap().model
}

const TOL: Tolerance = Tolerance {
    atol: 1e-4,
    rtol: 1e-4,
};

#[test]
fn the_installed_library_reports_its_version() {
    let Some(lib) = library() else { return };
    assert!(lib.version.starts_with("1.31"), "{lib:?}");
    let (rt, _) = RuntimeChoice {
        kind: Some(RuntimeKind::OnnxRuntime),
        library: Some(lib.path.clone()),
    }
    .resolve()
    .unwrap();
    assert_eq!(rt.describe(), format!("onnxruntime {}", lib.version));
}

#[test]
fn compiled_fixtures_match_their_originals_under_onnxruntime() {
    let Some(lib) = library() else { return };
    let rt = Runtime::OnnxRuntime(lib);
    for f in fixtures() {
        let m = compile(&f);
        let v = verify_with(Original::Path(&f), Candidate::Model(&m), &[0, 1], TOL, &rt).unwrap();
        assert!(v.ok(), "{}: {:?}", f.display(), v.outputs);
        assert!(v.runtime.starts_with("onnxruntime 1.31"), "{}", v.runtime);
    }
}

#[test]
fn onnxruntime_and_tract_agree_on_every_fixture() {
    let Some(lib) = library() else { return };
    let rt = Runtime::OnnxRuntime(lib);
    for f in fixtures() {
        for purpose in [Purpose::Verify, Purpose::Inference] {
            let o = Reference::load(Model::Path(&f), &rt, purpose, None).unwrap();
            let t = Reference::from_path(&f).unwrap();
            assert_eq!(o.inputs.len(), t.inputs.len());
            let inputs = t.random_inputs(3);
            let (a, b) = (t.run(&inputs).unwrap(), o.run(&inputs).unwrap());
            assert_eq!(a.len(), b.len());
            for d in compare(&a, &b, TOL) {
                assert!(d.ok, "{} {purpose:?}: {d:?}", f.display());
            }
        }
    }
}

/// A verification session lets onnxruntime evaluate constants, drop no-ops and lay out
/// convolutions, nothing else: on every fixture, original and compiled, only the kept
/// transformers change the graph, and the library registers none that detrc's lists do not
/// name. The same record with fusions on shows what the list turns off.
#[test]
fn verification_sessions_apply_no_fusion() {
    use detrc::reference::onnxruntime::{ModelSource, OrtModel, SessionOptions};
    let Some(lib) = library() else { return };
    let verify = SessionOptions::for_purpose(Purpose::Verify);
    let mut fused = std::collections::BTreeSet::new();
    for f in fixtures() {
        let compiled = compile(&f);
        for (what, src) in [
            ("original", ModelSource::Path(&f)),
            ("compiled", ModelSource::Proto(&compiled)),
        ] {
            let a = OrtModel::load(&lib, src, verify).unwrap().applied.unwrap();
            let at = format!("{} ({what})", f.display());
            assert!(
                a.unknown.is_empty(),
                "{at}: unknown transformers {:?}",
                a.unknown
            );
            assert!(a.untrusted().is_empty(), "{at}: {:?}", a.changed);
            assert!(
                a.changed.iter().any(|n| n == "NchwcTransformer"),
                "{at}: the convolutions do not run in NCHWc: {:?}",
                a.changed
            );
        }
        let with_fusions = SessionOptions {
            fusions: true,
            ..verify
        };
        let a = OrtModel::load(&lib, ModelSource::Path(&f), with_fusions)
            .unwrap()
            .applied
            .unwrap();
        fused.extend(a.untrusted().into_iter().map(String::from));
    }
    assert!(
        fused.contains("MatMulAddFusion"),
        "with fusions on onnxruntime fused only {fused:?}"
    );
}

/// onnxruntime catches a wrong rewrite, at the verification level: a weight scaled by 1.01.
#[test]
fn onnxruntime_verification_catches_a_changed_weight() {
    let Some(lib) = library() else { return };
    let rt = Runtime::OnnxRuntime(lib);
    let f = fixture("detr_tiny_op17_b1.onnx");
    let mut m = compile(&f);
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.data_type == Some(1) && t.raw_data.as_ref().is_some_and(|r| r.len() >= 4096))
        .expect("a float weight");
    let mut raw = t.raw_data.as_ref().unwrap().to_vec();
    // every element of the weight scaled by 1.01
    for c in raw.chunks_exact_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * 1.01;
        c.copy_from_slice(&x.to_le_bytes());
    }
    t.raw_data = Some(raw.into());
    let v = verify_with(Original::Path(&f), Candidate::Model(&m), &[0], TOL, &rt).unwrap();
    assert!(!v.ok(), "{:?}", v.outputs);
}

#[test]
fn compile_verify_names_the_runtime_that_ran() {
    let Some(lib) = library() else { return };
    let dir = tmpdir();
    let out = dir.path().join("o.onnx");
    let f = fixture("detr_tiny_op17_b1.onnx");
    let (f, out) = (f.to_str().unwrap(), out.to_str().unwrap());
    let lib_s = lib.path.to_str().unwrap();
    let o = detrc(&[
        "compile",
        f,
        "-o",
        out,
        "--verify",
        "--reference",
        "onnxruntime",
        "--onnxruntime",
        lib_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("verified with onnxruntime {}", lib.version)),
        "{}",
        stderr(&o)
    );
    let o = detrc(&["compile", f, "-o", out, "--verify", "--reference", "tract"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("verified with tract 0.23"),
        "{}",
        stderr(&o)
    );
    let o = detrc(&["inspect", f, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["reference_runtime"].as_str().is_some(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Bad libraries, each as `--onnxruntime FILE` and as `$DETRC_ONNXRUNTIME`: exit 1, the file
/// and the version needed in the message, no output written, never a fallback to tract.
struct BadLib {
    path: PathBuf,
    expect: &'static str,
}

fn bad_libraries(dir: &Path) -> Vec<BadLib> {
    let mut v = vec![BadLib {
        path: dir.join("missing/libonnxruntime.so.1.31.1"),
        expect: "not found",
    }];
    let text = dir.join("text/libonnxruntime.so.1.31.1");
    std::fs::create_dir_all(text.parent().unwrap()).unwrap();
    std::fs::write(&text, "this is not a shared library\n").unwrap();
    v.push(BadLib {
        path: text,
        expect: "no ELF header",
    });
    let empty = dir.join("empty.so");
    std::fs::write(&empty, b"").unwrap();
    v.push(BadLib {
        path: empty,
        expect: "no ELF header",
    });
    if let Some(lib) = library() {
        let real = std::fs::read(&lib.path).unwrap();
        for (name, len) in [
            ("head", 4096),
            ("half", real.len() / 2),
            ("tail", real.len() - 1),
        ] {
            let p = dir.join(format!("truncated-{name}/libonnxruntime.so.1.31.1"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &real[..len]).unwrap();
            v.push(BadLib {
                path: p,
                expect: "truncated",
            });
        }
    }
    // A real shared library that is not onnxruntime.
    if let Some(libm) = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    {
        v.push(BadLib {
            path: libm.to_path_buf(),
            expect: "exports no OrtGetApiBase",
        });
    }
    // A library that presents itself as onnxruntime 1.16.3 (built here with the C compiler).
    let src = dir.join("old.c");
    std::fs::write(
        &src,
        "typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } Base;\n\
         static const void *get_api(unsigned v) { (void)v; return 0; }\n\
         static const char *version(void) { return \"1.16.3\"; }\n\
         static const Base base = { get_api, version };\n\
         const Base *OrtGetApiBase(void) { return &base; }\n",
    )
    .unwrap();
    let old = dir.join("old/libonnxruntime.so.1.16.3");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&old)
        .arg(&src)
        .status();
    match cc {
        Ok(s) if s.success() => v.push(BadLib {
            path: old,
            expect: "it is onnxruntime 1.16.3, which is too old",
        }),
        _ => eprintln!("note: no C compiler; the wrong-version case is not tested"),
    }
    v
}

#[test]
fn bad_libraries_are_refused_with_the_file_and_the_version_needed() {
    let dir = tmpdir();
    let out = dir.path().join("o.onnx");
    let f = fixture("detr_tiny_op17_b1.onnx");
    for bad in bad_libraries(dir.path()) {
        let lib = bad.path.to_str().unwrap();
        // In-process check: a typed error, no panic.
        let e = onnxruntime::check_file(&bad.path).unwrap_err().to_string();
        assert!(e.contains(bad.expect), "{lib}: {e}");
        for how in ["flag", "env"] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_detrc"));
            c.args([
                "compile",
                f.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--verify",
            ]);
            match how {
                "flag" => c
                    .args(["--onnxruntime", lib])
                    .env_remove("DETRC_ONNXRUNTIME"),
                _ => c.env("DETRC_ONNXRUNTIME", lib),
            };
            let o = c.output().unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{how} {lib}: {err}");
            assert!(
                err.contains(lib),
                "{how}: the message names the file: {err}"
            );
            assert!(err.contains(bad.expect), "{how} {lib}: {err}");
            assert!(err.contains("onnxruntime 1.31 or newer"), "{how}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(!out.exists(), "{how} {lib}: output written");
        }
        // run and bench refuse it the same way.
        let o = detrc(&[
            "bench",
            f.to_str().unwrap(),
            "--iters",
            "1",
            "--onnxruntime",
            lib,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(bad.expect), "{}", stderr(&o));
    }
}

/// A bad library in a default place (next to the binary) is skipped with a note, not an error:
/// the user did not ask for onnxruntime.
#[test]
fn a_bad_library_in_a_default_place_is_skipped_with_a_note() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = dir.path().join("detrc");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_detrc"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_detrc"), &exe).unwrap();
    }
    let bad = dir.path().join(onnxruntime::LIBRARY_FILE);
    std::fs::write(&bad, "not a library").unwrap();
    let out = dir.path().join("o.onnx");
    let f = fixture("detr_tiny_op17_b1.onnx");
    // The copied binary with no library named: only the default places are searched.
    let verify = |extra: &[&str]| {
        Command::new(&exe)
            .args([
                "compile",
                f.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--verify",
            ])
            .args(extra)
            .env_remove("DETRC_ONNXRUNTIME")
            .output()
            .unwrap()
    };
    let o = verify(&[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("skipped") && err.contains(bad.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("verified with"), "{err}");
    // Asking for onnxruntime by name still works when <repo>/.ort has it, and fails otherwise.
    let o = verify(&["--reference", "onnxruntime"]);
    if library().is_some_and(|lib| lib.path.starts_with(root().join(".ort"))) {
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn run_and_bench_use_onnxruntime_on_the_cpu() {
    let Some(lib) = library() else { return };
    let f = fixture("detr_tiny_op17_b1.onnx");
    let lib_s = lib.path.to_str().unwrap();
    let o = detrc(&[
        "bench",
        f.to_str().unwrap(),
        "--iters",
        "2",
        "--warmup",
        "1",
        "--onnxruntime",
        lib_s,
        "--compare",
        f.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["results"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        2,
        "--onnxruntime names the runtime: no tract rows"
    );
    for r in rows {
        assert_eq!(r["backend"], "cpu");
        assert_eq!(r["runtime"], format!("onnxruntime {}", lib.version));
    }
    // With no runtime named (the library found through $DETRC_ONNXRUNTIME is a default here
    // only through <repo>/.ort), --compare times both runtimes.
    let o = Command::new(env!("CARGO_BIN_EXE_detrc"))
        .args([
            "bench",
            f.to_str().unwrap(),
            "--iters",
            "2",
            "--warmup",
            "0",
        ])
        .args(["--compare", f.to_str().unwrap(), "--json"])
        .env_remove("DETRC_ONNXRUNTIME")
        .env("LD_LIBRARY_PATH", lib.path.parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runtimes: Vec<String> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runtime"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runtimes.len(), 4, "{runtimes:?}");
    assert!(runtimes[0].starts_with("onnxruntime") && runtimes[1].starts_with("onnxruntime"));
    assert!(runtimes[2].starts_with("tract") && runtimes[3].starts_with("tract"));
    assert!(j["onnxruntime_over_tract"].as_f64().unwrap() > 0.0);
}
