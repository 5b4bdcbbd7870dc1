//! ONNX I/O: nothing is lost on load + save, external data round-trips, bad locations are
//! refused.

mod common;

use common::*;
use detrc::emit::ExternalData;
use prost::Message;

#[test]
fn protobuf_round_trip_is_byte_identical_for_every_fixture() {
    for f in fixtures() {
        let original = std::fs::read(&f).unwrap();
        let m = detrc::load::load_proto(&f).unwrap();
        let streamed = encode(&m);
        assert_eq!(streamed, original, "{} changed on load+save", f.display());
        // The streamed writer must equal prost's own encoding.
        assert_eq!(m.encode_to_vec(), original, "{}", f.display());
    }
}

#[test]
fn ir_round_trip_keeps_every_node_initializer_and_output() {
    for f in fixtures() {
        let original = detrc::load::load_proto(&f).unwrap();
        let g = detrc::ir::from_onnx::import(original.clone()).unwrap();
        g.validate().unwrap();
        let back = g.export();
        let (a, b) = (original.graph.unwrap(), back.graph.unwrap());
        assert_eq!(a.node, b.node, "{}: nodes differ", f.display());
        assert_eq!(a.initializer, b.initializer, "{}", f.display());
        assert_eq!(a.input, b.input, "{}", f.display());
        assert_eq!(a.output, b.output, "{}", f.display());
        let mut va: Vec<_> = a.value_info.iter().map(|v| v.encode_to_vec()).collect();
        let mut vb: Vec<_> = b.value_info.iter().map(|v| v.encode_to_vec()).collect();
        va.sort();
        vb.sort();
        assert_eq!(va, vb, "{}: value_info differs", f.display());
    }
}

#[test]
fn torch_exports_survive_the_ir_byte_for_byte() {
    // Exports from torch list nodes in topological order and value_info in node order, so
    // the IR writes them back identically.
    let f = fixture("detr_tiny_op17_b1.onnx");
    let g = detrc::driver::load_graph(&f).unwrap().0;
    assert_eq!(encode(&g.export()), std::fs::read(&f).unwrap());
}

#[test]
fn fixtures_pass_the_python_onnx_checker_after_a_round_trip() {
    let Some(py) = python_or_skip() else { return };
    let dir = tmpdir();
    let f = fixture("detr_tiny_op12_b2.onnx");
    let g = detrc::driver::load_graph(&f).unwrap().0;
    let out = dir.path().join("rt.onnx");
    detrc::emit::save(&g.export(), &out, ExternalData::Never).unwrap();
    let st = std::process::Command::new(py)
        .arg("-c")
        .arg("import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn external_data_is_written_read_back_and_equal() {
    let dir = tmpdir();
    let f = fixture("detr_tiny_op17_b1.onnx");
    let m = detrc::load::load_proto(&f).unwrap();
    let out = dir.path().join("ext.onnx");
    detrc::emit::save(&m, &out, ExternalData::Always).unwrap();
    assert!(dir.path().join("ext.onnx.data").exists());
    let inline = std::fs::metadata(&f).unwrap().len();
    assert!(
        std::fs::metadata(&out).unwrap().len() < inline / 2,
        "weights left inline"
    );
    let back = detrc::load::load(&out).unwrap();
    assert!(back.had_external_data);
    let (a, b) = (m.graph.unwrap(), back.proto.graph.unwrap());
    for (x, y) in a.initializer.iter().zip(&b.initializer) {
        assert_eq!(x.raw_data, y.raw_data, "{:?}", x.name);
        assert!(y.external_data.is_empty());
    }
    assert_eq!(a.node, b.node);
    // And the external model computes the same thing.
    let back_proto = detrc::load::load(&out).unwrap().proto;
    assert_same_outputs(&std::fs::read(&f).unwrap(), &encode(&back_proto), 0.0);
}

#[test]
fn external_locations_outside_the_model_folder_are_refused() {
    for bad in ["../../x", "/etc/passwd", "a/../../b", ""] {
        let e = detrc::load::external::check_location("w", bad).unwrap_err();
        assert!(e.to_string().contains("location"), "{bad}: {e}");
    }
    assert!(detrc::load::external::check_location("w", "model.onnx.data").is_ok());
    assert!(detrc::load::external::check_location("w", "sub/w.bin").is_ok());
}

#[test]
fn decode_takes_weights_from_the_map_without_copying() {
    let f = fixture("detr_tiny_op17_b1.onnx");
    let bytes = detrc::load::map_file(&f).unwrap();
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let m = detrc::load::decode(&f, bytes.clone()).unwrap();
    let g = m.graph.unwrap();
    let big = g
        .initializer
        .iter()
        .filter_map(|t| t.raw_data.as_ref())
        .max_by_key(|r| r.len())
        .unwrap();
    assert!(
        range.contains(&(big.as_ptr() as usize)),
        "raw_data was copied"
    );
}

#[test]
fn models_over_the_protobuf_limit_switch_to_external_data_automatically() {
    // Same code path as a > 2 GiB model, with the limit lowered to 1 MiB.
    let dir = tmpdir();
    let f = fixture("detr_tiny_op17_b1.onnx");
    let m = detrc::load::load_proto(&f).unwrap();
    let out = dir.path().join("big.onnx");
    detrc::emit::save_with_limit(&m, &out, ExternalData::Auto, 1 << 20).unwrap();
    assert!(dir.path().join("big.onnx.data").exists());
    let back = detrc::load::load(&out).unwrap();
    assert!(back.had_external_data);
    assert_same_outputs(&std::fs::read(&f).unwrap(), &encode(&back.proto), 0.0);
    // Below the limit nothing moves.
    let small = dir.path().join("small.onnx");
    detrc::emit::save(&m, &small, ExternalData::Auto).unwrap();
    assert!(!dir.path().join("small.onnx.data").exists());
}

#[test]
fn decoded_weights_know_their_place_in_the_model_file() {
    // What lets onnxruntime map a model's weights from its file instead of being handed a
    // copy: each raw initializer decoded from a mapped file points into that file.
    let f = fixture("detr_tiny_op17_b1.onnx");
    let file = std::fs::read(&f).unwrap();
    let m = detrc::load::load(&f).unwrap().proto;
    let mut checked = 0;
    for t in &m.graph.as_ref().unwrap().initializer {
        let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty()) else {
            continue;
        };
        let (path, offset) = detrc::load::mapped_origin(raw).expect("inside the map");
        assert_eq!(path, std::fs::canonicalize(&f).unwrap());
        let at = offset as usize;
        assert_eq!(&file[at..at + raw.len()], &raw[..], "{:?}", t.name);
        checked += 1;
    }
    assert!(checked > 10, "{checked}");
    // Bytes a pass computed lie in no file.
    assert!(detrc::load::mapped_origin(&[0u8; 64]).is_none());
    drop(m);
}
