//! The values of the small integer tensors exporters compute shapes with, as dims: a zero
//! state of `[batch, hidden]` is written `Expand(0, Concat(Slice(Shape(x), 0, 1), [16]))` (tf2onnx)
//! or `ConstantOfShape(Concat(...))` (torch), and the batch is symbolic. Shape inference sees a
//! shape operand it cannot fold and loses every dim (`f32[?,?]`), and with it the batch axis
//! that `compile --max-batch` needs; following the shape arithmetic keeps `[unk__1,16]`.

use super::ctx::Ctx;
use hlstm_ir::{Dim, Op, Tensor, TensorType, Value};

/// The dims a 1-D (or scalar) integer tensor holds, where import can tell them (each a number,
/// a symbol or unknown), through `Shape`, `Cast`, `Identity`, `Concat`, `Slice`, `Gather`,
/// `Unsqueeze` and `Squeeze`.
pub fn dims_of_value(ctx: &Ctx, v: Value, depth: usize) -> Option<Vec<Dim>> {
    if let Some(t) = ctx.const_value(v) {
        let vals = match t {
            Tensor::I64(_) | Tensor::I32(_) => t.to_i64_vec()?,
            _ => return None,
        };
        return vals
            .iter()
            .map(|&d| usize::try_from(d).ok().map(Dim::Known))
            .collect();
    }
    if depth > 16 {
        return None;
    }
    let n = v.node;
    let ops = ctx.g.operands(n);
    let arg = |i: usize| ops.get(i).copied().flatten();
    let konst = |i: usize| {
        arg(i)
            .and_then(|a| ctx.const_value(a))
            .and_then(Tensor::to_i64_vec)
    };
    match &ctx.g.nodes[n].op {
        Op::Shape { start, end } => {
            let dims = ctx.ty(arg(0)?).shape.clone()?;
            let r = dims.len() as i64;
            let clamp = |i: i64| if i < 0 { (i + r).clamp(0, r) } else { i.min(r) };
            let (lo, hi) = (clamp(*start), clamp(end.unwrap_or(r)));
            Some(dims[lo as usize..hi.max(lo) as usize].to_vec())
        }
        Op::Cast { .. } | Op::Identity | Op::Unsqueeze | Op::Squeeze => {
            dims_of_value(ctx, arg(0)?, depth + 1)
        }
        Op::Concat { axis: 0 | -1 } => {
            let mut out = Vec::new();
            for o in &ops {
                out.extend(dims_of_value(ctx, (*o)?, depth + 1)?);
            }
            Some(out)
        }
        Op::Gather { axis: 0 } => {
            let all = dims_of_value(ctx, arg(0)?, depth + 1)?;
            let len = all.len() as i64;
            konst(1)?
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + len } else { i };
                    all.get(usize::try_from(i).ok()?).cloned()
                })
                .collect()
        }
        Op::Slice => {
            let all = dims_of_value(ctx, arg(0)?, depth + 1)?;
            let (starts, ends) = (konst(1)?, konst(2)?);
            let axes_ok = arg(3).is_none() || konst(3).is_some_and(|a| a == [0] || a == [-1]);
            let steps_ok = arg(4).is_none() || konst(4).is_some_and(|s| s == [1]);
            if !(axes_ok && steps_ok && starts.len() == 1 && ends.len() == 1) {
                return None;
            }
            let len = all.len() as i64;
            let clamp = |i: i64| {
                if i < 0 {
                    (i + len).clamp(0, len)
                } else {
                    i.min(len)
                }
            };
            let (lo, hi) = (clamp(starts[0]), clamp(ends[0]));
            Some(all[lo as usize..hi.max(lo) as usize].to_vec())
        }
        _ => None,
    }
}

/// Fills the dims shape inference left unknown in the results of `Expand`, `ConstantOfShape`
/// and `Reshape`, from the values of their shape operand. Known dims are never changed.
pub fn refine(ctx: &Ctx, op: &Op, operands: &[Option<Value>], tys: &mut [TensorType]) {
    if let Op::Reshape { allowzero } = op {
        return refine_reshape(ctx, *allowzero, operands, tys);
    }
    let (shape_at, data) = match op {
        Op::Expand => (1, operands.first().copied().flatten()),
        Op::ConstantOfShape { .. } => (0, None),
        _ => return,
    };
    let Some(Some(shape_v)) = operands.get(shape_at) else {
        return;
    };
    let Some(target) = dims_of_value(ctx, *shape_v, 0) else {
        return;
    };
    let Some(ty) = tys.first_mut() else {
        return;
    };
    let mut dims = target;
    if let Some(d) = data {
        let Some(src) = ctx.ty(d).shape.clone() else {
            return;
        };
        // numpy broadcasting, right-aligned; a 1 yields to the other side.
        let rank = dims.len().max(src.len());
        let pad = |v: &[Dim]| {
            let mut p = vec![Dim::Known(1); rank - v.len()];
            p.extend_from_slice(v);
            p
        };
        let (a, b) = (pad(&src), pad(&dims));
        dims = a
            .into_iter()
            .zip(b)
            .map(|(x, y)| match (x, y) {
                (Dim::Known(1), y) => y,
                (x, Dim::Known(1)) => x,
                (x, y) if x == y => x,
                (Dim::Unknown, y) => y,
                (x, _) => x,
            })
            .collect();
    }
    fill_unknown(ty, dims);
}

/// A `Reshape` whose target is shape arithmetic (torch's dynamo exporter: `Concat([6],
/// Shape(x)[1:2], [8])`): the target's dims, a 0 copying the input's dim unless `allowzero`.
fn refine_reshape(ctx: &Ctx, allowzero: bool, operands: &[Option<Value>], tys: &mut [TensorType]) {
    let (Some(Some(data)), Some(Some(shape_v))) = (operands.first(), operands.get(1)) else {
        return;
    };
    let Some(mut dims) =
        dims_of_value(ctx, *shape_v, 0).or_else(|| inferred_dim(ctx, *data, *shape_v))
    else {
        return;
    };
    if !allowzero {
        let src = ctx.ty(*data).shape.clone().unwrap_or_default();
        for (i, d) in dims.iter_mut().enumerate() {
            if *d == Dim::Known(0) {
                *d = src.get(i).cloned().unwrap_or(Dim::Unknown);
            }
        }
    }
    if let Some(ty) = tys.first_mut() {
        fill_unknown(ty, dims);
    }
}

/// A constant target with one -1 on an input with one open dim: when the known dims on both
/// sides multiply to the same number, the -1 is that open dim (`[6,B,1,8]` to `[6,-1,8]` is
/// `[6,B,8]`).
fn inferred_dim(ctx: &Ctx, data: Value, shape_v: Value) -> Option<Vec<Dim>> {
    let target = ctx.const_value(shape_v)?.to_i64_vec()?;
    let src = ctx.ty(data).shape.clone()?;
    let open: Vec<&Dim> = src.iter().filter(|d| d.known().is_none()).collect();
    let [open] = open.as_slice() else {
        return None;
    };
    if target.iter().filter(|&&d| d == -1).count() != 1 || target.iter().any(|&d| d < -1 || d == 0)
    {
        return None;
    }
    let known_src: usize = src.iter().filter_map(Dim::known).product();
    let known_dst: usize = target
        .iter()
        .filter(|&&d| d > 0)
        .map(|&d| d as usize)
        .product();
    (known_src == known_dst).then(|| {
        target
            .iter()
            .map(|&d| {
                if d == -1 {
                    (*open).clone()
                } else {
                    Dim::Known(d as usize)
                }
            })
            .collect()
    })
}

/// Sets the dims of `ty` that are unknown from `dims` (of the same rank; an unranked `ty`
/// takes them all).
fn fill_unknown(ty: &mut TensorType, dims: Vec<Dim>) {
    match &mut ty.shape {
        Some(have) if have.len() == dims.len() => {
            for (h, d) in have.iter_mut().zip(dims) {
                if *h == Dim::Unknown {
                    *h = d;
                }
            }
        }
        Some(_) => {}
        None => ty.shape = Some(dims),
    }
}
