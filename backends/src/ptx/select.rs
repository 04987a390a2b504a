//! The PTX target's kernel selection. Legalization (`legalize.rs`) generates two matmul
//! kernels: `dense` (a constant weight of strategy `dense`, a run-time weight, and a masked
//! run-time weight, read whole: it is zero outside its pattern) and a compressed-column one
//! for both sparse strategies, `sparse-unrolled` and `sparse-csr` alike (column starts, row
//! indices and values as module arrays). So on this target only the density crossing between
//! dense and sparse matters, and whether a masked weight is masked does not change its kernel.
//!
//! No crossing has been measured on a GPU yet: [`SELECTOR`] makes the CPU's choice
//! explicitly (its thresholds, `cpu::select`), so that a program lowered for PTX is the one
//! lowered for the CPU, its `.kir` and the comments of its PTX included. Measuring the
//! crossing of the compressed-column kernel against the dense one on a GPU would set a density
//! of this target's own; the unrolled/compressed split would stay irrelevant here.

use hlstm_ir::kernel::select::Thresholds;

/// The CPU's thresholds (see the module's documentation), with the rows of every buffer
/// outermost: the PTX kernels read a matmul's operand by rows.
pub const SELECTOR: Thresholds = Thresholds {
    rows_innermost: None,
    ..crate::cpu::select::SELECTOR
};
