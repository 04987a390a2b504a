//! fold-constants: evaluates every node whose operands are all constants and replaces its
//! results with named constants, in the graph and in recurrence bodies.

use crate::pass::{Pass, PassReport};
use hlstm_ir::interp::eval_op;
use hlstm_ir::{Graph, Op, Tensor, Value};

pub struct FoldConstants;

/// Results larger than this stay computed: folding must not turn a small graph into huge data.
const MAX_FOLDED_ELEMENTS: usize = 1 << 22;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn description(&self) -> &'static str {
        "evaluate nodes whose operands are all constants into named constants"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = fold_graph(g)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("nodes folded".into(), n);
        }
        Ok(report)
    }
}

fn fold_graph(g: &mut Graph) -> Result<usize, String> {
    let mut folded = 0;
    let order = g.topo_order().map_err(|n| format!("cycle through '{n}'"))?;
    for n in order {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            folded += fold_graph(&mut r.body)?;
            continue;
        }
        if matches!(g.nodes[n].op, Op::Input | Op::Const(_)) {
            continue;
        }
        let operands = g.operands(n);
        if operands.is_empty() {
            continue;
        }
        let vals: Option<Vec<Option<Tensor>>> = operands
            .iter()
            .map(|o| match o {
                None => Some(None),
                Some(v) => g.constant(*v).map(|c| Some((*c.value).clone())),
            })
            .collect();
        let Some(vals) = vals else { continue };
        let refs: Vec<Option<&Tensor>> = vals.iter().map(|v| v.as_ref()).collect();
        let node = &g.nodes[n];
        let results = eval_op(&node.op, &refs)
            .map_err(|e| format!("node '{}' ({}): {e}", node.name, node.op.kind()))?;
        if results.iter().any(|t| t.len() > MAX_FOLDED_ELEMENTS) {
            continue;
        }
        let names: Vec<String> = node.results.iter().map(|r| r.name.clone()).collect();
        for (slot, (t, name)) in results.into_iter().zip(names).enumerate() {
            let c = g.add_const(&name, t);
            g.replace_uses(Value { node: n, slot }, c);
        }
        g.nodes.remove_node(n);
        folded += 1;
    }
    Ok(folded)
}
