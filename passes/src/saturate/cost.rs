//! The analytic cost model used for extraction: nonzero multiply-adds, bytes of weights
//! touched, and a fixed overhead per kernel. Constants and inputs are free.

use super::analysis::HEGraph;
use super::lang::HLang;
use egg::{CostFunction, Id, Language};

/// Per-kernel overhead, in multiply-add units: a launch, a loop, a pass over memory.
pub const KERNEL_OVERHEAD: f64 = 16.0;
/// Cost of touching one byte of weights, in multiply-add units.
pub const BYTE_COST: f64 = 0.25;
/// The least an op costs (ties between an op and a leaf go to the leaf).
pub const NODE_COST: f64 = 1e-3;

pub struct TensorCost<'a> {
    pub egraph: &'a HEGraph,
    /// Is this graph a recurrence body?
    pub in_body: bool,
}

impl TensorCost<'_> {
    fn elements(&self, id: Id) -> f64 {
        self.egraph[id]
            .data
            .concrete()
            .map_or(1.0, |d| d.iter().map(|&n| n as f64).product())
    }

    /// Work that does not depend on carried state leaves the time loop (the hoist pass moves it
    /// out and batches it over all steps): it pays no per-step kernel overhead, and its weights
    /// are read once per sequence instead of once per step, so only its work counts.
    fn own(&self, enode: &HLang, class: Option<Id>) -> f64 {
        match enode {
            HLang::Const(_) | HLang::Input(_) | HLang::NoOperand | HLang::Outputs(_) => return 0.0,
            // A reshape is a view: only the tie-breaking cost of being a node.
            HLang::Reshape(_) => return NODE_COST,
            _ => {}
        }
        let (work, bytes) = self.work_and_bytes(enode);
        let hoisted = self.in_body && class.is_some_and(|c| !self.egraph[c].data.on_state);
        // Every op costs at least NODE_COST, so a constant leaf always beats an op computing
        // the same value (x·0 is the constant 0, not a kernel).
        if hoisted {
            work + NODE_COST
        } else {
            work + BYTE_COST * bytes + KERNEL_OVERHEAD
        }
    }

    /// (multiply-adds or element operations, bytes of weights read) of one node.
    fn work_and_bytes(&self, enode: &HLang) -> (f64, f64) {
        match enode {
            // A reshape of a contiguous tensor is a view.
            HLang::Const(_)
            | HLang::Input(_)
            | HLang::NoOperand
            | HLang::Outputs(_)
            | HLang::Reshape(_) => (0.0, 0.0),
            HLang::MatMul([a, b]) => {
                let (da, db) = (&self.egraph[*a].data, &self.egraph[*b].data);
                let k = da.concrete().and_then(|d| d.last().copied()).unwrap_or(1) as f64;
                let n = db.concrete().and_then(|d| d.last().copied()).unwrap_or(1) as f64;
                let rows = self.elements(*a) / k.max(1.0);
                // Work on a constant weight counts its nonzeros only.
                match (&db.sparsity, &da.sparsity) {
                    (Some(s), _) => (rows * s.nonzeros as f64, s.nonzeros as f64 * 4.0),
                    (None, Some(s)) => (s.nonzeros as f64 * n, s.nonzeros as f64 * 4.0),
                    (None, None) => (rows * k * n, 0.0),
                }
            }
            other => {
                // Elementwise and data movement: one unit per element of the largest operand.
                let out = other
                    .children()
                    .iter()
                    .map(|c| self.elements(*c))
                    .fold(1.0, f64::max);
                (out, 0.0)
            }
        }
    }
}

impl CostFunction<HLang> for TensorCost<'_> {
    type Cost = f64;
    fn cost<C>(&mut self, enode: &HLang, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let class = self.egraph.lookup(enode.clone());
        let own = self.own(enode, class);
        enode.fold(own, |sum, id| sum + costs(id))
    }
}
