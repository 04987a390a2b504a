//! Importing a model with some inputs' shapes fixed (`import_file_with_shapes`): symbolic dims
//! take the given values everywhere they appear, including Scan bodies; contradictions are
//! errors that name the input.

use hlstm_frontends::onnx::import_file_with_shapes;
use std::path::PathBuf;

fn digits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/digits-hlstm.onnx")
}

#[test]
fn an_open_batch_becomes_static_in_every_value() {
    let shapes = vec![("X".to_string(), vec![8, 5, 8])];
    let g = import_file_with_shapes(&digits(), &shapes).expect("imports");
    let (_, out) = &g.outputs[0];
    assert_eq!(g.value_type(*out).concrete(), Some(vec![5, 10]));
}

#[test]
fn contradictions_are_errors() {
    for (shapes, want) in [
        (vec![("X".to_string(), vec![9, 5, 8])], "has 8 in dim 0"),
        (vec![("X".to_string(), vec![8, 5])], "rank"),
        (vec![("Y".to_string(), vec![8, 5, 8])], "no input named 'Y'"),
    ] {
        let e = import_file_with_shapes(&digits(), &shapes)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}
