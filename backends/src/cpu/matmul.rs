//! Matmul statements: out[M, N] = a[M, K] · w[K, N], by rows of `a` (a loop over M when M > 1).
//!
//! - dense (constant weights from read-only data, or run-time weights from a buffer): column
//!   tiles of 16 (four f32x4 accumulators per row in registers), then a tile of the remaining
//!   whole vectors, then up to 3 scalar columns; inside a tile a loop over K unrolled by 4 (fully
//!   unrolled up to K = 8): splat a[i, k], load the weight vectors, fused multiply-add. Rows go
//!   by pairs (then a last single row), each weight load shared by the two rows. A constant
//!   weight is packed tile-major in read-only data (`Layout::packed`: each 16-column tile's
//!   K×16 block contiguous, the last tile zero-padded), so the K loop reads sequentially. A
//!   run-time weight is read in place; one whose columns are not contiguous gets tiles of 4
//!   scalar accumulators, one row at a time.
//! - sparse-unrolled: for each output column, one scalar multiply-add per nonzero weight, the
//!   weight an `f32const` immediate; zero weights emit nothing, a column without nonzeros
//!   stores 0.
//! - sparse-csr: a loop over output columns; for each, a loop over its nonzeros stored as
//!   (value, byte offset of the input) pairs in read-only data, with the column boundaries in a
//!   pointer array.
//!
//! When the output overlaps an operand, the product goes to scratch and is then copied.

use super::codegen::{Cx, Rv};
use super::elementwise::{self, EOp};
use super::layout::{CSR_GROUP, matmul_dims, overlap, row_vector_rows};
use super::math::{Fx, SCALAR, VEC};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use hlstm_ir::kernel::{ConstId, Strategy, View, Weight};

/// A base pointer and a byte offset from it.
type Pos = (Value, i64);

/// K up to which the dense K loop is fully unrolled.
const K_UNROLL_ALL: usize = 8;
/// The dense K loop's unroll factor.
const K_UNROLL: usize = 4;

pub(crate) fn emit(
    cx: &mut Cx,
    out: &View,
    a: &View,
    w: &Weight,
    trip: usize,
) -> Result<(), String> {
    let (m, k, n) = matmul_dims(cx.p, out, a, w)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let mut alias = overlap(out, a, trip);
    if let Weight::View(v) = w {
        alias |= overlap(out, v, trip);
    }
    let row_vec = row_vector_rows(m, w);
    let rout_final = cx.resolve(out);
    let rout = if alias {
        // After the transposed rows, when there are any (see `Layout`).
        let mut r = cx.scratch_rv(&[m, n]);
        r.off += row_vec.map_or(0, |mm| k * mm) as i64 * 4;
        r
    } else {
        rout_final.clone()
    };
    let ra = cx.resolve(a);
    if let (Some(mm), Weight::Const(c, strategy)) = (row_vec, w) {
        // a^T in scratch: element (i, q) at q * M + i.
        let at = Rv {
            base: cx.scratch,
            off: 0,
            strides: vec![4, mm as i64 * 4],
        };
        elementwise::emit(cx, EOp::Copy, &[m, k], &at, std::slice::from_ref(&ra))?;
        let sink = Sink::Rows4 { m };
        match strategy {
            Strategy::SparseUnrolled => unrolled(cx, *c, k, n, &at, &rout, sink),
            _ => {
                let (ptr_off, pairs_off) = cx.l.csr[&(*c, mm as isize)];
                csr(cx, n, &at, ptr_off as i64, pairs_off as i64, &rout, sink);
            }
        }
    } else {
        match w {
            Weight::Const(c, Strategy::Dense) => {
                // Packed tile-major (see `Layout::packed`): rows of 16 floats, tiles of K rows.
                let rw = Rv {
                    base: cx.rodata(),
                    off: cx.l.packed[&(*c, n)] as i64,
                    strides: vec![64, 4],
                };
                dense(cx, m, k, n, &ra, &rw, true, Some(k as i64 * 64), &rout);
            }
            Weight::View(v) => {
                let ro = matches!(v.storage, hlstm_ir::kernel::Storage::Const(_));
                let rw = cx.resolve(v);
                dense(cx, m, k, n, &ra, &rw, ro, None, &rout);
            }
            Weight::Const(c, Strategy::SparseUnrolled) => {
                unrolled(cx, *c, k, n, &ra, &rout, Sink::Rows1 { m })
            }
            Weight::Const(c, Strategy::SparseCsr) => {
                let (ptr_off, pairs_off) = cx.l.csr[&(*c, a.strides[1])];
                let sink = Sink::Rows1 { m };
                csr(cx, n, &ra, ptr_off as i64, pairs_off as i64, &rout, sink);
            }
        }
    }
    if alias {
        elementwise::emit(cx, EOp::Copy, &[m, n], &rout_final, &[rout])?;
    }
    Ok(())
}

/// Calls `f(a_row, out_row)` for each row (a loop when M > 1).
fn rows(cx: &mut Cx, m: usize, ra: &Rv, rout: &Rv, f: &mut dyn FnMut(&mut Cx, Pos, Pos)) {
    if m == 1 {
        f(cx, (ra.base, ra.off), (rout.base, rout.off));
        return;
    }
    let _ = cx.counted_loop(m, &mut |cx, i| {
        let ab = cx.advance(ra.base, i, ra.strides[0]);
        let ob = cx.advance(rout.base, i, rout.strides[0]);
        f(cx, (ab, ra.off), (ob, rout.off));
        Ok(())
    });
}

/// Rows per group of the dense vector path (each with its own accumulators, sharing the
/// weight loads).
const ROW_GROUP: usize = 2;

/// Calls `f(a_rows, out_rows)` for groups of `r` rows (a loop over the groups), then for each
/// remaining row alone.
#[allow(clippy::type_complexity)]
fn row_groups(
    cx: &mut Cx,
    m: usize,
    r: usize,
    ra: &Rv,
    rout: &Rv,
    f: &mut dyn FnMut(&mut Cx, &[Pos], &[Pos]),
) {
    let groups = m / r;
    if groups > 0 {
        let _ = cx.counted_loop(groups, &mut |cx, i| {
            let ab = cx.advance(ra.base, i, ra.strides[0] * r as i64);
            let ob = cx.advance(rout.base, i, rout.strides[0] * r as i64);
            let arows: Vec<Pos> = (0..r as i64)
                .map(|j| (ab, ra.off + j * ra.strides[0]))
                .collect();
            let orows: Vec<Pos> = (0..r as i64)
                .map(|j| (ob, rout.off + j * rout.strides[0]))
                .collect();
            f(cx, &arows, &orows);
            Ok(())
        });
    }
    for i in (groups * r) as i64..m as i64 {
        f(
            cx,
            &[(ra.base, ra.off + i * ra.strides[0])],
            &[(rout.base, rout.off + i * rout.strides[0])],
        );
    }
}

fn mul_add(cx: &mut Cx, ty: Type, a: Value, b: Value, c: Value) -> Value {
    Fx::new(cx.b, ty, cx.fma).mul_add(a, b, c)
}

fn zero(cx: &mut Cx, ty: Type) -> Value {
    Fx::new(cx.b, ty, cx.fma).c(0.0)
}

/// Dense: see the module doc. `packed`: the weight is packed tile-major, with this many bytes
/// between 16-column tiles (`rw.strides` then give the row and column strides inside a tile).
#[allow(clippy::too_many_arguments)]
fn dense(
    cx: &mut Cx,
    m: usize,
    k: usize,
    n: usize,
    ra: &Rv,
    rw: &Rv,
    w_ro: bool,
    packed: Option<i64>,
    rout: &Rv,
) {
    let (sw_k, sw_n, so_n) = (rw.strides[0], rw.strides[1], rout.strides[1]);
    let sa_k = ra.strides[1];
    let vec_ok = sw_n == 4;
    let t = Tile {
        k,
        sa_k,
        sw_k,
        sw_n,
        so_n,
        w_ro,
    };
    if vec_ok {
        // Bytes between 16-column tiles, and the weight offset of column c.
        let tile_stride = packed.unwrap_or(16 * sw_n);
        let wc = |c: usize| (c / 16) as i64 * tile_stride + (c % 16) as i64 * sw_n;
        row_groups(cx, m, ROW_GROUP, ra, rout, &mut |cx, arows, orows| {
            let full = n / 16;
            let shift = |rows: &[Pos], d: i64| -> Vec<Pos> {
                rows.iter().map(|&(b, o)| (b, o + d)).collect()
            };
            if full <= 2 {
                for ti in 0..full {
                    let c = ti * 16;
                    let oc = shift(orows, c as i64 * so_n);
                    t.emit(cx, arows, (rw.base, rw.off + wc(c)), &oc, 4, true);
                }
            } else {
                let _ = cx.counted_loop(full, &mut |cx, ti| {
                    let wb = cx.advance(rw.base, ti, tile_stride);
                    let oc: Vec<Pos> = orows
                        .iter()
                        .map(|&(b, o)| (cx.advance(b, ti, 16 * so_n), o))
                        .collect();
                    t.emit(cx, arows, (wb, rw.off), &oc, 4, true);
                    Ok(())
                });
            }
            let mut c = full * 16;
            let rv = (n - c) / 4;
            if rv > 0 {
                let oc = shift(orows, c as i64 * so_n);
                t.emit(cx, arows, (rw.base, rw.off + wc(c)), &oc, rv, true);
                c += rv * 4;
            }
            if c < n {
                let oc = shift(orows, c as i64 * so_n);
                t.emit(cx, arows, (rw.base, rw.off + wc(c)), &oc, n - c, false);
            }
        });
    } else {
        debug_assert!(packed.is_none());
        rows(cx, m, ra, rout, &mut |cx, arow, orow| {
            let full = n / 4;
            if full <= 2 {
                for ti in 0..full {
                    let c = ti as i64 * 4;
                    t.emit(
                        cx,
                        &[arow],
                        (rw.base, rw.off + c * sw_n),
                        &[(orow.0, orow.1 + c * so_n)],
                        4,
                        false,
                    );
                }
            } else {
                let _ = cx.counted_loop(full, &mut |cx, ti| {
                    let wb = cx.advance(rw.base, ti, 4 * sw_n);
                    let ob = cx.advance(orow.0, ti, 4 * so_n);
                    t.emit(cx, &[arow], (wb, rw.off), &[(ob, orow.1)], 4, false);
                    Ok(())
                });
            }
            let c = full * 4;
            if c < n {
                let ci = c as i64;
                t.emit(
                    cx,
                    &[arow],
                    (rw.base, rw.off + ci * sw_n),
                    &[(orow.0, orow.1 + ci * so_n)],
                    n - c,
                    false,
                );
            }
        });
    }
}

/// One dense column tile for one or more rows: `nacc` accumulators per row, vectors of 4
/// columns or single columns; each weight load is shared by the rows.
struct Tile {
    k: usize,
    sa_k: i64,
    sw_k: i64,
    sw_n: i64,
    so_n: i64,
    w_ro: bool,
}

impl Tile {
    fn emit(
        &self,
        cx: &mut Cx,
        arows: &[Pos],
        wcol: Pos,
        ocols: &[Pos],
        nacc: usize,
        vector: bool,
    ) {
        let ty = if vector { VEC } else { SCALAR };
        let z = zero(cx, ty);
        // vars[r][j]: row r, accumulator j.
        let vars: Vec<Vec<_>> = arows
            .iter()
            .map(|_| {
                (0..nacc)
                    .map(|_| {
                        let v = cx.b.declare_var(ty);
                        cx.b.def_var(v, z);
                        v
                    })
                    .collect()
            })
            .collect();
        // One k step: the a rows at (pa[r], ao[r] + da), the weight row at (pw, wo).
        let step = |cx: &mut Cx, pa: &[Value], da: i64, pw: Value, wo: i64| {
            let xs: Vec<Value> = arows
                .iter()
                .zip(pa)
                .map(|(&(_, ao), &p)| {
                    let x = cx.load(SCALAR, p, ao + da);
                    if vector { cx.b.ins().splat(VEC, x) } else { x }
                })
                .collect();
            #[allow(clippy::needless_range_loop)]
            for j in 0..nacc {
                let off = if vector {
                    wo + j as i64 * 16
                } else {
                    wo + j as i64 * self.sw_n
                };
                let wv = if self.w_ro {
                    cx.load_ro(ty, pw, off)
                } else {
                    cx.load(ty, pw, off)
                };
                for (r, x) in xs.iter().enumerate() {
                    let acc = cx.b.use_var(vars[r][j]);
                    let acc = mul_add(cx, ty, *x, wv, acc);
                    cx.b.def_var(vars[r][j], acc);
                }
            }
        };
        let bases: Vec<Value> = arows.iter().map(|&(b, _)| b).collect();
        if self.k <= K_UNROLL_ALL {
            for q in 0..self.k as i64 {
                step(cx, &bases, q * self.sa_k, wcol.0, wcol.1 + q * self.sw_k);
            }
        } else {
            let chunks = self.k / K_UNROLL;
            let u = K_UNROLL as i64;
            let _ = cx.counted_loop(chunks, &mut |cx, i| {
                let pa: Vec<Value> = bases
                    .iter()
                    .map(|&b| cx.advance(b, i, self.sa_k * u))
                    .collect();
                let pw = cx.advance(wcol.0, i, self.sw_k * u);
                for q in 0..u {
                    step(cx, &pa, q * self.sa_k, pw, wcol.1 + q * self.sw_k);
                }
                Ok(())
            });
            for q in (chunks * K_UNROLL) as i64..self.k as i64 {
                step(cx, &bases, q * self.sa_k, wcol.0, wcol.1 + q * self.sw_k);
            }
        }
        for (r, ocol) in ocols.iter().enumerate() {
            for (j, var) in vars[r].iter().enumerate() {
                let acc = cx.b.use_var(*var);
                if vector {
                    if self.so_n == 4 {
                        cx.store(acc, ocol.0, ocol.1 + j as i64 * 16);
                    } else {
                        for l in 0..4u8 {
                            let e = cx.b.ins().extractlane(acc, l);
                            let off = ocol.1 + (j as i64 * 4 + l as i64) * self.so_n;
                            cx.store(e, ocol.0, off);
                        }
                    }
                } else {
                    cx.store(acc, ocol.0, ocol.1 + j as i64 * self.so_n);
                }
            }
        }
    }
}

/// Independent accumulators per output column in the sparse kernels: a multiply-add waits
/// for the previous one on the same accumulator (4 cycles of latency), so one chain per column
/// would run at a quarter of the FMA rate.
const SPARSE_CHAINS: usize = 4;
/// Nonzeros per accumulator below which the unrolled kernel uses fewer accumulators: short
/// columns overlap each other in the out-of-order window, and each extra accumulator costs a
/// multiply and an add.
const CHAIN_MIN: usize = 8;

/// Sums `parts` pairwise ((a + b) + (c + d)), keeping the dependency tree shallow.
fn tree_sum(cx: &mut Cx, mut parts: Vec<Value>) -> Value {
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        for pair in parts.chunks(2) {
            next.push(match pair {
                [a, b] => cx.b.ins().fadd(*a, *b),
                [a] => *a,
                _ => unreachable!("chunks(2)"),
            });
        }
        parts = next;
    }
    parts[0]
}

/// How the sparse kernels walk the rows of `a`: one row at a time (scalar multiply-adds), or
/// blocks of four rows of a transposed `a` (f32x4 multiply-adds, lanes = rows).
#[derive(Clone, Copy)]
enum Sink {
    Rows1 { m: usize },
    Rows4 { m: usize },
}

impl Sink {
    fn ty(self) -> Type {
        match self {
            Sink::Rows1 { .. } => SCALAR,
            Sink::Rows4 { .. } => VEC,
        }
    }

    /// Calls `f(a_pos, out_pos)` for each row or block of rows. For blocks, `a` is the
    /// transposed view (a vector of four rows at `a_pos`), and the last block starts at M - 4.
    fn each(self, cx: &mut Cx, ra: &Rv, rout: &Rv, f: &mut dyn FnMut(&mut Cx, Pos, Pos)) {
        match self {
            Sink::Rows1 { m } => rows(cx, m, ra, rout, f),
            Sink::Rows4 { m } => {
                let blocks = m.div_ceil(4);
                let _ = cx.counted_loop(blocks, &mut |cx, i| {
                    // First row of the block: min(4i, M - 4).
                    let s = cx.b.ins().imul_imm_s(i, 4);
                    let last = cx.b.ins().iconst(I64, m as i64 - 4);
                    let s = cx.b.ins().umin(s, last);
                    let ab = cx.advance(ra.base, s, ra.strides[0]);
                    let ob = cx.advance(rout.base, s, rout.strides[0]);
                    f(cx, (ab, ra.off), (ob, rout.off));
                    Ok(())
                });
            }
        }
    }

    /// The weight `w` (a scalar) as a multiplier of this sink's type.
    fn weight(self, cx: &mut Cx, w: Value) -> Value {
        match self {
            Sink::Rows1 { .. } => w,
            Sink::Rows4 { .. } => cx.b.ins().splat(VEC, w),
        }
    }

    /// Stores `v` as output column `col_off` (bytes) of the row or block at `o`.
    fn store(self, cx: &mut Cx, v: Value, o: Pos, col_off: i64, so_m: i64) {
        match self {
            Sink::Rows1 { .. } => cx.store(v, o.0, o.1 + col_off),
            Sink::Rows4 { .. } => {
                for l in 0..4u8 {
                    let e = cx.b.ins().extractlane(v, l);
                    cx.store(e, o.0, o.1 + col_off + l as i64 * so_m);
                }
            }
        }
    }
}

/// Sparse-unrolled: see the module doc. The nonzeros of a column go round-robin to up to
/// `SPARSE_CHAINS` accumulators (one per `CHAIN_MIN` nonzeros), each started by a multiply (no
/// zero to add to).
fn unrolled(cx: &mut Cx, c: ConstId, k: usize, n: usize, ra: &Rv, rout: &Rv, sink: Sink) {
    let data = cx.p.consts[c.0].data.clone();
    let (sa_k, so_m, so_n) = (ra.strides[1], rout.strides[0], rout.strides[1]);
    let ty = sink.ty();
    sink.each(cx, ra, rout, &mut |cx, arow, orow| {
        for j in 0..n {
            let nnz = (0..k).filter(|q| data[q * n + j] != 0.0).count();
            let width = nnz.div_ceil(CHAIN_MIN).clamp(1, SPARSE_CHAINS);
            let mut chains: Vec<Value> = Vec::with_capacity(width);
            let mut next = 0;
            for q in 0..k {
                let w = data[q * n + j];
                if w == 0.0 {
                    continue;
                }
                let x = cx.load(ty, arow.0, arow.1 + q as i64 * sa_k);
                let wc = cx.b.ins().f32const(w);
                let wc = sink.weight(cx, wc);
                if chains.len() < width {
                    chains.push(cx.b.ins().fmul(x, wc));
                } else {
                    chains[next] = mul_add(cx, ty, x, wc, chains[next]);
                    next = (next + 1) % width;
                }
            }
            let sum = if chains.is_empty() {
                zero(cx, ty)
            } else {
                tree_sum(cx, chains)
            };
            sink.store(cx, sum, orow, j as i64 * so_n, so_m);
        }
    });
}

/// Sparse-csr: see the module doc. Each column's pairs are padded to whole groups of
/// `CSR_GROUP` (see `Layout`), one accumulator per position in the group. The loop is rotated
/// (test at the bottom) and takes two groups per trip; an odd last group is done after it.
fn csr(cx: &mut Cx, n: usize, ra: &Rv, ptr_off: i64, pairs_off: i64, rout: &Rv, sink: Sink) {
    let (so_m, so_n) = (rout.strides[0], rout.strides[1]);
    let rodata = cx.rodata();
    let group_bytes = 8 * CSR_GROUP as i64;
    let ty = sink.ty();
    sink.each(cx, ra, rout, &mut |cx, arow, orow| {
        let pairs = cx.b.ins().iadd_imm_s(rodata, pairs_off);
        let _ = cx.counted_loop(n, &mut |cx, j| {
            let pj = cx.advance(rodata, j, 4);
            let start = cx.load_ro(I32, pj, ptr_off);
            let end = cx.load_ro(I32, pj, ptr_off + 4);
            let start = cx.b.ins().sextend(I64, start);
            let end = cx.b.ins().sextend(I64, end);
            let p0 = cx.b.ins().iadd(pairs, start);
            let pend = cx.b.ins().iadd(pairs, end);
            // End of the whole double groups: len & !(2 * group_bytes - 1).
            let len = cx.b.ins().isub(end, start);
            let len2 = cx.b.ins().band_imm_s(len, !(2 * group_bytes - 1));
            let pend2 = cx.b.ins().iadd(p0, len2);
            let pv = cx.b.declare_var(I64);
            cx.b.def_var(pv, p0);
            let accs: Vec<_> = (0..CSR_GROUP)
                .map(|_| {
                    let v = cx.b.declare_var(ty);
                    let z = zero(cx, ty);
                    cx.b.def_var(v, z);
                    v
                })
                .collect();
            let group = |cx: &mut Cx, p: Value, at: i64| {
                for (g, acc) in accs.iter().enumerate() {
                    let at = at + g as i64 * 8;
                    let w = cx.load_ro(SCALAR, p, at);
                    let w = sink.weight(cx, w);
                    let ko = cx.load_ro(I32, p, at + 4);
                    let ko = cx.b.ins().sextend(I64, ko);
                    let xa = cx.b.ins().iadd(arow.0, ko);
                    let x = cx.load(ty, xa, arow.1);
                    let a0 = cx.b.use_var(*acc);
                    let a1 = mul_add(cx, ty, x, w, a0);
                    cx.b.def_var(*acc, a1);
                }
            };
            let body = cx.b.create_block();
            let mid = cx.b.create_block();
            let tail = cx.b.create_block();
            let exit = cx.b.create_block();
            let any2 = cx.b.ins().icmp(IntCC::UnsignedLessThan, p0, pend2);
            cx.b.ins().brif(any2, body, &[], mid, &[]);
            cx.b.switch_to_block(body);
            let p = cx.b.use_var(pv);
            group(cx, p, 0);
            group(cx, p, group_bytes);
            let pn = cx.b.ins().iadd_imm_s(p, 2 * group_bytes);
            cx.b.def_var(pv, pn);
            let again = cx.b.ins().icmp(IntCC::UnsignedLessThan, pn, pend2);
            cx.b.ins().brif(again, body, &[], mid, &[]);
            cx.b.seal_block(body);
            cx.b.switch_to_block(mid);
            cx.b.seal_block(mid);
            let p = cx.b.use_var(pv);
            let odd = cx.b.ins().icmp(IntCC::UnsignedLessThan, p, pend);
            cx.b.ins().brif(odd, tail, &[], exit, &[]);
            cx.b.switch_to_block(tail);
            cx.b.seal_block(tail);
            group(cx, p, 0);
            cx.b.ins().jump(exit, &[]);
            cx.b.switch_to_block(exit);
            cx.b.seal_block(exit);
            let parts: Vec<Value> = accs.iter().map(|a| cx.b.use_var(*a)).collect();
            let r = tree_sum(cx, parts);
            let ob = cx.advance(orow.0, j, so_n);
            sink.store(cx, r, (ob, orow.1), 0, so_m);
            Ok(())
        });
    });
}
