//! An independent count of the multiply-adds an H-LSTM step really needs, computed from the
//! weight arrays alone (no compiler code), by the rule of tests/fixtures/README.md:
//! the nonzero weights that remain once every zero weight and every dead or constant hidden
//! neuron is gone.
//!
//! - A hidden neuron with no nonzero incoming weight from a live source is a constant
//!   (`relu(b)`); it folds into the next layer's bias, so its outgoing weights go.
//! - A hidden neuron with no nonzero outgoing weight to a live target is dead; its incoming
//!   weights go.
//! - Sources of the first layer (the features of `[x, h]`) and targets of the last (the gate
//!   units) always stay. Removal repeats across layers until nothing changes.
//!
//! Every remaining weight is one multiply-add per time step and batch row.

use crate::modelgen::Hlstm;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveCount {
    /// Nonzero weights before any neuron is removed.
    pub nonzero_weights: usize,
    /// Multiply-adds per time step and batch row left after removal.
    pub live_macs: usize,
    /// Hidden neurons removed as constants, and as dead.
    pub constant_neurons: usize,
    pub dead_neurons: usize,
    /// Per gate (f, i, o, g): the live multiply-adds of each layer.
    pub per_layer: [Vec<usize>; 4],
}

/// Counts the live multiply-adds of one step for one batch row.
pub fn live_macs(m: &Hlstm) -> LiveCount {
    let mut out = LiveCount::default();
    for (g, layers) in m.gates.iter().enumerate() {
        let n_hidden = layers.len() - 1;
        // live[l][j]: hidden neuron j of hidden layer l is still there.
        let mut live: Vec<Vec<bool>> = layers[..n_hidden]
            .iter()
            .map(|l| vec![true; l.n_out])
            .collect();
        let src_live = |live: &Vec<Vec<bool>>, l: usize, i: usize| l == 0 || live[l - 1][i];
        let dst_live = |live: &Vec<Vec<bool>>, l: usize, j: usize| l == n_hidden || live[l][j];
        loop {
            let mut changed = false;
            for l in 0..n_hidden {
                for j in 0..layers[l].n_out {
                    if !live[l][j] {
                        continue;
                    }
                    let has_in = (0..layers[l].n_in)
                        .any(|i| layers[l].at(i, j) != 0.0 && src_live(&live, l, i));
                    if !has_in {
                        live[l][j] = false;
                        out.constant_neurons += 1;
                        changed = true;
                        continue;
                    }
                    let next = &layers[l + 1];
                    let has_out =
                        (0..next.n_out).any(|k| next.at(j, k) != 0.0 && dst_live(&live, l + 1, k));
                    if !has_out {
                        live[l][j] = false;
                        out.dead_neurons += 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for (l, layer) in layers.iter().enumerate() {
            out.nonzero_weights += layer.nonzeros();
            let mut n = 0;
            for i in 0..layer.n_in {
                if !src_live(&live, l, i) {
                    continue;
                }
                for j in 0..layer.n_out {
                    if layer.at(i, j) != 0.0 && dst_live(&live, l, j) {
                        n += 1;
                    }
                }
            }
            out.per_layer[g].push(n);
            out.live_macs += n;
        }
    }
    out
}
