//! simplify: removes ops that do nothing: identities, reshapes (and squeezes, unsqueezes,
//! flattens, expands) to the shape their operand already has, identity transposes, one-operand
//! concats and casts to the same type.

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op, Value};

pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }
    fn description(&self) -> &'static str {
        "remove no-op nodes (identity, same-shape reshape, identity transpose, one-input concat)"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = simplify_graph(g);
        if n > 0 {
            report.changed = true;
            report.counters.insert("no-op nodes removed".into(), n);
        }
        Ok(report)
    }
}

fn is_noop(g: &Graph, n: petgraph::stable_graph::NodeIndex) -> Option<Value> {
    let node = &g.nodes[n];
    let ops = g.operands(n);
    let x = ops.first().copied().flatten()?;
    let same_type = || {
        let (a, b) = (g.value_type(x), &node.results[0].ty);
        a.dtype == b.dtype && a.concrete().is_some() && a.concrete() == b.concrete()
    };
    match &node.op {
        Op::Identity => Some(x),
        Op::Reshape { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Flatten { .. }
        | Op::Expand
        | Op::Cast { .. }
            if same_type() =>
        {
            Some(x)
        }
        Op::Transpose { perm: Some(p) } if p.iter().enumerate().all(|(i, &j)| i == j) => Some(x),
        Op::Concat { .. } if ops.len() == 1 => Some(x),
        _ => None,
    }
}

fn simplify_graph(g: &mut Graph) -> usize {
    let mut removed = 0;
    let nodes: Vec<_> = g.nodes.node_indices().collect();
    for n in nodes {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            removed += simplify_graph(&mut r.body);
            continue;
        }
        if let Some(x) = is_noop(g, n) {
            let out = Value { node: n, slot: 0 };
            // A graph output keeps its name; the value behind it changes.
            g.replace_uses(out, x);
            g.nodes.remove_node(n);
            removed += 1;
        }
    }
    removed
}
