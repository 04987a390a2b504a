//! canonicalize: rewrites ops into the forms the saturation rules match. Gemm becomes matmul
//! (and add for its C operand), with transB and alpha folded into a constant B, so that every
//! exporter's linear layer (Gemm, MatMul + Add) looks the same.

use crate::pass::{Pass, PassReport};
use hlstm_ir::interp::eval_op;
use hlstm_ir::{BinOp, Graph, Op, Tensor, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }
    fn description(&self) -> &'static str {
        "rewrite Gemm as matmul + add, folding transB and alpha into constant weights"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        let n = canonicalize_graph(g)?;
        if n > 0 {
            report.changed = true;
            report.counters.insert("gemm rewritten".into(), n);
        }
        Ok(report)
    }
}

fn canonicalize_graph(g: &mut Graph) -> Result<usize, String> {
    let mut count = 0;
    // B as the matmul reads it (transposed, scaled), per (B, transB, alpha): an unrolled export
    // reads one weight from every step, and it is transposed once.
    let mut weights: HashMap<(Value, bool, u32), Value> = HashMap::new();
    let nodes: Vec<NodeIndex> = g.nodes.node_indices().collect();
    for n in nodes {
        if let Op::Recurrence(r) = &mut g.nodes[n].op {
            count += canonicalize_graph(&mut r.body)?;
            continue;
        }
        if let Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } = g.nodes[n].op.clone()
        {
            rewrite_gemm(g, n, alpha, beta, trans_a, trans_b, &mut weights)?;
            count += 1;
        }
    }
    Ok(count)
}

/// Adds `op` on `operands`, folding it when every operand is a constant.
fn add(g: &mut Graph, name: &str, op: Op, operands: &[Option<Value>]) -> Result<Value, String> {
    let consts: Option<Vec<Option<Tensor>>> = operands
        .iter()
        .map(|o| o.map(|v| g.constant(v).map(|c| (*c.value).clone())))
        .map(|o| o.map_or(Some(None), |c| c.map(Some)))
        .collect();
    if let Some(vals) = consts {
        let refs: Vec<Option<&Tensor>> = vals.iter().map(Option::as_ref).collect();
        let mut r = eval_op(&op, &refs)?;
        return Ok(g.add_const(name, r.swap_remove(0)));
    }
    g.add_inferred(name, op, operands)
}

fn rewrite_gemm(
    g: &mut Graph,
    n: NodeIndex,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    weights: &mut HashMap<(Value, bool, u32), Value>,
) -> Result<(), String> {
    let ops = g.operands(n);
    let name = g.nodes[n].name.clone();
    let (Some(a), Some(b)) = (
        ops.first().copied().flatten(),
        ops.get(1).copied().flatten(),
    ) else {
        return Err(format!("gemm '{name}' lacks an operand"));
    };
    let transpose = Op::Transpose {
        perm: Some(vec![1, 0]),
    };
    let a = if trans_a {
        add(g, &format!("{name}/A^T"), transpose.clone(), &[Some(a)])?
    } else {
        a
    };
    let key = (b, trans_b, alpha.to_bits());
    let b = match weights.get(&key) {
        Some(v) => *v,
        None => {
            let b_name = g
                .constant(b)
                .map_or_else(|| format!("{name}/B"), |c| c.name.clone());
            let bt = if trans_b {
                add(g, &format!("{b_name}^T"), transpose, &[Some(b)])?
            } else {
                b
            };
            let scaled = if alpha != 1.0 {
                let s = g.add_const(&format!("{name}/alpha"), Tensor::scalar_f32(alpha));
                add(
                    g,
                    &format!("{b_name}*alpha"),
                    Op::Binary(BinOp::Mul),
                    &[Some(bt), Some(s)],
                )?
            } else {
                bt
            };
            weights.insert(key, scaled);
            scaled
        }
    };
    let mut y = add(
        g,
        &format!("{name}/matmul"),
        Op::MatMul,
        &[Some(a), Some(b)],
    )?;
    if let Some(c) = ops.get(2).copied().flatten() {
        let c = if beta != 1.0 {
            let s = g.add_const(&format!("{name}/beta"), Tensor::scalar_f32(beta));
            add(
                g,
                &format!("{name}/C*beta"),
                Op::Binary(BinOp::Mul),
                &[Some(c), Some(s)],
            )?
        } else {
            c
        };
        y = add(
            g,
            &format!("{name}/bias"),
            Op::Binary(BinOp::Add),
            &[Some(y), Some(c)],
        )?;
    }
    let result_name = g.nodes[n].results[0].name.clone();
    if let Some(r) = g.nodes.node_weight_mut(y.node)
        && !matches!(r.op, Op::Const(_))
    {
        r.results[0].name = result_name;
    }
    g.replace_uses(Value { node: n, slot: 0 }, y);
    g.nodes.remove_node(n);
    Ok(())
}
