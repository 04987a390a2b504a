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
                // One pass over the elements in the order they lie in memory (the weights of a
                // large model are scanned here once per constant, many of them transposed
                // views), without a branch per element: a pruned weight's nonzeros fall at
                // random, and a branch on each mispredicted about once per nonzero.
                if r > 0 && c > 0 {
                    let column_major = s.len() == 2 && a.strides() == [1, r as isize];
                    match (a.as_slice(), a.as_slice_memory_order()) {
                        (Some(flat), _) => {
                            for (i, row) in flat.chunks_exact(c).enumerate() {
                                let n = mark_line(row, &mut col_nz);
                                nonzeros += n;
                                row_nz[i % r] |= n > 0;
                            }
                        }
                        (None, Some(flat)) if column_major => {
                            for (j, col) in flat.chunks_exact(r).enumerate() {
                                let n = mark_line(col, &mut row_nz);
                                nonzeros += n;
                                col_nz[j] |= n > 0;
                            }
                        }
                        _ => {
                            let last = s.len() - 1;
                            for (k, row) in a.lanes(ndarray::Axis(last)).into_iter().enumerate() {
                                let n = mark_line(&row, &mut col_nz);
                                nonzeros += n;
                                row_nz[k % r] |= n > 0;
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

/// The nonzeros of one line of a matrix, each marked in `seen` by its index along the line;
/// branch-free, so that the compiler vectorizes it over a contiguous line.
fn mark_line<'a>(line: impl IntoIterator<Item = &'a f32>, seen: &mut [bool]) -> usize {
    let mut n = 0;
    for (flag, &v) in seen.iter_mut().zip(line) {
        let nz = v != 0.0;
        n += usize::from(nz);
        *flag |= nz;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use proptest::prelude::*;

    /// The counts by definition: element (.., i, j) by its index.
    fn naive(a: &ArrayD<f32>) -> (usize, Vec<usize>, Vec<usize>) {
        let s = a.shape();
        let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
        let (mut rows, mut cols, mut n) = (vec![false; r], vec![false; c], 0);
        for (idx, &v) in a.indexed_iter() {
            if v != 0.0 {
                n += 1;
                rows[idx[s.len() - 2]] = true;
                cols[idx[s.len() - 1]] = true;
            }
        }
        let zeros = |v: Vec<bool>| (0..v.len()).filter(|&i| !v[i]).collect();
        (n, zeros(rows), zeros(cols))
    }

    proptest! {
        /// Row-major, column-major (a transposed view) and other layouts (a transposed
        /// rank-3 tensor) give the counts of the definition.
        #[test]
        fn every_layout_counts_alike(
            dims in prop::collection::vec(1usize..6, 2..4),
            seed in 0u64..1000,
            layout in 0usize..3,
        ) {
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n as u64)
                .map(|k| f32::from((k.wrapping_mul(seed + 7) ^ seed) % 3 == 0))
                .collect();
            let base = ArrayD::from_shape_vec(IxDyn(&dims), data).expect("shape");
            let a = match layout {
                0 => base,
                1 => base.reversed_axes(),
                _ => {
                    let mut v = base;
                    let last = v.ndim() - 1;
                    v.swap_axes(0, last);
                    v
                }
            };
            let sp = Sparsity::of(&Tensor::F32(a.clone()));
            let (nz, rows, cols) = naive(&a);
            prop_assert_eq!(sp.nonzeros, nz);
            prop_assert_eq!(sp.zero_rows, rows);
            prop_assert_eq!(sp.zero_cols, cols);
            prop_assert_eq!(sp.elements, n);
        }
    }
}
