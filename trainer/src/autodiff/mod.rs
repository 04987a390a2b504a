//! Reverse-mode automatic differentiation as a graph-to-graph transform.
//!
//! [`training_graph`] copies a forward graph and appends the nodes that compute the gradient of
//! a scalar loss with respect to chosen graph inputs (the parameters). The result is an ordinary
//! graph: it prints as `.hir`, passes the verifier and runs in the reference interpreter. Its
//! outputs are the forward graph's outputs followed by one `grad.<param>` per parameter.
//!
//! Parameters are graph inputs, not constants: the trainer feeds the current weights at each
//! step, so one training graph serves the whole run (see docs/trainer.md).

mod linear;
mod recurrence;
mod rules;

use crate::Error;
use crate::builder::Builder;
use hlstm_ir::{DType, Graph, Op, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// What the backward pass of a `recurrence` reads from its forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveMode {
    /// Every forward value a gradient rule reads is saved per step (a scanned output of the
    /// forward recurrence): memory grows with T times those values, nothing is recomputed.
    #[default]
    Intermediates,
    /// Only the carried state entering each step is saved; the backward step recomputes the
    /// cell from it: memory T times the state, one more cell evaluation per step.
    Recompute,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub save: SaveMode,
}

/// The name of the training graph's output holding the gradient of `param`.
pub fn grad_output_name(param: &str) -> String {
    format!("grad.{param}")
}

/// Builds the training graph of `fwd`: its outputs, then `grad.<p>` = dL/dp for each parameter
/// `p` (a graph input of type f32), where L is the forward output named `loss` (an f32 with one
/// element). A parameter the loss does not depend on gets a zero gradient.
pub fn training_graph(
    fwd: &Graph,
    loss: &str,
    params: &[&str],
    opts: &Options,
) -> Result<Graph, Error> {
    hlstm_ir::verify::verify(fwd).map_err(|e| Error::new(format!("forward graph: {e}")))?;
    let (_, loss_v) = fwd
        .outputs
        .iter()
        .find(|(n, _)| n == loss)
        .ok_or_else(|| Error::new(format!("the graph has no output named '{loss}'")))?;
    let loss_v = *loss_v;
    let mut b = Builder::new(fwd.clone());
    let loss_dims = b.dims(loss_v).map_err(Error::new)?;
    if b.dtype(loss_v) != DType::F32 || loss_dims.iter().product::<usize>() != 1 {
        return Err(Error::new(format!(
            "the loss '{loss}' must be an f32 with one element, got {}",
            fwd.value_type(loss_v)
        )));
    }
    let mut wrt = Vec::new();
    for p in params {
        let v = fwd
            .inputs
            .iter()
            .map(|&n| Value { node: n, slot: 0 })
            .find(|v| fwd.value_info(*v).name == *p)
            .ok_or_else(|| Error::new(format!("no graph input named '{p}' to differentiate")))?;
        if b.dtype(v) != DType::F32 {
            return Err(Error::new(format!(
                "parameter '{p}' has type {}; only f32 inputs have gradients",
                fwd.value_type(v)
            )));
        }
        wrt.push(v);
    }
    let order = fwd
        .topo_order()
        .map_err(|n| Error::new(format!("the graph has a cycle through node '{n}'")))?;
    let seed = b.fill(1.0, &loss_dims).map_err(Error::new)?;
    let ctx = Ctx {
        opts,
        varied: HashSet::new(),
        depth: 0,
    };
    let grads = backprop(&mut b, &order, &[(loss_v, seed)], &wrt, &wrt, ctx)?;
    for ((p, v), g) in params.iter().zip(&wrt).zip(grads) {
        let g = match g {
            Some(g) => g,
            None => {
                let d = b.dims(*v).map_err(Error::new)?;
                b.fill(0.0, &d).map_err(Error::new)?
            }
        };
        b.g.outputs.push((grad_output_name(p), g));
    }
    hlstm_ir::verify::verify(&b.g).map_err(|e| {
        Error::new(format!(
            "internal error: the training graph is invalid: {e}"
        ))
    })?;
    Ok(b.g)
}

/// What a gradient rule needs to know besides its node.
pub(crate) struct Ctx<'a> {
    pub opts: &'a Options,
    /// Values that depend on a parameter (filled in by `backprop`).
    pub varied: HashSet<Value>,
    /// Recurrence nesting: 0 in the top-level graph.
    pub depth: usize,
}

/// The reverse sweep over the forward nodes `order` (topological) of `b.g`: starting from the
/// adjoints `seeds` (value, dL/dvalue), accumulates adjoints back to `wrt`. Only nodes on a
/// path from `varied_start` to a seed get rules applied. Returns dL/dv for each `wrt`, or None
/// where no path exists.
pub(crate) fn backprop(
    b: &mut Builder,
    order: &[NodeIndex],
    seeds: &[(Value, Value)],
    varied_start: &[Value],
    wrt: &[Value],
    mut ctx: Ctx,
) -> Result<Vec<Option<Value>>, Error> {
    let varied = propagate_varied(&b.g, order, varied_start);
    ctx.varied = varied;
    let mut adj: HashMap<Value, Value> = HashMap::new();
    for &(v, d) in seeds {
        add_adjoint(b, &mut adj, v, d)?;
    }
    for &n in order.iter().rev() {
        let nres = b.g.nodes[n].results.len();
        let dres: Vec<Option<Value>> = (0..nres)
            .map(|slot| adj.get(&Value { node: n, slot }).copied())
            .collect();
        if dres.iter().all(Option::is_none) {
            continue;
        }
        let ops = b.g.operands(n);
        let needs: Vec<bool> = ops
            .iter()
            .map(|o| o.is_some_and(|v| ctx.varied.contains(&v)))
            .collect();
        if !needs.contains(&true) {
            continue;
        }
        let mark = b.mark();
        let contrib = rules::vjp(b, &ctx, n, &needs, &dres)?;
        let created: HashSet<NodeIndex> = b.created_since(mark).iter().copied().collect();
        for (slot, c) in contrib.into_iter().enumerate() {
            let (Some(c), Some(Some(v))) = (c, ops.get(slot)) else {
                continue;
            };
            if !needs[slot] {
                continue;
            }
            let (want, got) = (b.g.value_type(*v), b.g.value_type(c));
            if want.concrete() != got.concrete() || want.dtype != got.dtype {
                return Err(Error::at(
                    &b.g.nodes[n],
                    format!("internal error: gradient of operand {slot} is {got}, expected {want}"),
                ));
            }
            // A contribution the rule made gets the readable name d.<operand>.
            let made = created.contains(&c.node);
            if made && b.g.value_info(c).name.starts_with("t.") {
                let base = format!("d.{}", b.g.value_info(*v).name);
                b.rename(c, &base);
            }
            add_adjoint(b, &mut adj, *v, c)?;
        }
    }
    Ok(wrt.iter().map(|v| adj.get(v).copied()).collect())
}

fn add_adjoint(
    b: &mut Builder,
    adj: &mut HashMap<Value, Value>,
    v: Value,
    d: Value,
) -> Result<(), Error> {
    let sum = match adj.get(&v) {
        None => d,
        Some(&prev) => {
            let base = format!("d.{}", b.g.value_info(v).name);
            b.accumulate(&base, Some(prev), d).map_err(Error::new)?
        }
    };
    adj.insert(v, sum);
    Ok(())
}

/// The values that depend on `start` through the nodes `order` (topological). Only f32 values
/// carry gradients, so an integer result (a shape, a mask cast to bool) stops the chain.
pub(crate) fn propagate_varied(g: &Graph, order: &[NodeIndex], start: &[Value]) -> HashSet<Value> {
    let mut varied: HashSet<Value> = start.iter().copied().collect();
    for &n in order {
        if matches!(g.nodes[n].op, Op::Input | Op::Const(_)) {
            continue;
        }
        if g.operands(n).iter().flatten().any(|v| varied.contains(v)) {
            for (slot, r) in g.nodes[n].results.iter().enumerate() {
                if r.ty.dtype == DType::F32 {
                    varied.insert(Value { node: n, slot });
                }
            }
        }
    }
    varied
}
