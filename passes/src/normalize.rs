//! normalize-gates: brings every form of a gate network to one shape, so that a Scan, an
//! unrolled and a per-gate export of the same H-LSTM optimize to the same loop body:
//!
//! - a batched gate layer `matmul(reshape(a, [G,1,n]), W[G,n,m])` becomes G matmuls on slices
//!   of `a`, stacked: `concat0(unsqueeze0(a_g·W[g]))`;
//! - ops on such a stack are pushed into its members: elementwise ops (with a constant split
//!   along the stack axis), and the Split, Slice, Gather, Squeeze and Reshape that take members
//!   back out;
//! - slices of one value along its last axis, taken by the same elementwise op with per-slice
//!   constants (the per-gate bias and activation after a fused first layer), become one op on
//!   the whole value with the slices after it.
//!
//! Every rewrite keeps the values; the pass runs to a fixed point and leaves cleanup to dce.

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op, Tensor, Value};
use ndarray::Axis;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

pub struct NormalizeGates;

impl Pass for NormalizeGates {
    fn name(&self) -> &'static str {
        "normalize-gates"
    }
    fn description(&self) -> &'static str {
        "split batched gate layers per gate and move per-gate slices below shared elementwise ops"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = normalize_graph(g)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("rewrites".into(), n);
        }
        Ok(report)
    }
}

fn normalize_graph(g: &mut Graph) -> Result<usize, String> {
    let mut total = 0;
    let recs: Vec<NodeIndex> = g
        .nodes
        .node_indices()
        .filter(|&n| matches!(g.nodes[n].op, Op::Recurrence(_)))
        .collect();
    for n in recs {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            total += normalize_graph(&mut r.body)?;
        }
    }
    for _ in 0..1000 {
        let changed = step(g)?;
        if changed == 0 {
            return Ok(total);
        }
        total += changed;
        crate::dce::dce_graph(g);
    }
    Err("normalize-gates did not reach a fixed point".into())
}

/// One sweep; returns how many rewrites it made.
fn step(g: &mut Graph) -> Result<usize, String> {
    let order = g.topo_order().map_err(|n| format!("cycle through '{n}'"))?;
    let mut count = 0;
    for n in order {
        if g.nodes.node_weight(n).is_none() {
            continue;
        }
        if let Some(v) = unbatch(g, n)? {
            replace(g, n, &[v]);
            count += 1;
        } else if let Some(vs) = through_stack(g, n)? {
            replace(g, n, &vs);
            count += 1;
        }
    }
    count += sink_slices(g)?;
    Ok(count)
}

fn replace(g: &mut Graph, n: NodeIndex, with: &[Value]) {
    for (slot, v) in with.iter().enumerate() {
        g.replace_uses(Value { node: n, slot }, *v);
    }
}

fn ints(g: &mut Graph, name: &str, v: &[i64]) -> Value {
    g.add_const(name, Tensor::from_i64(&[v.len()], v.to_vec()).expect("1-D"))
}

fn dims(g: &Graph, v: Value) -> Option<Vec<usize>> {
    g.value_type(v).concrete()
}

fn const_ints(g: &Graph, v: Option<Value>) -> Option<Vec<i64>> {
    v.and_then(|v| g.constant(v))
        .and_then(|c| c.value.to_i64_vec())
}

/// matmul(reshape(a [1, G*n], [G,1,n]), W [G,n,m]) -> concat0(unsqueeze0(slice_g(a) · W[g])).
fn unbatch(g: &mut Graph, n: NodeIndex) -> Result<Option<Value>, String> {
    if !matches!(g.nodes[n].op, Op::MatMul) {
        return Ok(None);
    }
    let ops = g.operands(n);
    let (Some(Some(r)), Some(Some(w))) = (ops.first().copied(), ops.get(1).copied()) else {
        return Ok(None);
    };
    // The weight is shared (an Arc), not copied: this runs on every matmul of every sweep.
    let Some(wt) = g.constant(w).map(|c| c.value.clone()) else {
        return Ok(None);
    };
    let Tensor::F32(wv) = &*wt else {
        return Ok(None);
    };
    if wv.ndim() != 3 || !matches!(g.nodes[r.node].op, Op::Reshape { .. }) {
        return Ok(None);
    }
    let (gn, nn) = (wv.shape()[0], wv.shape()[1]);
    let rops = g.operands(r.node);
    let Some(Some(a)) = rops.first().copied() else {
        return Ok(None);
    };
    if dims(g, a) != Some(vec![1, gn * nn]) || dims(g, r) != Some(vec![gn, 1, nn]) {
        return Ok(None);
    }
    let label = g.nodes[n].name.clone();
    let wname = g.constant(w).map(|c| c.name.clone()).unwrap_or_default();
    let axes_last = ints(g, &format!("{label}/axis"), &[-1]);
    let zero = ints(g, &format!("{label}/axis0"), &[0]);
    let mut parts = Vec::new();
    for k in 0..gn {
        let s = ints(g, &format!("{label}/start{k}"), &[(k * nn) as i64]);
        let e = ints(g, &format!("{label}/end{k}"), &[((k + 1) * nn) as i64]);
        let a_k = g.add_inferred(
            &format!("{label}/gate{k}/in"),
            Op::Slice,
            &[Some(a), Some(s), Some(e), Some(axes_last)],
        )?;
        let w_k = g.add_const(
            &format!("{wname}[{k}]"),
            Tensor::F32(wv.index_axis(Axis(0), k).to_owned()),
        );
        let m = g.add_inferred(
            &format!("{label}/gate{k}"),
            Op::MatMul,
            &[Some(a_k), Some(w_k)],
        )?;
        parts.push(Some(g.add_inferred(
            &format!("{label}/gate{k}/stack"),
            Op::Unsqueeze,
            &[Some(m), Some(zero)],
        )?));
    }
    Ok(Some(g.add_inferred(
        &label,
        Op::Concat { axis: 0 },
        &parts,
    )?))
}

/// The members a_g of `v = concat0(unsqueeze0(a_0), ...)`.
fn members(g: &Graph, v: Value) -> Option<Vec<Value>> {
    if !matches!(g.nodes[v.node].op, Op::Concat { axis: 0 }) {
        return None;
    }
    g.operands(v.node)
        .into_iter()
        .map(|o| {
            let o = o?;
            if !matches!(g.nodes[o.node].op, Op::Unsqueeze)
                || const_ints(g, g.operands(o.node).get(1).copied().flatten()) != Some(vec![0])
            {
                return None;
            }
            g.operands(o.node).first().copied().flatten()
        })
        .collect()
}

fn stack(g: &mut Graph, label: &str, parts: &[Value]) -> Result<Value, String> {
    let zero = ints(g, &format!("{label}/axis0"), &[0]);
    let mut ops = Vec::new();
    for (k, p) in parts.iter().enumerate() {
        ops.push(Some(g.add_inferred(
            &format!("{label}/member{k}"),
            Op::Unsqueeze,
            &[Some(*p), Some(zero)],
        )?));
    }
    g.add_inferred(label, Op::Concat { axis: 0 }, &ops)
}

/// An operand of an elementwise op on a stack, as seen by member k.
fn member_operand(
    g: &mut Graph,
    v: Value,
    k: usize,
    count: usize,
    rank: usize,
    label: &str,
) -> Result<Option<Value>, String> {
    if let Some(m) = members(g, v) {
        return Ok((m.len() == count).then(|| m[k]));
    }
    let Some(d) = dims(g, v) else { return Ok(None) };
    if d.len() < rank {
        return Ok(Some(v));
    }
    match g.constant(v).map(|c| (*c.value).clone()) {
        Some(Tensor::F32(c)) if d.len() == rank && (d[0] == count || d[0] == 1) => {
            let i = if d[0] == 1 { 0 } else { k };
            Ok(Some(g.add_const(
                &format!("{label}[{i}]"),
                Tensor::F32(c.index_axis(Axis(0), i).to_owned()),
            )))
        }
        _ => Ok(None),
    }
}

/// Pushes an op on a stack into the stack's members; returns the replacement results.
fn through_stack(g: &mut Graph, n: NodeIndex) -> Result<Option<Vec<Value>>, String> {
    let ops = g.operands(n);
    let Some(Some(first)) = ops.first().copied() else {
        return Ok(None);
    };
    let op = g.nodes[n].op.clone();
    let label = g.nodes[n].name.clone();
    match &op {
        Op::Unary(_) => {
            let Some(m) = members(g, first) else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for (k, a) in m.iter().enumerate() {
                out.push(g.add_inferred(&format!("{label}/member{k}"), op.clone(), &[Some(*a)])?);
            }
            Ok(Some(vec![stack(g, &label, &out)?]))
        }
        Op::Binary(_) => {
            let Some(Some(second)) = ops.get(1).copied() else {
                return Ok(None);
            };
            let m = members(g, first).or_else(|| members(g, second));
            let Some(m) = m else { return Ok(None) };
            let rank = dims(g, Value { node: n, slot: 0 }).map_or(0, |d| d.len());
            let mut out = Vec::new();
            for k in 0..m.len() {
                let (Some(x), Some(y)) = (
                    member_operand(g, first, k, m.len(), rank, &label)?,
                    member_operand(g, second, k, m.len(), rank, &label)?,
                ) else {
                    return Ok(None);
                };
                let v = g.add_inferred(
                    &format!("{label}/member{k}"),
                    op.clone(),
                    &[Some(x), Some(y)],
                )?;
                // The member result must keep the member's shape (no broadcast growth).
                if dims(g, v) != dims(g, m[k]) {
                    return Ok(None);
                }
                out.push(v);
            }
            Ok(Some(vec![stack(g, &label, &out)?]))
        }
        Op::Split {
            axis: 0,
            num_outputs,
        } => {
            let Some(m) = members(g, first) else {
                return Ok(None);
            };
            let sizes = match ops.get(1).copied().flatten() {
                Some(s) => match const_ints(g, Some(s)) {
                    Some(v) => v.iter().map(|&x| x as usize).collect::<Vec<_>>(),
                    None => return Ok(None),
                },
                None => hlstm_ir::interp::kernels::split_sizes(m.len(), None, *num_outputs)?,
            };
            let mut out = Vec::new();
            let mut at = 0;
            for (k, s) in sizes.iter().enumerate() {
                out.push(stack(g, &format!("{label}/part{k}"), &m[at..at + s])?);
                at += s;
            }
            Ok(Some(out))
        }
        Op::Slice => {
            let Some(m) = members(g, first) else {
                return Ok(None);
            };
            let axes = const_ints(g, ops.get(3).copied().flatten()).unwrap_or(vec![0]);
            let steps = const_ints(g, ops.get(4).copied().flatten()).unwrap_or(vec![1]);
            let (Some(s), Some(e)) = (
                const_ints(g, ops.get(1).copied().flatten()),
                const_ints(g, ops.get(2).copied().flatten()),
            ) else {
                return Ok(None);
            };
            if axes != [0] || steps != [1] || s.len() != 1 {
                return Ok(None);
            }
            let len = m.len() as i64;
            let fix = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
            let (a, b) = (fix(s[0]), fix(e[0]));
            if a >= b {
                return Ok(None);
            }
            Ok(Some(vec![stack(g, &label, &m[a..b])?]))
        }
        Op::Gather { axis: 0 } => {
            let Some(m) = members(g, first) else {
                return Ok(None);
            };
            let idx = ops
                .get(1)
                .copied()
                .flatten()
                .and_then(|v| g.constant(v))
                .map(|c| c.value.clone());
            match idx {
                Some(t) if t.shape().is_empty() => {
                    let i = t.to_i64_vec().ok_or("gather index")?[0];
                    let i = if i < 0 { i + m.len() as i64 } else { i } as usize;
                    Ok(m.get(i).map(|v| vec![*v]))
                }
                _ => Ok(None),
            }
        }
        Op::Squeeze | Op::Reshape { .. } => {
            let Some(m) = members(g, first) else {
                return Ok(None);
            };
            let out = Value { node: n, slot: 0 };
            if m.len() == 1 && dims(g, out).is_some() && dims(g, out) == dims(g, m[0]) {
                Ok(Some(vec![m[0]]))
            } else {
                Ok(None)
            }
        }
        _ => Ok(None),
    }
}

/// Groups of the same elementwise op on slices of the same values along the last axis, with
/// ranges that tile those values: one op on the whole values, sliced after.
fn sink_slices(g: &mut Graph) -> Result<usize, String> {
    // key: (op debug, operand sources) -> [(node, start, end, per-node constants)]
    type Key = (String, Vec<Option<Value>>);
    let mut groups: BTreeMap<Key, Vec<(NodeIndex, i64, i64, Vec<Option<Value>>)>> = BTreeMap::new();
    for n in g.nodes.node_indices() {
        let op = &g.nodes[n].op;
        if !matches!(op, Op::Unary(_) | Op::Binary(_)) {
            continue;
        }
        let mut range: Option<(i64, i64)> = None;
        let mut sources = Vec::new();
        let mut consts = Vec::new();
        let mut ok = true;
        for o in g.operands(n) {
            let Some(v) = o else {
                ok = false;
                break;
            };
            if let Some((src, s, e)) = last_axis_slice(g, v) {
                if range.is_some_and(|r| r != (s, e)) {
                    ok = false;
                    break;
                }
                range = Some((s, e));
                sources.push(Some(src));
                consts.push(None);
            } else if g.constant(v).is_some() {
                sources.push(None);
                consts.push(Some(v));
            } else {
                ok = false;
                break;
            }
        }
        let Some((s, e)) = range else { continue };
        if ok {
            groups
                .entry((format!("{op:?}"), sources))
                .or_default()
                .push((n, s, e, consts));
        }
    }
    let mut count = 0;
    for ((_, sources), mut members) in groups {
        members.sort_by_key(|m| m.1);
        // The sliced values must have one shape, so the same ranges mean the same columns.
        let shapes: Vec<Option<Vec<usize>>> =
            sources.iter().flatten().map(|v| dims(g, *v)).collect();
        if shapes.windows(2).any(|w| w[0] != w[1]) {
            continue;
        }
        let Some(width) = sources
            .iter()
            .flatten()
            .next()
            .and_then(|v| dims(g, *v))
            .and_then(|d| d.last().copied())
        else {
            continue;
        };
        let tiles = members.first().is_some_and(|m| m.1 == 0)
            && members.last().is_some_and(|m| m.2 == width as i64)
            && members.windows(2).all(|w| w[0].2 == w[1].1)
            && members.len() >= 2;
        if !tiles {
            continue;
        }
        // Constants of each member, concatenated along the last axis in range order.
        let mut operands = Vec::new();
        let mut fine = true;
        for (i, src) in sources.iter().enumerate() {
            match src {
                Some(v) => operands.push(Some(*v)),
                None => {
                    let parts: Vec<Tensor> = members
                        .iter()
                        .map(|m| {
                            (*g.constant(m.3[i].expect("a constant"))
                                .expect("a constant")
                                .value)
                                .clone()
                        })
                        .collect();
                    let widths_ok = members
                        .iter()
                        .zip(&parts)
                        .all(|(m, p)| p.shape().last().copied() == Some((m.2 - m.1) as usize));
                    let rank_ok = parts.iter().all(|p| {
                        p.shape().len() == parts[0].shape().len() && !p.shape().is_empty()
                    });
                    if !widths_ok || !rank_ok {
                        fine = false;
                        break;
                    }
                    let refs: Vec<&Tensor> = parts.iter().collect();
                    let whole = hlstm_ir::interp::kernels::concat(&refs, -1)?;
                    let name = g
                        .constant(members[0].3[i].expect("a constant"))
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    operands.push(Some(g.add_const(&format!("{name}+..."), whole)));
                }
            }
        }
        if !fine {
            continue;
        }
        let first = members[0].0;
        let (op, label) = (
            g.nodes[first].op.clone(),
            format!("{}/whole", g.nodes[first].name),
        );
        let whole = g.add_inferred(&label, op, &operands)?;
        if dims(g, whole).and_then(|d| d.last().copied()) != Some(width) {
            continue;
        }
        let axes = ints(g, &format!("{label}/axis"), &[-1]);
        for (node, s, e, _) in &members {
            let sv = ints(g, &format!("{label}/start{s}"), &[*s]);
            let ev = ints(g, &format!("{label}/end{s}"), &[*e]);
            let name = g.nodes[*node].name.clone();
            let sl = g.add_inferred(
                &name,
                Op::Slice,
                &[Some(whole), Some(sv), Some(ev), Some(axes)],
            )?;
            if dims(g, sl)
                != dims(
                    g,
                    Value {
                        node: *node,
                        slot: 0,
                    },
                )
            {
                return Err(format!("normalize-gates: slice of '{name}' changed shape"));
            }
            g.replace_uses(
                Value {
                    node: *node,
                    slot: 0,
                },
                sl,
            );
        }
        count += members.len();
    }
    Ok(count)
}

/// `v = slice(src, [s], [e], [-1 or last axis])` with unit step: (src, s, e).
fn last_axis_slice(g: &Graph, v: Value) -> Option<(Value, i64, i64)> {
    if !matches!(g.nodes[v.node].op, Op::Slice) {
        return None;
    }
    let ops = g.operands(v.node);
    let src = ops.first().copied().flatten()?;
    let rank = dims(g, src)?.len() as i64;
    let axes = const_ints(g, ops.get(3).copied().flatten())?;
    let steps = const_ints(g, ops.get(4).copied().flatten()).unwrap_or(vec![1]);
    let (s, e) = (
        const_ints(g, ops.get(1).copied().flatten())?,
        const_ints(g, ops.get(2).copied().flatten())?,
    );
    let width = *dims(g, src)?.last()? as i64;
    if axes.len() != 1
        || (axes[0] != -1 && axes[0] != rank - 1)
        || steps != [1]
        || s.len() != 1
        || s[0] < 0
        || e[0] > width
        || s[0] >= e[0]
    {
        return None;
    }
    Some((src, s[0], e[0]))
}
