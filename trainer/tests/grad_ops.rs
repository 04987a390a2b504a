//! Every op's gradient rule against central finite differences (tolerances in common/mod.rs).

mod common;

use common::Case;
use hlstm_ir::{Act, BinOp, Op, Tensor};
use hlstm_trainer::Options;

fn unary_case(act: Act, seed: u64, away: bool) {
    let mut c = Case::new(seed);
    let x = if away {
        c.param_away("x", &[3, 4], 0.05)
    } else {
        c.param("x", &[3, 4], -1.5, 1.5)
    };
    let y = c.b.op("y", Op::Unary(act), &[x]).unwrap();
    c.loss(y);
    c.check(Options::default());
}

#[test]
fn activations() {
    unary_case(Act::Sigmoid, 1, false);
    unary_case(Act::Tanh, 2, false);
    unary_case(Act::Relu, 3, true);
    unary_case(Act::Exp, 4, false);
    unary_case(Act::Neg, 5, false);
    unary_case(Act::LeakyRelu { alpha: 0.1 }, 6, true);
    unary_case(
        Act::Affine {
            alpha: -0.5,
            beta: 2.0,
        },
        7,
        false,
    );
    unary_case(Act::Softplus, 8, false);
}

#[test]
fn binary_ops_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 1, 4], &[1, 3, 1]),
        (&[3, 4], &[]),
    ];
    for (i, op) in [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div]
        .into_iter()
        .enumerate()
    {
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let mut c = Case::new((10 * i + j) as u64);
            let a = c.param("a", sa, -1.0, 1.0);
            let b = if op == BinOp::Div {
                c.param("b", sb, 0.5, 1.5)
            } else {
                c.param("b", sb, -1.0, 1.0)
            };
            let y = c.b.bin("y", op, a, b).unwrap();
            c.loss(y);
            c.check(Options::default());
        }
    }
}

#[test]
fn matmul_shapes() {
    let shapes: [(&[usize], &[usize]); 8] = [
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[4], &[4, 5]),
        (&[3, 4], &[4]),
        (&[4], &[4]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[1, 4, 5]),
        (&[4], &[2, 4, 5]),
    ];
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        let mut c = Case::new(100 + i as u64);
        let a = c.param("a", sa, -1.0, 1.0);
        let b = c.param("b", sb, -1.0, 1.0);
        let y = c.b.op("y", Op::MatMul, &[a, b]).unwrap();
        c.loss(y);
        c.check(Options::default());
    }
}

#[test]
fn gemm_transposes_and_bias() {
    let mut seed = 200;
    for ta in [false, true] {
        for tb in [false, true] {
            for c_dims in [&[5][..], &[3, 5], &[1, 5], &[3, 1]] {
                seed += 1;
                let mut c = Case::new(seed);
                let a = c.param("a", if ta { &[4, 3] } else { &[3, 4] }, -1.0, 1.0);
                let b = c.param("b", if tb { &[5, 4] } else { &[4, 5] }, -1.0, 1.0);
                let bias = c.param("c", c_dims, -1.0, 1.0);
                let op = Op::Gemm {
                    alpha: 0.7,
                    beta: -1.3,
                    trans_a: ta,
                    trans_b: tb,
                };
                let y = c.b.op("y", op, &[a, b, bias]).unwrap();
                c.loss(y);
                c.check(Options::default());
            }
        }
    }
}

#[test]
fn softmax_and_log_softmax() {
    for (i, axis) in [-1i64, 0, 1].into_iter().enumerate() {
        let mut c = Case::new(300 + i as u64);
        let x = c.param("x", &[2, 3, 4], -2.0, 2.0);
        let y = c.b.op("y", Op::Softmax { axis }, &[x]).unwrap();
        c.loss(y);
        c.check(Options::default());
        let mut c = Case::new(310 + i as u64);
        let x = c.param("x", &[2, 3, 4], -2.0, 2.0);
        let y = c.b.op("y", Op::LogSoftmax { axis }, &[x]).unwrap();
        c.loss(y);
        c.check(Options::default());
    }
}

#[test]
fn concat_split_slice() {
    let mut c = Case::new(400);
    let a = c.param("a", &[2, 3], -1.0, 1.0);
    let b = c.param("b", &[2, 1], -1.0, 1.0);
    let d = c.param("d", &[2, 4], -1.0, 1.0);
    let y =
        c.b.node("y", Op::Concat { axis: 1 }, &[Some(a), Some(b), Some(d)])
            .unwrap()[0];
    let sizes = c.b.ints(&[2, 5, 1]);
    let parts = c.b.node(
        "p",
        Op::Split {
            axis: -1,
            num_outputs: 3,
        },
        &[Some(y), Some(sizes)],
    );
    let parts = parts.unwrap();
    // The middle part is unused: its adjoint is zeros.
    let s = c.b.bin("s", BinOp::Mul, parts[0], parts[0]).unwrap();
    let t = c.b.op("t", Op::Unary(Act::Tanh), &[parts[2]]).unwrap();
    let st = c.b.op("st", Op::Concat { axis: 1 }, &[s, t]).unwrap();
    c.loss(st);
    c.check(Options::default());

    let mut c = Case::new(401);
    let x = c.param("x", &[3, 5, 4], -1.0, 1.0);
    let starts = c.b.ints(&[1, -3]);
    let ends = c.b.ints(&[i64::MAX, -1]);
    let axes = c.b.ints(&[0, 1]);
    let y = c.b.op("y", Op::Slice, &[x, starts, ends, axes]).unwrap();
    c.loss(y);
    c.check(Options::default());
}

#[test]
fn gather_reshape_transpose_and_friends() {
    // An embedding lookup with a repeated index: its rows' gradients add up.
    let mut c = Case::new(500);
    let e = c.param("E", &[5, 3], -1.0, 1.0);
    let idx = c.input(
        "idx",
        Tensor::from_i64(&[2, 3], vec![0, 4, 2, 4, -1, 1]).unwrap(),
    );
    let y = c.b.op("y", Op::Gather { axis: 0 }, &[e, idx]).unwrap();
    let sh = c.b.ints(&[3, 6]);
    let r =
        c.b.op("r", Op::Reshape { allowzero: false }, &[y, sh])
            .unwrap();
    let t =
        c.b.op(
            "t",
            Op::Transpose {
                perm: Some(vec![1, 0]),
            },
            &[r],
        )
        .unwrap();
    let ax = c.b.ints(&[0]);
    let u = c.b.op("u", Op::Unsqueeze, &[t, ax]).unwrap();
    let q = c.b.op("q", Op::Squeeze, &[u, ax]).unwrap();
    let f = c.b.op("f", Op::Flatten { axis: 1 }, &[q]).unwrap();
    let rv = c.b.op("rv", Op::Reverse { axis: 1 }, &[f]).unwrap();
    let id = c.b.op("id", Op::Identity, &[rv]).unwrap();
    let tt = c.b.op("tt", Op::Transpose { perm: None }, &[id]).unwrap();
    let th = c.b.op("th", Op::Unary(Act::Tanh), &[tt]).unwrap();
    c.loss(th);
    c.check(Options::default());

    let mut c = Case::new(501);
    let x = c.param("x", &[3, 1], -1.0, 1.0);
    let sh = c.b.ints(&[2, 3, 4]);
    let y = c.b.op("y", Op::Expand, &[x, sh]).unwrap();
    let y = c.b.bin("y2", BinOp::Mul, y, y).unwrap();
    c.loss(y);
    c.check(Options::default());
}

#[test]
fn where_and_clip() {
    let mut c = Case::new(600);
    let x = c.param("x", &[2, 3], -1.0, 1.0);
    let y = c.param("y", &[3], -1.0, 1.0);
    let cond = c.input(
        "cond",
        Tensor::Bool(
            ndarray::ArrayD::from_shape_vec(
                vec![2, 3],
                vec![true, false, true, false, false, true],
            )
            .unwrap(),
        ),
    );
    let w = c.b.op("w", Op::Where, &[cond, x, y]).unwrap();
    c.loss(w);
    c.check(Options::default());

    let mut c = Case::new(601);
    let x = c.param_away("x", &[4, 4], 0.05);
    let lo = c.b.scalar(-0.5);
    let hi = c.b.scalar(0.7);
    // Keep x away from the bounds too: shift by 0.5 gives kinks at -1.0 and 0.2.
    let y = c.b.op("y", Op::Clip, &[x, lo, hi]).unwrap();
    c.loss(y);
    c.check(Options::default());
}

/// reduce_sum's gradient (issue 15's masked Keras layers sum their masks): over one axis and
/// dropping it, over two kept as ones, over every axis (no axes operand), each followed by a
/// product so that the adjoint reaching the sum is not all ones.
#[test]
fn reduce_sum_over_axes() {
    let cases: [(&[i64], bool); 3] = [(&[1], false), (&[0, 2], true), (&[], false)];
    for (i, (axes, keepdims)) in cases.into_iter().enumerate() {
        let mut c = Case::new(700 + i as u64);
        let x = c.param("x", &[2, 3, 4], -1.0, 1.0);
        let op = Op::ReduceSum {
            keepdims,
            noop_with_empty_axes: false,
        };
        let s = if axes.is_empty() {
            c.b.op("s", op, &[x]).unwrap()
        } else {
            let a = c.b.ints(axes);
            c.b.op("s", op, &[x, a]).unwrap()
        };
        let y = c.b.bin("y", BinOp::Mul, s, s).unwrap();
        c.loss(y);
        c.check(Options::default());
    }
}
