//! hoist: moves work that does not depend on carried state out of each recurrence and runs it
//! once over the whole sequence. A body value computed only from step slices, constants and
//! invariants (the input projection x_t·W_x, say) becomes a new scanned input: the same ops
//! applied to the stacked sequence [T, ...] outside the loop, sliced per step inside.
//!
//! Only ops that commute with stacking are moved: matmul with a non-stacked right operand,
//! elementwise ops whose non-stacked operands have no more dims than the step value (numpy
//! broadcasting then aligns them the same way), and concat (its axis moves by one).

use crate::pass::{Pass, PassReport};
use hlstm_ir::shape::infer_in;
use hlstm_ir::{Graph, Op, Recurrence, Value, ValueInfo};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::collections::HashMap;

pub struct Hoist;

impl Pass for Hoist {
    fn name(&self) -> &'static str {
        "hoist"
    }
    fn description(&self) -> &'static str {
        "move work that does not depend on carried state out of time loops, batched over all steps"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = hoist_graph(g)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("values hoisted".into(), n);
        }
        Ok(report)
    }
}

/// How a body value relates to the loop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Depends on carried state, or is not movable.
    Step,
    /// The same every step: a constant or an invariant (a value outside the loop).
    Invariant,
    /// Computable for all steps at once outside the loop.
    Stacked,
}

fn hoist_graph(g: &mut Graph) -> Result<usize, String> {
    let mut total = 0;
    let recs: Vec<NodeIndex> = g
        .nodes
        .node_indices()
        .filter(|&n| matches!(g.nodes[n].op, Op::Recurrence(_)))
        .collect();
    for n in recs {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            total += hoist_graph(&mut r.body)?;
        }
        total += hoist_one(g, n)?;
    }
    Ok(total)
}

fn liftable(body: &Graph, n: NodeIndex) -> bool {
    match &body.nodes[n].op {
        Op::MatMul | Op::Binary(_) | Op::Unary(_) | Op::Concat { .. } => true,
        // A slice along axes counted from the end is the same on a stacked value.
        Op::Slice => body
            .operands(n)
            .get(3)
            .copied()
            .flatten()
            .and_then(|v| body.constant(v))
            .and_then(|c| c.value.to_i64_vec())
            .is_some_and(|a| a.iter().all(|&x| x < 0)),
        _ => false,
    }
}

fn classify(body: &Graph, r: &Recurrence) -> Result<HashMap<Value, Kind>, String> {
    let mut kind: HashMap<Value, Kind> = HashMap::new();
    for (i, &inp) in body.inputs.iter().enumerate() {
        let k = if i < r.num_carried {
            Kind::Step
        } else if i < r.num_carried + r.num_scanned {
            Kind::Stacked
        } else {
            Kind::Invariant
        };
        kind.insert(Value { node: inp, slot: 0 }, k);
    }
    for n in body
        .topo_order()
        .map_err(|n| format!("cycle through '{n}'"))?
    {
        let node = &body.nodes[n];
        let k = match &node.op {
            Op::Input => continue,
            Op::Const(_) => Kind::Invariant,
            op if liftable(body, n) => {
                let ops = body.operands(n);
                let kinds: Vec<Kind> = ops
                    .iter()
                    .map(|o| o.map_or(Kind::Step, |v| kind[&v]))
                    .collect();
                let step_rank = node.results[0].ty.rank();
                let fits = ops.iter().zip(&kinds).all(|(o, k)| match k {
                    Kind::Stacked => true,
                    Kind::Invariant => o.is_some_and(|v| {
                        body.value_type(v)
                            .rank()
                            .is_some_and(|r| step_rank.is_some_and(|s| r <= s))
                    }),
                    Kind::Step => false,
                });
                let right_ok = !matches!(op, Op::MatMul)
                    || kinds.get(1) == Some(&Kind::Invariant)
                        && kinds.first() == Some(&Kind::Stacked);
                let any_stacked = kinds.contains(&Kind::Stacked);
                if fits && right_ok && any_stacked {
                    Kind::Stacked
                } else if kinds.iter().all(|k| *k == Kind::Invariant) {
                    Kind::Invariant
                } else {
                    Kind::Step
                }
            }
            _ => {
                let ops = body.operands(n);
                if ops.iter().flatten().all(|v| kind[v] == Kind::Invariant) {
                    Kind::Invariant
                } else {
                    Kind::Step
                }
            }
        };
        for slot in 0..node.results.len() {
            kind.insert(Value { node: n, slot }, k);
        }
    }
    Ok(kind)
}

/// Hoists the maximal stacked values of recurrence `n`; returns how many became scanned inputs.
fn hoist_one(g: &mut Graph, n: NodeIndex) -> Result<usize, String> {
    let Op::Recurrence(r) = &g.nodes[n].op else {
        return Ok(0);
    };
    let body = &r.body;
    let kind = classify(body, r)?;
    // Stacked values computed in the body (not step slices themselves) that a step value or a
    // body output reads: those become new scanned inputs.
    let mut roots: Vec<Value> = Vec::new();
    for e in (&body.nodes).edge_references() {
        let v = Value {
            node: e.source(),
            slot: e.weight().out_slot,
        };
        let user = Value {
            node: e.target(),
            slot: 0,
        };
        if kind[&v] == Kind::Stacked
            && kind[&user] != Kind::Stacked
            && !matches!(body.nodes[v.node].op, Op::Input)
            && !roots.contains(&v)
        {
            roots.push(v);
        }
    }
    for (_, v) in &body.outputs {
        if kind[v] == Kind::Stacked
            && !matches!(body.nodes[v.node].op, Op::Input)
            && !roots.contains(v)
        {
            roots.push(*v);
        }
    }
    roots.sort();
    if roots.is_empty() {
        return Ok(0);
    }
    let r = r.clone();
    let outer_ops = g.operands(n);
    let label = g.nodes[n].name.clone();
    // Build each root outside, memoizing shared subexpressions.
    let mut outside: HashMap<Value, Value> = HashMap::new();
    for (i, &inp) in r.body.inputs.iter().enumerate() {
        if i >= r.num_carried
            && let Some(Some(v)) = outer_ops.get(i)
        {
            outside.insert(Value { node: inp, slot: 0 }, *v);
        }
    }
    let mut stacked = Vec::new();
    for &root in &roots {
        stacked.push(build_outside(
            g,
            &r.body,
            root,
            &kind,
            &mut outside,
            &label,
        )?);
    }
    // New scanned inputs go after the existing ones, before invariants and lengths.
    let Op::Recurrence(r) = &mut g.nodes[n].op else {
        unreachable!("checked above")
    };
    let insert_at = r.num_carried + r.num_scanned;
    let mut new_inputs = Vec::new();
    for (k, root) in roots.iter().enumerate() {
        let ty = r.body.value_type(*root).clone();
        let name = format!("{}.hoisted", r.body.value_info(*root).name);
        let v = r.body.add_input(&name, ty);
        r.body.inputs.pop();
        r.body.inputs.insert(insert_at + k, v.node);
        r.body.replace_uses(*root, v);
        new_inputs.push(v);
    }
    r.num_scanned += roots.len();
    crate::dce::dce_graph(&mut r.body);
    // Shift later operands and connect the new sequences.
    let edges: Vec<_> = g
        .nodes
        .edges_directed(n, Direction::Incoming)
        .filter(|e| e.weight().in_slot >= insert_at)
        .map(|e| e.id())
        .collect();
    for e in edges {
        if let Some(w) = g.nodes.edge_weight_mut(e) {
            w.in_slot += roots.len();
        }
    }
    for (k, v) in stacked.iter().enumerate() {
        g.nodes.add_edge(
            v.node,
            n,
            hlstm_ir::Port {
                out_slot: v.slot,
                in_slot: insert_at + k,
            },
        );
    }
    Ok(roots.len())
}

/// The outside counterpart of a stacked body value: the same op over [T, ...].
fn build_outside(
    g: &mut Graph,
    body: &Graph,
    v: Value,
    kind: &HashMap<Value, Kind>,
    outside: &mut HashMap<Value, Value>,
    label: &str,
) -> Result<Value, String> {
    if let Some(o) = outside.get(&v) {
        return Ok(*o);
    }
    let node = &body.nodes[v.node];
    let out = match (&node.op, kind[&v]) {
        (Op::Const(c), _) => g.add_shared_const(&c.name, c.value.clone()),
        (op, Kind::Stacked) => {
            let mut operands = Vec::new();
            for o in body.operands(v.node) {
                operands.push(match o {
                    Some(x) => Some(build_outside(g, body, x, kind, outside, label)?),
                    None => None,
                });
            }
            let op = match op {
                Op::Concat { axis } if *axis >= 0 => Op::Concat { axis: axis + 1 },
                other => other.clone(),
            };
            let tys = infer_in(g, &op, &operands)
                .map_err(|e| format!("hoisting '{}' out of '{label}': {e}", node.name))?;
            let results = tys
                .into_iter()
                .map(|ty| ValueInfo {
                    name: format!("{}.all_steps", node.results[0].name),
                    ty,
                })
                .collect();
            let name = format!("{label}/hoisted/{}", node.name);
            Value {
                node: g.add_node(&name, op, &operands, results),
                slot: 0,
            }
        }
        // Computed from invariants only (a transpose of a run-time weight, say): the same op,
        // once, outside.
        (op, Kind::Invariant) if !matches!(op, Op::Input | Op::Recurrence(_)) => {
            let mut operands = Vec::new();
            for o in body.operands(v.node) {
                operands.push(match o {
                    Some(x) => Some(build_outside(g, body, x, kind, outside, label)?),
                    None => None,
                });
            }
            let results = node.results.clone();
            let name = format!("{label}/hoisted/{}", node.name);
            let n = g.add_node(&name, op.clone(), &operands, results);
            for slot in 0..node.results.len() {
                outside.insert(Value { node: v.node, slot }, Value { node: n, slot });
            }
            Value {
                node: n,
                slot: v.slot,
            }
        }
        _ => {
            return Err(format!(
                "hoist: '{}' is not available outside '{label}'",
                node.name
            ));
        }
    };
    outside.insert(v, out);
    Ok(out)
}
