//! `fuse-layernorm`: LayerNorm as exporters below opset 17 write it (ReduceMean, Sub, Pow,
//! ReduceMean, Add, Sqrt, Div, Mul, Add) back into one LayerNormalization, the opset raised
//! to 17 for it. Hand-built graphs (every variant, what must stay, snapshots), the committed
//! opset-12 DETR exports (tract and onnxruntime) and the opset-16 family exports against their
//! opset-17 twins (ReduceMean count, onnxruntime).

mod common;

use common::*;
use detrc::pass::{Outcome, Pipeline};
use detrc::passes::*;

fn snap(name: &str, text: String) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

/// How the hand-built norm is written.
#[derive(Clone, Copy)]
struct Form {
    opset: i64,
    /// `Mul(d, d)` instead of `Pow(d, 2)`.
    square_by_mul: bool,
    /// `Mul(d, Reciprocal(r))` instead of `Div(d, r)`.
    reciprocal: bool,
    /// Constants on the left of the commutative ops.
    swapped: bool,
    affine: bool,
    /// The normalized axes (the last one: `[-1]`).
    axes: &'static [i64],
}

const PLAIN: Form = Form {
    opset: 16,
    square_by_mul: false,
    reciprocal: false,
    swapped: false,
    affine: true,
    axes: &[-1],
};

/// `x: [2, 5, 6]`, a Relu before the norm (its input is computed) and a MatMul after.
fn layernorm(f: Form) -> M {
    let axes = ints_attr("axes", f.axes);
    let mut m = M::new(f.opset)
        .input("x", &[2, 5, 6])
        .output("y")
        .f32("two", &[], &[2.0])
        .f32("eps", &[], &[1e-5])
        .rand("gamma", &[6], 3)
        .rand("beta", &[6], 4)
        .rand("w", &[6, 4], 5)
        .node("Relu", &["x"], &["h"], vec![])
        .node("ReduceMean", &["h"], &["mu"], vec![axes.clone()])
        .node("Sub", &["h", "mu"], &["d"], vec![]);
    m = if f.square_by_mul {
        m.node("Mul", &["d", "d"], &["sq"], vec![])
    } else {
        m.node("Pow", &["d", "two"], &["sq"], vec![])
    };
    m = m
        .node("ReduceMean", &["sq"], &["var"], vec![axes])
        .node(
            "Add",
            if f.swapped {
                &["eps", "var"]
            } else {
                &["var", "eps"]
            },
            &["ve"],
            vec![],
        )
        .node("Sqrt", &["ve"], &["sd"], vec![]);
    m = if f.reciprocal {
        m.node("Reciprocal", &["sd"], &["inv"], vec![])
            .node("Mul", &["inv", "d"], &["n"], vec![])
    } else {
        m.node("Div", &["d", "sd"], &["n"], vec![])
    };
    if f.affine {
        let (mul, add): (&[&str], &[&str]) = if f.swapped {
            (&["gamma", "n"], &["beta", "g"])
        } else {
            (&["n", "gamma"], &["g", "beta"])
        };
        m = m
            .node("Mul", mul, &["g"], vec![])
            .node("Add", add, &["ln"], vec![]);
    } else {
        m = m.node("Identity", &["n"], &["ln"], vec![]);
    }
    m.node("MatMul", &["ln", "w"], &["y"], vec![])
}

/// Runs the pass after shape inference; the outputs must stay within float rounding.
fn fuse(m: &M) -> (detrc::ir::Graph, detrc::ir::Graph, Outcome) {
    let mut g = m.graph();
    apply(&mut g, &infer_shapes::InferShapes);
    let before = g.clone();
    let o = apply(&mut g, &fuse_layernorm::FuseLayerNorm);
    assert_same_outputs(&encode(&m.model()), &encode(&g.export()), 1e-5);
    (before, g, o)
}

#[test]
fn every_written_form_of_layernorm_becomes_one_node_at_opset_17() {
    let forms = [
        PLAIN,
        Form { opset: 12, ..PLAIN },
        Form { opset: 11, ..PLAIN },
        Form {
            square_by_mul: true,
            reciprocal: true,
            swapped: true,
            ..PLAIN
        },
        Form {
            affine: false,
            ..PLAIN
        },
        Form {
            axes: &[2],
            ..PLAIN
        },
        // Opset 18 keeps the axes as an input, and LayerNormalization needs no raise.
        Form { opset: 18, ..PLAIN },
    ];
    for (i, f) in forms.into_iter().enumerate() {
        let mut m = layernorm(f);
        if f.opset >= 18 {
            // The reductions read their axes from an input from opset 18 on.
            m = m.i64("axes_in", &[1], f.axes);
            for n in m.nodes.iter_mut() {
                if n.op_type.as_deref() == Some("ReduceMean") {
                    n.attribute.clear();
                    n.input.push("axes_in".into());
                }
            }
        }
        let (before, g, o) = fuse(&m);
        assert!(matches!(o, Outcome::Changed(_)), "form {i}: {o:?}");
        assert_eq!(op_count(&g, "LayerNormalization"), 1, "form {i}");
        assert_eq!(op_count(&g, "ReduceMean"), 0, "form {i}");
        // Relu, the norm, the MatMul (and the Identity of the form without affine).
        assert_eq!(
            g.num_ops(),
            3 + usize::from(!f.affine),
            "form {i}: {:?}",
            g.op_histogram()
        );
        assert_eq!(g.opset(), f.opset.max(17), "form {i}");
        // IR version 8 is the first that may import opset 17.
        assert!(g.carry.model.ir_version.unwrap() >= 8, "form {i}");
        if i == 0 {
            snap(
                "unit__fuse_layernorm",
                format!(
                    "--- before\n{}--- after ({o:?})\n{}",
                    before.dump(),
                    g.dump()
                ),
            );
        }
        if f.opset == 12 {
            // Raising 12 -> 17 moved nothing else here, and the fused node kept the
            // activation's type: what tract refused in the first version of this pass.
            let ln = g
                .topo_ops()
                .into_iter()
                .find(|&n| g.node(n).is("LayerNormalization"))
                .unwrap();
            let x = g.input(ln, 0).unwrap();
            assert_eq!(
                g.ty(detrc::ir::Port::new(ln, 0)),
                g.ty(x),
                "the fused output has x's type"
            );
        }
    }
}

#[test]
fn raising_opset_12_moves_squeeze_unsqueeze_split_axes_and_softmax_axis() {
    // The opset-12 forms that LayerNorm's raise to 17 must rewrite, next to a norm.
    let m = layernorm(Form { opset: 12, ..PLAIN });
    let m = M {
        outputs: vec![],
        ..m
    }
    .node("Unsqueeze", &["y"], &["u"], vec![ints_attr("axes", &[0])])
    .node("Squeeze", &["u"], &["s"], vec![ints_attr("axes", &[0])])
    .node(
        "Split",
        &["s"],
        &["s0", "s1"],
        vec![int_attr("axis", 2), ints_attr("split", &[1, 3])],
    )
    .node("Softmax", &["s1"], &["p"], vec![int_attr("axis", 2)])
    .node("Split", &["s"], &["e0", "e1"], vec![int_attr("axis", 2)])
    .output("s0")
    .output("p")
    .output("e1");
    let (before, g, o) = fuse(&m);
    let Outcome::Changed(lines) = &o else {
        panic!("{o:?}")
    };
    assert!(lines.iter().any(|l| l == "opset 12 -> 17"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("3 Squeeze/Unsqueeze/Split")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("1 Softmax")),
        "{lines:?}"
    );
    assert_eq!(op_count(&g, "LayerNormalization"), 1);
    assert_eq!(before.opset(), 12);
}

#[test]
fn a_softmax_over_several_axes_keeps_the_model_at_its_opset_with_the_reason() {
    // Softmax-12 over axis 1 of a rank-3 tensor normalizes two axes at once: opset 13 has
    // no such op, so the model cannot be raised and nothing is fused.
    let m = M {
        outputs: vec![],
        ..layernorm(Form { opset: 12, ..PLAIN })
    }
    .node("Softmax", &["y"], &["p"], vec![int_attr("axis", 1)])
    .output("p");
    let (before, g, o) = fuse(&m);
    match &o {
        Outcome::NotApplicable(why) => {
            assert!(
                why.contains("1 decomposed LayerNorms left unchanged"),
                "{why}"
            );
            assert!(why.contains("Softmax"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.dump(), before.dump());
}

#[test]
fn norms_that_are_not_layernorms_stay_with_the_reason() {
    // Channels-first (ConvNeXt-style) norm over axis 1: LayerNormalization normalizes from
    // its axis to the end, so there is no single-node form.
    let (before, g, o) = fuse(&layernorm(Form {
        axes: &[1],
        ..PLAIN
    }));
    match &o {
        Outcome::NotApplicable(why) => assert!(why.contains("not the last ones"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.dump(), before.dump());

    // The centred input is also read elsewhere: fusing would drop that reader's input.
    let m = layernorm(PLAIN).output("d");
    let (before, g, o) = fuse(&m);
    match &o {
        Outcome::NotApplicable(why) => assert!(why.contains("read outside"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.dump(), before.dump());

    // Plain means (a pooling) are no norms and are not reported.
    let m = M::new(16).input("x", &[2, 5, 6]).output("y").node(
        "ReduceMean",
        &["x"],
        &["y"],
        vec![ints_attr("axes", &[-1])],
    );
    let (_, g, o) = fuse(&m);
    assert_eq!(o, Outcome::Unchanged);
    assert_eq!(g.opset(), 16);
}

#[test]
fn stacked_norms_chain_into_each_other() {
    // Two norms back to back: the second one's input is the first one's result, which the
    // first fusion replaces.
    let m = layernorm(PLAIN);
    let mut m2 = M {
        outputs: vec![],
        ..m
    };
    let n = m2.nodes.len();
    // Copy the norm (nodes 1..n-1: ReduceMean .. the bias Add) reading `ln` into `ln2`.
    let copy: Vec<_> = m2.nodes[1..n - 1]
        .iter()
        .map(|node| {
            let mut c = node.clone();
            let rename = |s: &String| match s.as_str() {
                "h" => "ln".to_string(),
                "two" | "eps" | "gamma" | "beta" => s.clone(),
                other => format!("{other}_2"),
            };
            c.input = c.input.iter().map(rename).collect();
            c.output = c.output.iter().map(rename).collect();
            c.name = c.name.map(|x| format!("{x}_2"));
            c
        })
        .collect();
    m2.nodes.extend(copy);
    let m2 = m2.output("ln_2");
    let (_, g, o) = fuse(&m2);
    assert!(matches!(o, Outcome::Changed(_)), "{o:?}");
    assert_eq!(op_count(&g, "LayerNormalization"), 2);
    assert_eq!(op_count(&g, "ReduceMean"), 0);
}

fn compile(path: &std::path::Path) -> detrc::driver::Compiled {
    let p = Pipeline::new(detrc::passes::registry());
    detrc::driver::compile(path, &p, &mut |_| {}).expect("compiles")
}

fn import(c: detrc::driver::Compiled) -> detrc::ir::Graph {
    detrc::ir::from_onnx::import(c.model).unwrap()
}

/// The committed opset-12 DETR exports: every norm fused at opset 17, tract agrees in-process
/// and onnxruntime through scripts/ort_compare.py.
#[test]
fn opset_12_detr_exports_fuse_every_norm_and_both_runtimes_agree() {
    let py = python();
    assert!(
        py.is_some() || std::env::var_os("DETRC_REQUIRE_ORT").is_none(),
        "DETRC_REQUIRE_ORT is set but .venv is missing"
    );
    let dir = tmpdir();
    let mut seen = 0;
    for f in fixtures() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("_op12_") {
            continue;
        }
        seen += 1;
        let twin = fixture(&name.replace("_op12_", "_op17_"));
        let c = compile(&f);
        let bytes = encode(&c.model);
        assert_same_outputs(&std::fs::read(&f).unwrap(), &bytes, 1e-4);
        let g = import(c);
        assert_eq!(g.opset(), 17, "{name}");
        assert_eq!(op_count(&g, "ReduceMean"), 0, "{name}");
        let want = op_count(&import(compile(&twin)), "LayerNormalization");
        assert_eq!(
            op_count(&g, "LayerNormalization"),
            want,
            "{name}: as many as at op17"
        );
        if let Some(py) = &py {
            let out = dir.path().join(&name);
            std::fs::write(&out, &bytes).unwrap();
            assert_ort_agrees(py, &f, &out, &name);
        }
    }
    assert_eq!(seen, 4, "detr_tiny and detr_tiny2 at batch 1 and 2");
}

/// Every opset-16 family export: no more ReduceMean left than its opset-17 twin's compiled
/// model has, and onnxruntime computes the same outputs as from the original.
#[test]
fn opset_16_family_exports_keep_no_more_reducemean_than_opset_17() {
    let py = python();
    assert!(
        py.is_some() || std::env::var_os("DETRC_REQUIRE_ORT").is_none(),
        "DETRC_REQUIRE_ORT is set but .venv is missing"
    );
    let fam = root().join("fixtures/family");
    let dir = tmpdir();
    let mut names: Vec<String> = std::fs::read_dir(&fam)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_op16_b1.onnx"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    let mut failures = vec![];
    for name in names {
        let f = fam.join(&name);
        let c16 = compile(&f);
        let fused = c16
            .reports
            .iter()
            .any(|r| r.pass == "fuse-layernorm" && r.status == "changed");
        let bytes = encode(&c16.model);
        let g16 = import(c16);
        let g17 = import(compile(&fam.join(name.replace("_op16_", "_op17_"))));
        let (m16, m17) = (op_count(&g16, "ReduceMean"), op_count(&g17, "ReduceMean"));
        eprintln!(
            "{name}: ReduceMean {m16} (op17 twin {m17}), LayerNormalization {} ({}), nodes {} ({})",
            op_count(&g16, "LayerNormalization"),
            op_count(&g17, "LayerNormalization"),
            g16.num_ops(),
            g17.num_ops()
        );
        if !fused || m16 > m17 || g16.opset() != 17 {
            failures.push(format!(
                "{name}: fused {fused}, ReduceMean {m16} > {m17}, opset {}",
                g16.opset()
            ));
        }
        if let Some(py) = &py {
            let out = dir.path().join(&name);
            std::fs::write(&out, &bytes).unwrap();
            let o = std::process::Command::new(py)
                .arg(root().join("scripts/family_compare.py"))
                .arg(&f)
                .arg(&out)
                .args(["--atol", "1e-4", "--batch", "1"])
                .output()
                .unwrap();
            if !o.status.success() {
                failures.push(format!(
                    "{name}: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
