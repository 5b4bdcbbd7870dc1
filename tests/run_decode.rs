//! `detrc run` decodes each DETR-family model the way it was trained, checked against an
//! independent implementation (scripts/ref_detect.py: onnxruntime + numpy + PIL) on
//! transformers exports (DETR: softmax; Conditional DETR, RT-DETR: sigmoid) and a deploy-style
//! graph that decodes itself (fixtures/decode, made by scripts/make_decode_fixtures.py), before
//! and after `detrc compile`; plus the automatic choice and its refusals.

mod common;

use std::path::Path;

use common::run::{assert_fails_with, compare, detrc, ort_python, read_dets, reference, stderr};
use common::M;
use detrc::run::decode::{detect, Decode};
use detrc::run::Detection;

const IMAGES: &str = "examples/images";

/// `detrc run MODEL --images examples/images --threshold 0 EXTRA...`; returns the detections
/// and the `--json` summary.
fn run(model: &str, extra: &[&str], out: &Path) -> (Vec<Detection>, serde_json::Value) {
    let mut args = vec![
        "run",
        model,
        "--images",
        IMAGES,
        "--threshold",
        "0.0",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = detrc(&args);
    assert!(o.status.success(), "detrc run {model}: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (read_dets(&out.join("detections.json")), j)
}

/// Runs `model` with the automatic decode, checks it chose `decode`, the same with
/// `--decode`, and compares both with the reference.
fn check(model: &str, decode: &str, per_image: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (auto, j) = run(model, &[], &dir.path().join("auto"));
    assert_eq!(j["decode"], decode, "{model}: automatic decode");
    assert_eq!(
        auto.len(),
        3 * per_image,
        "{model}: detections at threshold 0"
    );
    let (explicit, _) = run(model, &["--decode", decode], &dir.path().join("explicit"));
    assert_eq!(auto, explicit);
    let Some(py) = ort_python() else { return };
    let want = reference(
        &py,
        model,
        &["--images", IMAGES, "--threshold", "0.0", "--decode", decode],
        &dir.path().join("ref.json"),
    );
    compare(&auto, &want);
}

/// `detrc compile` of a fixture into `dir`.
fn compiled(model: &str, dir: &Path) -> String {
    let name = Path::new(model).file_name().unwrap().to_str().unwrap();
    let out = dir.join(name.replace(".onnx", ".compiled.onnx"));
    let o = detrc(&["compile", model, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "detrc compile {model}: {}", stderr(&o));
    out.to_str().unwrap().to_string()
}

#[test]
fn transformers_detr_is_softmax() {
    // 10 queries, one detection each
    check("fixtures/decode/tf_detr.onnx", "softmax", 10);
}

#[test]
fn transformers_conditional_detr_is_sigmoid() {
    // top-k with k = 10 queries over 10 x 6 (query, class) pairs
    check("fixtures/decode/tf_conditional.onnx", "sigmoid", 10);
}

#[test]
fn transformers_rtdetr_is_sigmoid() {
    check("fixtures/decode/tf_rtdetr.onnx", "sigmoid", 12);
}

#[test]
fn deploy_graph_decodes_itself_in_pixels() {
    // top-k 8 inside the graph; [0, 1] inputs; orig_target_sizes = [w, h] of each image
    check("fixtures/decode/deploy_rtdetr.onnx", "graph", 8);
}

#[test]
fn yolos_and_table_transformer_are_softmax() {
    // both heads are DETR's: a no-object class and an MLP box head ending in Sigmoid(Linear)
    check("fixtures/decode/tf_yolos.onnx", "softmax", 10);
    check("fixtures/decode/tf_table.onnx", "softmax", 10);
}

#[test]
fn lwdetr_rfdetr_and_deimv2_are_sigmoid() {
    // transformers exports (RF-DETR's through the dynamo exporter): two-stage query
    // selection (TopK) and refined reference points
    for model in [
        "fixtures/decode/tf_lwdetr.onnx",
        "fixtures/decode/tf_rfdetr.onnx",
        "fixtures/decode/tf_deimv2.onnx",
    ] {
        check(model, "sigmoid", 10);
    }
}

#[test]
fn rfdetr_own_export_dets_and_labels_are_sigmoid() {
    // RF-DETR's export(): dets [1, 10, 4] first, labels [1, 10, 5] logits second
    check("fixtures/decode/rfdetr_nano.onnx", "sigmoid", 10);
}

#[test]
fn compiled_new_families_decode_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (model, decode) in [
        ("fixtures/decode/tf_yolos.onnx", "softmax"),
        ("fixtures/decode/tf_table.onnx", "softmax"),
        ("fixtures/decode/tf_lwdetr.onnx", "sigmoid"),
        ("fixtures/decode/tf_rfdetr.onnx", "sigmoid"),
        ("fixtures/decode/tf_deimv2.onnx", "sigmoid"),
        ("fixtures/decode/rfdetr_nano.onnx", "sigmoid"),
    ] {
        let c = compiled(model, dir.path());
        check(&c, decode, 10);
    }
}

#[test]
fn compiled_models_decode_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (model, decode, n) in [
        ("fixtures/decode/tf_detr.onnx", "softmax", 10),
        ("fixtures/decode/tf_conditional.onnx", "sigmoid", 10),
        ("fixtures/decode/tf_rtdetr.onnx", "sigmoid", 12),
        ("fixtures/decode/deploy_rtdetr.onnx", "graph", 8),
    ] {
        let c = compiled(model, dir.path());
        check(&c, decode, n);
    }
}

#[test]
fn official_rtdetrv2_and_dfine_deploy_graphs_decode_themselves() {
    // The official export_onnx.py graphs (dynamic N, TopK inside, torch's boolean Equal in the
    // postprocessor's floor_divide), as exported and after `detrc compile`.
    let dir = tempfile::tempdir().unwrap();
    for model in [
        "fixtures/family/rtdetrv2_official.onnx",
        "fixtures/family/dfine_official_raw.onnx",
        "fixtures/family/dfine_official_simplified.onnx",
    ] {
        check(model, "graph", 20);
        let c = compiled(model, dir.path());
        check(&c, "graph", 20);
    }
}

#[test]
fn dynamic_batch_runs_batched_with_padding() {
    // 3 images in batches of 2 (the last padded) match batches of 1, and the reference at 2
    let model = "fixtures/decode/deploy_rtdetr.onnx";
    let dir = tempfile::tempdir().unwrap();
    let (one, j1) = run(model, &[], &dir.path().join("b1"));
    let (two, j2) = run(model, &["--batch", "2"], &dir.path().join("b2"));
    assert_eq!(
        (j1["batches"].as_u64(), j2["batches"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(j2["batch"], 2);
    compare(&two, &one);
    let Some(py) = ort_python() else { return };
    let want = reference(
        &py,
        model,
        &[
            "--images",
            IMAGES,
            "--threshold",
            "0",
            "--decode",
            "graph",
            "--batch",
            "2",
        ],
        &dir.path().join("ref.json"),
    );
    compare(&two, &want);
}

#[test]
fn top_k_and_normalize_follow_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let model = "fixtures/decode/tf_rtdetr.onnx";
    let (ours, j) = run(
        model,
        &["--top-k", "30", "--normalize", "none"],
        &dir.path().join("k30"),
    );
    assert_eq!(j["normalize"], "none");
    assert_eq!(ours.len(), 90);
    // graph: keep the first k the graph emits
    let (first3, _) = run(
        "fixtures/decode/deploy_rtdetr.onnx",
        &["--top-k", "3"],
        &dir.path().join("g3"),
    );
    assert_eq!(first3.len(), 9);
    let Some(py) = ort_python() else { return };
    let want = reference(
        &py,
        model,
        &[
            "--images",
            IMAGES,
            "--threshold",
            "0",
            "--decode",
            "sigmoid",
            "--top-k",
            "30",
            "--normalize",
            "none",
        ],
        &dir.path().join("ref.json"),
    );
    compare(&ours, &want);
}

#[test]
fn labels_apply_to_every_decode() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "zero\none\ntwo\nthree\nfour\nfive\n").unwrap();
    for (model, spec) in [
        ("fixtures/decode/tf_detr.onnx", labels.to_str().unwrap()),
        ("fixtures/decode/tf_rtdetr.onnx", "coco"),
        (
            "fixtures/decode/deploy_rtdetr.onnx",
            labels.to_str().unwrap(),
        ),
    ] {
        let out = dir.path().join(Path::new(model).file_stem().unwrap());
        let (dets, _) = run(model, &["--labels", spec], &out);
        assert!(!dets.is_empty());
        // one annotated image per input, with something drawn
        let a = image::open(out.join("synthetic_96x64.png"))
            .unwrap()
            .into_rgb8();
        let i = image::open(Path::new(IMAGES).join("synthetic_96x64.png"))
            .unwrap()
            .into_rgb8();
        assert_eq!(a.dimensions(), i.dimensions());
        assert_ne!(a, i, "{model}: nothing drawn");
    }
}

#[test]
fn decode_that_does_not_fit_names_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases = [
        (
            "fixtures/decode/tf_detr.onnx",
            "graph",
            "logits [1, 10, 7], pred_boxes [1, 10, 4]",
        ),
        (
            "fixtures/decode/deploy_rtdetr.onnx",
            "softmax",
            "labels [?, ?], boxes [?, ?, 4], scores [?, ?]",
        ),
        (
            "fixtures/decode/deploy_rtdetr.onnx",
            "sigmoid",
            "use --decode graph",
        ),
    ];
    for (model, decode, needle) in cases {
        let o = detrc(&[
            "run",
            model,
            "--images",
            IMAGES,
            "--decode",
            decode,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_fails_with(&o, &format!("--decode {decode} does not fit"));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(!out.join("detections.json").exists());
    }
    // bench checks the decode too
    let o = detrc(&[
        "bench",
        "fixtures/decode/tf_detr.onnx",
        "--decode",
        "graph",
        "--iters",
        "1",
    ]);
    assert_fails_with(&o, "--decode graph does not fit");
    // softmax has no top-k; k = 0 is nothing
    for (decode, k, needle) in [
        ("softmax", "3", "--top-k applies"),
        ("sigmoid", "0", "at least 1"),
    ] {
        let o = detrc(&[
            "run",
            "fixtures/decode/tf_detr.onnx",
            "--images",
            IMAGES,
            "--decode",
            decode,
            "--top-k",
            k,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_fails_with(&o, needle);
    }
    // a static batch is not changed by --batch
    let o = detrc(&[
        "run",
        "fixtures/decode/tf_detr.onnx",
        "--images",
        IMAGES,
        "--batch",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "static batch of 1");
}

/// A head-only model: `feat [1, Q, D]` -> logits `[1, Q, C]` and boxes `[1, Q, 4]`, the box
/// head built by `boxes`.
fn heads(classes: i64, boxes: impl FnOnce(M) -> M) -> M {
    let m = M::new(17)
        .input("feat", &[1, 5, 8])
        .rand("wc", &[8, classes], 1)
        .rand("bc", &[classes], 2)
        .rand("wb", &[8, 4], 3)
        .rand("bb", &[4], 4)
        .node("MatMul", &["feat", "wc"], &["lc"], vec![])
        .node("Add", &["lc", "bc"], &["logits"], vec![])
        .node("MatMul", &["feat", "wb"], &["lb"], vec![])
        .node("Add", &["lb", "bb"], &["pre"], vec![]);
    boxes(m).output("logits").output("pred_boxes")
}

#[test]
fn automatic_choice_reads_the_structure() {
    let plain = heads(7, |m| m.node("Sigmoid", &["pre"], &["pred_boxes"], vec![]));
    assert_eq!(detect(&plain.model()).unwrap(), Decode::Softmax);
    // reference points added before the Sigmoid (Conditional/DAB/Deformable/RT-DETR)
    let refined = heads(7, |m| {
        m.node("Add", &["pre", "ref_in"], &["z"], vec![])
            .node("Sigmoid", &["z"], &["pred_boxes"], vec![])
            .node("Identity", &["feat"], &["id"], vec![])
            .node(
                "ReduceMean",
                &["id"],
                &["ref_in"],
                vec![common::ints_attr("axes", &[2])],
            )
    });
    assert_eq!(detect(&refined.model()).unwrap(), Decode::Sigmoid);
    // inverse sigmoid anywhere upstream
    let inv = heads(7, |m| {
        m.node("Sigmoid", &["pre"], &["s"], vec![])
            .node("Log", &["s"], &["l"], vec![])
            .node("Sigmoid", &["l"], &["pred_boxes"], vec![])
    });
    assert_eq!(detect(&inv.model()).unwrap(), Decode::Sigmoid);
    // boxes not from a Sigmoid, nothing else to go by: refuse
    let other = heads(7, |m| m.node("Relu", &["pre"], &["pred_boxes"], vec![]));
    let e = detect(&other.model()).unwrap_err().0;
    assert!(e.contains("Relu"), "{e}");
    // DETR's structure with one column cannot be softmax
    let one = heads(1, |m| m.node("Sigmoid", &["pre"], &["pred_boxes"], vec![]));
    assert!(detect(&one.model()).unwrap_err().0.contains("1 column"));
}

#[test]
fn undecided_and_one_class_models_are_refused_with_the_flag_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let other = heads(3, |m| m.node("Relu", &["pre"], &["pred_boxes"], vec![]));
    let p = dir.path().join("other.onnx");
    std::fs::write(&p, common::encode(&other.model())).unwrap();
    // the head-only model takes features, not images: the input check comes first
    let o = detrc(&[
        "run",
        p.to_str().unwrap(),
        "--images",
        IMAGES,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "expected an image batch");
    // an image model with such heads: a 1x1 convolution and a flatten to [1, Q, 3]
    let conv = |classes: i64, box_op: &'static str| {
        M::new(17)
            .input("images", &[1, 3, 2, 2])
            .rand("wc", &[classes, 3, 1, 1], 1)
            .rand("wb", &[4, 3, 1, 1], 2)
            .i64("shape_c", &[3], &[1, classes, 4])
            .i64("shape_b", &[3], &[1, 4, 4])
            .node("Conv", &["images", "wc"], &["c"], vec![])
            .node("Reshape", &["c", "shape_c"], &["ct"], vec![])
            .node(
                "Transpose",
                &["ct"],
                &["logits"],
                vec![common::ints_attr("perm", &[0, 2, 1])],
            )
            .node("Conv", &["images", "wb"], &["b"], vec![])
            .node("Reshape", &["b", "shape_b"], &["bt"], vec![])
            .node(
                "Transpose",
                &["bt"],
                &["bq"],
                vec![common::ints_attr("perm", &[0, 2, 1])],
            )
            .node(box_op, &["bq"], &["pred_boxes"], vec![])
            .output("logits")
            .output("pred_boxes")
    };
    let p = dir.path().join("undecided.onnx");
    std::fs::write(&p, common::encode(&conv(3, "Relu").model())).unwrap();
    let o = detrc(&[
        "run",
        p.to_str().unwrap(),
        "--images",
        IMAGES,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "cannot tell how this model decodes");
    assert!(stderr(&o).contains("--decode sigmoid"), "{}", stderr(&o));
    assert!(!out.join("detections.json").exists());
    // with the flag it runs
    let o = detrc(&[
        "run",
        p.to_str().unwrap(),
        "--images",
        IMAGES,
        "--decode",
        "sigmoid",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // one class: softmax is refused by name, sigmoid runs
    let p = dir.path().join("one.onnx");
    std::fs::write(&p, common::encode(&conv(1, "Sigmoid").model())).unwrap();
    let o = detrc(&[
        "run",
        p.to_str().unwrap(),
        "--images",
        IMAGES,
        "--decode",
        "softmax",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "logits [1, 4, 1], pred_boxes [1, 4, 4]");
    assert!(stderr(&o).contains("one column"), "{}", stderr(&o));
}

/// The family fixtures (fixtures/family, scripts/make_family_fixtures.py), where present:
/// every transformers export decodes as its family was trained.
#[test]
fn family_fixtures_choose_their_trained_decode() {
    let manifest = common::root().join("fixtures/family/manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        eprintln!("SKIP: {} not present", manifest.display());
        return;
    };
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for f in m["fixtures"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let self_decoding = f["outputs"]
            .as_array()
            .is_some_and(|o| o.iter().any(|n| n == "labels"));
        let want = if self_decoding {
            Decode::Graph
        } else if ["detr", "table_transformer", "yolos"]
            .iter()
            .any(|fam| f["family"] == *fam)
        {
            // Trained with a softmax over the classes and a no-object class.
            Decode::Softmax
        } else {
            Decode::Sigmoid
        };
        let proto = detrc::load::load_proto(&common::root().join(file)).unwrap();
        let got = detect(&proto).unwrap_or_else(|e| panic!("{file}: {}", e.0));
        assert_eq!(got, want, "{file}");
        checked += 1;
    }
    assert!(checked > 0);
}
