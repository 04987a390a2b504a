//! Property tests: gradients of broadcasting binary ops, numpy matmuls, slices and softmax over
//! random shapes agree with finite differences (tolerances in common/mod.rs).

mod common;

use common::Case;
use hlstm_ir::{BinOp, Op};
use hlstm_trainer::Options;
use proptest::prelude::*;

/// A shape of rank 1..=3 with dims 1..=3, and a shape that broadcasts to it: some dims set to
/// 1 and some leading dims dropped.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=3, 1..=3)
        .prop_flat_map(|a| {
            let r = a.len();
            (Just(a), prop::collection::vec(any::<bool>(), r), 0..=r)
        })
        .prop_map(|(a, ones, drop)| {
            let b: Vec<usize> = a
                .iter()
                .zip(&ones)
                .map(|(&d, &o)| if o { 1 } else { d })
                .collect();
            (a, b[drop..].to_vec())
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_broadcasting((sa, sb) in broadcast_pair(), swap in any::<bool>(), op in 0usize..4, seed in any::<u64>()) {
        let op = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div][op];
        let (sa, sb) = if swap { (sb, sa) } else { (sa, sb) };
        let mut c = Case::new(seed);
        let a = c.param("a", &sa, -1.0, 1.0);
        let b = if op == BinOp::Div { c.param("b", &sb, 0.5, 1.5) } else { c.param("b", &sb, -1.0, 1.0) };
        let y = c.b.bin("y", op, a, b).unwrap();
        c.loss(y);
        c.check(Options::default());
    }

    #[test]
    fn matmul_batched(m in 1usize..=3, k in 1usize..=3, n in 1usize..=3, ra in 1usize..=3, rb in 1usize..=3, bcast in any::<bool>(), seed in any::<u64>()) {
        // Batch dims [2] or [1] broadcast against each other; 1-D operands have none.
        let batch = |r: usize, one: bool| -> Vec<usize> { if r == 3 { vec![if one { 1 } else { 2 }] } else { vec![] } };
        let mut sa = batch(ra, bcast);
        sa.extend(if ra == 1 { vec![k] } else { vec![m, k] });
        let mut sb = batch(rb, false);
        sb.extend(if rb == 1 { vec![k] } else { vec![k, n] });
        let mut c = Case::new(seed);
        let a = c.param("a", &sa, -1.0, 1.0);
        let b = c.param("b", &sb, -1.0, 1.0);
        let y = c.b.op("y", Op::MatMul, &[a, b]).unwrap();
        c.loss(y);
        c.check(Options::default());
    }

    #[test]
    fn slices(dims in prop::collection::vec(1usize..=4, 1..=3), bounds in prop::collection::vec((-5i64..5, -5i64..6), 3), seed in any::<u64>()) {
        let r = dims.len();
        let mut c = Case::new(seed);
        let x = c.param("x", &dims, -1.0, 1.0);
        let starts: Vec<i64> = bounds[..r].iter().map(|b| b.0).collect();
        let ends: Vec<i64> = bounds[..r].iter().map(|b| b.1).collect();
        let (s, e) = (c.b.ints(&starts), c.b.ints(&ends));
        let y = c.b.op("y", Op::Slice, &[x, s, e]).unwrap();
        // An empty slice has nothing to differentiate: skip it.
        prop_assume!(c.b.dims(y).unwrap().iter().product::<usize>() > 0);
        c.loss(y);
        c.check(Options::default());
    }

    #[test]
    fn softmax_any_axis(dims in prop::collection::vec(1usize..=4, 1..=3), axis in 0usize..3, log in any::<bool>(), seed in any::<u64>()) {
        let axis = (axis % dims.len()) as i64;
        let mut c = Case::new(seed);
        let x = c.param("x", &dims, -2.0, 2.0);
        let op = if log { Op::LogSoftmax { axis } } else { Op::Softmax { axis } };
        let y = c.b.op("y", op, &[x]).unwrap();
        c.loss(y);
        c.check(Options::default());
    }
}
