//! Growth on a constructed case where the largest gradients are known: a linear layer
//! y = X (W * mask) with loss sum(y * R), whose gradient is dL/dW = X^T R for every connection,
//! dormant or not. Over two batches the accumulated |dL/dW| is known in closed form, so the
//! connections growth must pick are known.

use hlstm_ir::{BinOp, DType, Graph, Tensor, TensorType};
use hlstm_trainer::exec::{Engine, Interp};
use hlstm_trainer::gp::{self, Masks, Scope};
use hlstm_trainer::{Builder, Options, training_graph};

const R: [f32; 6] = [1.0, -5.0, 0.5, 2.0, 0.0, -1.0]; // [2, 3]

fn graph() -> Graph {
    let mut b = Builder::new(Graph::new());
    let x = b.g.add_input("X", TensorType::known(DType::F32, &[2, 4]));
    let w = b.g.add_input("W", TensorType::known(DType::F32, &[4, 3]));
    let r = b.constant("R", Tensor::from_f32(&[2, 3], R.to_vec()).unwrap());
    let y = b.op("y", hlstm_ir::Op::MatMul, &[x, w]).unwrap();
    let p = b.bin("p", BinOp::Mul, y, r).unwrap();
    let loss = b.sum_to("loss", p, &[]).unwrap();
    b.g.outputs.push(("loss".into(), loss));
    training_graph(&b.g, "loss", &["W"], &Options::default()).unwrap()
}

/// X^T R for a batch X [2, 4].
fn expected(x: &[f32; 8]) -> Vec<f32> {
    let mut g = vec![0.0; 12];
    for n in 0..2 {
        for i in 0..4 {
            for j in 0..3 {
                g[i * 3 + j] += x[n * 4 + i] * R[n * 3 + j];
            }
        }
    }
    g
}

#[test]
fn growth_picks_the_connections_with_the_largest_accumulated_gradients() {
    let mut exec = Interp.load(&graph()).unwrap();
    let batches = [
        [1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, -1.0],
        [0.5, 0.0, -2.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    ];
    // Active: the diagonal-ish entries; every other connection is dormant.
    let active = [0, 4, 8, 9];
    let mut masks: Masks = vec![Some((0..12).map(|k| active.contains(&k)).collect())];
    let w: Vec<f32> = (0..12)
        .map(|k| {
            if active.contains(&k) {
                0.1 * k as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut acc = vec![vec![0.0f32; 12]];
    let mut want = [0.0f32; 12];
    for x in &batches {
        let out = exec
            .run(&[
                Tensor::from_f32(&[2, 4], x.to_vec()).unwrap(),
                Tensor::from_f32(&[4, 3], w.clone()).unwrap(),
            ])
            .unwrap();
        let g: Vec<f32> = out[1].as_f32().unwrap().iter().copied().collect();
        let e = expected(x);
        for k in 0..12 {
            assert!(
                (g[k] - e[k]).abs() < 1e-5,
                "dL/dW[{k}] = {}, expected {}",
                g[k],
                e[k]
            );
            acc[0][k] += g[k].abs();
            want[k] += e[k].abs();
        }
    }
    // Rank the dormant connections by the closed-form scores; growth must take the top half.
    let mut dormant: Vec<usize> = (0..12).filter(|k| !active.contains(k)).collect();
    dormant.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
    let grown = gp::grow(&mut masks, &acc, 0.5, Scope::Matrix);
    let mut got: Vec<usize> = grown.iter().map(|&(_, j)| j).collect();
    let mut top: Vec<usize> = dormant[..4].to_vec();
    got.sort();
    top.sort();
    assert_eq!(got, top, "scores {want:?}");
    // The active connections stay active, and global scope picks the same here (one matrix).
    let m = masks[0].as_ref().unwrap();
    assert!(active.iter().all(|&k| m[k]));
    let mut again: Masks = vec![Some((0..12).map(|k| active.contains(&k)).collect())];
    let g2 = gp::grow(&mut again, &acc, 0.5, Scope::Global);
    assert_eq!(g2, grown);
}
