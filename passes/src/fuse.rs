//! fuse-gates: matmuls that read the same value with different constant weights (the four gate
//! networks' first layers on [x, h], or on h and x separately after the input projection is
//! split off) become one matmul over the weights side by side, with a slice per gate after it.
//!
//! This is a pass after extraction, not a saturation rule: it rewrites several roots at once,
//! and egg's extraction prices a shared node once per use, so it could never see the saving
//! of one kernel feeding four slices.

use crate::pass::{Pass, PassReport};
use hlstm_ir::{Graph, Op, Tensor, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

pub struct FuseGates;

impl Pass for FuseGates {
    fn name(&self) -> &'static str {
        "fuse-gates"
    }
    fn description(&self) -> &'static str {
        "fuse matmuls on the same input with constant weights into one matmul and slices"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = fuse_graph(g)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("matmuls fused".into(), n);
        }
        Ok(report)
    }
}

fn fuse_graph(g: &mut Graph) -> Result<usize, String> {
    let mut fused = 0;
    let nodes: Vec<NodeIndex> = g.nodes.node_indices().collect();
    for &n in &nodes {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            fused += fuse_graph(&mut r.body)?;
        }
    }
    // Matmuls by their left operand, when the right one is a constant matrix.
    let mut groups: BTreeMap<Value, Vec<NodeIndex>> = BTreeMap::new();
    for &n in &nodes {
        if !matches!(g.nodes[n].op, Op::MatMul) {
            continue;
        }
        let ops = g.operands(n);
        let (Some(Some(x)), Some(Some(w))) = (ops.first(), ops.get(1)) else {
            continue;
        };
        let is_matrix = g
            .constant(*w)
            .is_some_and(|c| matches!(&*c.value, Tensor::F32(a) if a.ndim() == 2));
        if is_matrix && g.constant(*x).is_none() {
            groups.entry(*x).or_default().push(n);
        }
    }
    for (x, members) in groups {
        if members.len() < 2 {
            continue;
        }
        // Shared, not copied: the concatenation below is the one copy of the weights.
        let shared: Vec<std::sync::Arc<Tensor>> = members
            .iter()
            .map(|&m| {
                g.constant(g.operands(m)[1].expect("checked"))
                    .expect("checked")
                    .value
                    .clone()
            })
            .collect();
        let weights: Vec<&ndarray::ArrayD<f32>> = shared
            .iter()
            .map(|t| match &**t {
                Tensor::F32(a) => a,
                _ => unreachable!("checked to be f32"),
            })
            .collect();
        let rows = weights[0].shape()[0];
        if weights.iter().any(|w| w.shape()[0] != rows) {
            continue;
        }
        let views: Vec<_> = weights.iter().map(|w| w.view()).collect();
        let all = ndarray::concatenate(ndarray::Axis(1), &views).map_err(|e| e.to_string())?;
        let names: Vec<String> = members
            .iter()
            .map(|&m| {
                g.constant(g.operands(m)[1].expect("checked"))
                    .expect("checked")
                    .name
                    .clone()
            })
            .collect();
        let w = g.add_const(&format!("fused({})", names.join(",")), Tensor::F32(all));
        let label = format!("{}/fused", g.nodes[members[0]].name);
        let mm = g.add_inferred(&label, Op::MatMul, &[Some(x), Some(w)])?;
        let mut offset = 0i64;
        for (&m, wt) in members.iter().zip(&weights) {
            let width = wt.shape()[1] as i64;
            let starts = g.add_const(
                &format!("{label}/start{offset}"),
                Tensor::from_i64(&[1], vec![offset]).expect("1-D"),
            );
            let ends = g.add_const(
                &format!("{label}/end{offset}"),
                Tensor::from_i64(&[1], vec![offset + width]).expect("1-D"),
            );
            let axes = g.add_const(
                &format!("{label}/axis"),
                Tensor::from_i64(&[1], vec![-1]).expect("1-D"),
            );
            let name = g.nodes[m].name.clone();
            let s = g.add_inferred(
                &name,
                Op::Slice,
                &[Some(mm), Some(starts), Some(ends), Some(axes)],
            )?;
            g.nodes[s.node].results[0].name = g.nodes[m].results[0].name.clone();
            g.replace_uses(Value { node: m, slot: 0 }, s);
            g.nodes.remove_node(m);
            offset += width;
        }
        fused += members.len();
    }
    Ok(fused)
}
