//! Per-opset forms of the ops whose signature changed: each older form imports and computes what
//! the ONNX specification says (expected values worked out by hand here).

mod common;
use common::*;
use hlstm_frontends::onnx::import_bytes;
use hlstm_ir::Tensor;
use onnx_protobuf::{AttributeProto, ModelProto};
use protobuf::Message;

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.ints = v.to_vec();
    a.type_ = protobuf::EnumOrUnknown::from_i32(7);
    a
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.f = v;
    a.type_ = protobuf::EnumOrUnknown::from_i32(1);
    a
}

fn run(m: &ModelProto, inputs: &[Tensor]) -> Vec<Tensor> {
    let g = import_bytes(&m.write_to_bytes().expect("serializes"), None).expect("imports");
    hlstm_ir::interp::run(&g, inputs).expect("runs")
}

fn f32s(t: &Tensor) -> (Vec<usize>, Vec<f32>) {
    (
        t.shape().to_vec(),
        t.as_f32().expect("f32").iter().copied().collect(),
    )
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).expect("shape")
}

#[test]
fn split_attribute_before_13_and_num_outputs_from_18() {
    let mut n = node("Split", "s", &["X"], &["A", "B"]);
    n.attribute.push(ints_attr("split", &[1, 2]));
    let m = model(
        11,
        vec![value_info("X", 1, &[3])],
        vec![value_info("A", 1, &[1]), value_info("B", 1, &[2])],
        vec![],
        vec![n],
    );
    let out = run(&m, &[iota(&[3])]);
    assert_eq!(f32s(&out[0]), (vec![1], vec![0.0]));
    assert_eq!(f32s(&out[1]), (vec![2], vec![1.0, 2.0]));

    let mut n = node("Split", "s", &["X"], &["A", "B", "C"]);
    n.attribute.push(int_attr("num_outputs", 3));
    let outs = vec![
        value_info("A", 1, &[3]),
        value_info("B", 1, &[3]),
        value_info("C", 1, &[1]),
    ];
    let m = model(18, vec![value_info("X", 1, &[7])], outs, vec![], vec![n]);
    let out = run(&m, &[iota(&[7])]);
    assert_eq!(
        out.iter().map(|t| t.shape()[0]).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(f32s(&out[2]).1, vec![6.0]);
}

#[test]
fn slice_attributes_before_10() {
    let mut n = node("Slice", "sl", &["X"], &["Y"]);
    n.attribute.push(ints_attr("starts", &[1, -2]));
    n.attribute.push(ints_attr("ends", &[2, 1000]));
    n.attribute.push(ints_attr("axes", &[0, 1]));
    let m = model(
        9,
        vec![value_info("X", 1, &[3, 4])],
        vec![value_info("Y", 1, &[1, 2])],
        vec![],
        vec![n],
    );
    let out = run(&m, &[iota(&[3, 4])]);
    assert_eq!(f32s(&out[0]), (vec![1, 2], vec![6.0, 7.0]));
}

#[test]
fn squeeze_and_unsqueeze_axes_attribute_before_13() {
    let mut u = node("Unsqueeze", "u", &["X"], &["U"]);
    u.attribute.push(ints_attr("axes", &[0, 3]));
    let mut s = node("Squeeze", "s", &["U"], &["Y"]);
    s.attribute.push(ints_attr("axes", &[3]));
    let m = model(
        11,
        vec![value_info("X", 1, &[2, 3])],
        vec![
            value_info("U", 1, &[1, 2, 3, 1]),
            value_info("Y", 1, &[1, 2, 3]),
        ],
        vec![],
        vec![u, s],
    );
    let out = run(&m, &[iota(&[2, 3])]);
    assert_eq!(out[0].shape(), &[1, 2, 3, 1]);
    assert_eq!(out[1].shape(), &[1, 2, 3]);
}

#[test]
fn clip_attributes_before_11() {
    let mut n = node("Clip", "c", &["X"], &["Y"]);
    n.attribute.push(float_attr("min", 1.0));
    n.attribute.push(float_attr("max", 3.5));
    let m = model(
        7,
        vec![value_info("X", 1, &[5])],
        vec![value_info("Y", 1, &[5])],
        vec![],
        vec![n],
    );
    let out = run(&m, &[iota(&[5])]);
    assert_eq!(f32s(&out[0]).1, vec![1.0, 1.0, 2.0, 3.0, 3.5]);
}

#[test]
fn softmax_before_13_normalizes_the_flattened_tail() {
    // Opset 11, axis 1 on [2, 2, 2]: each row of the [2, 4] coercion sums to 1.
    let mut n = node("Softmax", "sm", &["X"], &["Y"]);
    n.attribute.push(int_attr("axis", 1));
    let m = model(
        11,
        vec![value_info("X", 1, &[2, 2, 2])],
        vec![value_info("Y", 1, &[2, 2, 2])],
        vec![],
        vec![n.clone()],
    );
    let (_, y) = f32s(&run(&m, &[iota(&[2, 2, 2])])[0]);
    let row0: f32 = y[..4].iter().sum();
    assert!((row0 - 1.0).abs() < 1e-6, "row sums to {row0}");
    let e: Vec<f32> = (0..4).map(|i| (i as f32 - 3.0).exp()).collect();
    let s: f32 = e.iter().sum();
    for i in 0..4 {
        assert!((y[i] - e[i] / s).abs() < 1e-6);
    }
    // Opset 13: normalized along axis 1 only.
    let m = model(
        13,
        vec![value_info("X", 1, &[2, 2, 2])],
        vec![value_info("Y", 1, &[2, 2, 2])],
        vec![],
        vec![n],
    );
    let (_, y) = f32s(&run(&m, &[iota(&[2, 2, 2])])[0]);
    assert!((y[0] + y[2] - 1.0).abs() < 1e-6);
}

#[test]
fn reshape_allowzero() {
    let shape = {
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = "S".into();
        t.dims = vec![2];
        t.data_type = 7;
        t.int64_data = vec![0, 6];
        t
    };
    let n = node("Reshape", "r", &["X", "S"], &["Y"]);
    let m = model(
        14,
        vec![value_info("X", 1, &[2, 3])],
        vec![value_info("Y", 1, &[2, 6])],
        vec![shape.clone()],
        vec![n.clone()],
    );
    // allowzero = 0: 0 copies the input dim, so [2, 3] -> [2, 6] fails (12 != 6) at import.
    let err = import_bytes(&m.write_to_bytes().expect("serializes"), None)
        .expect_err("2x6 from 6 elements");
    assert!(err.to_string().contains("node 'r' (Reshape)"), "{err}");
    let mut n2 = n;
    n2.attribute.push(int_attr("allowzero", 1));
    // allowzero = 1 on a [0, 3] input: the 0 is a real zero, giving [0, 6].
    let m = model(
        14,
        vec![value_info("X", 1, &[0, 3])],
        vec![value_info("Y", 1, &[0, 6])],
        vec![shape],
        vec![n2],
    );
    let out = run(&m, &[Tensor::from_f32(&[0, 3], vec![]).expect("empty")]);
    assert_eq!(out[0].shape(), &[0, 6]);
}
