//! A plain reference evaluator of the H-LSTM cell: scalar loops in f64, no compiler code.

use crate::modelgen::Hlstm;

/// The outputs of a run: `y` is `[T, B, H]` (every step's h), `y_h` is `[B, H]` (the last h).
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    pub y: Vec<f64>,
    pub y_h: Vec<f64>,
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Runs the cell over `x` (`[steps, batch, inputs]`, row-major) from `h_0 = c_0 = 0`.
pub fn evaluate(m: &Hlstm, x: &[f32], steps: usize, batch: usize) -> Outputs {
    let (nx, nh) = (m.inputs, m.hidden);
    assert_eq!(x.len(), steps * batch * nx, "X must be [T, B, X]");
    let mut h = vec![vec![0.0f64; nh]; batch];
    let mut c = vec![vec![0.0f64; nh]; batch];
    let mut y = Vec::with_capacity(steps * batch * nh);
    for t in 0..steps {
        for b in 0..batch {
            let base = (t * batch + b) * nx;
            let z: Vec<f64> = x[base..base + nx]
                .iter()
                .map(|v| *v as f64)
                .chain(h[b].iter().copied())
                .collect();
            let mut gate = [vec![], vec![], vec![], vec![]];
            for (g, layers) in m.gates.iter().enumerate() {
                let mut a = z.clone();
                for (l, layer) in layers.iter().enumerate() {
                    let mut next = vec![0.0f64; layer.n_out];
                    for (j, o) in next.iter_mut().enumerate() {
                        let mut s = layer.b[j] as f64;
                        for (i, ai) in a.iter().enumerate() {
                            s += ai * layer.at(i, j) as f64;
                        }
                        *o = if l + 1 < layers.len() {
                            s.max(0.0)
                        } else if g == 3 {
                            s.tanh()
                        } else {
                            sigmoid(s)
                        };
                    }
                    a = next;
                }
                gate[g] = a;
            }
            for k in 0..nh {
                c[b][k] = gate[0][k] * c[b][k] + gate[1][k] * gate[3][k];
                h[b][k] = gate[2][k] * c[b][k].tanh();
            }
        }
        for hb in &h {
            y.extend_from_slice(hb);
        }
    }
    let y_h = h.concat();
    Outputs { y, y_h }
}
