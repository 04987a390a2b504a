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
        let (mut zero_rows, mut zero_cols) = (Vec::new(), Vec::new());
        if let Tensor::F32(a) = t {
            let s = a.shape();
            if s.len() >= 2 {
                let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
                let mut row_nz = vec![false; r];
                let mut col_nz = vec![false; c];
                let mut nonzeros = 0;
                // One pass over the elements in row-major order, row by row (no division per
                // element): the weights of a large model are scanned here once per constant.
                let mut count_row = |i: usize, row: &mut dyn Iterator<Item = f32>| {
                    for (j, v) in row.enumerate() {
                        if v != 0.0 {
                            nonzeros += 1;
                            row_nz[i % r] = true;
                            col_nz[j] = true;
                        }
                    }
                };
                if c > 0 {
                    match a.as_slice() {
                        Some(flat) => flat
                            .chunks_exact(c)
                            .enumerate()
                            .for_each(|(i, row)| count_row(i, &mut row.iter().copied())),
                        None => {
                            let mut it = a.iter().copied();
                            for i in 0..elements / c {
                                count_row(i, &mut it.by_ref().take(c));
                            }
                        }
                    }
                }
                zero_rows = (0..r).filter(|&i| !row_nz[i]).collect();
                zero_cols = (0..c).filter(|&j| !col_nz[j]).collect();
                return Sparsity {
                    elements,
                    nonzeros,
                    zero_rows,
                    zero_cols,
                };
            }
        }
        let nonzeros = t.nonzeros();
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
