//! Single ops: shape inference where exporters' forms differ from the spec's full form, and the
//! reference semantics of activations on special values.

use hlstm_ir::shape::infer_in;
use hlstm_ir::text::parse;
use hlstm_ir::{Op, Value};

/// `Slice` without its optional `steps` operand (torch's dynamo exporter, tf2onnx,
/// paddle2onnx and hlstmc's own export leave it out): the sliced axis gets its length and the
/// others keep theirs, symbolic ones included.
#[test]
fn slice_without_steps_keeps_every_dim() {
    let g = parse(
        r#"
graph (%X: f32[N,256]) -> (Y = %X) {
  %st = const i64[1] [64]
  %en = const i64[1] [128]
  %ax = const i64[1] [-1]
}
"#,
    )
    .unwrap();
    let value = |name: &str| {
        let node = g
            .nodes
            .node_indices()
            .find(|&n| g.nodes[n].name == name)
            .unwrap();
        Some(Value { node, slot: 0 })
    };
    let (x, st, en, ax) = (value("X"), value("st"), value("en"), value("ax"));
    for operands in [vec![x, st, en, ax], vec![x, st, en, ax, None]] {
        let ty = infer_in(&g, &Op::Slice, &operands).unwrap();
        assert_eq!(ty[0].to_string(), "f32[N,64]", "operands {operands:?}");
    }
    // Without axes either, the leading axes are sliced.
    let ty = infer_in(&g, &Op::Slice, &[x, st, en, None, None]).unwrap();
    assert_eq!(ty[0].to_string(), "f32[?,256]");
}

/// Every activation passes NaN through, as ONNX Runtime and the JIT do; Relu used to turn it
/// into 0 in the reference interpreter (issue 16, item 2).
#[test]
fn activations_propagate_nan() {
    use hlstm_ir::Act;
    for act in [
        Act::Relu,
        Act::Sigmoid,
        Act::Tanh,
        Act::Exp,
        Act::Neg,
        Act::LeakyRelu { alpha: 0.1 },
        Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
    ] {
        assert!(act.apply(f32::NAN).is_nan(), "{act:?}");
    }
    assert_eq!(Act::Relu.apply(-1.0), 0.0);
    assert_eq!(Act::Relu.apply(2.5), 2.5);
    assert_eq!(Act::Relu.apply(f32::INFINITY), f32::INFINITY);
}
