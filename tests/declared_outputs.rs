//! An output whose declared type contradicts the one hlstmc infers: a warning naming both when
//! only known dims differ (ONNX Runtime runs such a model and warns), printed by the CLI on
//! standard error and returned by `Model::warnings`; an error naming the output, both types
//! and the node that makes it when the element type or the rank differs.

mod common;

use common::{hlstmc, model, node, stderr};
use hlstm_frontends::onnx::export::value_info_proto;
use hlstmc::Model;
use hlstmc::ir::Dim;
use onnx_protobuf::ValueInfoProto;
use protobuf::Message;

fn vi(name: &str, elem: i32, dims: &[Dim]) -> ValueInfoProto {
    value_info_proto(name, elem, Some(dims))
}

/// X [1,B,16] -> Relu (node 'relu1') -> Y, with Y declared as `declared`.
fn relu_model(declared: ValueInfoProto) -> Vec<u8> {
    let b = Dim::Sym("B".into());
    let m = model(
        17,
        vec![vi("X", 1, &[Dim::Known(1), b, Dim::Known(16)])],
        vec![declared],
        vec![],
        vec![node("Relu", "relu1", &["X"], &["Y"])],
    );
    m.write_to_bytes().expect("serializes")
}

fn b() -> Dim {
    Dim::Sym("B".into())
}

#[test]
fn other_known_dims_warn_in_the_library_and_on_the_cli() {
    let bytes = relu_model(vi("Y", 1, &[Dim::Known(2), b(), Dim::Known(16)]));
    let m = Model::from_bytes(&bytes, None).expect("imports: a warning is no error");
    let want = "output 'Y' is declared f32[2,B,16] but computes f32[1,B,16]";
    assert_eq!(m.warnings().len(), 1, "{:?}", m.warnings());
    assert!(m.warnings()[0].starts_with(want), "{:?}", m.warnings());
    assert!(m.warnings()[0].contains("relu1"), "{:?}", m.warnings());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, &bytes).expect("writes");
    let o = hlstmc(&["inspect", &path.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: ") && l.contains(want)),
        "stderr: {err}"
    );

    // A declaration that agrees, or leaves dims open, is silent.
    for declared in [
        vi("Y", 1, &[Dim::Known(1), b(), Dim::Known(16)]),
        vi(
            "Y",
            1,
            &[Dim::Sym("T".into()), Dim::Unknown, Dim::Known(16)],
        ),
    ] {
        let m = Model::from_bytes(&relu_model(declared), None).expect("imports");
        assert!(m.warnings().is_empty(), "{:?}", m.warnings());
    }
    let p = dir.path().join("ok.onnx");
    std::fs::write(
        &p,
        relu_model(vi("Y", 1, &[Dim::Known(1), b(), Dim::Known(16)])),
    )
    .expect("writes");
    let o = hlstmc(&["inspect", &p.display().to_string()]);
    assert!(
        o.status.success() && !stderr(&o).contains("warning"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn another_element_type_or_rank_is_an_error_naming_output_types_and_node() {
    let cases = [
        // int64 output of a float computation
        (
            vi("Y", 7, &[Dim::Known(1), b(), Dim::Known(16)]),
            vec![
                "'Y'",
                "i64[1,B,16]",
                "f32[1,B,16]",
                "relu1",
                "element types differ",
            ],
        ),
        (
            vi("Y", 1, &[b(), Dim::Known(16)]),
            vec![
                "'Y'",
                "f32[B,16]",
                "f32[1,B,16]",
                "relu1",
                "ranks differ (2 and 3)",
            ],
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (declared, parts) in cases {
        let bytes = relu_model(declared);
        let e = Model::from_bytes(&bytes, None)
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        for part in &parts {
            assert!(e.contains(part), "'{part}' missing from: {e}");
        }
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, &bytes).expect("writes");
        let o = hlstmc(&["inspect", &path.display().to_string()]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(parts[4]), "{}", stderr(&o));
    }
}
