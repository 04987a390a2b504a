//! The gradient rule (vector-Jacobian product) of each op: given the adjoints of a node's
//! results, the contributions to the adjoints of its operands. Rules read the forward values
//! they need (an activation's output, a matmul's other operand) straight from the graph; for a
//! recurrence body those reads decide what the forward pass saves per step.

use super::{Ctx, linear, recurrence};
use crate::Error;
use crate::builder::{Builder, R};
use hlstm_ir::interp::kernels::norm_axis;
use hlstm_ir::{Act, BinOp, DType, Op, Value};
use petgraph::stable_graph::NodeIndex;

/// Contributions to each operand slot's adjoint (None where not needed or not differentiable).
pub(crate) fn vjp(
    b: &mut Builder,
    ctx: &Ctx,
    n: NodeIndex,
    needs: &[bool],
    dres: &[Option<Value>],
) -> Result<Vec<Option<Value>>, Error> {
    let node = b.g.nodes[n].clone();
    if let Op::Recurrence(r) = &node.op {
        return recurrence::vjp(b, ctx, n, r, needs, dres);
    }
    let ops = b.g.operands(n);
    let x: Vec<Value> = ops
        .iter()
        .map(|o| o.unwrap_or(Value { node: n, slot: 0 }))
        .collect();
    let y = Value { node: n, slot: 0 };
    let at = |e: String| Error::at(&node, e);
    // Every op below has one result; Split (several) is handled apart.
    if let Op::Split { axis, .. } = node.op {
        return split(b, n, x[0], axis, dres)
            .map(|d| vec![Some(d)])
            .map_err(at);
    }
    let g = dres[0].expect("a node is visited only when a result has an adjoint");
    // Every node a rule adds is named t.<node>; backprop renames the final contributions.
    let tmp = format!("t.{}", node.name);
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let one = |d: R<Value>| d.map(|v| vec![Some(v)]).map_err(at);
    match &node.op {
        Op::Identity => Ok(vec![Some(g)]),
        Op::Cast { to: DType::F32 } if b.dtype(x[0]) == DType::F32 => Ok(vec![Some(g)]),
        // Comparisons, logic and the step functions are piecewise constant: zero gradient.
        Op::Compare(_)
        | Op::Logic(_)
        | Op::Not
        | Op::Unary(Act::IsZero | Act::IsPositive | Act::IsNonNegative) => Ok(vec![None; x.len()]),
        Op::Unary(act) => one(unary(b, *act, x[0], y, g, &tmp)),
        // Every summed element gets the sum's adjoint: g with the reduced axes put back (when
        // the sum dropped them), expanded to x's shape.
        Op::ReduceSum { keepdims, .. } => {
            if need(1) {
                return Err(at("no gradient for reduce_sum's axes".into()));
            }
            let g = match (keepdims, ops.get(1).copied().flatten()) {
                (false, Some(axes)) => b.op(&tmp, Op::Unsqueeze, &[g, axes]).map_err(at)?,
                _ => g,
            };
            // x's static dims as a constant (a computed Shape would leave the gradient's
            // dims unknown to shape inference).
            let dims: Vec<i64> = b
                .dims(x[0])
                .map_err(at)?
                .iter()
                .map(|&d| d as i64)
                .collect();
            let shape = b.ints(&dims);
            one(b.op(&tmp, Op::Expand, &[g, shape]))
        }
        Op::Binary(op) => {
            binary(b, *op, [x[0], x[1]], (y, g), [need(0), need(1)], &tmp).map_err(at)
        }
        Op::Clip => {
            if need(1) || need(2) {
                return Err(at("no gradient for clip's bounds".into()));
            }
            // Passes where clip left x unchanged: 1 - [x - y != 0].
            let diff = b.bin(&tmp, BinOp::Sub, x[0], y).map_err(at)?;
            let m = mask(b, &tmp, diff).map_err(at)?;
            let keep = b
                .op(
                    &tmp,
                    Op::Unary(Act::Affine {
                        alpha: -1.0,
                        beta: 1.0,
                    }),
                    &[m],
                )
                .map_err(at)?;
            one(b.bin(&tmp, BinOp::Mul, g, keep))
        }
        Op::MatMul => linear::matmul(b, x[0], x[1], g, [need(0), need(1)], &tmp).map_err(at),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let (ta, tb) = (*trans_a, *trans_b);
            let gemm = |b: &mut Builder, name: &str, p, q, tp, tq| -> R<Value> {
                let op = Op::Gemm {
                    alpha: *alpha,
                    beta: 1.0,
                    trans_a: tp,
                    trans_b: tq,
                };
                b.op(name, op, &[p, q])
            };
            let mut out = vec![None; x.len()];
            if need(0) {
                out[0] = Some(
                    if ta {
                        gemm(b, &tmp, x[1], g, tb, true)
                    } else {
                        gemm(b, &tmp, g, x[1], false, !tb)
                    }
                    .map_err(at)?,
                );
            }
            if need(1) {
                out[1] = Some(
                    if tb {
                        gemm(b, &tmp, g, x[0], true, ta)
                    } else {
                        gemm(b, &tmp, x[0], g, !ta, false)
                    }
                    .map_err(at)?,
                );
            }
            if need(2) {
                let gc = if *beta == 1.0 {
                    g
                } else {
                    let s = Op::Unary(Act::Affine {
                        alpha: *beta,
                        beta: 0.0,
                    });
                    b.op(&tmp, s, &[g]).map_err(at)?
                };
                let cd = b.dims(x[2]).map_err(at)?;
                out[2] = Some(b.sum_to(&tmp, gc, &cd).map_err(at)?);
            }
            Ok(out)
        }
        Op::Softmax { axis } => {
            let ax = norm_axis(*axis, b.dims(y).map_err(at)?.len()).map_err(at)?;
            let gy = b.bin(&tmp, BinOp::Mul, g, y).map_err(at)?;
            let s = b.sum_keep(&tmp, gy, ax).map_err(at)?;
            let c = b.bin(&tmp, BinOp::Sub, g, s).map_err(at)?;
            one(b.bin(&tmp, BinOp::Mul, y, c))
        }
        Op::LogSoftmax { axis } => {
            // y = x - logsumexp(x): dx = g - softmax(x) * sum(g), and softmax(x) = exp(y).
            let ax = norm_axis(*axis, b.dims(y).map_err(at)?.len()).map_err(at)?;
            let p = b.op(&tmp, Op::Unary(Act::Exp), &[y]).map_err(at)?;
            let s = b.sum_keep(&tmp, g, ax).map_err(at)?;
            let ps = b.bin(&tmp, BinOp::Mul, p, s).map_err(at)?;
            one(b.bin(&tmp, BinOp::Sub, g, ps))
        }
        Op::Where => {
            let z = b.scalar(0.0);
            let mut out = vec![None; 3];
            for (slot, (p, q)) in [(1, (g, z)), (2, (z, g))] {
                if need(slot) {
                    let w = b.op(&tmp, Op::Where, &[x[0], p, q]).map_err(at)?;
                    let d = b.dims(x[slot]).map_err(at)?;
                    out[slot] = Some(b.sum_to(&tmp, w, &d).map_err(at)?);
                }
            }
            Ok(out)
        }
        Op::Concat { axis } => {
            let ax = norm_axis(*axis, b.dims(y).map_err(at)?.len()).map_err(at)?;
            if x.len() == 1 {
                return Ok(vec![Some(g)]);
            }
            let mut sizes = Vec::new();
            for v in &x {
                sizes.push(b.dims(*v).map_err(at)?[ax] as i64);
            }
            let s = b.ints(&sizes);
            let op = Op::Split {
                axis: ax as i64,
                num_outputs: x.len(),
            };
            let parts = b.node(&tmp, op, &[Some(g), Some(s)]).map_err(at)?;
            Ok(parts.into_iter().map(Some).collect())
        }
        Op::Slice => slice(b, &ops, g, &tmp).map(|d| vec![Some(d)]).map_err(at),
        Op::Gather { axis } => {
            if norm_axis(*axis, b.dims(x[0]).map_err(at)?.len()).map_err(at)? != 0 {
                return Err(at("gradients of gather exist only along axis 0".into()));
            }
            one(linear::gather0(b, x[0], x[1], g, &tmp))
        }
        Op::Unsqueeze | Op::Squeeze | Op::Flatten { .. } | Op::Reshape { .. } => {
            let d = b.dims(x[0]).map_err(at)?;
            one(b.reshape(&tmp, g, &d))
        }
        Op::Expand => {
            let d = b.dims(x[0]).map_err(at)?;
            one(b.sum_to(&tmp, g, &d))
        }
        Op::Transpose { perm } => {
            let r = b.dims(x[0]).map_err(at)?.len();
            let p = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            let mut inv = vec![0; r];
            for (i, &j) in p.iter().enumerate() {
                inv[j] = i;
            }
            one(b.transpose(&tmp, g, &inv))
        }
        Op::Reverse { axis } => one(b.op(&tmp, Op::Reverse { axis: *axis }, &[g])),
        op => Err(at(format!("no gradient rule for {}", op.kind()))),
    }
}

/// 1.0 where `v` is nonzero, else 0.0 (the IR has no comparison ops; casts give the same).
fn mask(b: &mut Builder, base: &str, v: Value) -> R<Value> {
    let m = b.op(base, Op::Cast { to: DType::Bool }, &[v])?;
    b.op(base, Op::Cast { to: DType::F32 }, &[m])
}

fn unary(b: &mut Builder, act: Act, x: Value, y: Value, g: Value, tmp: &str) -> R<Value> {
    let factor = match act {
        Act::Sigmoid => {
            let one = b.scalar(1.0);
            let c = b.bin(tmp, BinOp::Sub, one, y)?;
            b.bin(tmp, BinOp::Mul, y, c)?
        }
        Act::Tanh => {
            let one = b.scalar(1.0);
            let yy = b.bin(tmp, BinOp::Mul, y, y)?;
            b.bin(tmp, BinOp::Sub, one, yy)?
        }
        // relu(x) != 0 exactly when x > 0.
        Act::Relu => mask(b, tmp, y)?,
        Act::LeakyRelu { alpha } => {
            let r = b.op(tmp, Op::Unary(Act::Relu), &[x])?;
            let m = mask(b, tmp, r)?;
            b.op(
                tmp,
                Op::Unary(Act::Affine {
                    alpha: 1.0 - alpha,
                    beta: alpha,
                }),
                &[m],
            )?
        }
        Act::Exp => y,
        Act::Neg => return b.op(tmp, Op::Unary(Act::Neg), &[g]),
        Act::Affine { alpha, .. } => {
            return b.op(tmp, Op::Unary(Act::Affine { alpha, beta: 0.0 }), &[g]);
        }
        Act::Softplus => b.op(tmp, Op::Unary(Act::Sigmoid), &[x])?,
        other => return Err(format!("no gradient rule for {}", other.name())),
    };
    b.bin(tmp, BinOp::Mul, g, factor)
}

/// Add, Sub, Mul, Div with numpy broadcasting: each side's contribution is summed back down
/// to that side's shape.
fn binary(
    b: &mut Builder,
    op: BinOp,
    [x0, x1]: [Value; 2],
    (y, g): (Value, Value),
    need: [bool; 2],
    tmp: &str,
) -> R<Vec<Option<Value>>> {
    let mut out = vec![None, None];
    for (i, (v, other)) in [(x0, x1), (x1, x0)].into_iter().enumerate() {
        if !need[i] {
            continue;
        }
        let full = match (op, i) {
            (BinOp::Add, _) | (BinOp::Sub, 0) => g,
            (BinOp::Sub, _) => b.op(tmp, Op::Unary(Act::Neg), &[g])?,
            (BinOp::Mul, _) => b.bin(tmp, BinOp::Mul, g, other)?,
            (BinOp::Div, 0) => b.bin(tmp, BinOp::Div, g, other)?,
            // d(a/b)/db = -(a/b)/b = -y/b.
            (BinOp::Div, _) => {
                let gy = b.bin(tmp, BinOp::Mul, g, y)?;
                let q = b.bin(tmp, BinOp::Div, gy, x1)?;
                b.op(tmp, Op::Unary(Act::Neg), &[q])?
            }
        };
        let d = b.dims(v)?;
        out[i] = Some(b.sum_to(tmp, full, &d)?);
    }
    Ok(out)
}

/// The adjoint of split's input: the result adjoints concatenated, zeros where one is absent.
fn split(b: &mut Builder, n: NodeIndex, x: Value, axis: i64, dres: &[Option<Value>]) -> R<Value> {
    let ax = norm_axis(axis, b.dims(x)?.len())?;
    let mut parts = Vec::new();
    for (slot, d) in dres.iter().enumerate() {
        parts.push(Some(match d {
            Some(d) => *d,
            None => {
                let dims = b.dims(Value { node: n, slot })?;
                b.fill(0.0, &dims)?
            }
        }));
    }
    let name = format!("t.{}", b.g.nodes[n].name);
    Ok(b.node(&name, Op::Concat { axis: ax as i64 }, &parts)?[0])
}

/// Slice with unit steps: the adjoint is g padded with zero blocks before and after the kept
/// range along each sliced axis.
fn slice(b: &mut Builder, ops: &[Option<Value>], g: Value, tmp: &str) -> R<Value> {
    let x = ops[0].ok_or("slice without data")?;
    let ints = |i: usize| -> R<Option<Vec<i64>>> {
        match ops.get(i).copied().flatten() {
            None => Ok(None),
            Some(v) => match b.g.constant(v).and_then(|c| c.value.to_i64_vec()) {
                Some(c) => Ok(Some(c)),
                None => Err("gradients of slice need constant starts, ends, axes and steps".into()),
            },
        }
    };
    let (starts, ends) = (ints(1)?.unwrap_or_default(), ints(2)?.unwrap_or_default());
    let dims = b.dims(x)?;
    let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if ends.len() != starts.len() || axes.len() != starts.len() {
        return Err("starts, ends and axes differ in length".into());
    }
    if ints(4)?.is_some_and(|s| s.iter().any(|&v| v != 1)) {
        return Err("gradients of slice exist only for unit steps".into());
    }
    let mut cur = g;
    for (i, &a) in axes.iter().enumerate() {
        let ax = norm_axis(a, dims.len())?;
        let dim = dims[ax] as i64;
        let fix = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
        let (s, e) = (fix(starts[i]), fix(ends[i]));
        let e = e.max(s);
        let mut pieces = Vec::new();
        let cd = b.dims(cur)?;
        for (len, is_g) in [(s, false), (e - s, true), (dims[ax] - e, false)] {
            if is_g {
                pieces.push(Some(cur));
            } else if len > 0 {
                let mut zd = cd.clone();
                zd[ax] = len;
                pieces.push(Some(b.fill(0.0, &zd)?));
            }
        }
        cur = b.node(tmp, Op::Concat { axis: ax as i64 }, &pieces)?[0];
    }
    Ok(cur)
}
