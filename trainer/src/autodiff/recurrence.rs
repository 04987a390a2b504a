//! Backpropagation through time: the gradient of a `recurrence` is another recurrence that runs
//! the steps in the opposite order.
//!
//! Its body is the vector-Jacobian product of the forward body. It carries the adjoint of each
//! varying state (dL/dc entering the step from the later steps) and one accumulator per
//! invariant that needs a gradient (a weight: its gradient is the sum over steps). It scans the
//! adjoints of the per-step outputs and the values the forward pass saved for each step; it
//! emits the adjoint of each scanned input that needs one, per step. The forward recurrence gets
//! the saved values as extra per-step outputs (see `SaveMode`).

use super::{Ctx, SaveMode, backprop, propagate_varied};
use crate::Error;
use crate::builder::{Builder, compact};
use hlstm_ir::{BinOp, Graph, Op, Recurrence, TensorType, Value};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashSet;

pub(crate) fn vjp(
    b: &mut Builder,
    ctx: &Ctx,
    n: NodeIndex,
    r: &Recurrence,
    needs: &[bool],
    dres: &[Option<Value>],
) -> Result<Vec<Option<Value>>, Error> {
    let node = b.g.nodes[n].clone();
    let at = |m: String| Error::at(&node, m);
    if ctx.depth > 0 {
        return Err(at(
            "no gradients through a recurrence nested in a body".into()
        ));
    }
    if r.has_seq_lens {
        return Err(at(
            "no gradients through a recurrence with sequence lengths".into(),
        ));
    }
    let (nc, ns, ni) = (r.num_carried, r.num_scanned, r.num_invariant);
    let ops: Vec<Value> =
        b.g.operands(n)
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| at("an operand slot is empty".into()))?;
    let body: &Graph = &r.body;
    let bin: Vec<Value> = body
        .inputs
        .iter()
        .map(|&i| Value { node: i, slot: 0 })
        .collect();
    let bout: Vec<Value> = body.outputs.iter().map(|(_, v)| *v).collect();
    let in_name = |i: usize| body.value_info(bin[i]).name.clone();
    let order = body
        .topo_order()
        .map_err(|c| at(format!("the body has a cycle through '{c}'")))?;

    // A carried state varies if its initial value does or its next value does (a fixpoint).
    let outer_varied = |i: usize| ctx.varied.contains(&ops[i]);
    let mut cvar: Vec<bool> = (0..nc).map(outer_varied).collect();
    let varied_start = loop {
        let start: Vec<Value> = (0..nc + ns + ni)
            .filter(|&i| if i < nc { cvar[i] } else { outer_varied(i) })
            .map(|i| bin[i])
            .collect();
        let vs = propagate_varied(body, &order, &start);
        let next: Vec<bool> = (0..nc).map(|i| cvar[i] || vs.contains(&bout[i])).collect();
        if next == cvar {
            break start;
        }
        cvar = next;
    };
    let carried: Vec<usize> = (0..nc).filter(|&i| cvar[i]).collect();
    let scanned: Vec<usize> = (nc..nc + ns).filter(|&i| needs[i]).collect();
    let invs: Vec<usize> = (nc + ns..nc + ns + ni).filter(|&i| needs[i]).collect();
    let steps: Vec<usize> = (0..bout.len() - nc)
        .filter(|&k| dres[nc + k].is_some())
        .collect();

    // The backward body starts as a copy of the forward body, so rules can read forward values.
    let mut bb = Builder::new(body.clone());
    let fwd_nodes: HashSet<NodeIndex> = body.nodes.node_indices().collect();
    let mut seeds = Vec::new();
    let mut new_inputs = Vec::new();
    let mut add_in = |bb: &mut Builder, name: String, ty: TensorType| {
        let name = bb.fresh(&name);
        let v = bb.g.add_input(&name, ty);
        new_inputs.push(v);
        v
    };
    let dc_in: Vec<Value> = carried
        .iter()
        .map(|&i| {
            add_in(
                &mut bb,
                format!("d.{}", body.outputs[i].0),
                body.value_type(bout[i]).clone(),
            )
        })
        .collect();
    let acc_in: Vec<Value> = invs
        .iter()
        .map(|&i| {
            add_in(
                &mut bb,
                format!("acc.{}", in_name(i)),
                body.value_type(bin[i]).clone(),
            )
        })
        .collect();
    let dy_in: Vec<Value> = steps
        .iter()
        .map(|&k| {
            let o = nc + k;
            add_in(
                &mut bb,
                format!("d.{}", body.outputs[o].0),
                body.value_type(bout[o]).clone(),
            )
        })
        .collect();
    seeds.extend(carried.iter().map(|&i| bout[i]).zip(dc_in.iter().copied()));
    seeds.extend(
        steps
            .iter()
            .map(|&k| bout[nc + k])
            .zip(dy_in.iter().copied()),
    );
    let wrt: Vec<Value> = carried
        .iter()
        .chain(&scanned)
        .chain(&invs)
        .map(|&i| bin[i])
        .collect();
    let sub = Ctx {
        opts: ctx.opts,
        varied: HashSet::new(),
        depth: ctx.depth + 1,
    };
    let grads = backprop(&mut bb, &order, &seeds, &varied_start, &wrt, sub)
        .map_err(|e| e.context(&format!("in the body of recurrence '{}'", node.name)))?;

    // Body outputs: state adjoints, accumulated invariant gradients, per-step input adjoints.
    let e = |m: String| at(format!("backward body: {m}"));
    let mut outs = Vec::new();
    for (k, &i) in carried.iter().enumerate() {
        let d = match grads[k] {
            Some(d) => d,
            None => bb.fill(0.0, &bb.dims(bin[i]).map_err(e)?).map_err(e)?,
        };
        outs.push((format!("d.{}", in_name(i)), d));
    }
    for (k, &i) in invs.iter().enumerate() {
        let acc = acc_in[k];
        let d = match grads[carried.len() + scanned.len() + k] {
            Some(g) => bb
                .bin(&format!("acc.{}", in_name(i)), BinOp::Add, acc, g)
                .map_err(e)?,
            None => acc,
        };
        outs.push((format!("acc.{}", in_name(i)), d));
    }
    for (k, &i) in scanned.iter().enumerate() {
        let d = match grads[carried.len() + k] {
            Some(d) => d,
            None => bb.fill(0.0, &bb.dims(bin[i]).map_err(e)?).map_err(e)?,
        };
        outs.push((format!("d.{}", in_name(i)), d));
    }
    bb.g.outputs = outs;

    // What the backward body reads from the forward pass. Intermediates become per-step inputs
    // (saved by the forward pass) unless they are recomputed; constants stay in the body.
    let mut saved: Vec<(Value, Value)> = Vec::new();
    if ctx.opts.save == SaveMode::Intermediates {
        let mut read = Vec::new();
        for m in bb.g.nodes.node_indices().filter(|m| !fwd_nodes.contains(m)) {
            for v in bb.g.operands(m).into_iter().flatten() {
                let fwd = fwd_nodes.contains(&v.node);
                if fwd
                    && !matches!(bb.g.nodes[v.node].op, Op::Input | Op::Const(_))
                    && !read.contains(&v)
                {
                    read.push(v);
                }
            }
        }
        for v in read {
            let name = format!("saved.{}", body.value_info(v).name);
            let s = add_in(&mut bb, name, body.value_type(v).clone());
            bb.g.replace_uses(v, s);
            saved.push((v, s));
        }
    }
    let live = live_nodes(&bb.g);
    let used = |i: usize| live.contains(&bin[i].node);
    let c_used: Vec<usize> = (0..nc).filter(|&i| used(i)).collect();
    let mut x_used: Vec<usize> = (nc..nc + ns).filter(|&i| used(i)).collect();
    let w_used: Vec<usize> = (nc + ns..nc + ns + ni).filter(|&i| used(i)).collect();
    // A recurrence needs a scanned input to know its length.
    if dy_in.is_empty() && c_used.is_empty() && saved.is_empty() && x_used.is_empty() {
        x_used.push(nc);
    }
    let kept: HashSet<NodeIndex> = live
        .iter()
        .copied()
        .chain(new_inputs.iter().map(|v| v.node))
        .chain(x_used.iter().map(|&i| bin[i].node))
        .collect();
    let dead: Vec<NodeIndex> =
        bb.g.nodes
            .node_indices()
            .filter(|m| !kept.contains(m))
            .collect();
    for m in dead {
        bb.g.nodes.remove_node(m);
    }
    let mut inputs: Vec<Value> = dc_in.iter().chain(&acc_in).chain(&dy_in).copied().collect();
    inputs.extend(c_used.iter().map(|&i| bin[i]));
    inputs.extend(saved.iter().map(|(_, s)| *s));
    inputs.extend(x_used.iter().chain(&w_used).map(|&i| bin[i]));
    bb.g.inputs = inputs.iter().map(|v| v.node).collect();
    let bwd_body = compact(&bb.g).map_err(e)?;

    // The forward recurrence emits what is saved, per step; reuse its per-step outputs.
    let mut fwd_body = body.clone();
    let mut fwd_results = node.results.clone();
    let t_dim =
        b.g.value_type(ops[nc])
            .shape
            .as_ref()
            .and_then(|s| s.first().cloned());
    let mut stacked = |v: Value, name: String| -> Value {
        if let Some(k) = bout[nc..].iter().position(|o| *o == v) {
            return Value {
                node: n,
                slot: nc + k,
            };
        }
        let ty = body.value_type(v);
        let shape = match (&t_dim, &ty.shape) {
            (Some(t), Some(s)) => Some(
                std::iter::once(t.clone())
                    .chain(s.iter().cloned())
                    .collect(),
            ),
            _ => None,
        };
        fwd_body.outputs.push((format!("saved.{name}"), v));
        fwd_results.push(hlstm_ir::ValueInfo {
            name: b.fresh(&format!("{}.saved.{name}", node.name)),
            ty: TensorType {
                dtype: ty.dtype,
                shape,
            },
        });
        Value {
            node: n,
            slot: fwd_results.len() - 1,
        }
    };
    let saved_c: Vec<Value> = c_used
        .iter()
        .map(|&i| stacked(bin[i], in_name(i)))
        .collect();
    let saved_v: Vec<Value> = saved
        .iter()
        .map(|(v, _)| stacked(*v, body.value_info(*v).name.clone()))
        .collect();
    let mut fr = r.clone();
    fr.body = Box::new(fwd_body);
    b.g.nodes[n].op = Op::Recurrence(fr);
    b.g.nodes[n].results = fwd_results;

    // The backward recurrence in the outer graph.
    let mut operands = Vec::new();
    let mut names = Vec::new();
    let op_name = |b: &Builder, i: usize| b.g.value_info(ops[i]).name.clone();
    for &i in &carried {
        let d = match dres[i] {
            Some(d) => d,
            None => b.fill(0.0, &b.dims(ops[i]).map_err(e)?).map_err(e)?,
        };
        operands.push(Some(d));
        names.push(format!("d.{}", op_name(b, i)));
    }
    for &i in &invs {
        operands.push(Some(b.fill(0.0, &b.dims(ops[i]).map_err(e)?).map_err(e)?));
        names.push(format!("d.{}", op_name(b, i)));
    }
    let num_carried = operands.len();
    operands.extend(steps.iter().map(|&k| dres[nc + k]));
    operands.extend(saved_c.iter().chain(&saved_v).map(|&v| Some(v)));
    operands.extend(x_used.iter().map(|&i| Some(ops[i])));
    let num_scanned = operands.len() - num_carried;
    operands.extend(w_used.iter().map(|&i| Some(ops[i])));
    names.extend(scanned.iter().map(|&i| format!("d.{}", op_name(b, i))));
    let rec = Recurrence {
        body: Box::new(bwd_body),
        num_carried,
        num_scanned,
        num_invariant: w_used.len(),
        reverse: !r.reverse,
        has_seq_lens: false,
    };
    let res = b
        .node_named(
            &format!("bptt.{}", node.name),
            Op::Recurrence(rec),
            &operands,
            &names,
        )
        .map_err(e)?;
    let mut out = vec![None; ops.len()];
    for (k, &i) in carried.iter().enumerate() {
        out[i] = Some(res[k]);
    }
    for (k, &i) in invs.iter().chain(&scanned).enumerate() {
        out[i] = Some(res[carried.len() + k]);
    }
    Ok(out)
}

/// Nodes from which a graph output is reachable.
fn live_nodes(g: &Graph) -> HashSet<NodeIndex> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeIndex> = g.outputs.iter().map(|(_, v)| v.node).collect();
    while let Some(m) = stack.pop() {
        if live.insert(m) {
            stack.extend(g.nodes.neighbors_directed(m, Direction::Incoming));
        }
    }
    live
}
