//! Counts over a graph: ops, weights with their sparsity, and multiply-adds per time step.
//!
//! Multiply-adds count matmul and Gemm work only, for one sequence of the model's declared
//! length, divided by the number of steps T and by the batch B (so work hoisted out of the time
//! loop counts the same as work inside it). A matmul with a constant operand costs its dense
//! multiply-adds times that constant's density in the nonzero count. Symbolic dims count as 1.

use crate::graph::{Graph, Value};
use crate::op::{Constant, Op};
use crate::sparsity::Sparsity;
use crate::tensor::{DType, Dim, TensorType};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct WeightStat {
    pub name: String,
    pub shape: Vec<usize>,
    pub sparsity: Sparsity,
}

#[derive(Clone, Debug, Default)]
pub struct GraphStats {
    /// Op kind -> count, recurrence bodies included (inputs and constants are not ops).
    pub ops: BTreeMap<String, usize>,
    /// Op kind -> count inside recurrence bodies only.
    pub loop_body_ops: BTreeMap<String, usize>,
    pub weights: Vec<WeightStat>,
    pub params_dense: usize,
    pub params_nonzero: usize,
    /// The steps and batch that multiply-adds are divided by.
    pub steps: usize,
    pub batch: usize,
    pub macs_per_step_dense: f64,
    pub macs_per_step_nonzero: f64,
}

fn dims_or_one(ty: &TensorType) -> Vec<usize> {
    ty.shape
        .as_ref()
        .map(|s| s.iter().map(|d| d.known().unwrap_or(1)).collect())
        .unwrap_or_default()
}

/// The declared sequence length and batch: from the first recurrence's sequence operand
/// ([T, B, ...]), or else from the first rank-3 graph input ([T, B, F], PyTorch's default).
fn steps_and_batch(g: &Graph) -> (usize, usize) {
    let known = |d: Option<&Dim>| d.and_then(Dim::known).unwrap_or(1);
    for n in g.nodes.node_indices() {
        if let Op::Recurrence(r) = &g.nodes[n].op
            && let Some(Some(v)) = g.operands(n).get(r.num_carried)
        {
            let s = g.value_type(*v).shape.clone().unwrap_or_default();
            return (
                known(s.first()),
                if s.len() >= 3 { known(s.get(1)) } else { 1 },
            );
        }
    }
    for &i in &g.inputs {
        let ty = &g.nodes[i].results[0].ty;
        if let Some(s) = &ty.shape
            && s.len() == 3
            && ty.dtype == DType::F32
        {
            return (known(s.first()), known(s.get(1)));
        }
    }
    (1, 1)
}

pub fn graph_stats(g: &Graph) -> GraphStats {
    let mut st = GraphStats::default();
    let (steps, batch) = steps_and_batch(g);
    st.steps = steps;
    st.batch = batch;
    let mut seen: HashSet<*const Constant> = HashSet::new();
    let (mut dense, mut nonzero) = (0f64, 0f64);
    collect(g, 1.0, false, &mut st, &mut seen, &mut dense, &mut nonzero);
    let div = (steps as f64 * batch as f64).max(1.0);
    st.macs_per_step_dense = dense / div;
    st.macs_per_step_nonzero = nonzero / div;
    st
}

fn density_of(g: &Graph, v: Value) -> Option<f64> {
    g.constant(v).map(|c| Sparsity::of(&c.value).density())
}

fn collect(
    g: &Graph,
    trips: f64,
    in_body: bool,
    st: &mut GraphStats,
    seen: &mut HashSet<*const Constant>,
    dense: &mut f64,
    nonzero: &mut f64,
) {
    for n in g.nodes.node_indices() {
        let node = &g.nodes[n];
        match &node.op {
            Op::Input => continue,
            Op::Const(c) => {
                // Weights: f32 constants that something reads.
                let used = g
                    .nodes
                    .neighbors_directed(n, petgraph::Direction::Outgoing)
                    .next()
                    .is_some();
                if c.value.dtype() == DType::F32
                    && !c.value.shape().is_empty()
                    && used
                    && seen.insert(Arc::as_ptr(c))
                {
                    let sp = Sparsity::of(&c.value);
                    st.params_dense += sp.elements;
                    st.params_nonzero += sp.nonzeros;
                    st.weights.push(WeightStat {
                        name: c.name.clone(),
                        shape: c.value.shape().to_vec(),
                        sparsity: sp,
                    });
                }
                continue;
            }
            _ => {}
        }
        *st.ops.entry(node.op.kind().to_string()).or_default() += 1;
        if in_body {
            *st.loop_body_ops
                .entry(node.op.kind().to_string())
                .or_default() += 1;
        }
        let ops = g.operands(n);
        match &node.op {
            Op::MatMul | Op::Gemm { .. } => {
                let (Some(Some(a)), Some(Some(b))) = (ops.first(), ops.get(1)) else {
                    continue;
                };
                let out: f64 = dims_or_one(&node.results[0].ty)
                    .iter()
                    .map(|&d| d as f64)
                    .product();
                let a_dims = dims_or_one(g.value_type(*a));
                let k = match &node.op {
                    Op::Gemm { trans_a: true, .. } => a_dims.first().copied().unwrap_or(1),
                    _ => a_dims.last().copied().unwrap_or(1),
                };
                let macs = out * k as f64 * trips;
                let density = density_of(g, *b)
                    .or_else(|| density_of(g, *a))
                    .unwrap_or(1.0);
                *dense += macs;
                *nonzero += macs * density;
            }
            Op::Recurrence(r) => {
                let t = ops
                    .get(r.num_carried)
                    .copied()
                    .flatten()
                    .and_then(|v| {
                        g.value_type(v)
                            .shape
                            .as_ref()
                            .and_then(|s| s.first().and_then(Dim::known))
                    })
                    .unwrap_or(1);
                collect(&r.body, trips * t as f64, true, st, seen, dense, nonzero);
            }
            _ => {}
        }
    }
}
