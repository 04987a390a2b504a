//! Backpropagation through time: gradients through `recurrence` against finite differences,
//! with both save modes, forward and reverse loops, and the edge cases of the transform.

mod common;

use common::{Case, f32_type};
use hlstm_ir::{Act, BinOp, Graph, Op, Recurrence, Tensor, Value};
use hlstm_trainer::{Builder, Options, SaveMode};
use proptest::prelude::*;

/// h' = tanh(x W + h R + b); outputs (h', h').
fn rnn_body(n: usize, i: usize, h: usize) -> Graph {
    let mut b = Builder::new(Graph::new());
    let hv = b.g.add_input("h", f32_type(&[n, h]));
    let x = b.g.add_input("x", f32_type(&[n, i]));
    let w = b.g.add_input("W", f32_type(&[i, h]));
    let r = b.g.add_input("R", f32_type(&[h, h]));
    let bias = b.g.add_input("b", f32_type(&[h]));
    let xw = b.op("xw", Op::MatMul, &[x, w]).unwrap();
    let hr = b.op("hr", Op::MatMul, &[hv, r]).unwrap();
    let s = b.bin("s", BinOp::Add, xw, hr).unwrap();
    let s = b.bin("sb", BinOp::Add, s, bias).unwrap();
    let h1 = b.op("h1", Op::Unary(Act::Tanh), &[s]).unwrap();
    b.g.outputs = vec![("h".into(), h1), ("y".into(), h1)];
    b.g
}

fn recurrence(
    c: &mut Case,
    name: &str,
    body: Graph,
    counts: [usize; 3],
    reverse: bool,
    ops: &[Value],
) -> Vec<Value> {
    let r = Recurrence {
        body: Box::new(body),
        num_carried: counts[0],
        num_scanned: counts[1],
        num_invariant: counts[2],
        reverse,
        has_seq_lens: false,
    };
    let ops: Vec<Option<Value>> = ops.iter().copied().map(Some).collect();
    c.b.node(name, Op::Recurrence(r), &ops).unwrap()
}

fn rnn_case(seed: u64, reverse: bool) -> Case {
    rnn_sized(seed, reverse, [5, 2, 3, 4])
}

/// The RNN over t steps of n rows, input width i, state width h; the loss reads every step's
/// output and the final state.
fn rnn_sized(seed: u64, reverse: bool, [t, n, i, h]: [usize; 4]) -> Case {
    let mut c = Case::new(seed);
    let x = c.param("X", &[t, n, i], -1.0, 1.0);
    let h0 = c.param("h0", &[n, h], -0.5, 0.5);
    let w = c.param("W", &[i, h], -0.6, 0.6);
    let r = c.param("R", &[h, h], -0.6, 0.6);
    let b = c.param("b", &[h], -0.3, 0.3);
    let res = recurrence(
        &mut c,
        "rnn",
        rnn_body(n, i, h),
        [1, 1, 3],
        reverse,
        &[h0, x, w, r, b],
    );
    // The loss reads both the per-step outputs and the final state.
    let flat = c.b.reshape("flat", res[1], &[t * n * h]).unwrap();
    let last = c.b.reshape("last", res[0], &[n * h]).unwrap();
    let both =
        c.b.node("both", Op::Concat { axis: 0 }, &[Some(flat), Some(last)])
            .unwrap()[0];
    c.loss(both);
    c
}

#[test]
fn rnn_forward_and_reverse_both_save_modes() {
    rnn_case(1, false).check_both();
    rnn_case(2, true).check_both();
}

/// An LSTM cell: gates = [x, h] W + b, split in four; two carried states.
fn lstm_body(n: usize, i: usize, h: usize) -> Graph {
    let mut b = Builder::new(Graph::new());
    let hv = b.g.add_input("h", f32_type(&[n, h]));
    let cv = b.g.add_input("c", f32_type(&[n, h]));
    let x = b.g.add_input("x", f32_type(&[n, i]));
    let w = b.g.add_input("W", f32_type(&[i + h, 4 * h]));
    let bias = b.g.add_input("b", f32_type(&[4 * h]));
    let z = b
        .node("z", Op::Concat { axis: 1 }, &[Some(x), Some(hv)])
        .unwrap()[0];
    let gates = b.op("gates", Op::MatMul, &[z, w]).unwrap();
    let gates = b.bin("gb", BinOp::Add, gates, bias).unwrap();
    let p = b
        .node(
            "p",
            Op::Split {
                axis: 1,
                num_outputs: 4,
            },
            &[Some(gates)],
        )
        .unwrap();
    let ig = b.op("i", Op::Unary(Act::Sigmoid), &[p[0]]).unwrap();
    let fg = b.op("f", Op::Unary(Act::Sigmoid), &[p[1]]).unwrap();
    let gg = b.op("g", Op::Unary(Act::Tanh), &[p[2]]).unwrap();
    let og = b.op("o", Op::Unary(Act::Sigmoid), &[p[3]]).unwrap();
    let fc = b.bin("fc", BinOp::Mul, fg, cv).unwrap();
    let ig2 = b.bin("ig", BinOp::Mul, ig, gg).unwrap();
    let c1 = b.bin("c1", BinOp::Add, fc, ig2).unwrap();
    let tc = b.op("tc", Op::Unary(Act::Tanh), &[c1]).unwrap();
    let h1 = b.bin("h1", BinOp::Mul, og, tc).unwrap();
    b.g.outputs = vec![("h".into(), h1), ("c".into(), c1), ("y".into(), h1)];
    b.g
}

#[test]
fn lstm_cell_over_four_steps() {
    let (t, n, i, h) = (4, 2, 3, 3);
    let mut c = Case::new(10);
    let x = c.input(
        "X",
        Tensor::from_f32(&[t, n, i], c_data(11, t * n * i)).unwrap(),
    );
    let h0 = c.input("h0", Tensor::zeros(hlstm_ir::DType::F32, &[n, h]));
    let c0 = c.input("c0", Tensor::zeros(hlstm_ir::DType::F32, &[n, h]));
    let w = c.param("W", &[i + h, 4 * h], -0.7, 0.7);
    let b = c.param("b", &[4 * h], -0.3, 0.3);
    let res = recurrence(
        &mut c,
        "lstm",
        lstm_body(n, i, h),
        [2, 1, 2],
        false,
        &[h0, c0, x, w, b],
    );
    c.loss(res[2]);
    c.check_both();
}

fn c_data(seed: u64, n: usize) -> Vec<f32> {
    hlstm_trainer::rng::Rng::new(seed).vec(n, -1.0, 1.0)
}

/// A step output that is the carried input itself, a state the loss never reads, and no
/// per-step adjoint at all: only the final state feeds the loss.
#[test]
fn state_passthrough_and_final_state_only() {
    let (t, n, h) = (3, 2, 3);
    let mut body = Builder::new(Graph::new());
    let s = body.g.add_input("s", f32_type(&[n, h]));
    let u = body.g.add_input("u", f32_type(&[n, h]));
    let x = body.g.add_input("x", f32_type(&[n, h]));
    let w = body.g.add_input("w", f32_type(&[h]));
    let xw = body.bin("xw", BinOp::Mul, x, w).unwrap();
    let sx = body.bin("sx", BinOp::Mul, s, xw).unwrap();
    let s1 = body.op("s1", Op::Unary(Act::Sigmoid), &[sx]).unwrap();
    let u1 = body.bin("u1", BinOp::Add, u, s).unwrap();
    body.g.outputs = vec![("s".into(), s1), ("u".into(), u1), ("prev".into(), s)];
    let mut c = Case::new(20);
    let s0 = c.param("s0", &[n, h], -1.0, 1.0);
    let u0 = c.param("u0", &[n, h], -1.0, 1.0);
    let xs = c.param("X", &[t, n, h], -1.0, 1.0);
    let w = c.param("w", &[h], -1.0, 1.0);
    let res = recurrence(&mut c, "loop", body.g, [2, 1, 1], false, &[s0, u0, xs, w]);
    let sum = c.b.bin("sum", BinOp::Add, res[0], res[1]).unwrap();
    c.loss(sum);
    c.check_both();
}

/// No carried state: a map over the steps; the loss reads only the stacked outputs.
#[test]
fn map_without_state() {
    let (t, n, h) = (4, 2, 3);
    let mut body = Builder::new(Graph::new());
    let x = body.g.add_input("x", f32_type(&[n, h]));
    let w = body.g.add_input("w", f32_type(&[h, h]));
    let y = body.op("y", Op::MatMul, &[x, w]).unwrap();
    let y = body.op("ty", Op::Unary(Act::Tanh), &[y]).unwrap();
    body.g.outputs = vec![("y".into(), y)];
    let mut c = Case::new(30);
    let xs = c.param("X", &[t, n, h], -1.0, 1.0);
    let w = c.param("w", &[h, h], -1.0, 1.0);
    let res = recurrence(&mut c, "map", body.g, [0, 1, 1], true, &[xs, w]);
    c.loss(res[0]);
    c.check_both();
}

/// Two recurrences in a row: the second scans the first's outputs.
#[test]
fn stacked_recurrences() {
    let (t, n, i, h) = (4, 2, 3, 3);
    let mut c = Case::new(40);
    let x = c.param("X", &[t, n, i], -1.0, 1.0);
    let h0 = c.input("h0", Tensor::zeros(hlstm_ir::DType::F32, &[n, h]));
    let w1 = c.param("W1", &[i, h], -0.7, 0.7);
    let r1 = c.param("R1", &[h, h], -0.7, 0.7);
    let b1 = c.param("b1", &[h], -0.3, 0.3);
    let w2 = c.param("W2", &[h, h], -0.7, 0.7);
    let r2 = c.param("R2", &[h, h], -0.7, 0.7);
    let b2 = c.param("b2", &[h], -0.3, 0.3);
    let l1 = recurrence(
        &mut c,
        "l1",
        rnn_body(n, i, h),
        [1, 1, 3],
        false,
        &[h0, x, w1, r1, b1],
    );
    let l2 = recurrence(
        &mut c,
        "l2",
        rnn_body(n, h, h),
        [1, 1, 3],
        false,
        &[h0, l1[1], w2, r2, b2],
    );
    c.loss(l2[0]);
    c.check_both();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn rnn_random_sizes(t in 1usize..=4, n in 1usize..=2, i in 1usize..=3, h in 1usize..=3, reverse in any::<bool>(), recompute in any::<bool>(), seed in any::<u64>()) {
        let save = if recompute { SaveMode::Recompute } else { SaveMode::Intermediates };
        rnn_sized(seed, reverse, [t, n, i, h]).check(Options { save });
    }
}
