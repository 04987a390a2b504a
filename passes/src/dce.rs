//! dce: removes nodes whose results nobody reads, in the graph and in recurrence bodies, and
//! trims recurrences: per-step outputs nobody reads and invariants the body never reads.

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::HashSet;

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn description(&self) -> &'static str {
        "remove unused nodes, unused per-step outputs and unused invariants of recurrences"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let (nodes, steps, invariants) = dce_graph(g);
        for (k, v) in [
            ("nodes removed", nodes),
            ("step outputs removed", steps),
            ("unused invariants and sequences removed", invariants),
        ] {
            if v > 0 {
                report.counters.insert(k.into(), v);
                report.changed = true;
            }
        }
        Ok(report)
    }
}

fn has_users(g: &Graph, n: NodeIndex, slot: usize) -> bool {
    g.nodes
        .edges_directed(n, Direction::Outgoing)
        .any(|e| e.weight().out_slot == slot)
        || g.outputs.iter().any(|(_, v)| v.node == n && v.slot == slot)
}

/// Returns (nodes removed, step outputs removed, invariants removed).
pub fn dce_graph(g: &mut Graph) -> (usize, usize, usize) {
    let (mut nodes, mut steps, mut invs) = (0, 0, 0);
    loop {
        let mut changed = false;
        let recs: Vec<NodeIndex> = g
            .nodes
            .node_indices()
            .filter(|&n| matches!(g.nodes[n].op, Op::Recurrence(_)))
            .collect();
        for n in recs {
            let s = trim_step_outputs(g, n);
            let (a, b, c) = match &mut g.nodes[n].op {
                Op::Recurrence(r) => dce_graph(&mut r.body),
                _ => unreachable!("filtered to recurrences"),
            };
            let i = trim_invariants(g, n);
            nodes += a;
            steps += b + s;
            invs += c + i;
            changed |= s + i > 0;
        }
        let outputs: HashSet<NodeIndex> = g.outputs.iter().map(|(_, v)| v.node).collect();
        let dead: Vec<NodeIndex> = g
            .nodes
            .node_indices()
            .filter(|&n| {
                !matches!(g.nodes[n].op, Op::Input)
                    && !outputs.contains(&n)
                    && g.nodes
                        .neighbors_directed(n, Direction::Outgoing)
                        .next()
                        .is_none()
            })
            .collect();
        nodes += dead.len();
        changed |= !dead.is_empty();
        for n in dead {
            g.nodes.remove_node(n);
        }
        if !changed {
            return (nodes, steps, invs);
        }
    }
}

/// Removes per-step outputs of recurrence `n` that nobody reads; renumbers later result slots.
fn trim_step_outputs(g: &mut Graph, n: NodeIndex) -> usize {
    let nc = match &g.nodes[n].op {
        Op::Recurrence(r) => r.num_carried,
        _ => return 0,
    };
    let mut removed = 0;
    let mut slot = g.nodes[n].results.len();
    while slot > nc {
        slot -= 1;
        if has_users(g, n, slot) {
            continue;
        }
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            r.body.outputs.remove(slot);
        }
        g.nodes[n].results.remove(slot);
        let later: Vec<_> = g
            .nodes
            .edges_directed(n, Direction::Outgoing)
            .filter(|e| e.weight().out_slot > slot)
            .map(|e| e.id())
            .collect();
        for e in later {
            if let Some(w) = g.nodes.edge_weight_mut(e) {
                w.out_slot -= 1;
            }
        }
        for (_, v) in g.outputs.iter_mut() {
            if v.node == n && v.slot > slot {
                v.slot -= 1;
            }
        }
        removed += 1;
    }
    removed
}

/// Removes invariants of recurrence `n` whose body input nobody reads.
/// Also removes scanned sequences the body never reads, keeping at least one (it gives the
/// number of steps).
fn trim_invariants(g: &mut Graph, n: NodeIndex) -> usize {
    let (first, count) = match &g.nodes[n].op {
        Op::Recurrence(r) => (r.num_carried, r.num_scanned + r.num_invariant),
        _ => return 0,
    };
    let mut removed = 0;
    for k in (0..count).rev() {
        let idx = first + k;
        let unused = match &g.nodes[n].op {
            Op::Recurrence(r) if idx < r.num_carried + r.num_scanned && r.num_scanned == 1 => false,
            Op::Recurrence(r) => {
                let b = r.body.inputs[idx];
                r.body
                    .nodes
                    .neighbors_directed(b, Direction::Outgoing)
                    .next()
                    .is_none()
                    && !r.body.outputs.iter().any(|(_, v)| v.node == b)
            }
            _ => false,
        };
        if !unused {
            continue;
        }
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            let b = r.body.inputs.remove(idx);
            r.body.nodes.remove_node(b);
            if idx < r.num_carried + r.num_scanned {
                r.num_scanned -= 1;
            } else {
                r.num_invariant -= 1;
            }
        }
        let edges: Vec<_> = g
            .nodes
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.id(), e.weight().in_slot))
            .collect();
        for (e, in_slot) in edges {
            if in_slot == idx {
                g.nodes.remove_edge(e);
            } else if in_slot > idx
                && let Some(w) = g.nodes.edge_weight_mut(e)
            {
                w.in_slot -= 1;
            }
        }
        removed += 1;
    }
    removed
}
