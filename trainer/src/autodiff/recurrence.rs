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

    // Body outputs: state adjoints, accumulated invariant gradients, per-step input adjoints,
    // then the per-step factors of the hoisted weight gradients.
    let e = |m: String| at(format!("backward body: {m}"));
    let steps_len = ops
        .get(nc)
        .and_then(|x| b.g.value_type(*x).shape.as_ref()?.first()?.known());
    // Invariants (by position k in `invs`) that keep an accumulator, and those whose gradient
    // is hoisted: (k, a, g).
    let mut accumulated: Vec<usize> = Vec::new();
    let mut hoisted: Vec<(usize, Value, Value)> = Vec::new();
    for k in 0..invs.len() {
        let product = steps_len
            .and(grads[carried.len() + scanned.len() + k])
            .and_then(|g| hoistable_product(&bb.g, g));
        match product {
            Some((a, g)) => {
                bb.g.nodes.remove_node(acc_in[k].node);
                hoisted.push((k, a, g));
            }
            None => accumulated.push(k),
        }
    }
    let mut outs = Vec::new();
    for (k, &i) in carried.iter().enumerate() {
        let d = match grads[k] {
            Some(d) => d,
            None => bb.fill(0.0, &bb.dims(bin[i]).map_err(e)?).map_err(e)?,
        };
        outs.push((format!("d.{}", in_name(i)), d));
    }
    for &k in &accumulated {
        let i = invs[k];
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
    for &(k, a, g) in &hoisted {
        outs.push((format!("step.a.{}", in_name(invs[k])), a));
        outs.push((format!("step.g.{}", in_name(invs[k])), g));
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
    let acc_kept: Vec<Value> = accumulated.iter().map(|&k| acc_in[k]).collect();
    let mut inputs: Vec<Value> = dc_in
        .iter()
        .chain(&acc_kept)
        .chain(&dy_in)
        .copied()
        .collect();
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
    for &k in &accumulated {
        let i = invs[k];
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
    for &(k, ..) in &hoisted {
        names.push(format!("step.a.{}", op_name(b, invs[k])));
        names.push(format!("step.g.{}", op_name(b, invs[k])));
    }
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
    let mut next = res.iter().copied();
    for &i in &carried {
        out[i] = next.next();
    }
    for &k in &accumulated {
        out[invs[k]] = next.next();
    }
    for &i in &scanned {
        out[i] = next.next();
    }
    // dW = Σ_t a_tᵀ g_t = aᵀ g over all T·N rows of the stacked factors: one gemm.
    for &(k, ..) in &hoisted {
        let i = invs[k];
        let (a, g) = (next.next(), next.next());
        let (Some(a), Some(g)) = (a, g) else {
            return Err(e("the backward recurrence has too few results".into()));
        };
        let w = op_name(b, i);
        let rows = |b: &Builder, v: Value| -> Result<Vec<usize>, Error> {
            let d = b.dims(v).map_err(e)?;
            Ok(vec![d[0] * d[1], d[2]])
        };
        let (ar, gr) = (rows(b, a)?, rows(b, g)?);
        let a2 = b.reshape(&format!("rows.a.{w}"), a, &ar).map_err(e)?;
        let g2 = b.reshape(&format!("rows.g.{w}"), g, &gr).map_err(e)?;
        out[i] = Some(b.gemm(&format!("d.{w}"), a2, g2, true, false).map_err(e)?);
    }
    Ok(out)
}

/// Weight gradients are not accumulated step by step when they are a product over the batch
/// rows of two per-step values, `gemm(a, g, transA)` with 2-D a [N, K] and g [N, M] (the
/// matmul rule's aᵀ·g): the backward recurrence emits a and g per step, and one gemm over all
/// T·N rows after it makes the sum (as cuDNN and PyTorch do). T products with N-long inner
/// dims and T additions into a weight-sized accumulator become one large product: the same
/// arithmetic, a weight-sized buffer written once instead of 3T times. Returns (a, g).
fn hoistable_product(body: &Graph, grad: Value) -> Option<(Value, Value)> {
    let Op::Gemm {
        alpha,
        trans_a: true,
        trans_b: false,
        ..
    } = body.nodes[grad.node].op
    else {
        return None;
    };
    let operands = body.operands(grad.node);
    let [Some(a), Some(g)] = operands[..] else {
        return None;
    };
    let rank2 = |v: Value| body.value_type(v).rank() == Some(2);
    (alpha == 1.0 && rank2(a) && rank2(g)).then_some((a, g))
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
