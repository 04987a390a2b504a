//! Kernel selection, a hook of each target (docs/ARCHITECTURE.md, "Backends"): the lowering
//! says what a matmul computes, the target says how its hardware computes it best. A backend
//! supplies a [`KernelSelector`] (the CPU's in `hlstm_backends::cpu::select`, the PTX
//! backend's in `hlstm_backends::ptx::select`), and the caller hands it to the lowering
//! (`hlstm_passes::lower::LowerOptions::selector`).

use super::Strategy;
use std::fmt::Debug;

/// How a target generates matmuls with weights known when compiling.
pub trait KernelSelector: Debug + Send + Sync {
    /// The strategy for a constant [k, n] weight with `nonzeros` nonzero elements, multiplied
    /// by a left operand of `rows` rows (as lowered: per statement, per step in a time loop).
    fn choose(&self, k: usize, n: usize, nonzeros: usize, rows: usize) -> Strategy;

    /// Whether a run-time [k, n] weight known to be zero outside a pattern of `nonzeros`
    /// nonzeros (a trainer's mask) gets a kernel over the pattern ([`super::Weight::Masked`])
    /// instead of a dense one.
    fn masked(&self, k: usize, n: usize, nonzeros: usize) -> bool;

    /// From how many rows the target's sparse kernels want their operands and results stored
    /// with the rows innermost (`hlstm_passes::lower::rows_inner`); None: never.
    fn rows_innermost(&self) -> Option<usize> {
        None
    }
}

/// The cost model of two thresholds: dense above `sparse_max_density`; otherwise unrolled up to
/// `unroll_max_nonzeros` nonzeros, and a compressed-row loop beyond. A masked weight is
/// compressed at most `sparse_max_density` dense. Each target gives its own values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Highest density (nonzeros over elements) at which a sparse kernel is chosen.
    pub sparse_max_density: f64,
    /// Most nonzeros of a matrix generated fully unrolled.
    pub unroll_max_nonzeros: usize,
    /// See [`KernelSelector::rows_innermost`].
    pub rows_innermost: Option<usize>,
}

impl KernelSelector for Thresholds {
    fn choose(&self, k: usize, n: usize, nonzeros: usize, _rows: usize) -> Strategy {
        let elements = (k * n).max(1);
        let density = nonzeros as f64 / elements as f64;
        if density > self.sparse_max_density {
            Strategy::Dense
        } else if nonzeros <= self.unroll_max_nonzeros {
            Strategy::SparseUnrolled
        } else {
            Strategy::SparseCsr
        }
    }

    fn masked(&self, k: usize, n: usize, nonzeros: usize) -> bool {
        nonzeros as f64 <= self.sparse_max_density * (k * n) as f64
    }

    fn rows_innermost(&self) -> Option<usize> {
        self.rows_innermost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_split_dense_unrolled_and_compressed() {
        let t = Thresholds {
            sparse_max_density: 0.3,
            unroll_max_nonzeros: 100,
            rows_innermost: None,
        };
        assert_eq!(t.choose(10, 10, 31, 1), Strategy::Dense);
        assert_eq!(t.choose(10, 10, 30, 1), Strategy::SparseUnrolled);
        assert_eq!(t.choose(100, 100, 101, 1), Strategy::SparseCsr);
        assert_eq!(t.choose(0, 0, 0, 1), Strategy::SparseUnrolled);
        assert!(t.masked(10, 10, 30) && !t.masked(10, 10, 31));
    }
}
