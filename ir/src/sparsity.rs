//! Sparsity summaries of weights: how many nonzeros, and which rows and columns are empty.
//! For a weight used as `x · W` (shape [in, out]) an empty column is an output neuron with no
//! incoming weight and an empty row an input neuron with no outgoing weight; for `W · x` or a
//! Gemm with transB the roles swap, which is why both are kept.

use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sparsity {
    pub elements: usize,
    pub nonzeros: usize,
    /// Indices along the second-to-last axis whose slices are all zero (empty for rank < 2).
    pub zero_rows: Vec<usize>,
    /// Indices along the last axis whose slices are all zero (empty for rank < 2).
    pub zero_cols: Vec<usize>,
}

impl Sparsity {
    pub fn of(t: &Tensor) -> Sparsity {
        let elements = t.len();
        let nonzeros = t.nonzeros();
        let (mut zero_rows, mut zero_cols) = (Vec::new(), Vec::new());
        if let Tensor::F32(a) = t {
            let s = a.shape();
            if s.len() >= 2 {
                let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
                let mut row_nz = vec![false; r];
                let mut col_nz = vec![false; c];
                for (i, v) in a.iter().enumerate() {
                    if *v != 0.0 {
                        row_nz[(i / c) % r] = true;
                        col_nz[i % c] = true;
                    }
                }
                zero_rows = (0..r).filter(|&i| !row_nz[i]).collect();
                zero_cols = (0..c).filter(|&j| !col_nz[j]).collect();
            }
        }
        Sparsity {
            elements,
            nonzeros,
            zero_rows,
            zero_cols,
        }
    }

    pub fn density(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.nonzeros as f64 / self.elements as f64
        }
    }
}
