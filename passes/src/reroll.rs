//! reroll: an unrolled time loop (T copies of a cell, as exporters write them) becomes one
//! `recurrence`, so code size stops growing with T and the cell is optimized once.
//!
//! The sequence input X [T, ...] is read step by step through one slice per step (Gather with
//! a constant index, a one-step Slice, or one result of a Split along axis 0). Every node is
//! given the step of the latest slice it depends on. The steps must then match node for node:
//! same ops and attributes, operands from the same step at the same place, from the previous
//! step at the same place (carried state), or the same invariant (a value outside the loop, or
//! equal constants). Step 0 may read constants where the other steps read the previous step
//! (the zero initial state); those become the initial values of the carried state. A Concat
//! along axis 0 of one value per step, in step order, is a stacked per-step output; other values
//! used after the loop must be carried state of the last step.
//!
//! A model that does not match is left unrolled (the pass reports why with --stats).

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op, Recurrence, Tensor, TensorType, Value};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, HashMap, HashSet};

pub struct Reroll;

impl Pass for Reroll {
    fn name(&self) -> &'static str {
        "reroll"
    }
    fn description(&self) -> &'static str {
        "turn an unrolled time loop (T copies of a cell) back into one recurrence"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        match reroll(g) {
            Ok(Some(t)) => {
                report.changed = true;
                report.counters.insert("time loops re-rolled".into(), 1);
                report
                    .notes
                    .push(format!("re-rolled {t} steps into one recurrence"));
            }
            Ok(None) => {}
            Err(why) => report.notes.push(format!("left unrolled: {why}")),
        }
        Ok(report)
    }
}

/// How a step's slice of X looks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SliceKind {
    /// Gather with a scalar index: [B, F].
    Drop,
    /// Keeps a unit step axis: [1, B, F].
    Keep,
}

/// Where a step node's operand comes from.
#[derive(Clone, Debug, PartialEq)]
enum Src {
    Local(usize, usize),
    Prev(usize, usize),
    XSlice,
    Inv(Value),
    Empty,
}

fn const_int(g: &Graph, v: Option<Value>) -> Option<Vec<i64>> {
    v.and_then(|v| g.constant(v))
        .and_then(|c| c.value.to_i64_vec())
}

/// The slices of `x` by step, and their kind.
fn find_slices(
    g: &Graph,
    x: Value,
    t_len: usize,
) -> Result<(HashMap<Value, usize>, SliceKind), String> {
    let mut slices = HashMap::new();
    let mut kind = None;
    let mut set_kind = |k: SliceKind| -> Result<(), String> {
        match kind {
            Some(old) if old != k => Err("the steps slice X in different ways".into()),
            _ => {
                kind = Some(k);
                Ok(())
            }
        }
    };
    for (user, port) in g.users(x.node) {
        if port.out_slot != x.slot || port.in_slot != 0 {
            return Err(format!(
                "X is read by '{}' other than as data",
                g.nodes[user].name
            ));
        }
        let ops = g.operands(user);
        match &g.nodes[user].op {
            Op::Gather { axis: 0 } => {
                let idx = ops
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| g.constant(v))
                    .ok_or("a Gather of X with a run-time index")?;
                let t = idx
                    .value
                    .to_i64_vec()
                    .filter(|v| v.len() == 1)
                    .ok_or("a Gather of X with several indices")?[0];
                set_kind(if idx.value.shape().is_empty() {
                    SliceKind::Drop
                } else {
                    SliceKind::Keep
                })?;
                slices.insert(
                    Value {
                        node: user,
                        slot: 0,
                    },
                    usize::try_from(t).map_err(|_| "a negative step index")?,
                );
            }
            Op::Slice => {
                let (s, e) = (
                    const_int(g, ops.get(1).copied().flatten()),
                    const_int(g, ops.get(2).copied().flatten()),
                );
                let axes = const_int(g, ops.get(3).copied().flatten()).unwrap_or(vec![0]);
                let steps = const_int(g, ops.get(4).copied().flatten()).unwrap_or(vec![1]);
                match (s.as_deref(), e.as_deref()) {
                    (Some([s]), Some([e]))
                        if axes == [0]
                            && steps == [1]
                            && *s >= 0
                            && (*e == s + 1 || (*s as usize == t_len - 1 && *e > *s)) =>
                    {
                        set_kind(SliceKind::Keep)?;
                        slices.insert(
                            Value {
                                node: user,
                                slot: 0,
                            },
                            *s as usize,
                        );
                    }
                    _ => {
                        return Err(format!(
                            "'{}' slices X other than one step at a time",
                            g.nodes[user].name
                        ));
                    }
                }
            }
            Op::Split {
                axis: 0,
                num_outputs,
            } if *num_outputs == t_len => {
                set_kind(SliceKind::Keep)?;
                for t in 0..t_len {
                    slices.insert(
                        Value {
                            node: user,
                            slot: t,
                        },
                        t,
                    );
                }
            }
            _ => {
                return Err(format!(
                    "X is read by '{}' ({}), not a per-step slice",
                    g.nodes[user].name,
                    g.nodes[user].op.kind()
                ));
            }
        }
    }
    // A kept step axis that the step squeezes right away (Split then Squeeze, as exporters
    // write it): the squeezed value is the slice, and the sequence is scanned as it is.
    if kind == Some(SliceKind::Keep) {
        let mut squeezed = HashMap::new();
        for (v, t) in &slices {
            let users = g.users(v.node);
            let mine: Vec<_> = users.iter().filter(|(_, p)| p.out_slot == v.slot).collect();
            let [(user, port)] = mine.as_slice() else {
                break;
            };
            let dims_in = g.value_type(*v).concrete();
            let out = Value {
                node: *user,
                slot: 0,
            };
            let drops_axis = port.in_slot == 0
                && matches!(g.nodes[*user].op, Op::Squeeze | Op::Reshape { .. })
                && dims_in
                    .as_ref()
                    .zip(g.value_type(out).concrete())
                    .is_some_and(|(a, b)| a.len() == b.len() + 1 && a[0] == 1 && a[1..] == b[..]);
            if !drops_axis {
                break;
            }
            squeezed.insert(out, *t);
        }
        if squeezed.len() == slices.len() {
            return Ok((squeezed, SliceKind::Drop));
        }
    }
    let mut seen = vec![0usize; t_len];
    for t in slices.values() {
        if *t >= t_len {
            return Err(format!("a slice of step {t} beyond T = {t_len}"));
        }
        seen[*t] += 1;
    }
    if seen.iter().any(|&c| c != 1) {
        return Err("each step must read X through exactly one slice".into());
    }
    Ok((slices, kind.ok_or("X is not read")?))
}

/// Rerolls the first unrolled loop found; Ok(Some(T)) when it did.
fn reroll(g: &mut Graph) -> Result<Option<usize>, String> {
    if g.nodes
        .node_indices()
        .any(|n| matches!(g.nodes[n].op, Op::Recurrence(_)))
    {
        return Ok(None);
    }
    // The sequence input: the first graph input of rank >= 2 with a known first dim >= 2.
    let Some((x, t_len)) = g.inputs.iter().find_map(|&i| {
        let ty = &g.nodes[i].results[0].ty;
        let t = ty
            .shape
            .as_ref()
            .filter(|s| s.len() >= 2)
            .and_then(|s| s[0].known())?;
        (t >= 2 && !g.users(i).is_empty()).then_some((Value { node: i, slot: 0 }, t))
    }) else {
        return Ok(None);
    };
    let (slices, kind) = find_slices(g, x, t_len)?;
    let order = g.topo_order().map_err(|n| format!("cycle through '{n}'"))?;
    // Step colors.
    let mut color: HashMap<Value, i64> = HashMap::new();
    for &n in &order {
        let node = &g.nodes[n];
        let c = match node.op {
            Op::Input | Op::Const(_) => -1,
            _ => g
                .operands(n)
                .iter()
                .flatten()
                .map(|v| color[v])
                .max()
                .unwrap_or(-1),
        };
        for slot in 0..node.results.len() {
            let v = Value { node: n, slot };
            color.insert(v, slices.get(&v).map_or(c, |t| *t as i64));
        }
    }
    let is_slice_node = |n: NodeIndex| slices.keys().any(|v| v.node == n);
    // Stacking concats: one operand per step, in order, along axis 0.
    let mut stacks: Vec<NodeIndex> = Vec::new();
    for &n in &order {
        if let Op::Concat { axis: 0 } = g.nodes[n].op {
            let ops = g.operands(n);
            if ops.len() == t_len
                && ops
                    .iter()
                    .enumerate()
                    .all(|(t, o)| o.is_some_and(|v| color[&v] == t as i64))
            {
                stacks.push(n);
            }
        }
    }
    // Nodes after the loop: anything reading a stacked output.
    let mut after: HashSet<NodeIndex> = stacks.iter().copied().collect();
    for &n in &order {
        if g.operands(n)
            .iter()
            .flatten()
            .any(|v| after.contains(&v.node))
        {
            after.insert(n);
        }
    }
    let mut steps: Vec<Vec<NodeIndex>> = vec![Vec::new(); t_len];
    for &n in &order {
        let c = color[&Value { node: n, slot: 0 }];
        if c >= 0 && !is_slice_node(n) && !after.contains(&n) && !g.nodes[n].results.is_empty() {
            steps[c as usize].push(n);
        }
    }
    for step in steps.iter_mut() {
        *step = canonical_order(g, step, &slices);
    }
    let pos: Vec<HashMap<NodeIndex, usize>> = steps
        .iter()
        .map(|s| s.iter().enumerate().map(|(i, n)| (*n, i)).collect())
        .collect();
    let encode = |t: usize, v: Option<Value>| -> Result<Src, String> {
        let Some(v) = v else { return Ok(Src::Empty) };
        if slices.get(&v) == Some(&t) {
            return Ok(Src::XSlice);
        }
        let c = color[&v];
        if c == t as i64 {
            return pos[t]
                .get(&v.node)
                .map(|p| Src::Local(*p, v.slot))
                .ok_or_else(|| "a step reads a stacked value".into());
        }
        if t > 0 && c == t as i64 - 1 {
            return pos[t - 1]
                .get(&v.node)
                .map(|p| Src::Prev(*p, v.slot))
                .ok_or_else(|| "a step reads a stacked value".into());
        }
        if c == -1 {
            return Ok(Src::Inv(v));
        }
        Err(format!("step {t} reads step {c} directly"))
    };
    let sig = |t: usize| -> Result<Vec<Vec<Src>>, String> {
        steps[t]
            .iter()
            .map(|&n| g.operands(n).into_iter().map(|o| encode(t, o)).collect())
            .collect()
    };
    let same_inv = |a: Value, b: Value| {
        a == b || matches!((g.constant(a), g.constant(b)), (Some(p), Some(q)) if p.value == q.value)
    };
    let template = sig(1)?;
    let mut init: BTreeMap<(usize, usize), Value> = BTreeMap::new();
    for t in 0..t_len {
        if steps[t].len() != steps[1].len() {
            return Err(format!(
                "step {t} has {} nodes, step 1 has {}",
                steps[t].len(),
                steps[1].len()
            ));
        }
        let s = if t == 1 { template.clone() } else { sig(t)? };
        for (i, (&n, ops)) in steps[t].iter().zip(&s).enumerate() {
            let m = steps[1][i];
            let (a, b) = (&g.nodes[n], &g.nodes[m]);
            if a.op != b.op
                || a.results
                    .iter()
                    .map(|r| &r.ty)
                    .ne(b.results.iter().map(|r| &r.ty))
                || ops.len() != template[i].len()
            {
                return Err(format!(
                    "step {t} differs from step 1 at '{}' vs '{}'",
                    a.name, b.name
                ));
            }
            for (x, y) in ops.iter().zip(&template[i]) {
                let ok = match (x, y) {
                    (Src::Inv(p), Src::Inv(q)) => same_inv(*p, *q),
                    (Src::Inv(p), Src::Prev(pp, ps)) if t == 0 => match init.get(&(*pp, *ps)) {
                        Some(v) => same_inv(*v, *p),
                        None => {
                            init.insert((*pp, *ps), *p);
                            true
                        }
                    },
                    (x, y) => x == y,
                };
                if !ok {
                    return Err(format!(
                        "step {t} differs from step 1 in an operand of '{}'",
                        a.name
                    ));
                }
            }
        }
    }
    let carried: Vec<(usize, usize)> = {
        let mut set: Vec<(usize, usize)> = template
            .iter()
            .flatten()
            .filter_map(|s| {
                if let Src::Prev(p, q) = s {
                    Some((*p, *q))
                } else {
                    None
                }
            })
            .collect();
        set.sort();
        set.dedup();
        set
    };
    if carried.iter().any(|k| !init.contains_key(k)) {
        return Err("step 0 does not give every carried value a start".into());
    }
    // The loop carries one type: a start of another shape (a [64] initial state where the
    // steps carry [1, 64], which broadcasting hid in step 0) cannot be carried state.
    for k in &carried {
        let (start, ty) = (
            g.value_type(init[k]),
            &g.nodes[steps[1][k.0]].results[k.1].ty,
        );
        if start != ty {
            return Err(format!(
                "a carried value starts as {start} but the steps carry {ty}"
            ));
        }
    }
    // Per-step outputs: each stack reads the same place of every step.
    let mut step_outputs: Vec<(NodeIndex, (usize, usize))> = Vec::new();
    for &s in &stacks {
        let places: Vec<Src> = g
            .operands(s)
            .into_iter()
            .enumerate()
            .map(|(t, o)| encode(t, o))
            .collect::<Result<_, _>>()?;
        match places.first() {
            Some(Src::Local(p, q)) if places.iter().all(|x| x == &Src::Local(*p, *q)) => {
                // The stack is reshaped after the loop anyway: look through unsqueezes and
                // squeezes, so the step emits the value itself.
                let (mut p, mut q) = (*p, *q);
                while let (Op::Unsqueeze | Op::Squeeze, Some(Src::Local(p2, q2))) =
                    (&g.nodes[steps[1][p]].op, template[p].first())
                {
                    (p, q) = (*p2, *q2);
                }
                step_outputs.push((s, (p, q)))
            }
            _ => return Err("a stacked output does not read the same value of every step".into()),
        }
    }
    // Values used after the loop: only carried values of the last step.
    let last: HashSet<NodeIndex> = steps[t_len - 1].iter().copied().collect();
    let all_steps: HashSet<NodeIndex> = steps.iter().flatten().copied().collect();
    let mut finals: Vec<(Value, usize)> = Vec::new();
    for &n in &all_steps {
        for e in g.nodes.edges_directed(n, Direction::Outgoing) {
            let user = e.target();
            if all_steps.contains(&user) || stacks.contains(&user) {
                continue;
            }
            let v = Value {
                node: n,
                slot: e.weight().out_slot,
            };
            let place = (
                pos[t_len - 1].get(&n).copied().unwrap_or(usize::MAX),
                v.slot,
            );
            match carried.iter().position(|k| *k == place) {
                Some(k) if last.contains(&n) => finals.push((v, k)),
                _ => {
                    return Err(format!(
                        "'{}' is used after the loop but is not carried state of the last step",
                        g.nodes[n].name
                    ));
                }
            }
        }
    }
    for (_, v) in &g.outputs {
        if all_steps.contains(&v.node) {
            let place = (
                pos[t_len - 1].get(&v.node).copied().unwrap_or(usize::MAX),
                v.slot,
            );
            match carried.iter().position(|k| *k == place) {
                Some(k) if last.contains(&v.node) => finals.push((*v, k)),
                _ => {
                    return Err(format!(
                        "graph output from '{}' is not carried state of the last step",
                        g.nodes[v.node].name
                    ));
                }
            }
        }
    }
    build(
        g,
        x,
        kind,
        &steps[1],
        &template,
        &carried,
        &init,
        &step_outputs,
        &finals,
        &slices,
    )?;
    Ok(Some(t_len))
}

/// Orders a step's nodes by structure alone (depth, then a hash of op, attributes and operand
/// structure, where every value from outside the step looks the same), so that isomorphic steps
/// list their nodes in the same order whatever their node indices.
fn canonical_order(
    g: &Graph,
    step: &[NodeIndex],
    slices: &HashMap<Value, usize>,
) -> Vec<NodeIndex> {
    use std::hash::{Hash, Hasher};
    let members: HashSet<NodeIndex> = step.iter().copied().collect();
    let mut key: HashMap<NodeIndex, (usize, u64)> = HashMap::new();
    // `step` is in topological order.
    for &n in step {
        let node = &g.nodes[n];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", node.op).hash(&mut h);
        for r in &node.results {
            format!("{}", r.ty).hash(&mut h);
        }
        let mut depth = 0;
        for o in g.operands(n) {
            match o {
                Some(v) if members.contains(&v.node) => {
                    let (d, oh) = key[&v.node];
                    depth = depth.max(d + 1);
                    (1u8, oh, v.slot).hash(&mut h);
                }
                Some(v) if slices.contains_key(&v) => 2u8.hash(&mut h),
                Some(_) => 3u8.hash(&mut h),
                None => 4u8.hash(&mut h),
            }
        }
        key.insert(n, (depth, h.finish()));
    }
    let mut out = step.to_vec();
    out.sort_by_key(|n| (key[n].0, key[n].1, n.index()));
    out
}

#[allow(clippy::too_many_arguments)]
fn build(
    g: &mut Graph,
    x: Value,
    kind: SliceKind,
    tmpl: &[NodeIndex],
    template: &[Vec<Src>],
    carried: &[(usize, usize)],
    init: &BTreeMap<(usize, usize), Value>,
    step_outputs: &[(NodeIndex, (usize, usize))],
    finals: &[(Value, usize)],
    slices: &HashMap<Value, usize>,
) -> Result<(), String> {
    let mut body = Graph::new();
    let mut carried_in = Vec::new();
    for &(p, s) in carried {
        let info = g.nodes[tmpl[p]].results[s].clone();
        carried_in.push(body.add_input(&format!("{}.prev", info.name), info.ty));
    }
    let slice_ty: TensorType = slices
        .keys()
        .next()
        .map(|v| g.value_type(*v).clone())
        .ok_or("no slice")?;
    let x_in = body.add_input("x_t", slice_ty);
    let mut invariants: Vec<Value> = Vec::new();
    let mut inv_in: HashMap<Value, Value> = HashMap::new();
    let mut consts: HashMap<Value, Value> = HashMap::new();
    let mut local: HashMap<(usize, usize), Value> = HashMap::new();
    // Template nodes in dependency order.
    let mut done = vec![false; tmpl.len()];
    let mut remaining = tmpl.len();
    while remaining > 0 {
        let before = remaining;
        for i in 0..tmpl.len() {
            if done[i]
                || template[i]
                    .iter()
                    .any(|s| matches!(s, Src::Local(p, _) if !done[*p]))
            {
                continue;
            }
            let mut operands = Vec::new();
            for s in &template[i] {
                operands.push(match s {
                    Src::Empty => None,
                    Src::XSlice => Some(x_in),
                    Src::Local(p, q) => Some(local[&(*p, *q)]),
                    Src::Prev(p, q) => Some(
                        carried_in[carried
                            .iter()
                            .position(|k| *k == (*p, *q))
                            .ok_or("uncarried previous value")?],
                    ),
                    Src::Inv(v) => Some(match g.constant(*v) {
                        Some(c) => *consts
                            .entry(*v)
                            .or_insert_with(|| body.add_shared_const(&c.name, c.value.clone())),
                        None => *inv_in.entry(*v).or_insert_with(|| {
                            invariants.push(*v);
                            let info = g.value_info(*v).clone();
                            body.add_input(&info.name, info.ty)
                        }),
                    }),
                });
            }
            let node = &g.nodes[tmpl[i]];
            let n = body.add_node(&node.name, node.op.clone(), &operands, node.results.clone());
            for slot in 0..node.results.len() {
                local.insert((i, slot), Value { node: n, slot });
            }
            done[i] = true;
            remaining -= 1;
        }
        if remaining == before {
            return Err("the step has a cycle".into());
        }
    }
    // Invariant inputs must follow carried and scanned ones: add_input appended them in order of
    // discovery after x_t, which is where they belong.
    for (k, &(p, s)) in carried.iter().enumerate() {
        let name = g.nodes[tmpl[p]].results[s].name.clone();
        body.outputs
            .push((format!("{name}.next#{k}"), local[&(p, s)]));
    }
    for (j, (_, place)) in step_outputs.iter().enumerate() {
        body.outputs
            .push((format!("step_output#{j}"), local[place]));
    }
    let scanned = match kind {
        SliceKind::Drop => x,
        SliceKind::Keep => {
            let axes = g.add_const("reroll/axes", Tensor::from_i64(&[1], vec![1]).expect("1-D"));
            let ty = g.value_type(x).clone();
            let shape = ty.shape.map(|s| {
                let mut d = s.clone();
                d.insert(1, hlstm_ir::Dim::Known(1));
                d
            });
            let info = hlstm_ir::ValueInfo {
                name: "reroll/x_steps".into(),
                ty: TensorType {
                    dtype: ty.dtype,
                    shape,
                },
            };
            Value {
                node: g.add_node(
                    "reroll/x_steps",
                    Op::Unsqueeze,
                    &[Some(x), Some(axes)],
                    vec![info],
                ),
                slot: 0,
            }
        }
    };
    let num_invariant = invariants.len();
    let rec = Recurrence {
        body: Box::new(body),
        num_carried: carried.len(),
        num_scanned: 1,
        num_invariant,
        reverse: false,
        has_seq_lens: false,
    };
    let mut operands: Vec<Option<Value>> = carried.iter().map(|k| Some(init[k])).collect();
    operands.push(Some(scanned));
    operands.extend(invariants.iter().map(|v| Some(*v)));
    let t_dim = g
        .value_type(x)
        .shape
        .as_ref()
        .and_then(|s| s.first().cloned())
        .ok_or("X has no shape")?;
    let mut results: Vec<hlstm_ir::ValueInfo> = carried
        .iter()
        .map(|&(p, s)| g.nodes[tmpl[p]].results[s].clone())
        .collect();
    for (_, place) in step_outputs {
        let mut info = g.nodes[tmpl[place.0]].results[place.1].clone();
        info.ty.shape = info.ty.shape.map(|s| {
            let mut d = vec![t_dim.clone()];
            d.extend(s);
            d
        });
        info.name = format!("{}.all_steps", info.name);
        results.push(info);
    }
    let rn = g.add_node("rerolled", Op::Recurrence(rec), &operands, results);
    for (v, k) in finals {
        g.replace_uses(*v, Value { node: rn, slot: *k });
    }
    for (j, (stack, _)) in step_outputs.iter().enumerate() {
        let stacked = Value {
            node: rn,
            slot: carried.len() + j,
        };
        let want = g.nodes[*stack].results[0].clone();
        let dims = want
            .ty
            .concrete()
            .ok_or("a stacked output without a static shape")?;
        let shape = g.add_const(
            &format!("{}/shape", want.name),
            Tensor::from_i64(&[dims.len()], dims.iter().map(|&d| d as i64).collect()).expect("1-D"),
        );
        let r = g.add_node(
            &format!("{}/unstack", g.nodes[*stack].name),
            Op::Reshape { allowzero: false },
            &[Some(stacked), Some(shape)],
            vec![want],
        );
        g.replace_uses(
            Value {
                node: *stack,
                slot: 0,
            },
            Value { node: r, slot: 0 },
        );
    }
    crate::dce::dce_graph(g);
    Ok(())
}
