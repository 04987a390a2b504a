//! prune-inputs: input features that no gate reads (all-zero rows of every weight on them)
//! leave the projection: matmul(x, W) becomes matmul(gather(x, used), W[used, :]). Applied
//! where x is a model input or a step input, whose gather a kernel does as part of its loads.

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op, Tensor, Value};
use ndarray::Axis;
use petgraph::stable_graph::NodeIndex;

pub struct PruneInputs;

impl Pass for PruneInputs {
    fn name(&self) -> &'static str {
        "prune-inputs"
    }
    fn description(&self) -> &'static str {
        "drop input features no weight reads from the matmuls on model and step inputs"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let all = 0..g.inputs.len();
        let (n, features) = prune_graph(g, all)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("projections pruned".into(), n);
            report
                .counters
                .insert("input features dropped".into(), features);
        }
        Ok(report)
    }
}

/// `scanned`: the positions in `g.inputs` that may be pruned (all for the model; the step
/// inputs of a body, not its carried state or invariants).
fn prune_graph(g: &mut Graph, scanned: std::ops::Range<usize>) -> Result<(usize, usize), String> {
    let (mut count, mut dropped) = (0, 0);
    let allowed: Vec<NodeIndex> = g
        .inputs
        .get(scanned)
        .map(<[NodeIndex]>::to_vec)
        .unwrap_or_default();
    let nodes: Vec<NodeIndex> = g.nodes.node_indices().collect();
    for n in nodes {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            let steps = r.num_carried..r.num_carried + r.num_scanned;
            let (a, b) = prune_graph(&mut r.body, steps)?;
            count += a;
            dropped += b;
            continue;
        }
        if !matches!(g.nodes[n].op, Op::MatMul) {
            continue;
        }
        let ops = g.operands(n);
        let (Some(Some(x)), Some(Some(w))) = (ops.first().copied(), ops.get(1).copied()) else {
            continue;
        };
        if !allowed.contains(&x.node) {
            continue;
        }
        let Some(c) = g.constant(w) else { continue };
        let Tensor::F32(wv) = &*c.value else { continue };
        if wv.ndim() != 2 {
            continue;
        }
        let used: Vec<usize> = (0..wv.shape()[0])
            .filter(|&i| wv.index_axis(Axis(0), i).iter().any(|v| *v != 0.0))
            .collect();
        if used.is_empty() || used.len() == wv.shape()[0] {
            continue;
        }
        let name = c.name.clone();
        let kept = Tensor::F32(wv.select(Axis(0), &used));
        dropped += wv.shape()[0] - used.len();
        let idx = g.add_const(
            &format!("{name}/used_inputs"),
            Tensor::from_i64(&[used.len()], used.iter().map(|&i| i as i64).collect()).expect("1-D"),
        );
        let wk = g.add_const(&format!("{name}[used inputs]"), kept);
        let label = g.nodes[n].name.clone();
        let gx = g.add_inferred(
            &format!("{label}/used_inputs"),
            Op::Gather { axis: -1 },
            &[Some(x), Some(idx)],
        )?;
        let mm = g.add_inferred(&label, Op::MatMul, &[Some(gx), Some(wk)])?;
        g.nodes[mm.node].results[0].name = g.nodes[n].results[0].name.clone();
        g.replace_uses(Value { node: n, slot: 0 }, mm);
        g.nodes.remove_node(n);
        count += 1;
    }
    Ok((count, dropped))
}
