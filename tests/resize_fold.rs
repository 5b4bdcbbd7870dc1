//! Constant Resize folds (nearest, linear and cubic, with and without antialias, the coordinate
//! modes the family exports use), checked against onnxruntime running the unfolded Resize.

mod common;

use common::*;
use detrc::load::proto::AttributeProto;
use detrc::passes::fold_constants::FoldConstants;
use detrc::reference::compare::{compare, Tolerance};
use detrc::reference::{Model, Purpose, Reference};

/// `y = Resize(c) + x` with `c` a seeded constant `[1, 2, h, w]` resized to `[1, 2, oh, ow]` by
/// `sizes`; `x` keeps the model from being all-constant.
fn model(
    mode: &str,
    ctm: &str,
    antialias: i64,
    from: [i64; 2],
    to: [i64; 2],
    extra: Vec<AttributeProto>,
) -> M {
    let mut at = vec![
        str_attr("mode", mode),
        str_attr("coordinate_transformation_mode", ctm),
    ];
    if antialias != 0 {
        at.push(int_attr("antialias", antialias));
    }
    at.extend(extra);
    M::new(18)
        .input("x", &[1])
        .rand("c", &[1, 2, from[0], from[1]], 7)
        .i64("sizes", &[4], &[1, 2, to[0], to[1]])
        .node("Resize", &["c", "", "", "sizes"], &["r"], at)
        .node("Add", &["r", "x"], &["y"], vec![])
        .output("y")
}

#[test]
fn constant_resizes_fold_to_what_onnxruntime_computes() {
    let Some(rt) = ort_runtime() else { return };
    let mut cases = 0;
    for mode in ["nearest", "linear", "cubic"] {
        for ctm in [
            "half_pixel",
            "pytorch_half_pixel",
            "align_corners",
            "asymmetric",
            "half_pixel_symmetric",
        ] {
            for antialias in [0, 1] {
                if mode == "nearest" && antialias == 1 {
                    continue;
                }
                for (from, to) in [
                    ([5, 7], [8, 12]),
                    ([9, 11], [4, 3]),
                    ([6, 6], [6, 6]),
                    ([4, 5], [1, 9]),
                ] {
                    let mut extra = vec![];
                    if mode == "cubic" && to[0] < from[0] && antialias == 0 {
                        // transformers' YOLOS/ViT interpolation exports cubic with A = -0.75;
                        // exclude_outside renormalises at the border.
                        extra.push(int_attr("exclude_outside", 1));
                    }
                    let m = model(mode, ctm, antialias, from, to, extra);
                    let label = format!("{mode} {ctm} antialias={antialias} {from:?}->{to:?}");
                    let mut g = m.graph();
                    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
                    apply(&mut g, &FoldConstants);
                    // onnxruntime and the ONNX definition disagree here: not folded.
                    let ambiguous = (antialias == 1 || mode == "cubic")
                        && ctm == "pytorch_half_pixel"
                        && to[0] == 1;
                    assert_eq!(
                        op_count(&g, "Resize"),
                        ambiguous as usize,
                        "{label}: folded?"
                    );
                    let folded = encode(&g.export());
                    let original = encode(&m.model());
                    let load =
                        |b: &[u8]| Reference::load(Model::Bytes(b), &rt, Purpose::Verify, None);
                    let (ra, rb) = (
                        load(&original).expect("original"),
                        load(&folded).expect("folded"),
                    );
                    let inputs = ra.random_inputs(0);
                    let (oa, ob) = (ra.run(&inputs).unwrap(), rb.run(&inputs).unwrap());
                    for d in compare(
                        &oa,
                        &ob,
                        Tolerance {
                            atol: 1e-5,
                            rtol: 1e-5,
                        },
                    ) {
                        assert!(d.ok, "{label}: max |diff| {}", d.max_abs);
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 100);
}

#[test]
fn resize_modes_without_a_definition_stay() {
    let m = model("linear", "tf_crop_and_resize", 0, [5, 7], [8, 12], vec![]);
    let mut g = m.graph();
    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
    apply(&mut g, &FoldConstants);
    assert_eq!(op_count(&g, "Resize"), 1);
}

/// YOLOS resizes the position embeddings of every layer (bicubic, A = -0.75) from the
/// configured grid to the input's: the result is larger than the constant it consumes by more
/// than the fold budget, and still folds (Resize resamples, per the registry), while a Tile
/// that grows a constant as much stays, held to the budget.
#[test]
fn constant_resize_folds_beyond_the_budget_and_tile_does_not() {
    let a = AttributeProto {
        name: Some("cubic_coeff_a".into()),
        r#type: Some(detrc::load::proto::attr_type::FLOAT),
        f: Some(-0.75),
        ..Default::default()
    };
    // [1, 2, 24, 40] -> [1, 2, 200, 700]: 7.7 KB in, 1.1 MB out, over the 1 MiB budget.
    let m = model("cubic", "half_pixel", 0, [24, 40], [200, 700], vec![a]);
    let mut g = m.graph();
    apply(&mut g, &detrc::passes::infer_shapes::InferShapes);
    let before = g.dump();
    let o = apply(&mut g, &FoldConstants);
    assert_eq!(op_count(&g, "Resize"), 0, "the Resize folded");
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(
            "unit__resize_fold_beyond_budget",
            format!("--- before\n{before}--- after ({o:?})\n{}", g.dump())
        );
    });
    assert_same_outputs(&encode(&m.model()), &encode(&g.export()), 1e-5);

    // The same growth by repeating a constant is refused.
    let m2 = M::new(18)
        .input("x", &[1])
        .rand("c", &[1, 2, 24, 40], 7)
        .i64("reps", &[4], &[1, 1, 9, 18])
        .node("Tile", &["c", "reps"], &["t"], vec![])
        .node("Add", &["t", "x"], &["y"], vec![])
        .output("y");
    let mut g2 = m2.graph();
    apply(&mut g2, &detrc::passes::infer_shapes::InferShapes);
    let o2 = apply(&mut g2, &FoldConstants);
    assert_eq!(op_count(&g2, "Tile"), 1, "{o2:?}");
}
