//! Round trips of the `.hir` text form: every op and activation, recurrence bodies, odd names
//! and types, weights by hash with the side file, parse errors, and a no-panic fuzz test.

use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::text::{
    ParseError, WeightStore, parse, parse_with_weights, print, print_with_weights, side_file_path,
};
use hlstm_ir::verify::verify;
use hlstm_ir::{
    Act, BinOp, DType, Dim, Graph, Node, Op, Port, Recurrence, Tensor, TensorType, Value, ValueInfo,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

// ---------------------------------------------------------------- helpers

fn f32t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape, data.to_vec()).unwrap()
}

fn i64t(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::from_i64(shape, data.to_vec()).unwrap()
}

fn seq(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
        .collect()
}

/// Adds a node whose result types come from shape inference; results are named
/// `name`, `name.1`, `name.2`, ...
fn add(g: &mut Graph, name: &str, op: Op, operands: &[Option<Value>]) -> Vec<Value> {
    let tys: Vec<Option<(TensorType, Option<Tensor>)>> = operands
        .iter()
        .map(|o| {
            o.map(|v| {
                (
                    g.value_type(v).clone(),
                    g.constant(v).map(|c| (*c.value).clone()),
                )
            })
        })
        .collect();
    let args: Vec<Option<Operand>> = tys
        .iter()
        .map(|t| {
            t.as_ref().map(|(ty, val)| Operand {
                ty,
                value: val.as_ref(),
            })
        })
        .collect();
    let types = infer(&op, &args).unwrap_or_else(|e| panic!("inference for {name}: {e}"));
    let results = types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| ValueInfo {
            name: if i == 0 {
                name.to_string()
            } else {
                format!("{name}.{i}")
            },
            ty,
        })
        .collect();
    let n = g.add_node(&format!("node/{name}"), op, operands, results);
    (0..g.nodes[n].results.len())
        .map(|slot| Value { node: n, slot })
        .collect()
}

fn add1(g: &mut Graph, name: &str, op: Op, operands: &[Value]) -> Value {
    let ops: Vec<Option<Value>> = operands.iter().map(|v| Some(*v)).collect();
    add(g, name, op, &ops)[0]
}

#[track_caller]
fn roundtrip(g: &Graph) -> String {
    let (text, store) = print_with_weights(g);
    assert_eq!(print(g), text);
    let back = parse_with_weights(&text, &store).unwrap_or_else(|e| panic!("{e}\n{text}"));
    if store.is_empty() {
        assert!(parse(&text).unwrap() == back);
    }
    assert!(
        back == *g,
        "round trip differs:\n{text}\nreprinted:\n{}",
        print(&back)
    );
    assert_eq!(print(&back), text);
    text
}

fn all_acts() -> Vec<Act> {
    vec![
        Act::Sigmoid,
        Act::Tanh,
        Act::Relu,
        Act::Exp,
        Act::Neg,
        Act::LeakyRelu { alpha: 0.01 },
        Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Act::Affine {
            alpha: 1.5,
            beta: -0.25,
        },
        Act::ThresholdedRelu { alpha: 1.0 },
        Act::ScaledTanh {
            alpha: 1.7159,
            beta: 0.6666667,
        },
        Act::Elu { alpha: 1.0 },
        Act::Softsign,
        Act::Softplus,
        Act::NotZero,
        Act::IsZero,
        Act::IsPositive,
        Act::IsNonNegative,
    ]
}

/// Exhaustive on purpose: a new Act variant breaks the build here until the tests cover it.
fn act_id(a: &Act) -> usize {
    match a {
        Act::Sigmoid => 0,
        Act::Tanh => 1,
        Act::Relu => 2,
        Act::Exp => 3,
        Act::Neg => 4,
        Act::LeakyRelu { .. } => 5,
        Act::HardSigmoid { .. } => 6,
        Act::Affine { .. } => 7,
        Act::ThresholdedRelu { .. } => 8,
        Act::ScaledTanh { .. } => 9,
        Act::Elu { .. } => 10,
        Act::Softsign => 11,
        Act::Softplus => 12,
        Act::NotZero => 13,
        Act::IsZero => 14,
        Act::IsPositive => 15,
        Act::IsNonNegative => 16,
    }
}
const NUM_ACTS: usize = 17;

/// Exhaustive on purpose: a new Op variant breaks the build here until the tests cover it.
fn op_id(op: &Op) -> usize {
    match op {
        Op::Input => 0,
        Op::Const(_) => 1,
        Op::Identity => 2,
        Op::Unary(_) => 3,
        Op::Binary(_) => 4,
        Op::Clip => 5,
        Op::MatMul => 6,
        Op::Gemm { .. } => 7,
        Op::Softmax { .. } => 8,
        Op::LogSoftmax { .. } => 9,
        Op::Where => 10,
        Op::Concat { .. } => 11,
        Op::Split { .. } => 12,
        Op::Slice => 13,
        Op::Gather { .. } => 14,
        Op::Unsqueeze => 15,
        Op::Squeeze => 16,
        Op::Flatten { .. } => 17,
        Op::Reshape { .. } => 18,
        Op::Transpose { .. } => 19,
        Op::Expand => 20,
        Op::Shape { .. } => 21,
        Op::ConstantOfShape { .. } => 22,
        Op::Cast { .. } => 23,
        Op::Reverse { .. } => 24,
        Op::Recurrence(_) => 25,
        Op::Compare(_) => 26,
        Op::Logic(_) => 27,
        Op::Not => 28,
        Op::ReduceSum { .. } => 29,
    }
}
const NUM_OPS: usize = 30;

/// A simple RNN cell: h' = tanh(x W + h R + b); outputs (h', h').
fn rnn_body(hidden: usize, input: usize, name: &str) -> Graph {
    let mut b = Graph::new();
    let h = b.add_input("h", TensorType::known(DType::F32, &[1, hidden]));
    let x = b.add_input("x", TensorType::known(DType::F32, &[1, input]));
    let w = b.add_input("W", TensorType::known(DType::F32, &[input, hidden]));
    let r = b.add_const(
        &format!("{name}_R"),
        f32t(&[hidden, hidden], &seq(hidden * hidden, 0.01)),
    );
    let bias = b.add_const(&format!("{name}_b"), f32t(&[hidden], &seq(hidden, 0.1)));
    let xw = add1(&mut b, "xw", Op::MatMul, &[x, w]);
    let hr = add1(&mut b, "hr", Op::MatMul, &[h, r]);
    let s = add1(&mut b, "s", Op::Binary(BinOp::Add), &[xw, hr]);
    let s = add1(&mut b, "sb", Op::Binary(BinOp::Add), &[s, bias]);
    let hn = add1(&mut b, "h_next", Op::Unary(Act::Tanh), &[s]);
    b.outputs.push(("h".into(), hn));
    b.outputs.push(("y".into(), hn));
    b
}

fn rnn(body: Graph, reverse: bool, seq_lens: bool) -> Op {
    Op::Recurrence(Recurrence {
        body: Box::new(body),
        num_carried: 1,
        num_scanned: 1,
        num_invariant: 1,
        reverse,
        has_seq_lens: seq_lens,
    })
}

/// One graph with every op and every activation, all types from inference; it verifies.
fn every_op_graph() -> Graph {
    let mut g = Graph::new();
    let t = || Dim::Sym("T".into());
    let x = g.add_input(
        "X",
        TensorType::new(DType::F32, vec![t(), Dim::Known(1), Dim::Known(4)]),
    );
    let a = g.add_input("A", TensorType::known(DType::F32, &[2, 4]));
    let w = g.add_const("W", f32t(&[4, 3], &seq(12, 0.125)));
    let bt = g.add_const("Bt", f32t(&[3, 4], &seq(12, 0.5)));
    let c = g.add_const("C", f32t(&[3], &[0.1, 0.2, 0.3]));
    let lo = g.add_const("lo", Tensor::scalar_f32(-1.0));
    let hi = g.add_const("hi", Tensor::scalar_f32(1.0));
    let cond = g.add_const(
        "cond",
        Tensor::Bool(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4]), vec![true, false, true, true])
                .unwrap(),
        ),
    );
    let sizes = g.add_const("sizes", i64t(&[2], &[1, 3]));
    let starts = g.add_const("starts", i64t(&[1], &[0]));
    let ends = g.add_const("ends", i64t(&[1], &[2]));
    let axes = g.add_const("axes", i64t(&[1], &[2]));
    let steps = g.add_const("steps", i64t(&[1], &[1]));
    let idx = g.add_const("idx", i64t(&[2], &[3, 0]));
    let ax0 = g.add_const("ax0", i64t(&[1], &[0]));
    let newshape = g.add_const("newshape", i64t(&[2], &[-1, 4]));
    let eshape = g.add_const("eshape", i64t(&[3], &[1, 2, 4]));
    let cshape = g.add_const("cshape", i64t(&[2], &[2, 3]));
    let lens = g.add_const(
        "lens",
        Tensor::I32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1]), vec![5]).unwrap()),
    );

    let mut v = add1(&mut g, "id", Op::Identity, &[x]);
    for act in all_acts() {
        v = add1(&mut g, act.name(), Op::Unary(act), &[v]);
    }
    for b in [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div] {
        v = add1(&mut g, b.name(), Op::Binary(b), &[v, x]);
    }
    let c1 = add(&mut g, "clip_max", Op::Clip, &[Some(v), None, Some(hi)])[0];
    let c2 = add(&mut g, "clip_min", Op::Clip, &[Some(c1), Some(lo)])[0];
    let c3 = add(
        &mut g,
        "clip_both",
        Op::Clip,
        &[Some(c2), Some(lo), Some(hi)],
    )[0];
    let c4 = add1(&mut g, "clip_none", Op::Clip, &[c3]);
    let _mm = add1(&mut g, "mm", Op::MatMul, &[c4, w]);
    let gemm = Op::Gemm {
        alpha: 0.5,
        beta: 2.0,
        trans_a: false,
        trans_b: true,
    };
    let _g1 = add(&mut g, "gemm_noc", gemm.clone(), &[Some(a), Some(bt), None]);
    let _g2 = add1(&mut g, "gemm_c", gemm, &[a, bt, c]);
    let sm = add1(&mut g, "softmax", Op::Softmax { axis: -1 }, &[x]);
    let _lsm = add1(&mut g, "log_softmax", Op::LogSoftmax { axis: 2 }, &[sm]);
    let _wh = add1(&mut g, "where", Op::Where, &[cond, x, sm]);
    let _cat = add1(&mut g, "concat", Op::Concat { axis: 2 }, &[x, sm, x]);
    let _sp = add(
        &mut g,
        "split_eq",
        Op::Split {
            axis: 2,
            num_outputs: 2,
        },
        &[Some(x)],
    );
    let _sp2 = add(
        &mut g,
        "split_sizes",
        Op::Split {
            axis: 2,
            num_outputs: 2,
        },
        &[Some(x), Some(sizes)],
    );
    let _sl = add(
        &mut g,
        "slice3",
        Op::Slice,
        &[Some(x), Some(starts), Some(ends)],
    );
    let _sl4 = add(
        &mut g,
        "slice_axes",
        Op::Slice,
        &[Some(x), Some(starts), Some(ends), Some(axes)],
    );
    let _sl5 = add(
        &mut g,
        "slice_steps",
        Op::Slice,
        &[Some(x), Some(starts), Some(ends), None, Some(steps)],
    );
    let _ga = add1(&mut g, "gather", Op::Gather { axis: 2 }, &[x, idx]);
    let un = add1(&mut g, "unsqueeze", Op::Unsqueeze, &[a, ax0]);
    let _sq = add1(&mut g, "squeeze", Op::Squeeze, &[un, ax0]);
    let _sq2 = add1(&mut g, "squeeze_all", Op::Squeeze, &[un]);
    let _fl = add1(&mut g, "flatten", Op::Flatten { axis: 1 }, &[a]);
    let _rs = add1(
        &mut g,
        "reshape",
        Op::Reshape { allowzero: false },
        &[a, newshape],
    );
    let _rs2 = add1(
        &mut g,
        "reshape0",
        Op::Reshape { allowzero: true },
        &[a, newshape],
    );
    let _tp = add1(
        &mut g,
        "transpose",
        Op::Transpose {
            perm: Some(vec![1, 0, 2]),
        },
        &[x],
    );
    let _tp2 = add1(&mut g, "transpose_rev", Op::Transpose { perm: None }, &[x]);
    let _ex = add1(&mut g, "expand", Op::Expand, &[x, eshape]);
    let _sh = add1(
        &mut g,
        "shape",
        Op::Shape {
            start: 0,
            end: None,
        },
        &[x],
    );
    let _sh2 = add1(
        &mut g,
        "shape_part",
        Op::Shape {
            start: 1,
            end: Some(-1),
        },
        &[x],
    );
    let _cs = add1(
        &mut g,
        "cos",
        Op::ConstantOfShape {
            value: f32t(&[1], &[0.5]),
        },
        &[cshape],
    );
    let _cs2 = add1(
        &mut g,
        "cos_i64",
        Op::ConstantOfShape {
            value: i64t(&[1], &[7]),
        },
        &[cshape],
    );
    for (i, to) in [DType::I64, DType::I32, DType::Bool, DType::F32]
        .into_iter()
        .enumerate()
    {
        add1(&mut g, &format!("cast{i}"), Op::Cast { to }, &[x]);
    }
    let _rv = add1(&mut g, "reverse", Op::Reverse { axis: 0 }, &[x]);
    let mut m = cond;
    for c in hlstm_ir::CmpOp::ALL {
        let b = add1(&mut g, c.name(), Op::Compare(c), &[x, sm]);
        for l in hlstm_ir::LogicOp::ALL {
            m = add1(
                &mut g,
                &format!("{}_{}", l.name(), c.name()),
                Op::Logic(l),
                &[m, b],
            );
        }
    }
    let not = add1(&mut g, "not", Op::Not, &[m]);
    let mf = add1(&mut g, "not_f32", Op::Cast { to: DType::F32 }, &[not]);
    for (i, keepdims) in [false, true].into_iter().enumerate() {
        add1(
            &mut g,
            &format!("reduce_sum{i}"),
            Op::ReduceSum {
                keepdims,
                noop_with_empty_axes: i == 1,
            },
            &[mf, ax0],
        );
    }
    add(
        &mut g,
        "reduce_sum_all",
        Op::ReduceSum {
            keepdims: false,
            noop_with_empty_axes: false,
        },
        &[Some(mf), None],
    );
    let xs = add1(
        &mut g,
        "xs",
        Op::Transpose {
            perm: Some(vec![0, 1, 2]),
        },
        &[x],
    );
    let h0 = g.add_const("h0", Tensor::zeros(DType::F32, &[1, 5]));
    let wx = g.add_const("Wx", f32t(&[4, 5], &seq(20, 0.01)));
    let _ = (xs, wx);
    // The recurrence scans X ([T,1,4]) one [1,4] slice per step.
    let rec = add(
        &mut g,
        "rnn",
        rnn(rnn_body(5, 4, "cell"), true, true),
        &[Some(h0), Some(x), Some(wx), Some(lens)],
    );
    g.outputs.push(("Y".into(), rec[1]));
    g.outputs.push(("h_T".into(), rec[0]));
    g.outputs.push(("clipped".into(), c4));
    g
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_op_and_act_round_trips() {
    let g = every_op_graph();
    verify(&g).unwrap();
    let mut ops = BTreeSet::new();
    let mut acts = BTreeSet::new();
    g.walk(&mut |gr, n, _| {
        let op = &gr.nodes[n].op;
        ops.insert(op_id(op));
        if let Op::Unary(a) = op {
            acts.insert(act_id(a));
        }
    });
    assert_eq!(ops.len(), NUM_OPS, "ops covered: {ops:?}");
    assert_eq!(acts.len(), NUM_ACTS, "acts covered: {acts:?}");
    let text = roundtrip(&g);
    assert!(text.contains("clip(%div, _, %hi)"), "{text}");
    assert!(
        text.contains("slice(%X, %starts, %ends, _, %steps)"),
        "{text}"
    );
    assert!(
        text.contains("gemm{alpha=0.5, beta=2.0, trans_a=false, trans_b=true}(%A, %Bt)"),
        "{text}"
    );
    assert!(
        text.contains("%split_eq, %split_eq.1 = split{axis=2, num_outputs=2}(%X)"),
        "{text}"
    );
    let (_, store) = print_with_weights(&g);
    verify(&parse_with_weights(&text, &store).unwrap()).unwrap();
}

#[test]
fn golden_text() {
    let mut g = Graph::new();
    let x = g.add_input(
        "X",
        TensorType::new(
            DType::F32,
            vec![Dim::Sym("T".into()), Dim::Known(1), Dim::Known(3)],
        ),
    );
    let w = g.add_const("W", f32t(&[3, 2], &[1.0, 0.0, 0.5, 2.0, -1.0, 0.25]));
    let xw = g.add_node(
        "MatMul_0",
        Op::MatMul,
        &[Some(x), Some(w)],
        vec![ValueInfo {
            name: "xw".into(),
            ty: TensorType::new(
                DType::F32,
                vec![Dim::Sym("T".into()), Dim::Known(1), Dim::Known(2)],
            ),
        }],
    );
    let ty = g.nodes[xw].results[0].ty.clone();
    let y = g.add_node(
        "Tanh_1",
        Op::Unary(Act::Tanh),
        &[Some(Value { node: xw, slot: 0 })],
        vec![ValueInfo {
            name: "y".into(),
            ty,
        }],
    );
    g.outputs.push(("Y".into(), Value { node: y, slot: 0 }));
    let expected = "\
graph (%X: f32[T,1,3]) -> (Y = %y) {
  %W = const f32[3,2] [1.0, 0.0, 0.5, 2.0, -1.0, 0.25]
  %xw = matmul(%X, %W) \"MatMul_0\" : f32[T,1,2]
  %y = tanh(%xw) \"Tanh_1\" : f32[T,1,2]
}
";
    assert_eq!(print(&g), expected);
    assert!(parse(expected).unwrap() == g);
}

#[test]
fn recurrence_with_body_and_nesting() {
    let mut g = Graph::new();
    let x = g.add_input(
        "x_seq",
        TensorType::new(
            DType::F32,
            vec![Dim::Sym("T".into()), Dim::Known(1), Dim::Known(3)],
        ),
    );
    let h0 = g.add_input("h0", TensorType::known(DType::F32, &[1, 4]));
    let w = g.add_const("W_ih", f32t(&[3, 4], &seq(12, 0.1)));
    let r = add(
        &mut g,
        "lstm",
        rnn(rnn_body(4, 3, "outer"), false, false),
        &[Some(h0), Some(x), Some(w)],
    );
    g.outputs.push(("h_T".into(), r[0]));
    g.outputs.push(("ys".into(), r[1]));
    verify(&g).unwrap();
    let text = roundtrip(&g);
    assert!(text.contains("recurrence{carried=1, scanned=1, invariant=1, reverse=false, seq_lens=false}(%h0, %x_seq, %W_ih) \"node/lstm\""));
    assert!(text.contains("\n    body (%h: f32[1,4], %x: f32[1,3], %W: f32[3,4]) -> (h = %h_next, y = %h_next) {\n"), "{text}");

    // A body that itself holds a recurrence (scan over an inner sequence each step).
    let mut outer_body = Graph::new();
    let hc = outer_body.add_input("h", TensorType::known(DType::F32, &[1, 4]));
    let xs = outer_body.add_input("xs", TensorType::known(DType::F32, &[2, 1, 3]));
    let wi = outer_body.add_input("W", TensorType::known(DType::F32, &[3, 4]));
    let inner = add(
        &mut outer_body,
        "inner",
        rnn(rnn_body(4, 3, "inner"), true, false),
        &[Some(hc), Some(xs), Some(wi)],
    );
    outer_body.outputs.push(("h".into(), inner[0]));
    outer_body.outputs.push(("ys".into(), inner[1]));
    let mut g2 = Graph::new();
    let h0 = g2.add_input("h0", TensorType::known(DType::F32, &[1, 4]));
    let xss = g2.add_input(
        "xss",
        TensorType::new(
            DType::F32,
            vec![
                Dim::Sym("T".into()),
                Dim::Known(2),
                Dim::Known(1),
                Dim::Known(3),
            ],
        ),
    );
    let w = g2.add_const("W", f32t(&[3, 4], &seq(12, 0.3)));
    let rr = add(
        &mut g2,
        "outer",
        rnn(outer_body, false, false),
        &[Some(h0), Some(xss), Some(w)],
    );
    g2.outputs.push(("ys".into(), rr[1]));
    verify(&g2).unwrap();
    let text = roundtrip(&g2);
    assert!(
        text.contains("\n      %inner, %inner.1 = recurrence{"),
        "{text}"
    );
    assert!(text.contains("\n        body (%h: f32[1,4]"), "{text}");
}

#[test]
fn floats_round_trip_bit_exactly() {
    let specials = [
        0.0f32,
        -0.0,
        0.1,
        1.0 / 3.0,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        f32::EPSILON,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffbf_ffff),
        123456789.0,
        -2.5e-38,
    ];
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::known(DType::F32, &[2]));
    let c = g.add_const("c", f32t(&[16], &specials));
    let mut v = x;
    for (i, &s) in specials.iter().enumerate() {
        v = add1(
            &mut g,
            &format!("l{i}"),
            Op::Unary(Act::LeakyRelu { alpha: s }),
            &[v],
        );
        v = add1(
            &mut g,
            &format!("a{i}"),
            Op::Unary(Act::Affine { alpha: s, beta: -s }),
            &[v],
        );
        g.add_node(
            &format!("g{i}"),
            Op::Gemm {
                alpha: s,
                beta: s,
                trans_a: true,
                trans_b: false,
            },
            &[Some(c), Some(c)],
            vec![ValueInfo {
                name: format!("g{i}"),
                ty: TensorType::unranked(DType::F32),
            }],
        );
    }
    let text = print(&g);
    let back = parse(&text).unwrap();
    assert_eq!(print(&back), text);
    // Compare every f32 by bits (NaN != NaN under PartialEq).
    let bits = |g: &Graph| {
        let mut out = Vec::new();
        for n in g.nodes.node_indices() {
            match &g.nodes[n].op {
                Op::Const(c) => out.extend(c.value.as_f32().unwrap().iter().map(|v| v.to_bits())),
                Op::Unary(a) => out.extend(a.params().iter().map(|(_, v)| v.to_bits())),
                Op::Gemm { alpha, beta, .. } => out.extend([alpha.to_bits(), beta.to_bits()]),
                _ => {}
            }
        }
        out
    };
    assert_eq!(bits(&g), bits(&back));
    assert!(bits(&g).contains(&0x7fc0_1234));
}

#[test]
fn odd_names_and_types_round_trip() {
    let weird = [
        "",
        " ",
        "a b",
        "\"q\"",
        "back\\slash",
        "line\nbreak\ttab\r",
        "%x",
        "#1",
        "@0:0",
        "ünïcödé→",
        "\u{1}\u{7f}",
        "0",
        "-1",
        "x.y",
        "_",
        "graph",
        "body",
        "sha256",
    ];
    let mut g = Graph::new();
    let mut vals = Vec::new();
    for (i, w) in weird.iter().enumerate() {
        let ty = match i % 5 {
            0 => TensorType::unranked(DType::F32),
            1 => TensorType::new(DType::F32, vec![Dim::Unknown, Dim::Sym(w.to_string())]),
            2 => TensorType::new(DType::F32, vec![]),
            3 => TensorType::new(
                DType::F32,
                vec![
                    Dim::Sym("batch size".into()),
                    Dim::Sym("12".into()),
                    Dim::Sym("?".into()),
                    Dim::Sym("*".into()),
                ],
            ),
            _ => TensorType::new(
                DType::F32,
                vec![Dim::Sym("N".into()), Dim::Known(0), Dim::Known(usize::MAX)],
            ),
        };
        vals.push(g.add_input(w, ty));
    }
    // A header input whose node name differs from its value name.
    g.nodes[vals[1].node].name = "input node \"1\"".into();
    // Duplicate value names, and node names that differ from them.
    for (i, w) in weird.iter().enumerate() {
        let ty = g.value_type(vals[i]).clone();
        let n = g.add_node(
            w,
            Op::Identity,
            &[Some(vals[i])],
            vec![ValueInfo {
                name: "dup".into(),
                ty,
            }],
        );
        g.outputs.push((w.to_string(), Value { node: n, slot: 0 }));
    }
    let n = g.add_node(
        "",
        Op::Split {
            axis: 0,
            num_outputs: 3,
        },
        &[Some(vals[0])],
        vec![
            ValueInfo {
                name: "".into(),
                ty: TensorType::unranked(DType::Bool),
            },
            ValueInfo {
                name: "".into(),
                ty: TensorType::unranked(DType::I32),
            },
            ValueInfo {
                name: "dup".into(),
                ty: TensorType::unranked(DType::I64),
            },
        ],
    );
    g.outputs
        .push(("split 2".into(), Value { node: n, slot: 2 }));
    let text = roundtrip(&g);
    assert!(text.contains("%dup#3"), "{text}");
    assert!(
        text.starts_with("graph (%\"\": f32[*], %\" \" \"input node \\\"1\\\"\": f32[?,\" \"], "),
        "{text}"
    );
}

#[test]
fn non_canonical_graphs_round_trip() {
    // A constant before the inputs, inputs listed out of order, an input node that is not a
    // graph input, a removed node (a hole in the indices), a forward reference, a dangling slot,
    // a node without results, a constant whose names and type differ from its node's.
    let mut g = Graph::new();
    let k = g.add_const("k", f32t(&[2], &[1.0, 2.0]));
    let a = g.add_input("a", TensorType::known(DType::F32, &[2]));
    let b = g.add_input("b", TensorType::known(DType::F32, &[2]));
    g.inputs.swap(0, 1);
    let gone = g.add_const("gone", Tensor::scalar_f32(0.0));
    let lone = g.nodes.add_node(Node {
        name: "lonely input".into(),
        op: Op::Input,
        results: vec![],
    });
    let _ = lone;
    let s = add1(&mut g, "s", Op::Binary(BinOp::Add), &[a, k]);
    // `t` reads `u`, which comes after it.
    let t = g.add_node(
        "t",
        Op::Identity,
        &[],
        vec![ValueInfo {
            name: "t".into(),
            ty: TensorType::known(DType::F32, &[2]),
        }],
    );
    let u = add1(&mut g, "u", Op::Unary(Act::Relu), &[s]);
    g.nodes.add_edge(
        u.node,
        t,
        Port {
            out_slot: 0,
            in_slot: 0,
        },
    );
    // A dangling result slot (ill-formed, but printable).
    let d = g.add_node(
        "dangling",
        Op::Identity,
        &[Some(Value {
            node: b.node,
            slot: 3,
        })],
        vec![],
    );
    let _ = d;
    let c2 = g.nodes.add_node(Node {
        name: "node name".into(),
        op: Op::Const(std::sync::Arc::new(hlstm_ir::Constant {
            name: "init name".into(),
            value: std::sync::Arc::new(i64t(&[3], &[1, -2, 3])),
        })),
        results: vec![ValueInfo {
            name: "value name".into(),
            ty: TensorType::unranked(DType::I64),
        }],
    });
    let two = g.nodes.add_node(Node {
        name: "two".into(),
        op: Op::Input,
        results: vec![
            ValueInfo {
                name: "p".into(),
                ty: TensorType::known(DType::Bool, &[]),
            },
            ValueInfo {
                name: "q".into(),
                ty: TensorType::known(DType::I32, &[1]),
            },
        ],
    });
    g.inputs.push(two);
    g.inputs.push(lone);
    g.nodes.remove_node(gone.node);
    g.outputs.push(("t".into(), Value { node: t, slot: 0 }));
    g.outputs.push(("c".into(), Value { node: c2, slot: 0 }));
    g.outputs
        .push(("t again".into(), Value { node: t, slot: 0 }));
    let text = roundtrip(&g);
    assert!(text.starts_with("graph (%b, %a, %p, @3:0) -> ("), "{text}");
    assert!(text.contains("identity(@2:3) \"dangling\" : ()"), "{text}");
    assert!(text.contains("%t = identity(%u) : f32[2]"), "{text}");

    // An empty graph.
    roundtrip(&Graph::new());
}

#[test]
fn every_dtype_in_constants() {
    let mut g = Graph::new();
    g.add_const("f", f32t(&[], &[2.5]));
    g.add_const("e", f32t(&[0, 3], &[]));
    g.add_const("i", i64t(&[2, 2], &[i64::MIN, i64::MAX, 0, -1]));
    g.add_const(
        "j",
        Tensor::I32(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[3]), vec![i32::MIN, 0, i32::MAX])
                .unwrap(),
        ),
    );
    g.add_const(
        "b",
        Tensor::Bool(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2]), vec![true, false]).unwrap(),
        ),
    );
    // A transposed (non-standard layout) array prints in logical order.
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), seq(6, 1.0)).unwrap();
    g.add_const("tr", Tensor::F32(arr.t().to_owned().into_dyn()));
    g.add_const("tv", Tensor::F32(arr.reversed_axes()));
    roundtrip(&g);
}

// ---------------------------------------------------------------- weights

fn big_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::Sym("B".into()), Dim::Known(256)]),
    );
    let w = g.add_const("W_name", f32t(&[256, 96], &seq(256 * 96, 1e-3)));
    let y = add1(&mut g, "y", Op::MatMul, &[x, w]);
    let w2 = g.add_const("W_name_again", f32t(&[256, 96], &seq(256 * 96, 1e-3)));
    let _ = w2;
    let ids = g.add_const("ids", i64t(&[20], &(0..20).collect::<Vec<_>>()));
    let _ = ids;
    g.add_const(
        "mask",
        Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[17]), true)),
    );
    let shape = g.add_const("shape", i64t(&[2], &[3, 40]));
    add1(
        &mut g,
        "cos_big",
        Op::ConstantOfShape {
            value: f32t(&[40], &seq(40, 2.0)),
        },
        &[shape],
    );
    g.outputs.push(("y".into(), y));
    g
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hlstm_text_{}_{name}", std::process::id()))
}

#[test]
fn large_constants_go_through_the_weight_store() {
    let g = big_graph();
    let (text, store) = print_with_weights(&g);
    // Two equal tensors share one entry: W, mask, ids, the constant_of_shape value.
    assert_eq!(store.len(), 4);
    assert!(
        text.contains("%W_name = const f32[256,96] sha256:"),
        "{text}"
    );
    assert!(
        text.contains("constant_of_shape{value=f32[40] sha256:"),
        "{text}"
    );
    assert!(text.len() < 2000, "weights stay out of the text");
    assert_eq!(
        print(&g),
        text,
        "print without a store prints the same hashes"
    );

    let back = parse_with_weights(&text, &store).unwrap();
    assert!(back == g);

    // Without the store: a clear error at the constant.
    let e = parse(&text).unwrap_err();
    assert!(e.message.contains("parse_with_weights"), "{e}");
    assert_eq!(e.line, 2, "{e}");
    // With a store that lacks it.
    let e = parse_with_weights(&text, &WeightStore::new()).unwrap_err();
    assert!(e.message.contains("not in the weight store"), "{e}");

    // The side file.
    let hir = temp_path("model.hir");
    let side = side_file_path(&hir);
    assert!(side.to_string_lossy().ends_with("model.hir.weights"));
    std::fs::write(&hir, &text).unwrap();
    store.save(&side).unwrap();
    let loaded = WeightStore::load(&side).unwrap();
    assert_eq!(loaded, store);
    let back = parse_with_weights(&std::fs::read_to_string(&hir).unwrap(), &loaded).unwrap();
    assert!(back == g);

    // A truncated side file is an error, never a panic.
    let bytes = std::fs::read(&side).unwrap();
    std::fs::write(&side, &bytes[..bytes.len() / 2]).unwrap();
    let e = WeightStore::load(&side).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let _ = std::fs::remove_file(&side);
    let _ = std::fs::remove_file(&hir);
    assert!(
        WeightStore::load(&side).is_err(),
        "a missing file is an error"
    );
}

#[test]
fn weight_file_checks_every_byte() {
    let mut store = WeightStore::new();
    store.insert(f32t(&[17], &seq(17, 0.5)));
    store.insert(Tensor::Bool(ndarray::ArrayD::from_elem(
        ndarray::IxDyn(&[2, 9]),
        true,
    )));
    store.insert(i64t(&[], &[42]));
    let bytes = store.to_bytes();
    assert_eq!(WeightStore::from_bytes(&bytes).unwrap(), store);
    for len in 0..bytes.len() {
        assert!(
            WeightStore::from_bytes(&bytes[..len]).is_err(),
            "prefix of {len} bytes"
        );
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x41;
        assert!(WeightStore::from_bytes(&b).is_err(), "byte {i} flipped");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(WeightStore::from_bytes(&extra).is_err());
    // A huge rank or element count is caught before allocating.
    let mut huge = b"HIRWGT01".to_vec();
    huge.extend_from_slice(&1u64.to_le_bytes());
    huge.extend_from_slice(&[0u8; 32]);
    huge.push(0);
    huge.extend_from_slice(&2u32.to_le_bytes());
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(WeightStore::from_bytes(&huge).is_err());
}

// ---------------------------------------------------------------- errors

#[track_caller]
fn parse_err(text: &str) -> ParseError {
    match parse(text) {
        Ok(g) => panic!("parsed, expected an error:\n{}", print(&g)),
        Err(e) => e,
    }
}

#[test]
fn parse_errors_name_line_and_column() {
    let e = parse_err("graph (%x: f32[2]) -> (y = %z) {\n  %y = tanh(%x) : f32[2]\n}\n");
    assert_eq!((e.line, e.col), (1, 28), "{e}");
    assert!(e.message.contains("undefined value %z"), "{e}");
    assert!(e.to_string().starts_with("line 1, column 28: "), "{e}");

    let e = parse_err(
        "graph (%x: f32[2]) -> () {\n  %y = tanh(%x) : f32[2]\n  %z = frobnicate(%y) : f32[2]\n}",
    );
    assert_eq!((e.line, e.col), (3, 8), "{e}");
    assert!(e.message.contains("unknown op 'frobnicate'"), "{e}");

    let e = parse_err("graph (%x: f32[2]) -> () {\n  %y = tanh(%x)\n}");
    assert_eq!(e.line, 3, "{e}");
    assert!(
        e.message.contains("expected ':' and the result types"),
        "{e}"
    );

    let e = parse_err("graph () -> () {\n  %c = const f32[2,2] [1.0, 2.0, 3.0]\n}");
    assert_eq!((e.line, e.col), (2, 14), "{e}");
    assert!(e.message.contains("needs 4 elements"), "{e}");

    let e = parse_err("graph (%x: f32[2]) -> () {\n  %x = relu(%x) : f32[2]\n}");
    assert_eq!((e.line, e.col), (2, 3), "{e}");
    assert!(e.message.contains("defined twice"), "{e}");

    let e = parse_err(
        "graph (%x: f32[2]) -> () {\n  %y = leaky_relu{alpha=0.1, beta=2.0}(%x) : f32[2]\n}",
    );
    assert!(e.message.contains("no attribute 'beta'"), "{e}");
    let e = parse_err("graph (%x: f32[2]) -> () {\n  %y = softmax(%x) : f32[2]\n}");
    assert!(e.message.contains("needs the attribute 'axis'"), "{e}");
    let e = parse_err("graph (%x: f32[2]) -> () {\n  %y = softmax{axis=1, axis=2}(%x) : f32[2]\n}");
    assert!(e.message.contains("given twice"), "{e}");
    let e = parse_err("graph (%x: f32[2]) -> () {\n  %y, %z = relu(%x) : f32[2]\n}");
    assert!(
        e.message.contains("2 values are defined but 1 types given"),
        "{e}"
    );

    let e = parse_err("graph () -> () {\n  %n = identity() \"unterminated : f32[1]\n}");
    assert_eq!((e.line, e.col), (2, 19), "{e}");
    assert!(e.message.contains("unterminated string"), "{e}");

    let e = parse_err("graph () -> () {\n  %y = relu(@7:0) : f32[1]\n}");
    assert!(e.message.contains("no node at position 7"), "{e}");

    let e = parse_err("graph () -> () {}\ntrailing");
    assert_eq!(e.line, 2, "{e}");
    let e = parse_err("");
    assert!(e.message.contains("expected 'graph'"), "{e}");

    // Bodies nested too deep are refused instead of overflowing the stack.
    let mut deep = String::from("graph () -> () {\n");
    for _ in 0..200 {
        deep.push_str("%r = recurrence{carried=0, scanned=1, invariant=0, reverse=false, seq_lens=false}(%r) : f32[1] body () -> () {\n");
    }
    let e = parse_err(&deep);
    assert!(
        e.message.contains("nested 65 deep, over the limit of 64")
            && e.message.contains("--limit nesting="),
        "{e}"
    );
}

#[test]
fn handwritten_text_parses() {
    // Comments, free layout, attribute defaults of activations, an input declared as a statement.
    let text = r#"
        // a hand-written graph
        graph (%x: f32[N, 4], %k) -> ("out 1" = %y, z = %z) {
          %k = input : f32[4]
          %y = leaky_relu(%x) : f32[N,4]      // alpha defaults to 0.01
          %s = add(%y, %k) "the add" : f32[N,4]
          %z = hard_sigmoid{beta=0.25}(%s) : f32[N, 4]
        }
    "#;
    let g = parse(text).unwrap();
    verify(&g).unwrap();
    assert_eq!(g.inputs.len(), 2);
    let names: Vec<_> = g
        .nodes
        .node_indices()
        .map(|n| g.nodes[n].name.clone())
        .collect();
    assert_eq!(names, ["x", "k", "y", "the add", "z"]);
    let acts: Vec<_> = g
        .nodes
        .node_weights()
        .filter_map(|n| {
            if let Op::Unary(a) = n.op {
                Some(a)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        acts,
        [
            Act::LeakyRelu { alpha: 0.01 },
            Act::HardSigmoid {
                alpha: 0.2,
                beta: 0.25
            }
        ]
    );
    roundtrip(&g);
}

#[test]
fn docs_examples_parse() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/hir.md")).unwrap();
    let mut n = 0;
    for block in doc.split("```hir\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let g = parse(text).unwrap_or_else(|e| panic!("docs/hir.md example: {e}\n{text}"));
        verify(&g).unwrap_or_else(|e| panic!("docs/hir.md example: {e}\n{text}"));
        roundtrip(&g);
        n += 1;
    }
    assert!(n >= 1);
}

// ---------------------------------------------------------------- no panics

const TOKENS: &[&str] = &[
    "graph",
    "body",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    "=",
    ":",
    "->",
    "*",
    "?",
    "_",
    "%x",
    "%y",
    "%x#1",
    "%\"q\"",
    "@0:0",
    "@9:1",
    "\"s\"",
    "\"",
    "f32",
    "i64",
    "bool",
    "0",
    "1",
    "-1",
    "1.5",
    "0x7fc00000",
    "NaN",
    "inf",
    "T",
    "const",
    "input",
    "matmul",
    "split",
    "recurrence",
    "relu",
    "leaky_relu",
    "gemm",
    "cast",
    "transpose",
    "shape",
    "constant_of_shape",
    "axis",
    "num_outputs",
    "carried",
    "scanned",
    "invariant",
    "reverse",
    "seq_lens",
    "true",
    "false",
    "sha256",
    "perm",
    "value",
    "to",
    "\n",
    "//",
    "\\",
    "#",
    "%",
    "@",
];

fn sample_text() -> String {
    let mut g = every_op_graph();
    let body = rnn_body(2, 2, "s");
    let x = g.add_input("extra", TensorType::known(DType::F32, &[3, 1, 2]));
    let h = g.add_const("h", Tensor::zeros(DType::F32, &[1, 2]));
    let w = g.add_const("w", Tensor::zeros(DType::F32, &[2, 2]));
    add(
        &mut g,
        "r2",
        rnn(body, false, false),
        &[Some(h), Some(x), Some(w)],
    );
    print(&g)
}

/// Parsing must not panic; whatever parses must print and parse back to the same text.
fn check(text: &str) {
    if let Ok(g) = parse(text) {
        let (p, store) = print_with_weights(&g);
        let back = parse_with_weights(&p, &store).unwrap_or_else(|e| panic!("reparse: {e}\n{p}"));
        assert_eq!(print(&back), p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(s in "\\PC{0,120}") {
        check(&s);
        check(&format!("graph () -> () {{{s}}}"));
    }

    #[test]
    fn token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(TOKENS), 0..60)) {
        check(&toks.join(" "));
        check(&format!("graph (%x: f32[2]) -> () {{ {} }}", toks.join(" ")));
    }

    #[test]
    fn mutated_text_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4usize, prop::sample::select(TOKENS), 0..40usize), 1..4)
    ) {
        let mut chars: Vec<char> = SAMPLE.with(|s| s.chars().collect());
        for (at, kind, tok, len) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => { let end = (i + len).min(chars.len()); chars.drain(i..end); }
                1 => { chars.splice(i..i, tok.chars()); }
                2 => { chars.truncate(i); }
                _ => { if i + 1 < chars.len() { chars.swap(i, i + 1); } }
            }
        }
        let text: String = chars.into_iter().collect();
        check(&text);
    }

    #[test]
    fn random_bytes_never_panic_the_weight_loader(b in prop::collection::vec(any::<u8>(), 0..200), keep in 0..200usize) {
        let mut bytes = b"HIRWGT01".to_vec();
        bytes.extend_from_slice(&b[..keep.min(b.len())]);
        let _ = WeightStore::from_bytes(&bytes);
        let _ = WeightStore::from_bytes(&b);
    }

    #[test]
    fn random_names_round_trip(
        names in prop::collection::vec("\\PC{0,6}", 1..6),
        node_names in prop::collection::vec(".{0,6}", 1..6),
        sym in "\\PC{0,4}",
    ) {
        let mut g = Graph::new();
        let x = g.add_input(&names[0], TensorType::new(DType::F32, vec![Dim::Sym(sym.clone()), Dim::Unknown]));
        let mut v = x;
        for (i, n) in names.iter().enumerate() {
            let ty = g.value_type(v).clone();
            let nn = &node_names[i % node_names.len()];
            let node = g.add_node(nn, Op::Unary(Act::Elu { alpha: i as f32 * 0.3 }), &[Some(v)], vec![ValueInfo { name: n.clone(), ty }]);
            v = Value { node, slot: 0 };
            g.outputs.push((nn.clone(), v));
        }
        let text = print(&g);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(back == g, "{}", text);
    }
}

thread_local! {
    static SAMPLE: String = sample_text();
}
