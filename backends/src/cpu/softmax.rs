//! Softmax and log-softmax over the last dim: per row, the max, the sum of exp(x - max), then
//! the result (x - max - ln(sum), or exp(x - max) / sum). Scalar loops over the views' strides:
//! the rows the trainer's losses and classifier heads make are short and the statement runs
//! once per call, outside the time loop.

use super::codegen::Cx;
use super::math::{Fx, SCALAR};
use cranelift_codegen::ir::{InstBuilder, Value};
use hlstm_ir::kernel::View;

pub(crate) fn emit(cx: &mut Cx, out: &View, x: &View, log: bool) -> Result<(), String> {
    if out.dims.contains(&0) {
        return Ok(());
    }
    let ro = cx.resolve(out);
    let rx = cx.resolve(x);
    let rank = out.dims.len();
    let row = Row {
        n: out.dims[rank - 1],
        out_off: ro.off,
        out_stride: ro.strides[rank - 1],
        x_off: rx.off,
        x_stride: rx.strides[rank - 1],
        log,
    };
    let outer: Vec<(usize, i64, i64)> = (0..rank - 1)
        .map(|d| (out.dims[d], ro.strides[d], rx.strides[d]))
        .collect();
    nest(cx, &outer, ro.base, rx.base, &row)
}

struct Row {
    n: usize,
    out_off: i64,
    out_stride: i64,
    x_off: i64,
    x_stride: i64,
    log: bool,
}

/// One counted loop per outer dim, then a row.
fn nest(
    cx: &mut Cx,
    outer: &[(usize, i64, i64)],
    out: Value,
    x: Value,
    row: &Row,
) -> Result<(), String> {
    let Some(((n, so, sx), rest)) = outer.split_first() else {
        return emit_row(cx, out, x, row);
    };
    cx.counted_loop(*n, &mut |cx, i| {
        let o = cx.advance(out, i, *so);
        let xb = cx.advance(x, i, *sx);
        nest(cx, rest, o, xb, row)
    })
}

fn emit_row(cx: &mut Cx, out: Value, x: Value, row: &Row) -> Result<(), String> {
    use cranelift_codegen::ir::types::F32;
    let load_x = |cx: &mut Cx, j: Value| {
        let p = cx.advance(x, j, row.x_stride);
        cx.load(F32, p, row.x_off)
    };
    // The max.
    let m = cx.b.declare_var(F32);
    let ninf = cx.b.ins().f32const(f32::NEG_INFINITY);
    cx.b.def_var(m, ninf);
    cx.counted_loop(row.n, &mut |cx, j| {
        let v = load_x(cx, j);
        let cur = cx.b.use_var(m);
        let next = cx.b.ins().fmax(cur, v);
        cx.b.def_var(m, next);
        Ok(())
    })?;
    let mv = cx.b.use_var(m);
    // The sum of exp(x - max); softmax keeps each exp in out.
    let sum = cx.b.declare_var(F32);
    let zero = cx.b.ins().f32const(0.0);
    cx.b.def_var(sum, zero);
    cx.counted_loop(row.n, &mut |cx, j| {
        let v = load_x(cx, j);
        let d = cx.b.ins().fsub(v, mv);
        let fma = cx.fma;
        let e = Fx::new(cx.b, SCALAR, fma).exp(d);
        if !row.log {
            let p = cx.advance(out, j, row.out_stride);
            cx.store(e, p, row.out_off);
        }
        let cur = cx.b.use_var(sum);
        let next = cx.b.ins().fadd(cur, e);
        cx.b.def_var(sum, next);
        Ok(())
    })?;
    let sv = cx.b.use_var(sum);
    if row.log {
        let fma = cx.fma;
        let ls = Fx::new(cx.b, SCALAR, fma).ln(sv);
        cx.counted_loop(row.n, &mut |cx, j| {
            let v = load_x(cx, j);
            let d = cx.b.ins().fsub(v, mv);
            let r = cx.b.ins().fsub(d, ls);
            let p = cx.advance(out, j, row.out_stride);
            cx.store(r, p, row.out_off);
            Ok(())
        })
    } else {
        cx.counted_loop(row.n, &mut |cx, j| {
            let p = cx.advance(out, j, row.out_stride);
            let e = cx.load(F32, p, row.out_off);
            let r = cx.b.ins().fdiv(e, sv);
            cx.store(r, p, row.out_off);
            Ok(())
        })
    }
}
