//! The CPU target's kernel selection (x86-64 with 128-bit vectors, through Cranelift): which
//! kernel a matmul with a weight known when compiling gets (docs/kernels.md, "The strategy for
//! constant weights"). The lowering asks [`SELECTOR`] when the caller hands it over
//! (`hlstm_passes::lower::LowerOptions::selector`).

use hlstm_ir::kernel::select::Thresholds;

/// Most nonzeros a matrix may have to be generated fully unrolled (one FMA per nonzero, the
/// weight an immediate): about 18 bytes of code each, so a matrix's code stays under 72 KiB.
/// Measured (docs/kernels.md,
/// the strategy timing table): the unrolled kernel wins on small matrices, the compressed-column
/// loop (6 bytes of data per nonzero) from a few thousand nonzeros on; at 150k unrolled
/// nonzeros per step the code no longer fits and runs 3x slower than the loop.
pub const UNROLL_MAX_NONZEROS: usize = 4096;

/// Highest density at which a sparse kernel is chosen over the dense one. A sparse kernel does
/// one scalar FMA per nonzero; the dense kernel does four lanes per 128-bit FMA but over every
/// weight, so the two meet near density 1/4; the dense kernel also streams every weight from
/// memory while the unrolled one streams none, which moves the crossing a little higher. A
/// masked run-time weight (the trainer's) gets the compressed kernel over its pattern up to the
/// same density.
pub const SPARSE_MAX_DENSITY: f64 = 0.3;

/// The CPU's cost model: dense above [`SPARSE_MAX_DENSITY`]; otherwise unrolled up to
/// [`UNROLL_MAX_NONZEROS`] nonzeros, and a compressed-row loop beyond. The rows of the left
/// operand do not change the choice (the kernels vectorize across four rows alike).
pub const SELECTOR: Thresholds = Thresholds {
    sparse_max_density: SPARSE_MAX_DENSITY,
    unroll_max_nonzeros: UNROLL_MAX_NONZEROS,
    rows_innermost: Some(ROWS_INNERMOST),
};

/// Rows from which the sparse kernels' operands and results are stored rows innermost
/// (`hlstm_passes::lower::rows_inner`): the kernels take vectors of rows from four rows
/// (`layout::row_vector_rows`), and with the rows innermost they read and write them in place
/// instead of transposing them into scratch and back.
pub const ROWS_INNERMOST: usize = 4;
