//! Elementwise statements (unary, binary, clip, copy): loops over the output's dims.
//!
//! Dims of size 1 are dropped and dims contiguous in every operand are merged. The innermost
//! dim is vectorized with f32x4 when the output is contiguous there and every operand is
//! contiguous or broadcast (stride 0: loaded once and splatted); otherwise it is scalar. Small
//! statements (up to [`UNROLL`] vector or scalar operations) are fully unrolled; larger ones
//! loop over the outer dims and over the innermost dim in chunks of [`VCHUNK`] vectors.

use super::codegen::{Cx, Rv};
use super::math::{Fx, SCALAR, VEC};
use cranelift_codegen::ir::{InstBuilder, Value};
use hlstm_ir::{Act, BinOp};

/// The most operations a statement or row is unrolled to.
const UNROLL: usize = 64;
/// Vectors per iteration of a vector loop.
const VCHUNK: usize = 2;

#[derive(Clone, Copy, Debug)]
pub(crate) enum EOp {
    Act(Act),
    Bin(BinOp),
    Clip(f32, f32),
    Copy,
}

fn apply(cx: &mut Cx, op: EOp, vector: bool, args: &[Value]) -> Value {
    let ty = if vector { VEC } else { SCALAR };
    let mut f = Fx::new(cx.b, ty, cx.fma);
    match op {
        EOp::Act(a) => f.act(a, args[0]),
        EOp::Bin(b) => f.bin(b, args[0], args[1]),
        EOp::Clip(lo, hi) => f.clip(args[0], lo, hi),
        EOp::Copy => args[0],
    }
}

/// One dim of the iteration space: its size and the byte stride of each view (out first).
#[derive(Clone, Debug)]
struct Dim {
    n: usize,
    s: Vec<i64>,
}

/// Drops unit dims and merges dims contiguous in every view.
fn simplify(dims: &[usize], views: &[&Rv]) -> Vec<Dim> {
    let mut out: Vec<Dim> = Vec::new();
    for (d, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let s: Vec<i64> = views.iter().map(|v| v.strides[d]).collect();
        if let Some(last) = out.last_mut()
            && last.s.iter().zip(&s).all(|(a, b)| *a == b * n as i64)
        {
            last.n *= n;
            last.s = s;
            continue;
        }
        out.push(Dim { n, s });
    }
    if out.is_empty() {
        out.push(Dim {
            n: 1,
            s: vec![0; views.len()],
        });
    }
    out
}

/// out = op(ins...) over `dims`; `ins` have strides over `dims` (broadcast already).
pub(crate) fn emit(
    cx: &mut Cx,
    op: EOp,
    dims: &[usize],
    out: &Rv,
    ins: &[Rv],
) -> Result<(), String> {
    if dims.contains(&0) {
        return Ok(());
    }
    let mut views: Vec<&Rv> = vec![out];
    views.extend(ins.iter());
    let ds = simplify(dims, &views);
    let (outer, inner) = ds.split_at(ds.len() - 1);
    let inner = inner[0].clone();
    let vector = inner.n >= 4 && inner.s[0] == 4 && inner.s[1..].iter().all(|s| *s == 0 || *s == 4);
    let row_cost = if vector {
        inner.n / 4 + inner.n % 4
    } else {
        inner.n
    };
    let pos: Vec<(Value, i64)> = views.iter().map(|v| (v.base, v.off)).collect();
    let row = Row { op, inner, vector };
    nest(cx, outer, row_cost, &pos, &row);
    Ok(())
}

struct Row {
    op: EOp,
    inner: Dim,
    vector: bool,
}

fn nest(cx: &mut Cx, outer: &[Dim], row_cost: usize, pos: &[(Value, i64)], row: &Row) {
    let Some((d, rest)) = outer.split_first() else {
        emit_row(cx, row, pos);
        return;
    };
    let total: usize = outer.iter().map(|d| d.n).product::<usize>() * row_cost;
    if total <= UNROLL {
        for i in 0..d.n {
            let p: Vec<(Value, i64)> = pos
                .iter()
                .zip(&d.s)
                .map(|((b, o), s)| (*b, o + i as i64 * s))
                .collect();
            nest(cx, rest, row_cost, &p, row);
        }
    } else {
        let _ = cx.counted_loop(d.n, &mut |cx, i| {
            let p: Vec<(Value, i64)> = pos
                .iter()
                .zip(&d.s)
                .map(|((b, o), s)| (cx.advance(*b, i, *s), *o))
                .collect();
            nest(cx, rest, row_cost, &p, row);
            Ok(())
        });
    }
}

/// One row along the innermost dim.
fn emit_row(cx: &mut Cx, row: &Row, pos: &[(Value, i64)]) {
    let n = row.inner.n;
    let s = &row.inner.s;
    let nin = pos.len() - 1;
    let mut first = 0usize;
    if row.vector {
        // Operands broadcast along the row: one load, splatted.
        let mut bscalar: Vec<Option<Value>> = vec![None; nin];
        let mut bvec: Vec<Option<Value>> = vec![None; nin];
        for j in 0..nin {
            if s[j + 1] == 0 {
                let (b, o) = pos[j + 1];
                let x = cx.load(SCALAR, b, o);
                bscalar[j] = Some(x);
                bvec[j] = Some(cx.b.ins().splat(VEC, x));
            }
        }
        let nv = n / 4;
        let vec_at = |cx: &mut Cx, pos: &[(Value, i64)], extra: i64| {
            let mut args = Vec::with_capacity(nin);
            for j in 0..nin {
                args.push(match bvec[j] {
                    Some(v) => v,
                    None => {
                        let (b, o) = pos[j + 1];
                        cx.load(VEC, b, o + extra)
                    }
                });
            }
            let y = apply(cx, row.op, true, &args);
            let (b, o) = pos[0];
            cx.store(y, b, o + extra);
        };
        if nv <= UNROLL / 4 || nv < 2 * VCHUNK {
            for c in 0..nv {
                vec_at(cx, pos, c as i64 * 16);
            }
        } else {
            let chunks = nv / VCHUNK;
            let _ = cx.counted_loop(chunks, &mut |cx, i| {
                let p: Vec<(Value, i64)> = pos
                    .iter()
                    .zip(s)
                    .map(|((b, o), st)| (cx.advance(*b, i, *st * 4 * VCHUNK as i64), *o))
                    .collect();
                for c in 0..VCHUNK {
                    vec_at(cx, &p, c as i64 * 16);
                }
                Ok(())
            });
            for c in chunks * VCHUNK..nv {
                vec_at(cx, pos, c as i64 * 16);
            }
        }
        first = nv * 4;
        // The remainder, scalar (broadcast operands reuse their loaded scalar).
        for e in first..n {
            let mut args = Vec::with_capacity(nin);
            for j in 0..nin {
                args.push(match bscalar[j] {
                    Some(v) => v,
                    None => {
                        let (b, o) = pos[j + 1];
                        cx.load(SCALAR, b, o + e as i64 * s[j + 1])
                    }
                });
            }
            let y = apply(cx, row.op, false, &args);
            let (b, o) = pos[0];
            cx.store(y, b, o + e as i64 * s[0]);
        }
        return;
    }
    let scalar_at = |cx: &mut Cx, pos: &[(Value, i64)], e: i64| {
        let mut args = Vec::with_capacity(nin);
        for j in 0..nin {
            let (b, o) = pos[j + 1];
            args.push(cx.load(SCALAR, b, o + e * s[j + 1]));
        }
        let y = apply(cx, row.op, false, &args);
        let (b, o) = pos[0];
        cx.store(y, b, o + e * s[0]);
    };
    if n - first <= UNROLL / 4 {
        for e in first..n {
            scalar_at(cx, pos, e as i64);
        }
    } else {
        let _ = cx.counted_loop(n, &mut |cx, i| {
            let p: Vec<(Value, i64)> = pos
                .iter()
                .zip(s)
                .map(|((b, o), st)| (cx.advance(*b, i, *st), *o))
                .collect();
            scalar_at(cx, &p, 0);
            Ok(())
        });
    }
}

/// Stores zeros to `n` contiguous f32 from `base`.
pub(crate) fn fill_zero(cx: &mut Cx, base: Value, n: usize) {
    let nv = n / 4;
    let zv = {
        let mut f = Fx::new(cx.b, VEC, cx.fma);
        f.c(0.0)
    };
    let zs = cx.b.ins().f32const(0.0);
    if nv <= 16 {
        for c in 0..nv {
            cx.store(zv, base, c as i64 * 16);
        }
    } else {
        let chunks = nv / 4;
        let _ = cx.counted_loop(chunks, &mut |cx, i| {
            let p = cx.advance(base, i, 64);
            for c in 0..4 {
                cx.store(zv, p, c * 16);
            }
            Ok(())
        });
        for c in chunks * 4..nv {
            cx.store(zv, base, c as i64 * 16);
        }
    }
    for e in nv * 4..n {
        cx.store(zs, base, e as i64 * 4);
    }
}
