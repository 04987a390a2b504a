//! Plain, exact implementations of each op on concrete tensors: the reference semantics.

use crate::map_tensor;
use crate::op::{Act, BinOp, CmpOp, LogicOp};
use crate::tensor::{DType, Tensor, dims_text};
use ndarray::{ArrayD, Axis, IxDyn, Slice as NdSlice, Zip};

pub type KResult<T> = Result<T, String>;

/// Checks a result's shape against the `elements` limit ([`crate::limits`]) before a kernel
/// allocates it: a shape read from a damaged file must fail before memory does.
pub fn check_size(shape: &[usize]) -> KResult<()> {
    crate::limits::check_dims(|| format!("shape {}", crate::dims_text(shape)), shape)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Normalizes a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> KResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// [`norm_axis`] for ops that index the axis (slice, squeeze, softmax, reverse): a scalar has
/// none, which `norm_axis` lets through for the ops where axis 0 of a scalar means something.
pub fn dim_axis(axis: i64, rank: usize) -> KResult<usize> {
    if rank == 0 {
        return Err(format!(
            "axis {axis} of a scalar: the op needs rank 1 or more"
        ));
    }
    norm_axis(axis, rank)
}

/// numpy broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> KResult<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!(
                "shapes {} and {} do not broadcast",
                crate::dims_text(a),
                crate::dims_text(b)
            ));
        };
    }
    Ok(out)
}

fn bcast<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> KResult<ArrayD<T>> {
    check_size(shape)?;
    a.broadcast(IxDyn(shape))
        .map(|v| v.to_owned())
        .ok_or_else(|| {
            format!(
                "cannot broadcast {} to {}",
                dims_text(a.shape()),
                dims_text(shape)
            )
        })
}

fn zip2<A: Clone, B: Clone, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> C,
) -> KResult<ArrayD<C>> {
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    check_size(&shape)?;
    let av = a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    let bv = b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    Ok(Zip::from(&av)
        .and(&bv)
        .map_collect(|x, y| f(x.clone(), y.clone())))
}

pub fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    macro_rules! int_op {
        ($x:expr, $y:expr, $zero:expr) => {
            zip2($x, $y, |p, q| match op {
                BinOp::Add => p.wrapping_add(q),
                BinOp::Sub => p.wrapping_sub(q),
                BinOp::Mul => p.wrapping_mul(q),
                BinOp::Div => {
                    if q == $zero {
                        $zero
                    } else {
                        p.wrapping_div(q)
                    }
                }
            })
        };
    }
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(zip2(x, y, |p, q| match op {
            BinOp::Add => p + q,
            BinOp::Sub => p - q,
            BinOp::Mul => p * q,
            BinOp::Div => p / q,
        })?),
        (Tensor::I64(x), Tensor::I64(y)) => Tensor::I64(int_op!(x, y, 0i64)?),
        (Tensor::I32(x), Tensor::I32(y)) => Tensor::I32(int_op!(x, y, 0i32)?),
        _ => {
            return Err(format!(
                "operand types {} and {} differ or are not numeric",
                a.dtype(),
                b.dtype()
            ));
        }
    })
}

pub fn unary(act: Act, x: &Tensor) -> KResult<Tensor> {
    match (act, x) {
        (_, Tensor::F32(a)) => Ok(Tensor::F32(a.mapv(|v| act.apply(v)))),
        (Act::Neg, Tensor::I64(a)) => Ok(Tensor::I64(a.mapv(|v| v.wrapping_neg()))),
        (Act::Neg, Tensor::I32(a)) => Ok(Tensor::I32(a.mapv(|v| v.wrapping_neg()))),
        (Act::Relu, Tensor::I64(a)) => Ok(Tensor::I64(a.mapv(|v| v.max(0)))),
        (Act::Relu, Tensor::I32(a)) => Ok(Tensor::I32(a.mapv(|v| v.max(0)))),
        _ => Err(format!("{} needs f32, got {}", act.name(), x.dtype())),
    }
}

fn scalar_of(t: Option<&Tensor>, what: &str) -> KResult<Option<Tensor>> {
    match t {
        None => Ok(None),
        Some(t) if t.len() == 1 => Ok(Some(t.clone())),
        Some(t) => Err(format!(
            "{what} must be a scalar, got shape {}",
            dims_text(t.shape())
        )),
    }
}

pub fn clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> KResult<Tensor> {
    let (lo, hi) = (scalar_of(min, "min")?, scalar_of(max, "max")?);
    macro_rules! clamp {
        ($a:expr, $v:ident, $lo:expr, $hi:expr) => {{
            let lo = match lo {
                Some(Tensor::$v(t)) => Some(t.iter().next().copied().unwrap_or($lo)),
                None => None,
                Some(o) => return Err(format!("min has type {}, x {}", o.dtype(), x.dtype())),
            };
            let hi = match hi {
                Some(Tensor::$v(t)) => Some(t.iter().next().copied().unwrap_or($hi)),
                None => None,
                Some(o) => return Err(format!("max has type {}, x {}", o.dtype(), x.dtype())),
            };
            // ONNX: min applied first, then max (so min > max gives max everywhere).
            $a.mapv(|v| {
                let v = match lo {
                    Some(l) if v < l => l,
                    _ => v,
                };
                match hi {
                    Some(h) if v > h => h,
                    _ => v,
                }
            })
        }};
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(clamp!(a, F32, f32::MIN, f32::MAX)),
        Tensor::I64(a) => Tensor::I64(clamp!(a, I64, i64::MIN, i64::MAX)),
        Tensor::I32(a) => Tensor::I32(clamp!(a, I32, i32::MIN, i32::MAX)),
        Tensor::Bool(_) => return Err("clip of bool".into()),
    })
}

fn f32_of<'a>(t: &'a Tensor, what: &str) -> KResult<&'a ArrayD<f32>> {
    t.as_f32()
        .ok_or_else(|| format!("{what} must be f32, got {}", t.dtype()))
}

/// 2-D product, accumulated in f64 so the oracle carries no reordering error of its own.
fn mm2(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
}

pub fn matmul(a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    let (a, b) = (f32_of(a, "A")?, f32_of(b, "B")?);
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err("matmul operands must have rank >= 1".into());
    }
    // numpy: a 1-D operand gains a unit axis that is dropped from the result.
    let a2 = if a.ndim() == 1 {
        a.clone().insert_axis(Axis(0))
    } else {
        a.clone()
    };
    let b2 = if b.ndim() == 1 {
        b.clone().insert_axis(Axis(1))
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.ndim(), b2.ndim());
    let (m, k) = (a2.shape()[ra - 2], a2.shape()[ra - 1]);
    let (k2, n) = (b2.shape()[rb - 2], b2.shape()[rb - 1]);
    if k != k2 {
        return Err(format!(
            "inner dimensions differ: {} x {}",
            dims_text(a.shape()),
            dims_text(b.shape())
        ));
    }
    let batch = broadcast_shapes(&a2.shape()[..ra - 2], &b2.shape()[..rb - 2])?;
    let mut sa = batch.clone();
    sa.extend([m, k]);
    let mut sb = batch.clone();
    sb.extend([k, n]);
    let mut so = batch.clone();
    so.extend([m, n]);
    check_size(&so)?;
    let av = bcast(&a2, &sa)?;
    let bv = bcast(&b2, &sb)?;
    let av = av.as_standard_layout();
    let bv = bv.as_standard_layout();
    let (ad, bd) = (
        av.as_slice().ok_or("layout")?,
        bv.as_slice().ok_or("layout")?,
    );
    let nb: usize = batch.iter().product();
    let mut out = vec![0f32; nb * m * n];
    for i in 0..nb {
        mm2(
            &ad[i * m * k..(i + 1) * m * k],
            &bd[i * k * n..(i + 1) * k * n],
            m,
            k,
            n,
            &mut out[i * m * n..(i + 1) * m * n],
        );
    }
    let mut res = ArrayD::from_shape_vec(IxDyn(&so), out).map_err(|e| e.to_string())?;
    // Drop a's row axis before b's column axis: with both 1-D the result [1, 1] has just two.
    if a.ndim() == 1 {
        let ax = res.ndim() - 2;
        res = res.remove_axis(Axis(ax));
    }
    if b.ndim() == 1 {
        let ax = res.ndim() - 1;
        res = res.remove_axis(Axis(ax));
    }
    Ok(Tensor::F32(res))
}

pub fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
) -> KResult<Tensor> {
    let (a, b) = (f32_of(a, "A")?, f32_of(b, "B")?);
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err(format!(
            "gemm needs 2-D operands, got {} and {}",
            dims_text(a.shape()),
            dims_text(b.shape())
        ));
    }
    let a = if ta { a.t().to_owned() } else { a.clone() };
    let b = if tb { b.t().to_owned() } else { b.clone() };
    let ab = matmul(&Tensor::F32(a), &Tensor::F32(b))?;
    let mut y = f32_of(&ab, "AB")?.mapv(|v| v * alpha);
    if let Some(c) = c {
        let c = f32_of(c, "C")?;
        let cb = c.broadcast(y.raw_dim()).ok_or_else(|| {
            format!(
                "C of shape {} does not broadcast to {}",
                dims_text(c.shape()),
                dims_text(y.shape())
            )
        })?;
        y.zip_mut_with(&cb, |v, w| *v += beta * w);
    }
    Ok(Tensor::F32(y))
}

pub fn softmax(x: &Tensor, axis: i64, log: bool) -> KResult<Tensor> {
    let a = f32_of(x, "input")?;
    let ax = Axis(dim_axis(axis, a.ndim())?);
    let mut out = a.clone();
    for mut lane in out.lanes_mut(ax) {
        let m = lane.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = lane.iter().map(|v| ((v - m) as f64).exp()).sum();
        if log {
            let ls = sum.ln();
            lane.mapv_inplace(|v| ((v - m) as f64 - ls) as f32);
        } else {
            lane.mapv_inplace(|v| (((v - m) as f64).exp() / sum) as f32);
        }
    }
    Ok(Tensor::F32(out))
}

pub fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> KResult<Tensor> {
    let Tensor::Bool(c) = c else {
        return Err(format!("condition must be bool, got {}", c.dtype()));
    };
    let shape = broadcast_shapes(&broadcast_shapes(c.shape(), x.shape())?, y.shape())?;
    let cb = bcast(c, &shape)?;
    macro_rules! sel {
        ($xa:expr, $ya:expr) => {{
            let xb = bcast($xa, &shape)?;
            let yb = bcast($ya, &shape)?;
            Zip::from(&cb)
                .and(&xb)
                .and(&yb)
                .map_collect(|c, x, y| if *c { x.clone() } else { y.clone() })
        }};
    }
    Ok(match (x, y) {
        (Tensor::F32(a), Tensor::F32(b)) => Tensor::F32(sel!(a, b)),
        (Tensor::I64(a), Tensor::I64(b)) => Tensor::I64(sel!(a, b)),
        (Tensor::I32(a), Tensor::I32(b)) => Tensor::I32(sel!(a, b)),
        (Tensor::Bool(a), Tensor::Bool(b)) => Tensor::Bool(sel!(a, b)),
        _ => {
            return Err(format!(
                "x and y types differ: {} vs {}",
                x.dtype(),
                y.dtype()
            ));
        }
    })
}

/// Elementwise comparison; both operands of one type. NaN compares false (IEEE 754).
pub fn compare(op: CmpOp, a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    Ok(Tensor::Bool(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => zip2(x, y, |p, q| op.apply(p, q))?,
        (Tensor::I64(x), Tensor::I64(y)) => zip2(x, y, |p, q| op.apply(p, q))?,
        (Tensor::I32(x), Tensor::I32(y)) => zip2(x, y, |p, q| op.apply(p, q))?,
        (Tensor::Bool(x), Tensor::Bool(y)) => zip2(x, y, |p, q| op.apply(p, q))?,
        _ => {
            return Err(format!(
                "{} of {} and {}: the operand types differ",
                op.name(),
                a.dtype(),
                b.dtype()
            ));
        }
    }))
}

/// Elementwise logic on bools.
pub fn logic(op: LogicOp, a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    match (a, b) {
        (Tensor::Bool(x), Tensor::Bool(y)) => Ok(Tensor::Bool(zip2(x, y, |p, q| op.apply(p, q))?)),
        _ => Err(format!(
            "{} takes bool operands, got {} and {}",
            op.name(),
            a.dtype(),
            b.dtype()
        )),
    }
}

pub fn not(x: &Tensor) -> KResult<Tensor> {
    match x {
        Tensor::Bool(a) => Ok(Tensor::Bool(a.mapv(|v| !v))),
        _ => Err(format!("not takes a bool operand, got {}", x.dtype())),
    }
}

/// The reduced axes of a rank-`rank` tensor (ONNX ReduceSum: none given means every axis, or
/// none at all with `noop_with_empty_axes`), as a flag per axis.
pub fn reduced_axes(rank: usize, axes: &[i64], noop_with_empty_axes: bool) -> KResult<Vec<bool>> {
    let mut reduced = vec![axes.is_empty() && !noop_with_empty_axes; rank];
    for &a in axes {
        reduced[norm_axis(a, rank)?] = true;
    }
    Ok(reduced)
}

/// ONNX ReduceSum. f32 sums accumulate in f64 (the oracle carries no rounding of its own);
/// integer sums wrap.
pub fn reduce_sum(
    x: &Tensor,
    axes: &[i64],
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> KResult<Tensor> {
    let rank = x.shape().len();
    let reduced = reduced_axes(rank, axes, noop_with_empty_axes)?;
    let kept: Vec<usize> = (0..rank)
        .map(|d| if reduced[d] { 1 } else { x.shape()[d] })
        .collect();
    let out_shape: Vec<usize> = (0..rank)
        .filter(|&d| keepdims || !reduced[d])
        .map(|d| kept[d])
        .collect();
    check_size(&kept)?;
    macro_rules! sum {
        ($a:expr, $acc:ty, $zero:expr, $add:expr, $back:expr) => {{
            let mut acc = ArrayD::<$acc>::from_elem(IxDyn(&kept), $zero);
            for (idx, v) in $a.indexed_iter() {
                let mut at = ndarray::Dimension::slice(&idx).to_vec();
                for d in 0..rank {
                    if reduced[d] {
                        at[d] = 0;
                    }
                }
                let slot = &mut acc[IxDyn(&at)];
                *slot = $add(*slot, *v);
            }
            acc.mapv($back)
                .into_shape_with_order(IxDyn(&out_shape))
                .map_err(|e| e.to_string())?
        }};
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(sum!(
            a,
            f64,
            0.0,
            |s: f64, v: f32| s + v as f64,
            |s: f64| s as f32
        )),
        Tensor::I64(a) => Tensor::I64(sum!(a, i64, 0, |s: i64, v: i64| s.wrapping_add(v), |s| s)),
        Tensor::I32(a) => Tensor::I32(sum!(a, i32, 0, |s: i32, v: i32| s.wrapping_add(v), |s| s)),
        Tensor::Bool(_) => return Err("reduce_sum takes a numeric operand, got bool".into()),
    })
}

pub fn concat(xs: &[&Tensor], axis: i64) -> KResult<Tensor> {
    let first = xs.first().ok_or("concat of nothing")?;
    let rank = first.shape().len();
    // ndarray asserts (panics) on these; ONNX requires equal ranks of at least 1.
    if rank == 0 {
        return Err("cannot concatenate scalars".into());
    }
    if let Some(t) = xs.iter().find(|t| t.shape().len() != rank) {
        return Err(format!(
            "operand ranks differ: {} vs {}",
            rank,
            t.shape().len()
        ));
    }
    let ax = Axis(norm_axis(axis, rank)?);
    macro_rules! cat {
        ($v:ident) => {{
            let mut views = Vec::new();
            for t in xs {
                match t {
                    Tensor::$v(a) => views.push(a.view()),
                    o => {
                        return Err(format!(
                            "operand types differ: {} vs {}",
                            first.dtype(),
                            o.dtype()
                        ));
                    }
                }
            }
            Tensor::$v(
                ndarray::concatenate(ax, &views)
                    .map_err(|e| format!("shapes do not concatenate: {e}"))?,
            )
        }};
    }
    Ok(match first {
        Tensor::F32(_) => cat!(F32),
        Tensor::I64(_) => cat!(I64),
        Tensor::I32(_) => cat!(I32),
        Tensor::Bool(_) => cat!(Bool),
    })
}

/// Split sizes along `axis`: given, or `num` parts of ceil(len/num) with a smaller last one.
pub fn split_sizes(len: usize, sizes: Option<&[i64]>, num: usize) -> KResult<Vec<usize>> {
    if let Some(s) = sizes {
        // checked: sizes from a model may sum past i64.
        let sum = s.iter().try_fold(0i64, |a, &v| a.checked_add(v));
        if s.iter().any(|&v| v < 0) || sum != Some(len as i64) || s.len() != num {
            return Err(format!(
                "split sizes {} do not sum to {len} in {num} parts",
                dims_text(s)
            ));
        }
        return Ok(s.iter().map(|&v| v as usize).collect());
    }
    if num == 0 {
        return Err("split into 0 parts".into());
    }
    let part = len.div_ceil(num);
    let mut out = Vec::new();
    let mut left = len;
    for _ in 0..num {
        let p = part.min(left);
        out.push(p);
        left -= p;
    }
    Ok(out)
}

pub fn split(x: &Tensor, axis: i64, sizes: Option<&Tensor>, num: usize) -> KResult<Vec<Tensor>> {
    if x.shape().is_empty() {
        return Err("cannot split a scalar".into());
    }
    let ax = norm_axis(axis, x.shape().len())?;
    let sizes = match sizes {
        Some(t) => Some(t.to_i64_vec().ok_or("split sizes must be integers")?),
        None => None,
    };
    let sizes = split_sizes(x.shape()[ax], sizes.as_deref(), num)?;
    let mut out = Vec::new();
    let mut start = 0isize;
    for s in sizes {
        let end = start + s as isize;
        out.push(map_tensor!(x, a => a.slice_axis(Axis(ax), NdSlice::from(start..end)).to_owned()));
        start = end;
    }
    Ok(out)
}

pub fn slice(
    x: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> KResult<Tensor> {
    let ints = |t: &Tensor, w: &str| {
        t.to_i64_vec()
            .ok_or_else(|| format!("{w} must be integers"))
    };
    let (starts, ends) = (ints(starts, "starts")?, ints(ends, "ends")?);
    let rank = x.shape().len();
    let axes = match axes {
        Some(t) => ints(t, "axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match steps {
        Some(t) => ints(t, "steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let norm: Vec<usize> = axes
        .iter()
        .map(|&a| dim_axis(a, rank))
        .collect::<KResult<_>>()?;
    if (1..norm.len()).any(|i| norm[..i].contains(&norm[i])) {
        return Err(format!("slice axes {} repeat an axis", dims_text(&axes)));
    }
    let mut out = x.clone();
    for (i, &ax) in norm.iter().enumerate() {
        let dim = x.shape()[ax] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("slice step 0".into());
        }
        let clampi = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let fix = |v: i64| if v < 0 { v + dim } else { v };
        let (s, e) = if step > 0 {
            (clampi(fix(starts[i]), 0, dim), clampi(fix(ends[i]), 0, dim))
        } else {
            (
                clampi(fix(starts[i]), -1, dim - 1),
                clampi(fix(ends[i]), -1, dim - 1),
            )
        };
        let idx: Vec<usize> = if step > 0 {
            (s..e).step_by(step as usize).map(|v| v as usize).collect()
        } else {
            let mut v = Vec::new();
            let mut k = s;
            while k > e {
                v.push(k as usize);
                k += step;
            }
            v
        };
        out = map_tensor!(&out, a => a.select(Axis(ax), &idx));
    }
    Ok(out)
}

pub fn gather(x: &Tensor, idx: &Tensor, axis: i64) -> KResult<Tensor> {
    if x.shape().is_empty() {
        return Err("cannot gather from a scalar".into());
    }
    let ax = norm_axis(axis, x.shape().len())?;
    let dim = x.shape()[ax] as i64;
    let ids = idx.to_i64_vec().ok_or("indices must be integers")?;
    let mut flat = Vec::with_capacity(ids.len());
    for i in ids {
        let j = if i < 0 { i + dim } else { i };
        if j < 0 || j >= dim {
            return Err(format!("index {i} is out of range for axis of size {dim}"));
        }
        flat.push(j as usize);
    }
    let mut shape: Vec<usize> = x.shape()[..ax].to_vec();
    shape.extend_from_slice(idx.shape());
    shape.extend_from_slice(&x.shape()[ax + 1..]);
    check_size(&shape)?;
    Ok(map_tensor!(x, a => {
        let sel = a.select(Axis(ax), &flat);
        let sel = sel.as_standard_layout().to_owned();
        sel.into_shape_with_order(IxDyn(&shape)).map_err(|e| e.to_string())?
    }))
}

pub fn reshape_to(x: &Tensor, shape: &[usize]) -> KResult<Tensor> {
    Ok(
        map_tensor!(x, a => a.as_standard_layout().to_owned().into_shape_with_order(IxDyn(shape)).map_err(|e| format!("cannot reshape {} to {}: {e}", dims_text(a.shape()), dims_text(shape)))?),
    )
}

/// ONNX Reshape target: 0 copies the input dim (unless allowzero), -1 is inferred.
pub fn reshape_shape(input: &[usize], target: &[i64], allowzero: bool) -> KResult<Vec<usize>> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or("0 in shape beyond the input rank")?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("bad shape {}", dims_text(target))),
        }
    }
    // Dims from a model may multiply past usize: an error, not an overflow.
    let product = |d: &[usize]| {
        d.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| format!("shape {d:?} has too many elements"))
    };
    let total = product(input)?;
    if let Some(i) = infer {
        let rest = product(&out)?;
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!(
                "cannot reshape {} to {}",
                dims_text(input),
                dims_text(target)
            ));
        }
        out[i] = total / rest;
    }
    if product(&out)? != total {
        return Err(format!(
            "cannot reshape {} ({total} elements) to {}",
            dims_text(input),
            dims_text(target)
        ));
    }
    Ok(out)
}

pub fn reshape(x: &Tensor, shape: &Tensor, allowzero: bool) -> KResult<Tensor> {
    let t = shape.to_i64_vec().ok_or("shape must be integers")?;
    let s = reshape_shape(x.shape(), &t, allowzero)?;
    reshape_to(x, &s)
}

pub fn unsqueeze_shape(input: &[usize], axes: &[i64]) -> KResult<Vec<usize>> {
    let r = input.len() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<KResult<_>>()?;
    ax.sort_unstable();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("repeated axes {}", dims_text(axes)));
    }
    let mut out = Vec::with_capacity(r);
    let mut it = input.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or("axes out of range")?);
        }
    }
    Ok(out)
}

pub fn squeeze_shape(input: &[usize], axes: Option<&[i64]>) -> KResult<Vec<usize>> {
    match axes {
        None => Ok(input.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let ax: Vec<usize> = axes
                .iter()
                .map(|&a| dim_axis(a, input.len()))
                .collect::<KResult<_>>()?;
            for &a in &ax {
                if input[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", input[a]));
                }
            }
            Ok(input
                .iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, d)| *d)
                .collect())
        }
    }
}

pub fn flatten_shape(input: &[usize], axis: i64) -> KResult<Vec<usize>> {
    let r = input.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(format!("flatten axis {axis} out of range for rank {r}"));
    }
    let a = a as usize;
    Ok(vec![
        input[..a].iter().product(),
        input[a..].iter().product(),
    ])
}

pub fn transpose(x: &Tensor, perm: Option<&[usize]>) -> KResult<Tensor> {
    let r = x.shape().len();
    let p: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if p.len() != r
        || p.iter()
            .any(|&i| i >= r || std::mem::replace(&mut seen[i], true))
    {
        return Err(format!(
            "perm {} is not a permutation of rank {r}",
            dims_text(&p)
        ));
    }
    Ok(map_tensor!(x, a => a.view().permuted_axes(IxDyn(&p)).as_standard_layout().to_owned()))
}

pub fn expand(x: &Tensor, shape: &Tensor) -> KResult<Tensor> {
    let t = shape.to_i64_vec().ok_or("shape must be integers")?;
    if t.iter().any(|&d| d < 0) {
        return Err(format!("negative dim in expand shape {}", dims_text(&t)));
    }
    let t: Vec<usize> = t.iter().map(|&d| d as usize).collect();
    let s = broadcast_shapes(x.shape(), &t)?;
    check_size(&s)?;
    Ok(map_tensor!(x, a => bcast(a, &s)?))
}

pub fn shape_of(x: &Tensor, start: i64, end: Option<i64>) -> Tensor {
    let s = x.shape();
    let (lo, hi) = shape_range(s.len(), start, end);
    let v: Vec<i64> = s[lo..hi].iter().map(|&d| d as i64).collect();
    Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D"))
}

/// The [lo, hi) range of the Shape op's start/end, clamped as ONNX says.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let lo = fix(start);
    let hi = fix(end.unwrap_or(r));
    (lo, hi.max(lo))
}

pub fn constant_of_shape(shape: &Tensor, value: &Tensor) -> KResult<Tensor> {
    let t = shape.to_i64_vec().ok_or("shape must be integers")?;
    if t.iter().any(|&d| d < 0) {
        return Err(format!("negative dim in shape {}", dims_text(&t)));
    }
    let s: Vec<usize> = t.iter().map(|&d| d as usize).collect();
    check_size(&s)?;
    Ok(
        map_tensor!(value, a => ArrayD::from_elem(IxDyn(&s), a.iter().next().cloned().ok_or("value is empty")?)),
    )
}

pub fn reverse(x: &Tensor, axis: i64) -> KResult<Tensor> {
    let ax = dim_axis(axis, x.shape().len())?;
    Ok(map_tensor!(x, a => {
        let mut v = a.view();
        v.invert_axis(Axis(ax));
        v.as_standard_layout().to_owned()
    }))
}

pub fn cast(x: &Tensor, to: DType) -> Tensor {
    x.cast(to)
}
