//! `fast-interp`: the interpreter's semantics with f32 matrix products. The reference interpreter
//! accumulates every matmul in f64 with a plain loop (it is the oracle), which makes a training
//! step of a 2 x 256 LSTM on windows of 100 take seconds. This engine walks the graph the same
//! way but runs 2-D matrix products (MatMul with a 2-D right operand, Gemm) through ndarray's
//! blocked f32 GEMM (matrixmultiply), and runs recurrences itself so their bodies get the same
//! treatment. Every other op is the interpreter's own kernel (`interp::eval_op`).
//!
//! Results differ from the interpreter's by f32 rounding (checked by tests), and are
//! deterministic: matrixmultiply is single-threaded here, so a run is still reproducible.

use hlstm_ir::{Graph, Op, Recurrence, Tensor, Value, interp};
use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// The order the nodes run in.
pub(crate) fn order(g: &Graph) -> Result<Vec<NodeIndex>, String> {
    g.topo_order()
        .map_err(|n| format!("the graph has a cycle through node '{n}'"))
}

/// Runs `g` with its nodes in `order` (from [`order`]).
pub(crate) fn run_graph(
    g: &Graph,
    order: &[NodeIndex],
    inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, String> {
    let mut env: HashMap<Value, Tensor> = HashMap::new();
    for (n, t) in g.inputs.iter().zip(inputs) {
        env.insert(Value { node: *n, slot: 0 }, t);
    }
    for &n in order {
        let node = &g.nodes[n];
        if matches!(node.op, Op::Input) {
            continue;
        }
        let operands = g.operands(n);
        let args: Vec<Option<&Tensor>> = operands
            .iter()
            .map(|o| o.and_then(|v| env.get(&v)))
            .collect();
        let results = eval(&node.op, &args)
            .map_err(|m| format!("node '{}' ({}): {m}", node.name, node.op.kind()))?;
        for (slot, t) in results.into_iter().enumerate() {
            env.insert(Value { node: n, slot }, t);
        }
    }
    g.outputs
        .iter()
        .map(|(name, v)| {
            env.get(v)
                .cloned()
                .ok_or_else(|| format!("output '{name}' was not computed"))
        })
        .collect()
}

/// An f32 operand of rank 2.
fn f32_2d(t: Option<&Tensor>) -> Option<&ArrayD<f32>> {
    t.and_then(Tensor::as_f32).filter(|a| a.ndim() == 2)
}

fn eval(op: &Op, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    match op {
        Op::MatMul => {
            let (Some(a), Some(b)) = (args[0].and_then(Tensor::as_f32), f32_2d(args[1])) else {
                return interp::eval_op(op, args);
            };
            if a.ndim() < 2 || a.shape()[a.ndim() - 1] != b.shape()[0] {
                return interp::eval_op(op, args);
            }
            // [..., m, k] x [k, n]: the leading axes fold into the rows.
            let k = b.shape()[0];
            let rows = a.len() / k.max(1);
            // Results of other kernels may be views in another order; reshaping needs rows.
            let a = a.as_standard_layout();
            let a2 = a
                .view()
                .into_shape_with_order((rows, k))
                .map_err(|e| e.to_string())?;
            let b2 = b
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|e| e.to_string())?;
            let mut shape = a.shape().to_vec();
            *shape.last_mut().expect("rank >= 2") = b.shape()[1];
            let c = a2
                .dot(&b2)
                .into_shape_with_order(IxDyn(&shape))
                .map_err(|e| e.to_string())?;
            Ok(vec![Tensor::F32(c)])
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let (Some(a), Some(b)) = (f32_2d(args[0]), f32_2d(args[1])) else {
                return interp::eval_op(op, args);
            };
            let a = a
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|e| e.to_string())?;
            let b = b
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|e| e.to_string())?;
            let a = if *trans_a { a.t() } else { a };
            let b = if *trans_b { b.t() } else { b };
            if a.shape()[1] != b.shape()[0] {
                return interp::eval_op(op, args);
            }
            let mut c: Array2<f32> = a.dot(&b);
            if *alpha != 1.0 {
                c.mapv_inplace(|x| x * alpha);
            }
            if let Some(cc) = args.get(2).copied().flatten() {
                let cc = cc.as_f32().ok_or("C must be f32")?;
                let bc = cc
                    .broadcast(c.raw_dim())
                    .ok_or("C does not broadcast to the product")?;
                c.zip_mut_with(&bc, |x, &y| *x += beta * y);
            }
            Ok(vec![Tensor::F32(c.into_dyn())])
        }
        Op::Recurrence(r) => recurrence(r, args),
        _ => interp::eval_op(op, args),
    }
}

/// The interpreter's recurrence loop, with the body run by this engine.
fn recurrence(r: &Recurrence, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    if r.has_seq_lens {
        return interp::eval_op(&Op::Recurrence(r.clone()), args);
    }
    let (nc, ns, ni) = (r.num_carried, r.num_scanned, r.num_invariant);
    let get = |i: usize| {
        args.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("operand {i} is missing"))
    };
    let mut carried: Vec<Tensor> = (0..nc).map(|i| get(i).cloned()).collect::<Result<_, _>>()?;
    let scanned: Vec<&Tensor> = (nc..nc + ns).map(get).collect::<Result<_, _>>()?;
    let invariants: Vec<&Tensor> = (nc + ns..nc + ns + ni).map(get).collect::<Result<_, _>>()?;
    let t_len = scanned
        .first()
        .and_then(|s| s.shape().first().copied())
        .ok_or("a recurrence needs a scanned input of rank >= 1")?;
    if scanned.iter().any(|s| s.shape().first() != Some(&t_len)) {
        return Err("scanned inputs differ in length".into());
    }
    if t_len == 0 {
        return interp::eval_op(&Op::Recurrence(r.clone()), args);
    }
    let order = order(&r.body)?;
    let mut per_step: Vec<Vec<Option<Tensor>>> = vec![vec![None; t_len]; r.num_step_outputs()];
    let steps: Vec<usize> = if r.reverse {
        (0..t_len).rev().collect()
    } else {
        (0..t_len).collect()
    };
    for t in steps {
        let mut body_in = std::mem::take(&mut carried);
        for s in &scanned {
            body_in.push(hlstm_ir::map_tensor!(*s, a => a.index_axis(Axis(0), t).to_owned()));
        }
        body_in.extend(invariants.iter().map(|t| (*t).clone()));
        let mut out = run_graph(&r.body, &order, body_in)
            .map_err(|e| format!("in step {t}: {e}"))?
            .into_iter();
        carried = out.by_ref().take(nc).collect();
        for (k, o) in out.enumerate() {
            per_step[k][t] = Some(o);
        }
    }
    let mut results = carried;
    for slots in per_step {
        let parts: Vec<Tensor> = slots
            .into_iter()
            .map(|s| s.expect("every step ran"))
            .collect();
        results.push(stack(&parts)?);
    }
    Ok(results)
}

/// Stacks equal-shaped tensors along a new axis 0.
fn stack(parts: &[Tensor]) -> Result<Tensor, String> {
    if let Some(Tensor::F32(first)) = parts.first() {
        let views: Vec<_> = parts
            .iter()
            .filter_map(|p| p.as_f32().map(|a| a.view()))
            .collect();
        if views.len() == parts.len() {
            let out: ArrayD<f32> = ndarray::stack(Axis(0), &views)
                .map_err(|e| format!("stacking {}: {e}", hlstm_ir::dims_text(first.shape())))?;
            return Ok(Tensor::F32(out));
        }
    }
    let expanded: Vec<Tensor> = parts
        .iter()
        .map(|p| hlstm_ir::map_tensor!(p, a => a.clone().insert_axis(Axis(0))))
        .collect();
    let refs: Vec<&Tensor> = expanded.iter().collect();
    interp::kernels::concat(&refs, 0)
}
