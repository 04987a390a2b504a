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
//!   weight an `f32const` immediate, spread over up to 4 accumulators; zero weights emit
//!   nothing, a column without nonzeros stores 0.
//! - sparse-csr: the columns in classes of equal nonzero count (`CsrClass`), a loop per class
//!   over its columns (two per trip) with a body unrolled for that count: weights and input
//!   offsets read from read-only data, no branch on a column's length. One row at a time, a
//!   class's columns first go four to a group, one f32x4 multiply-add per nonzero
//!   (`csr_quad`).
//! - With a sparse weight and 4 rows or more (the hoisted input projection), `a` is transposed
//!   into scratch and the sparse kernels run on f32x4 blocks of four rows.
//!
//! When the output overlaps an operand, the product goes to scratch and is then copied.

use super::codegen::{Count, Cx, Rv, mem_ro};
use super::elementwise::{self, EOp};
use super::layout::{self, CsrClass, Layout, row_vector_rows};
use super::math::{Fx, SCALAR, VEC};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8X16, I32, I64};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use hlstm_ir::kernel::verify::{matmul_dims, overlap};
use hlstm_ir::kernel::{ConstId, Program, Strategy, View, Weight};

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
    rows_per_step: Option<usize>,
) -> Result<(), String> {
    let (m, k, n) = matmul_dims(cx.p, out, a, w)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // The rows this call computes: all M, or `steps * r` of them.
    let rows_rt = match rows_per_step {
        Some(r) => Count::Dyn(cx.b.ins().imul_imm_s(cx.steps, r as i64)),
        None => Count::Static(m),
    };
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
    // A masked run-time weight runs the compressed kernels of a constant one, its values read
    // through the view.
    let masked;
    let w = match w {
        Weight::Masked(v, c) => {
            let rv = cx.resolve(v);
            masked = Some(Masked {
                base: (rv.base, rv.off),
                strides: [v.strides[0], v.strides[1]],
                view: layout::packed_key(v),
            });
            &Weight::Const(*c, Strategy::SparseCsr)
        }
        _ => {
            masked = None;
            w
        }
    };
    let sw = |c, strategy| SparseWeight {
        c,
        strategy,
        masked,
        k,
        n,
    };
    // With vectors of rows, the product goes to scratch transposed ([N, M], after `a`'s
    // transposed rows and the aliased product): whole-vector stores of four rows, where
    // storing into [M, N] takes a lane extract and a store per element, and sixteen rows
    // of a wide output (a row stride a multiple of 4 KiB) fall in one set of the L1 cache.
    // It is transposed into `rout` afterwards.
    // An output stored rows innermost (`hlstm_passes::lower::rows_inner`) takes the
    // transposed product in place.
    let scratch = cx.scratch;
    let rout_t = |mm: usize| {
        if !alias && rout.strides[0] == 4 {
            return rout.clone();
        }
        Rv {
            base: scratch,
            off: (k * mm + if alias { m * n } else { 0 }) as i64 * 4,
            strides: vec![4, mm as i64 * 4],
        }
    };
    match (row_vec, w, rows_rt) {
        (Some(mm), Weight::Const(c, strategy), Count::Static(_)) => {
            let at = transpose(cx, rows_rt, k, mm, &ra)?;
            let sink = Sink::Rows4 { m: rows_rt };
            if let Some(epi_out) = cx.epilogue.as_ref().map(|e| e.out.clone()) {
                // The product goes through its epilogue (`super::epilogue`) to the chain's
                // output, stored rows contiguous.
                if alias {
                    return Err(
                        "an epilogue planned for a product that overlaps its operand".into(),
                    );
                }
                let rt = cx.resolve(&epi_out);
                sparse(cx, sw(*c, *strategy), &at, &rt, sink, mm as isize);
                return Ok(());
            }
            let rt = rout_t(mm);
            sparse(cx, sw(*c, *strategy), &at, &rt, sink, mm as isize);
            untranspose(cx, &rt, &rout, rows_rt, n);
        }
        (Some(mm), Weight::Const(c, strategy), Count::Dyn(rows)) if scratch_out(cx, out) => {
            // The output is the program's own buffer, with room for M >= 4 rows: a call with
            // fewer than 4 rows computes one block of 4 and leaves garbage in rows no step of
            // this call reads.
            let at = transpose(cx, rows_rt, k, mm, &ra)?;
            let four = cx.b.ins().iconst(I64, 4);
            let m4 = cx.b.ins().smax(rows, four);
            let sink = Sink::Rows4 { m: Count::Dyn(m4) };
            let rt = rout_t(mm);
            sparse(cx, sw(*c, *strategy), &at, &rt, sink, mm as isize);
            untranspose(cx, &rt, &rout, Count::Dyn(m4), n);
        }
        (Some(mm), Weight::Const(c, strategy), Count::Dyn(rows)) => {
            // Four rows at a time when the call has four or more, else one at a time.
            let (many, few, done) = (
                cx.b.create_block(),
                cx.b.create_block(),
                cx.b.create_block(),
            );
            let ge4 =
                cx.b.ins()
                    .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, rows, 4);
            cx.b.ins().brif(ge4, many, &[], few, &[]);
            cx.b.switch_to_block(many);
            cx.b.seal_block(many);
            let at = transpose(cx, rows_rt, k, mm, &ra)?;
            let sink = Sink::Rows4 { m: rows_rt };
            let rt = rout_t(mm);
            sparse(cx, sw(*c, *strategy), &at, &rt, sink, mm as isize);
            untranspose(cx, &rt, &rout, rows_rt, n);
            cx.b.ins().jump(done, &[]);
            cx.b.switch_to_block(few);
            cx.b.seal_block(few);
            let sink = Sink::Rows1 { m: rows_rt };
            sparse(cx, sw(*c, *strategy), &ra, &rout, sink, a.strides[1]);
            cx.b.ins().jump(done, &[]);
            cx.b.switch_to_block(done);
            cx.b.seal_block(done);
        }
        (_, Weight::Const(c, Strategy::Dense), _) => {
            let packed = (cx.rodata(), cx.l.packed[&(*c, n)] as i64);
            dense_packed(cx, rows_rt, k, n, &ra, packed, true, &rout);
        }
        (_, Weight::View(v), _) if cx.packed_rt.contains_key(&(layout::packed_key(v), None)) => {
            // Packed before the loop (`Layout::pack_before`): as a dense constant's.
            let (off, _) = cx.packed_rt[&(layout::packed_key(v), None)];
            let packed = (cx.scratch, off as i64 * 4);
            dense_packed(cx, rows_rt, k, n, &ra, packed, false, &rout);
        }
        (_, Weight::View(v), _) => {
            let ro = matches!(v.storage, hlstm_ir::kernel::Storage::Const(_));
            let rw = cx.resolve(v);
            match cx.gemm_rm {
                Some(gemm_rm)
                    if gemm_fits(k, n)
                        && ra.strides[1] == 4
                        && rw.strides[1] == 4
                        && rout.strides[1] == 4 =>
                {
                    // The wide kernel (see `super::wide`), reading the weight in place.
                    let w = ((rw.base, rw.off), Some(rw.strides[0] / 4));
                    call_gemm(cx, gemm_rm, rows_rt, (k, n), &ra, w, &rout);
                }
                _ => dense(cx, rows_rt, k, n, &ra, &rw, ro, None, &rout),
            }
        }
        (_, Weight::Masked(..), _) => {
            return Err("a masked weight is mapped to its compressed layout above".into());
        }
        (None, Weight::Const(c, strategy), _) => {
            let sink = Sink::Rows1 { m: rows_rt };
            sparse(cx, sw(*c, *strategy), &ra, &rout, sink, a.strides[1]);
        }
    }
    if alias {
        let (row_out, row_in) = (row_of(&rout_final), row_of(&rout));
        copy_rows(cx, rows_rt, (&rout, &row_in), (&rout_final, &row_out), n);
    }
    Ok(())
}

/// Calls a wide dense kernel (`super::wide`): `gemm(m, k, n, a, lda, w, out, ldo)` on a
/// packed weight, or with the weight's row stride (`ldw`, in elements) `gemm_rm(m, k, n, a,
/// lda, w, ldw, out, ldo)` on a row-major one.
fn call_gemm(
    cx: &mut Cx,
    f: cranelift_codegen::ir::FuncRef,
    rows_rt: Count,
    (k, n): (usize, usize),
    ra: &Rv,
    (w, ldw): (Pos, Option<i64>),
    rout: &Rv,
) {
    let mut args = vec![
        count_value(cx, rows_rt),
        cx.b.ins().iconst(I64, k as i64),
        cx.b.ins().iconst(I64, n as i64),
        cx.b.ins().iadd_imm_s(ra.base, ra.off),
        cx.b.ins().iconst(I64, ra.strides[0] / 4),
        cx.b.ins().iadd_imm_s(w.0, w.1),
    ];
    if let Some(ldw) = ldw {
        args.push(cx.b.ins().iconst(I64, ldw));
    }
    args.push(cx.b.ins().iadd_imm_s(rout.base, rout.off));
    args.push(cx.b.ins().iconst(I64, rout.strides[0] / 4));
    cx.b.ins().call(f, &args);
}

/// `rout = ra x W` with W [k, n] packed tile-major at `packed` (see `Layout::packed`: rows of
/// 16 floats, tiles of k rows), read-only data when `ro`: by the wide kernel (see
/// `super::wide`) when the program has it and the rows are contiguous, else by the dense loops.
#[allow(clippy::too_many_arguments)]
fn dense_packed(
    cx: &mut Cx,
    rows_rt: Count,
    k: usize,
    n: usize,
    ra: &Rv,
    packed: Pos,
    ro: bool,
    rout: &Rv,
) {
    match cx.gemm {
        Some(gemm) if gemm_fits(k, n) && ra.strides[1] == 4 && rout.strides[1] == 4 => {
            call_gemm(cx, gemm, rows_rt, (k, n), ra, (packed, None), rout);
        }
        _ => {
            let rw = Rv {
                base: packed.0,
                off: packed.1,
                strides: vec![64, 4],
            };
            dense(cx, rows_rt, k, n, ra, &rw, ro, Some(k as i64 * 64), rout);
        }
    }
}

/// Whether a matmul writes a buffer the program owns (not the caller's output).
fn scratch_out(cx: &Cx, out: &View) -> bool {
    match out.storage {
        hlstm_ir::kernel::Storage::Buf(b) => {
            cx.p.buffers[b.0].kind == hlstm_ir::kernel::BufKind::Temp
        }
        hlstm_ir::kernel::Storage::Const(_) => false,
    }
}

/// The strides of one row of a rank-2 resolved view.
fn row_of(v: &Rv) -> Rv {
    Rv {
        base: v.base,
        off: v.off,
        strides: vec![v.strides[1]],
    }
}

/// Copies the `rows` rows of `ra` ([rows, K]) transposed into scratch: element (i, q) at
/// q * M + i (M = `mm`, the most rows), unless `ra` is laid out so already. `rows` >= 4 (at
/// run time for a run-time count).
fn transpose(cx: &mut Cx, rows_rt: Count, k: usize, mm: usize, ra: &Rv) -> Result<Rv, String> {
    if ra.strides == [4, mm as i64 * 4] {
        // Stored rows innermost already (`hlstm_passes::lower::rows_inner`).
        return Ok(ra.clone());
    }
    let at = Rv {
        base: cx.scratch,
        off: 0,
        strides: vec![4, mm as i64 * 4],
    };
    if let Some(f) = cx.transpose
        && ra.strides[1] == 4
    {
        transpose_call(
            cx,
            f,
            rows_rt,
            Count::Static(k),
            (ra.base, ra.off),
            ra.strides[0],
            (at.base, at.off),
            at.strides[1],
        );
        return Ok(at);
    }
    if k >= 4 && ra.strides[1] == 4 {
        transpose4(
            cx,
            (ra.base, ra.off),
            ra.strides[0],
            (at.base, at.off),
            at.strides[1],
            rows_rt,
            Count::Static(k),
        );
        return Ok(at);
    }
    match rows_rt {
        Count::Static(m) => {
            elementwise::emit(cx, EOp::Copy, &[m, k], &at, std::slice::from_ref(ra))?
        }
        Count::Dyn(_) => {
            let col = Rv {
                strides: vec![mm as i64 * 4],
                ..at.clone()
            };
            copy_rows(cx, rows_rt, (ra, &row_of(ra)), (&at, &col), k);
        }
    }
    Ok(at)
}

/// Copies the transposed product `rt` ([N, M] in scratch, rows contiguous) into `rout`
/// ([M, N]) for the first `m` rows (`m` >= 4).
fn untranspose(cx: &mut Cx, rt: &Rv, rout: &Rv, m: Count, n: usize) {
    if rt.base == rout.base && rt.off == rout.off && rt.strides == rout.strides {
        // The product went to the output in place (see `rout_t`).
        return;
    }
    if let Some(f) = cx.transpose
        && rout.strides[1] == 4
    {
        transpose_call(
            cx,
            f,
            Count::Static(n),
            m,
            (rt.base, rt.off),
            rt.strides[1],
            (rout.base, rout.off),
            rout.strides[0],
        );
        return;
    }
    if n >= 4 && rout.strides[1] == 4 {
        transpose4(
            cx,
            (rt.base, rt.off),
            rt.strides[1],
            (rout.base, rout.off),
            rout.strides[0],
            Count::Static(n),
            m,
        );
        return;
    }
    // Narrow or strided output columns: element by element, row by row.
    let row_out = row_of(rout);
    let row_t = Rv {
        strides: vec![rt.strides[1]],
        ..rt.clone()
    };
    let src_rows = Rv {
        strides: vec![rt.strides[0], rt.strides[1]],
        ..rt.clone()
    };
    copy_rows(cx, m, (&src_rows, &row_t), (rout, &row_out), n);
}

/// Copies `m` rows of `len` elements: row i of `src.0` (one row's elements as `src.1` walks
/// them) to row i of `dst.0` (`dst.1`).
fn copy_rows(cx: &mut Cx, m: Count, src: (&Rv, &Rv), dst: (&Rv, &Rv), len: usize) {
    rows(cx, m, src.0, dst.0, &mut |cx, s, d| {
        let d = Rv {
            base: d.0,
            off: d.1,
            ..dst.1.clone()
        };
        let s = Rv {
            base: s.0,
            off: s.1,
            ..src.1.clone()
        };
        let _ = elementwise::emit(cx, EOp::Copy, &[len], &d, &[s]);
    });
}

/// The wide transpose (see `super::wide`) of `r` rows of `c` contiguous f32s at `src` (row
/// stride `src_row` bytes) into `dst` (row stride `dst_row` bytes).
#[allow(clippy::too_many_arguments)]
fn transpose_call(
    cx: &mut Cx,
    f: cranelift_codegen::ir::FuncRef,
    r: Count,
    c: Count,
    src: Pos,
    src_row: i64,
    dst: Pos,
    dst_row: i64,
) {
    let r = count_value(cx, r);
    let c = count_value(cx, c);
    let s = cx.b.ins().iadd_imm_s(src.0, src.1);
    let sr = cx.b.ins().iconst(I64, src_row / 4);
    let d = cx.b.ins().iadd_imm_s(dst.0, dst.1);
    let dr = cx.b.ins().iconst(I64, dst_row / 4);
    cx.b.ins().call(f, &[r, c, s, sr, d, dr]);
}

/// Copies `r` rows of `c` contiguous f32s at `src` (row stride `src_row` bytes) transposed to
/// `dst` (row stride `dst_row` bytes): by the wide kernel when the program has it, else in
/// 4x4 blocks (`r`, `c` >= 4).
#[allow(clippy::too_many_arguments)]
pub(crate) fn transpose_copy(
    cx: &mut Cx,
    r: usize,
    c: usize,
    src: Pos,
    src_row: i64,
    dst: Pos,
    dst_row: i64,
) {
    let (r, c) = (Count::Static(r), Count::Static(c));
    match cx.transpose {
        Some(f) => transpose_call(cx, f, r, c, src, src_row, dst, dst_row),
        None => transpose4(cx, src, src_row, dst, dst_row, r, c),
    }
}

/// Byte masks of `shuffle` on two f32x4 seen as bytes (lanes 0-3 from the first operand,
/// 4-7 from the second): the interleaves x86 does in one instruction each (unpcklps,
/// unpckhps, punpcklqdq, punpckhqdq).
const INTERLEAVE_LO32: [u8; 16] = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23];
const INTERLEAVE_HI32: [u8; 16] = [8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31];
const INTERLEAVE_LO64: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
const INTERLEAVE_HI64: [u8; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31];

fn shuffle(cx: &mut Cx, a: Value, b: Value, mask: [u8; 16]) -> Value {
    let flags = MemFlagsData::new().with_endianness(Endianness::Little);
    let a = cx.b.ins().bitcast(I8X16, flags, a);
    let b = cx.b.ins().bitcast(I8X16, flags, b);
    let imm = cx.b.func.dfg.immediates.push(ConstantData::from(&mask[..]));
    let s = cx.b.ins().shuffle(a, b, imm);
    cx.b.ins().bitcast(VEC, flags, s)
}

/// Copies `r` rows of `c` f32s at `src` (row stride `src_row` bytes, elements contiguous)
/// transposed to `dst` (row stride `dst_row` bytes): dst[j][i] = src[i][j], in 4x4 blocks of
/// four vector loads, eight interleaves and four vector stores. `r`, `c` >= 4 (at run time for
/// a run-time count): the last block of each goes back to r - 4 (c - 4), overlapping the one
/// before it, which copies the same values again.
fn transpose4(cx: &mut Cx, src: Pos, src_row: i64, dst: Pos, dst_row: i64, r: Count, c: Count) {
    fn blocks(cx: &mut Cx, n: Count) -> (Count, Value) {
        match n {
            Count::Static(n) => (
                Count::Static(n.div_ceil(4)),
                cx.b.ins().iconst(I64, n as i64 - 4),
            ),
            Count::Dyn(n) => {
                let up = cx.b.ins().iadd_imm_s(n, 3);
                let blocks = cx.b.ins().ushr_imm_u(up, 2);
                (Count::Dyn(blocks), cx.b.ins().iadd_imm_s(n, -4))
            }
        }
    }
    let (row_blocks, row_last) = blocks(cx, r);
    let (col_blocks, col_last) = blocks(cx, c);
    // The blocks of four destination rows outside, so that the stores walk along them: four
    // lines at a time, where walking down the destination's columns (the other order) stores
    // to as many rows as the source has columns, which in a wide output all fall in one set of
    // the L1 cache.
    let _ = cx.loop_n(col_blocks, &mut |cx, j| {
        let j = cx.b.ins().imul_imm_s(j, 4);
        let j = cx.b.ins().umin(j, col_last);
        let s_cols = cx.advance(src.0, j, 4);
        let d_rows = cx.advance(dst.0, j, dst_row);
        cx.loop_n(row_blocks, &mut |cx, i| {
            let i = cx.b.ins().imul_imm_s(i, 4);
            let i = cx.b.ins().umin(i, row_last);
            let s = cx.advance(s_cols, i, src_row);
            let d = cx.advance(d_rows, i, 4);
            let x: Vec<Value> = (0..4)
                .map(|q| cx.load(VEC, s, src.1 + q * src_row))
                .collect();
            let t0 = shuffle(cx, x[0], x[1], INTERLEAVE_LO32);
            let t1 = shuffle(cx, x[0], x[1], INTERLEAVE_HI32);
            let t2 = shuffle(cx, x[2], x[3], INTERLEAVE_LO32);
            let t3 = shuffle(cx, x[2], x[3], INTERLEAVE_HI32);
            let cols = [
                shuffle(cx, t0, t2, INTERLEAVE_LO64),
                shuffle(cx, t0, t2, INTERLEAVE_HI64),
                shuffle(cx, t1, t3, INTERLEAVE_LO64),
                shuffle(cx, t1, t3, INTERLEAVE_HI64),
            ];
            for (q, v) in cols.into_iter().enumerate() {
                cx.store(v, d, dst.1 + q as i64 * dst_row);
            }
            Ok(())
        })
    });
}

/// A sparse weight through its strategy (a masked one: compressed); `stride` is `a`'s k-stride
/// in elements, the key of its compressed layout.
fn sparse(cx: &mut Cx, w: SparseWeight, ra: &Rv, rout: &Rv, sink: Sink, stride: isize) {
    let SparseWeight {
        c,
        strategy,
        masked,
        k,
        n,
    } = w;
    let one_row = matches!(sink, Sink::Rows1 { .. });
    let key = (c, stride, false, masked.map(|m| m.strides));
    if let (Some(spmm), Sink::Rows4 { m }) = (cx.spmm, sink)
        && let Some(&table) = cx.l.csr_table.get(&key)
    {
        // The wide kernel (see `super::wide`) on the transposed rows, into the transposed
        // product; a masked weight's values read through its view.
        let classes = cx.l.csr[&key].len() as i64;
        let rodata = cx.rodata();
        let m_v = count_value(cx, m);
        let at = cx.b.ins().iadd_imm_s(ra.base, ra.off);
        let table = cx.b.ins().iadd_imm_s(rodata, table as i64);
        let classes = cx.b.ins().iconst(I64, classes);
        let outt = cx.b.ins().iadd_imm_s(rout.base, rout.off);
        let ldo = cx.b.ins().iconst(I64, rout.strides[1] / 4);
        // Where the weights are: the read-only data, a masked weight's values gathered before
        // the loop (`Layout::pack_before`), or (wv) the masked weight's view itself.
        let gathered = masked.and_then(|m| cx.packed_rt.get(&(m.view, Some(key))).copied());
        let (wv, wdata, wfirst) = match (gathered, masked) {
            (Some((off, first)), _) => {
                let dst = cx.b.ins().iadd_imm_s(cx.scratch, off as i64 * 4);
                (cx.b.ins().iconst(I64, 0), dst, first as i64)
            }
            (None, Some(Masked { base, .. })) => (cx.b.ins().iadd_imm_s(base.0, base.1), rodata, 0),
            (None, None) => (cx.b.ins().iconst(I64, 0), rodata, 0),
        };
        let wfirst = cx.b.ins().iconst(I64, wfirst);
        let epi = match cx.epilogue.take() {
            Some(e) => epilogue_arg(cx, &e),
            None => cx.b.ins().iconst(I64, 0),
        };
        cx.b.ins().call(
            spmm,
            &[
                m_v, at, rodata, table, classes, outt, ldo, wv, wdata, wfirst, epi,
            ],
        );
        return;
    }
    if strategy == Strategy::SparseUnrolled && masked.is_none() {
        return unrolled(cx, c, k, n, ra, rout, sink);
    }
    let classes = cx.l.csr[&(c, stride, one_row, masked.map(|m| m.strides))].clone();
    // Compressed kernels take 16 rows a block when there are that many: each weight and input
    // offset loaded once for four vectors of rows instead of one.
    let sink = match sink {
        Sink::Rows4 {
            m: Count::Static(m),
        } if m >= 16 => Sink::Rows16 { m },
        _ => sink,
    };
    csr(cx, &classes, masked.map(|m| m.base), ra, rout, sink);
}

/// The wide sparse kernel's `epi` argument for `e`: seven i64s on the stack, {act, add0,
/// ld0, rs0, add1, ld1, rs1} (addends absent: null), see `wide.c`.
fn epilogue_arg(cx: &mut Cx, e: &super::epilogue::Epilogue) -> Value {
    use cranelift_codegen::ir::{StackSlotData, StackSlotKind};
    let slot =
        cx.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 56, 3));
    let mut words = vec![cx.b.ins().iconst(I64, e.act)];
    for q in 0..2 {
        match e.adds.get(q) {
            Some(v) => {
                let rv = cx.resolve(v);
                words.push(cx.b.ins().iadd_imm_s(rv.base, rv.off));
                words.push(cx.b.ins().iconst(I64, v.strides[0] as i64));
                words.push(cx.b.ins().iconst(I64, v.strides[1] as i64));
            }
            None => {
                for _ in 0..3 {
                    words.push(cx.b.ins().iconst(I64, 0));
                }
            }
        }
    }
    for (q, w) in words.into_iter().enumerate() {
        cx.b.ins().stack_store(I64, w, slot, (q * 8) as i32);
    }
    cx.b.ins().stack_addr(I64, slot, 0)
}

/// Whether a dense [k, n] constant weight is multiplied by the wide kernel when the target has
/// one: every matrix but the smallest (under `GEMM_MIN_WEIGHTS` weights the call costs more
/// than the vector width saves).
pub(crate) fn gemm_fits(k: usize, n: usize) -> bool {
    k * n >= GEMM_MIN_WEIGHTS
}

const GEMM_MIN_WEIGHTS: usize = 1024;

/// Notes which wide kernels the matmul `out = a x w` calls (the target has them, `l.wide`):
/// what the code generator declares as imports.
pub(crate) fn note_wide_calls(
    p: &Program,
    l: &Layout,
    out: &View,
    a: &View,
    w: &Weight,
    calls: &mut super::codegen::WideCalls,
) -> Result<(), String> {
    let (m, k, n) = matmul_dims(p, out, a, w)?;
    let rows = row_vector_rows(m, w);
    match w {
        Weight::Const(_, Strategy::Dense) => calls.gemm |= m > 0 && gemm_fits(k, n),
        Weight::View(_) => calls.gemm_rm |= m > 0 && gemm_fits(k, n),
        Weight::Const(..) | Weight::Masked(..) => calls.spmm |= l.takes_spmm(m, w),
    }
    calls.transpose |= rows.is_some();
    Ok(())
}

/// A count as an i64 value.
fn count_value(cx: &mut Cx, n: Count) -> Value {
    match n {
        Count::Static(n) => cx.b.ins().iconst(I64, n as i64),
        Count::Dyn(v) => v,
    }
}

/// A sparse [K, N] weight as its kernels take it: the constant (values, or a masked weight's
/// pattern), the strategy, and for a masked run-time weight its view.
#[derive(Clone, Copy)]
struct SparseWeight {
    c: ConstId,
    strategy: Strategy,
    masked: Option<Masked>,
    k: usize,
    n: usize,
}

/// A masked run-time weight (`Weight::Masked`): where its view starts, and its strides (part
/// of its compressed layout's key).
#[derive(Clone, Copy)]
struct Masked {
    base: Pos,
    strides: [isize; 2],
    /// The view, as `Layout::pack_before` names it.
    view: layout::PackedKey,
}

/// Calls `f(a_row, out_row)` for each row (a loop when M > 1).
fn rows(cx: &mut Cx, m: Count, ra: &Rv, rout: &Rv, f: &mut dyn FnMut(&mut Cx, Pos, Pos)) {
    if let Count::Static(1) = m {
        f(cx, (ra.base, ra.off), (rout.base, rout.off));
        return;
    }
    let _ = cx.loop_n(m, &mut |cx, i| {
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
    m: Count,
    r: usize,
    ra: &Rv,
    rout: &Rv,
    f: &mut dyn FnMut(&mut Cx, &[Pos], &[Pos]),
) {
    let mut group = |cx: &mut Cx, i: Value| {
        let ab = cx.advance(ra.base, i, ra.strides[0] * r as i64);
        let ob = cx.advance(rout.base, i, rout.strides[0] * r as i64);
        let arows: Vec<Pos> = (0..r as i64)
            .map(|j| (ab, ra.off + j * ra.strides[0]))
            .collect();
        let orows: Vec<Pos> = (0..r as i64)
            .map(|j| (ob, rout.off + j * rout.strides[0]))
            .collect();
        f(cx, &arows, &orows);
    };
    match m {
        Count::Static(m) => {
            let groups = m / r;
            if groups > 0 {
                let _ = cx.counted_loop(groups, &mut |cx, i| {
                    group(cx, i);
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
        Count::Dyn(rows) => {
            let groups = cx.b.ins().udiv_imm_s(rows, r as i64);
            let _ = cx.loop_n(Count::Dyn(groups), &mut |cx, i| {
                group(cx, i);
                Ok(())
            });
            // The remaining rows, one at a time.
            let first = cx.b.ins().imul_imm_s(groups, r as i64);
            let var = cx.b.declare_var(I64);
            cx.b.def_var(var, first);
            let (head, body, exit) = (
                cx.b.create_block(),
                cx.b.create_block(),
                cx.b.create_block(),
            );
            cx.b.ins().jump(head, &[]);
            cx.b.switch_to_block(head);
            let i = cx.b.use_var(var);
            let more = cx.b.ins().icmp(IntCC::SignedLessThan, i, rows);
            cx.b.ins().brif(more, body, &[], exit, &[]);
            cx.b.switch_to_block(body);
            cx.b.seal_block(body);
            let ab = cx.advance(ra.base, i, ra.strides[0]);
            let ob = cx.advance(rout.base, i, rout.strides[0]);
            f(cx, &[(ab, ra.off)], &[(ob, rout.off)]);
            let next = cx.b.ins().iadd_imm_s(i, 1);
            cx.b.def_var(var, next);
            cx.b.ins().jump(head, &[]);
            cx.b.seal_block(head);
            cx.b.switch_to_block(exit);
            cx.b.seal_block(exit);
        }
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
    m: Count,
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
        accumulate: false,
    };
    if vec_ok {
        // Bytes between 16-column tiles.
        let tile_stride = packed.unwrap_or(16 * sw_n);
        let Some(kc) = k_block(m, k, n, so_n) else {
            dense_rows(cx, m, n, &t, ra, rw, tile_stride, rout);
            return;
        };
        // Blocks of kc rows of the weight, each over all rows of `a` (see `k_block`): the
        // first from zero, the others adding to the output.
        let at = |r: &Rv, base: Value, d: i64| Rv {
            base,
            off: r.off + d,
            strides: r.strides.clone(),
        };
        let block = |k0: i64| (k0 * sa_k, k0 * sw_k);
        let tb = Tile { k: kc, ..t.clone() };
        dense_rows(cx, m, n, &tb, ra, rw, tile_stride, rout);
        let (full, rest) = (k / kc, k % kc);
        let tb = Tile {
            accumulate: true,
            ..tb
        };
        if full > 1 {
            let _ = cx.counted_loop(full - 1, &mut |cx, i| {
                let (da, dw) = block(kc as i64);
                let ab = cx.advance(ra.base, i, da);
                let wb = cx.advance(rw.base, i, dw);
                let (ra1, rw1) = (at(ra, ab, da), at(rw, wb, dw));
                dense_rows(cx, m, n, &tb, &ra1, &rw1, tile_stride, rout);
                Ok(())
            });
        }
        if rest > 0 {
            let (da, dw) = block((full * kc) as i64);
            let tr = Tile { k: rest, ..tb };
            let (ra1, rw1) = (at(ra, ra.base, da), at(rw, rw.base, dw));
            dense_rows(cx, m, n, &tr, &ra1, &rw1, tile_stride, rout);
        }
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

/// Weight rows per block of the K loop, or None for one pass. Each row group of `a` streams
/// the whole weight, so a weight larger than the caches, read by many rows (the trainer's
/// weight gradients: K = T·N rows of `a`ᵀ), is read from memory once per row group. Blocks of
/// K bring a [kc, N] panel (at most `PANEL_BYTES`) into L2 for all the rows. Needs contiguous
/// output columns (the partial sums are reloaded as vectors).
fn k_block(m: Count, k: usize, n: usize, so_n: i64) -> Option<usize> {
    let Count::Static(m) = m else {
        return None;
    };
    let kc = (PANEL_BYTES / (4 * n.max(1))).max(16) / 4 * 4;
    (so_n == 4 && m >= 8 && k * n * 4 > 2 * PANEL_BYTES && k > 2 * kc).then_some(kc)
}

/// The largest weight panel of a K block (bytes): a quarter of a typical 1 MiB L2.
const PANEL_BYTES: usize = 256 << 10;

/// The vector path of `dense`: row groups, then within each, 16-column tiles, a tile of
/// whole vectors and the scalar columns.
#[allow(clippy::too_many_arguments)]
fn dense_rows(
    cx: &mut Cx,
    m: Count,
    n: usize,
    t: &Tile,
    ra: &Rv,
    rw: &Rv,
    tile_stride: i64,
    rout: &Rv,
) {
    let (sw_n, so_n) = (t.sw_n, t.so_n);
    // The weight offset of column c.
    let wc = |c: usize| (c / 16) as i64 * tile_stride + (c % 16) as i64 * sw_n;
    row_groups(cx, m, ROW_GROUP, ra, rout, &mut |cx, arows, orows| {
        let full = n / 16;
        let shift =
            |rows: &[Pos], d: i64| -> Vec<Pos> { rows.iter().map(|&(b, o)| (b, o + d)).collect() };
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
}

/// One dense column tile for one or more rows: `nacc` accumulators per row, vectors of 4
/// columns or single columns; each weight load is shared by the rows.
#[derive(Clone)]
struct Tile {
    k: usize,
    sa_k: i64,
    sw_k: i64,
    sw_n: i64,
    so_n: i64,
    w_ro: bool,
    /// Start from the output's values (a later block of K) instead of zero.
    accumulate: bool,
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
        let vars: Vec<Vec<_>> = ocols
            .iter()
            .map(|ocol| {
                (0..nacc)
                    .map(|j| {
                        let v = cx.b.declare_var(ty);
                        let init = if self.accumulate {
                            // Blocked K: only with contiguous output columns (`k_block`).
                            let step = if vector { 16 } else { self.so_n };
                            cx.load(ty, ocol.0, ocol.1 + j as i64 * step)
                        } else {
                            z
                        };
                        cx.b.def_var(v, init);
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
    Rows1 {
        m: Count,
    },
    /// M >= 4 (checked before at run time when M is a run-time count).
    Rows4 {
        m: Count,
    },
    /// Blocks of sixteen rows of the transposed `a` as four f32x4 vectors (compressed kernels,
    /// a static M >= 16): the last block starts at M - 16.
    Rows16 {
        m: usize,
    },
}

impl Sink {
    fn ty(self) -> Type {
        match self {
            Sink::Rows1 { .. } => SCALAR,
            Sink::Rows4 { .. } | Sink::Rows16 { .. } => VEC,
        }
    }

    /// Vectors of rows per block: 4 for 16 rows, else 1.
    fn vectors(self) -> usize {
        match self {
            Sink::Rows16 { .. } => 4,
            _ => 1,
        }
    }

    /// Calls `f(a_pos, out_pos)` for each row or block of rows. For blocks, `a` is the
    /// transposed view (a vector of four rows at `a_pos`), and the last block starts at M - 4.
    fn each(self, cx: &mut Cx, ra: &Rv, rout: &Rv, f: &mut dyn FnMut(&mut Cx, Pos, Pos)) {
        match self {
            Sink::Rows1 { m } => rows(cx, m, ra, rout, f),
            Sink::Rows16 { m } => {
                let _ = cx.loop_n(Count::Static(m.div_ceil(16)), &mut |cx, i| {
                    let s = cx.b.ins().imul_imm_s(i, 16);
                    let last = cx.b.ins().iconst(I64, m as i64 - 16);
                    let s = cx.b.ins().umin(s, last);
                    let ab = cx.advance(ra.base, s, ra.strides[0]);
                    let ob = cx.advance(rout.base, s, rout.strides[0]);
                    f(cx, (ab, ra.off), (ob, rout.off));
                    Ok(())
                });
            }
            Sink::Rows4 { m } => {
                let (blocks, last) = match m {
                    Count::Static(m) => (Count::Static(m.div_ceil(4)), None),
                    Count::Dyn(m) => {
                        let up = cx.b.ins().iadd_imm_s(m, 3);
                        let blocks = cx.b.ins().ushr_imm_u(up, 2);
                        let last = cx.b.ins().iadd_imm_s(m, -4);
                        (Count::Dyn(blocks), Some(last))
                    }
                };
                let _ = cx.loop_n(blocks, &mut |cx, i| {
                    // First row of the block: min(4i, M - 4).
                    let s = cx.b.ins().imul_imm_s(i, 4);
                    let last = match (last, m) {
                        (Some(v), _) => v,
                        (None, Count::Static(m)) => cx.b.ins().iconst(I64, m as i64 - 4),
                        (None, Count::Dyn(_)) => unreachable!("a run-time M has its last"),
                    };
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
            Sink::Rows4 { .. } | Sink::Rows16 { .. } => cx.b.ins().splat(VEC, w),
        }
    }

    /// Stores `v` as output column `col_off` (bytes) of the row or block at `o` (for a block
    /// of 16, `o` is that of the vector's four rows).
    fn store(self, cx: &mut Cx, v: Value, o: Pos, col_off: i64, so_m: i64) {
        match self {
            Sink::Rows1 { .. } => cx.store(v, o.0, o.1 + col_off),
            // Rows contiguous (the transposed product): one store.
            Sink::Rows4 { .. } | Sink::Rows16 { .. } if so_m == 4 => {
                cx.store(v, o.0, o.1 + col_off)
            }
            Sink::Rows4 { .. } | Sink::Rows16 { .. } => {
                for l in 0..4u8 {
                    let e = cx.b.ins().extractlane(v, l);
                    cx.store(e, o.0, o.1 + col_off + l as i64 * so_m);
                }
            }
        }
    }
}

/// The accumulators of one output column: the column's products go round-robin to up to
/// `SPARSE_CHAINS` of them (one per `CHAIN_MIN` products), each started by a multiply (no zero
/// to add to), and are summed pairwise at the end.
struct Chains {
    width: usize,
    parts: Vec<Value>,
    next: usize,
}

impl Chains {
    fn new(products: usize) -> Chains {
        Chains::at_most(products, SPARSE_CHAINS)
    }

    /// At most `most` accumulators (several vectors of rows need fewer each: their chains are
    /// independent already, and registers are few).
    fn at_most(products: usize, most: usize) -> Chains {
        let width = products.div_ceil(CHAIN_MIN).clamp(1, most.max(1));
        Chains {
            width,
            parts: Vec::with_capacity(width),
            next: 0,
        }
    }

    fn add(&mut self, cx: &mut Cx, ty: Type, x: Value, w: Value) {
        if self.parts.len() < self.width {
            self.parts.push(cx.b.ins().fmul(x, w));
        } else {
            let acc = self.parts[self.next];
            self.parts[self.next] = mul_add(cx, ty, x, w, acc);
            self.next = (self.next + 1) % self.width;
        }
    }

    fn sum(self, cx: &mut Cx, ty: Type) -> Value {
        if self.parts.is_empty() {
            zero(cx, ty)
        } else {
            tree_sum(cx, self.parts)
        }
    }
}

/// Sparse-unrolled: see the module doc.
fn unrolled(cx: &mut Cx, c: ConstId, k: usize, n: usize, ra: &Rv, rout: &Rv, sink: Sink) {
    let data = cx.p.consts[c.0].data.clone();
    let (sa_k, so_m, so_n) = (ra.strides[1], rout.strides[0], rout.strides[1]);
    let ty = sink.ty();
    sink.each(cx, ra, rout, &mut |cx, arow, orow| {
        for j in 0..n {
            let nnz = (0..k).filter(|q| data[q * n + j] != 0.0).count();
            let mut chains = Chains::new(nnz);
            for q in 0..k {
                let w = data[q * n + j];
                if w == 0.0 {
                    continue;
                }
                let x = cx.load(ty, arow.0, arow.1 + q as i64 * sa_k);
                let wc = cx.b.ins().f32const(w);
                let wc = sink.weight(cx, wc);
                chains.add(cx, ty, x, wc);
            }
            let sum = chains.sum(cx, ty);
            sink.store(cx, sum, orow, j as i64 * so_n, so_m);
        }
    });
}

/// Sparse-csr: see the module doc. For each class of columns with the same number of nonzeros
/// (see [`CsrClass`]), a loop over its columns whose body is unrolled for that number: the
/// only branches are the loops' own, whose trip counts are constants.
/// With `values` (a masked run-time weight's view), the classes' weights are byte offsets
/// into it.
fn csr(cx: &mut Cx, classes: &[CsrClass], values: Option<Pos>, ra: &Rv, rout: &Rv, sink: Sink) {
    let rodata = cx.rodata();
    sink.each(cx, ra, rout, &mut |cx, arow, orow| {
        for class in classes {
            // Four columns per f32x4 multiply-add, one row at a time (see `csr_quad`).
            if class.quads > 0 {
                let _ = cx.counted_loop(class.quads, &mut |cx, g| {
                    csr_quad(cx, class, rodata, g, arow, orow, rout);
                    Ok(())
                });
            }
            // Two columns per trip, their products interleaved (twice the independent work in
            // flight, half the loop overhead), then an odd last column. (Four columns per trip
            // measured slower at H=800: more accumulators than registers.)
            let pairs = class.columns / CSR_COLUMNS;
            if pairs > 0 {
                let _ = cx.counted_loop(pairs, &mut |cx, i| {
                    let first = cx.b.ins().imul_imm_s(i, CSR_COLUMNS as i64);
                    csr_columns(
                        cx,
                        class,
                        rodata,
                        values,
                        first,
                        CSR_COLUMNS,
                        arow,
                        orow,
                        rout,
                        sink,
                    );
                    Ok(())
                });
            }
            for last in pairs * CSR_COLUMNS..class.columns {
                let last = cx.b.ins().iconst(I64, last as i64);
                csr_columns(cx, class, rodata, values, last, 1, arow, orow, rout, sink);
            }
        }
    });
}

/// Group `g` (a run-time index) of a class's four-column groups, one row: per nonzero, the
/// four columns' weights in one vector load, their four u16 input offsets and inputs loaded
/// and the inputs inserted into a vector, one f32x4 multiply-add: 2.25 loads per product where
/// the column-at-a-time loop makes 3 (weight, offset, input), and a quarter of the
/// multiply-adds.
fn csr_quad(
    cx: &mut Cx,
    class: &CsrClass,
    rodata: Value,
    g: Value,
    arow: Pos,
    orow: Pos,
    rout: &Rv,
) {
    let so_n = rout.strides[1];
    let nnz = class.nonzeros;
    let pw = cx.advance(rodata, g, nnz as i64 * 16);
    let po = cx.advance(rodata, g, nnz as i64 * 8);
    let pc = cx.advance(rodata, g, 16);
    let mut chains = Chains::new(nnz);
    for e in 0..nnz as i64 {
        let w = cx.load_ro(VEC, pw, class.quad_weights_off as i64 + e * 16);
        let mut v = None;
        for lane in 0..4u8 {
            let (b, off) = cx.addr(po, class.quad_offsets_off as i64 + e * 8 + lane as i64 * 2);
            let o = cx.b.ins().uload16(I64, mem_ro(), b, off);
            let xa = cx.b.ins().iadd(arow.0, o);
            let x = cx.load(SCALAR, xa, arow.1);
            v = Some(match v {
                None => cx.b.ins().scalar_to_vector(VEC, x),
                Some(acc) => cx.b.ins().insertlane(acc, x, lane),
            });
        }
        chains.add(cx, VEC, v.expect("four lanes"), w);
    }
    let sum = chains.sum(cx, VEC);
    for lane in 0..4u8 {
        let j = cx.load_ro(I32, pc, class.quad_cols_off as i64 + lane as i64 * 4);
        let j = cx.b.ins().sextend(I64, j);
        let ob = cx.advance(orow.0, j, so_n);
        let x = cx.b.ins().extractlane(sum, lane);
        cx.store(x, ob, orow.1);
    }
}

/// Columns of a CSR class processed together by one trip of its loop.
const CSR_COLUMNS: usize = 2;

/// The columns `first..first + count` (a run-time index) of `class`.
#[allow(clippy::too_many_arguments)]
fn csr_columns(
    cx: &mut Cx,
    class: &CsrClass,
    rodata: Value,
    values: Option<Pos>,
    first: Value,
    count: usize,
    arow: Pos,
    orow: Pos,
    rout: &Rv,
    sink: Sink,
) {
    let (so_m, so_n) = (rout.strides[0], rout.strides[1]);
    let ty = sink.ty();
    let nnz = class.nonzeros;
    let off_bytes = if class.narrow { 2 } else { 4 };
    let pc = cx.advance(rodata, first, 4);
    let pw = cx.advance(rodata, first, nnz as i64 * 4);
    let po = cx.advance(rodata, first, nnz as i64 * off_bytes);
    // Per column, one set of accumulators per vector of rows.
    let vectors = sink.vectors();
    let most = SPARSE_CHAINS / vectors;
    let mut chains: Vec<Vec<Chains>> = (0..count)
        .map(|_| (0..vectors).map(|_| Chains::at_most(nnz, most)).collect())
        .collect();
    for e in 0..nnz as i64 {
        for (c, chain) in chains.iter_mut().enumerate() {
            let e = c as i64 * nnz as i64 + e;
            let w = match values {
                None => cx.load_ro(SCALAR, pw, class.weights_off as i64 + e * 4),
                Some((base, off)) => {
                    let at = cx.load_ro(I32, pw, class.weights_off as i64 + e * 4);
                    let at = cx.b.ins().sextend(I64, at);
                    let wa = cx.b.ins().iadd(base, at);
                    cx.load(SCALAR, wa, off)
                }
            };
            let w = sink.weight(cx, w);
            let (b, o) = cx.addr(po, class.offsets_off as i64 + e * off_bytes);
            let ko = if class.narrow {
                cx.b.ins().uload16(I64, mem_ro(), b, o)
            } else {
                cx.b.ins().sload32(mem_ro(), b, o)
            };
            let xa = cx.b.ins().iadd(arow.0, ko);
            for (v, chain) in chain.iter_mut().enumerate() {
                // Vector v holds rows 4v..4v + 3 of the block: 16 bytes further in `a`'s
                // transposed row.
                let x = cx.load(ty, xa, arow.1 + v as i64 * 16);
                chain.add(cx, ty, x, w);
            }
        }
    }
    for (c, chain) in chains.into_iter().enumerate() {
        let j = cx.load_ro(I32, pc, class.cols_off as i64 + c as i64 * 4);
        let j = cx.b.ins().sextend(I64, j);
        let ob = cx.advance(orow.0, j, so_n);
        for (v, chain) in chain.into_iter().enumerate() {
            let sum = chain.sum(cx, ty);
            let rows = orow.1 + v as i64 * 4 * so_m;
            sink.store(cx, sum, (ob, rows), 0, so_m);
        }
    }
}
