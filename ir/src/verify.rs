//! The verifier: rejects an ill-formed graph with a message naming the node.

use crate::graph::Graph;
use crate::op::Op;
use crate::shape::infer_in;
use crate::tensor::{Dim, TensorType};

fn compatible(declared: &TensorType, inferred: &TensorType) -> bool {
    if declared.dtype != inferred.dtype {
        return false;
    }
    match (&declared.shape, &inferred.shape) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (Dim::Known(p), Dim::Known(q)) => p == q,
                    _ => true,
                })
        }
        _ => true,
    }
}

/// Checks operand arity and slots, acyclicity, graph inputs and outputs, recurrence bodies, and
/// that each node's declared result types agree with inference.
pub fn verify(g: &Graph) -> Result<(), String> {
    verify_in(g, "")
}

fn verify_in(g: &Graph, ctx: &str) -> Result<(), String> {
    let order = g
        .topo_order()
        .map_err(|n| format!("{ctx}node '{n}': the graph has a cycle"))?;
    for &i in &g.inputs {
        if !matches!(g.nodes.node_weight(i).map(|n| &n.op), Some(Op::Input)) {
            return Err(format!(
                "{ctx}graph input #{} is not an input node",
                i.index()
            ));
        }
    }
    for (name, v) in &g.outputs {
        match g.nodes.node_weight(v.node) {
            Some(n) if v.slot < n.results.len() => {}
            _ => {
                return Err(format!(
                    "{ctx}graph output '{name}' refers to a missing value"
                ));
            }
        }
    }
    for n in order {
        let node = &g.nodes[n];
        let at = |msg: String| format!("{ctx}node '{}' ({}): {msg}", node.name, node.op.kind());
        if matches!(node.op, Op::Input) && !g.inputs.contains(&n) {
            return Err(at("an input node that is not a graph input".into()));
        }
        if node.results.len() != node.op.num_results() {
            return Err(at(format!(
                "has {} results, the op makes {}",
                node.results.len(),
                node.op.num_results()
            )));
        }
        let operands = g.operands(n);
        for o in operands.iter().flatten() {
            if o.slot >= g.nodes[o.node].results.len() {
                return Err(at(format!(
                    "reads result {} of '{}', which has fewer",
                    o.slot, g.nodes[o.node].name
                )));
            }
        }
        if let Op::Recurrence(r) = &node.op {
            let body = &r.body;
            let expect_in = r.num_carried + r.num_scanned + r.num_invariant;
            if body.inputs.len() != expect_in {
                return Err(at(format!(
                    "body has {} inputs, expected {expect_in}",
                    body.inputs.len()
                )));
            }
            if body.outputs.len() < r.num_carried {
                return Err(at("body has fewer outputs than carried states".into()));
            }
            if r.num_scanned == 0 {
                return Err(at("needs at least one scanned input".into()));
            }
            verify_in(body, &format!("{ctx}body of '{}': ", node.name))?;
        }
        if matches!(node.op, Op::Input | Op::Const(_)) {
            continue;
        }
        let inferred = infer_in(g, &node.op, &operands).map_err(at)?;
        for (slot, (decl, inf)) in node.results.iter().zip(&inferred).enumerate() {
            if !compatible(&decl.ty, inf) {
                return Err(at(format!(
                    "result {slot} is declared {} but inference gives {inf}",
                    decl.ty
                )));
            }
        }
    }
    Ok(())
}
