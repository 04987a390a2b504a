//! Checks a program before code generation (shapes, every access within its storage, no write
//! to an input or a constant), lays out the workspace (Temp buffers and scratch) and the
//! read-only data (constants read from memory, CSR arrays), and finds the buffers the generated
//! code must zero at entry (the interpreter starts every buffer at zero).

use hlstm_ir::kernel::verify::{bcast_strides, matmul_dims, overlap};
use hlstm_ir::kernel::{
    BufId, BufKind, ConstId, LoopRun, Program, Stmt, Storage, Strategy, View, Weight, visit,
};
use std::collections::{HashMap, HashSet};

/// Alignment of each workspace buffer and each read-only array, in f32 elements (64 bytes).
const ALIGN: usize = 16;

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Where everything lives.
pub(crate) struct Layout {
    /// Element offset of each Temp buffer in the workspace (None for inputs and outputs, and
    /// for the temporaries computed in an output's place).
    pub temp_off: Vec<Option<usize>>,
    /// Temporaries computed in an output's place (temporary -> output): the output is a copy
    /// of the whole temporary made once, at the top level of the program, after which nothing
    /// writes the temporary, and nothing else touches the output; the temporary holds nothing
    /// from one call to the next (no `start` block touches it: it is written before it is
    /// read in every call, or zeroed on entry). The temporary then lives in the caller's
    /// output buffer and the copy is skipped: the trainer's gradient factors (a per-step value
    /// of every step, 3.3 MB each for the text H-LSTM) were copied into their outputs at the
    /// end of every training step.
    pub in_output: HashMap<BufId, BufId>,
    /// Element offset of the scratch area (for statements whose output overlaps an operand).
    pub scratch_off: usize,
    /// Workspace length in f32 elements.
    pub work_len: usize,
    /// Buffers (Temp or Output) the function zeroes on entry.
    pub zero: Vec<BufId>,
    /// The read-only data, and where each constant and CSR matrix starts in it (bytes).
    pub rodata: Vec<u8>,
    pub const_off: HashMap<ConstId, usize>,
    /// The matrix's columns in classes of equal nonzero count (see [`CsrClass`]), by
    /// [`CsrKey`]; one row at a time, a constant's columns also go four to a group.
    pub csr: HashMap<CsrKey, Vec<CsrClass>>,
    /// (constant, N) -> byte offset of a dense constant weight [K, N] packed tile-major: for
    /// each tile of 16 columns (the last one padded with zeros), its K×16 block, row by row.
    pub packed: HashMap<(ConstId, usize), usize>,
    /// Byte offset of each compressed constant's class table for the wide sparse kernel
    /// (`wide.c`, `NAME_spmm_*`: six i64 per class, {nonzeros, columns, cols_off, weights_off,
    /// offsets_off, narrow}), for the layouts of vectors of rows, when the target has one.
    pub csr_table: HashMap<CsrKey, usize>,
    /// Whether the target has the wide kernels (see `super::wide`).
    pub wide: bool,
    /// Run-time weights that products inside a loop read and nothing in the loop writes,
    /// packed into the scratch area before the loop runs: by the loop (the address of its body,
    /// in the program laid out), each weight and its element offset from `scratch_off`. The
    /// products inside then read the packed copy as they read a constant weight's: a dense
    /// weight given row-major is read by every row block of every step, and its rows, 4 KiB
    /// apart for 1024 columns, compete for a few sets of the caches; a masked weight's values
    /// are read at its nonzeros, scattered over the whole matrix (docs/kernels.md, "Run-time
    /// weights").
    pub pack_before: HashMap<usize, Vec<(Packed, usize)>>,
}

/// A run-time weight packed before a loop (see [`Layout::pack_before`]).
#[derive(Clone, Debug)]
pub(crate) enum Packed {
    /// A dense weight, into 16-column tiles as [`Layout::packed`].
    Dense(View),
    /// A masked weight's values gathered in the order of its compressed classes (`key`, as the
    /// wide sparse kernel reads them): the value of the nonzero whose view offset is at byte
    /// `o` of the read-only data lands at byte `o - first` of the copy.
    Masked {
        view: View,
        key: CsrKey,
        first: usize,
    },
}

impl Packed {
    /// How the products inside the loop find the packed copy.
    pub(crate) fn key(&self) -> PackKey {
        match self {
            Packed::Dense(v) => (packed_key(v), None),
            Packed::Masked { view, key, .. } => (packed_key(view), Some(*key)),
        }
    }
}

/// A packed run-time weight: its view and, for a masked one, its compressed layout.
pub(crate) type PackKey = (PackedKey, Option<CsrKey>);

/// A run-time weight's view as [`Layout::pack_before`] names it: its storage, offset, row
/// stride, K and N.
pub(crate) type PackedKey = (Storage, isize, isize, usize, usize);

pub(crate) fn packed_key(v: &View) -> PackedKey {
    (v.storage, v.offset, v.strides[0], v.dims[0], v.dims[1])
}

/// Elements of a [K, N] weight packed tile-major.
fn packed_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(16) * 16
}

/// The byte span in the read-only data of a compressed layout's weights (for a masked weight,
/// the view offsets of its nonzeros): where the first class's start and the last one's end.
pub(crate) fn weights_span(classes: &[CsrClass]) -> (usize, usize) {
    let first = classes.iter().map(|c| c.weights_off).min().unwrap_or(0);
    let end = classes
        .iter()
        .map(|c| c.weights_off + 4 * c.nonzeros * c.columns)
        .max()
        .unwrap_or(0);
    (first, end.max(first))
}

/// The storages a statement list writes, at any depth.
fn written(body: &[Stmt]) -> HashSet<Storage> {
    let mut w = HashSet::new();
    visit::walk(body, &mut |s, _| {
        if let Some(v) = s.output() {
            w.insert(v.storage);
        }
    });
    w
}

/// The storages written inside any loop of `p`: what a thread's part may not pack, since
/// another thread's part may write it in the loop.
pub(crate) fn written_in_loops(p: &Program) -> HashSet<Storage> {
    let mut w = HashSet::new();
    visit::walk(&p.body, &mut |s, _| {
        if let Stmt::Loop { body, .. } = s {
            w.extend(written(body));
        }
    });
    w
}

/// Plans [`Layout::pack_before`] for `body`, the weights in `packed` already packed by an
/// enclosing loop: each loop packs the weights it is the outermost loop invariant for, from
/// offset `next` on; loops one after the other reuse the space. Returns the elements needed.
fn plan_packing(
    p: &Program,
    l: &Layout,
    body: &[Stmt],
    excluded: &HashSet<Storage>,
    packed: &HashSet<PackKey>,
    next: usize,
    plan: &mut HashMap<usize, Vec<(Packed, usize)>>,
) -> Result<usize, String> {
    let mut peak = next;
    for s in body {
        match s {
            Stmt::Loop {
                body, run, trip, ..
            } if *run != LoopRun::LastStep && *trip > 1 => {
                let writes = written(body);
                let mut inner = packed.clone();
                let mut here = Vec::new();
                let mut end = next;
                visit::try_walk(body, &mut |s, _| {
                    let Stmt::MatMul { out, a, w, .. } = s else {
                        return Ok(());
                    };
                    let Some(v) = w.view() else {
                        return Ok(());
                    };
                    if v.step_stride != 0
                        || writes.contains(&v.storage)
                        || excluded.contains(&v.storage)
                    {
                        return Ok(());
                    }
                    let (m, k, n) = matmul_dims(p, out, a, w)?;
                    let (what, len) = match w {
                        Weight::View(_)
                            if m >= 4 && super::matmul::gemm_fits(k, n) && v.strides[1] == 1 =>
                        {
                            (Packed::Dense(v.clone()), packed_len(k, n))
                        }
                        // What the wide sparse kernel multiplies (see `matmul::sparse`).
                        Weight::Masked(..) => {
                            let Some(key) =
                                wide_sparse_key(m, w).filter(|k| l.csr_table.contains_key(k))
                            else {
                                return Ok(());
                            };
                            let (first, span_end) = weights_span(&l.csr[&key]);
                            let masked = Packed::Masked {
                                view: v.clone(),
                                key,
                                first,
                            };
                            (masked, (span_end - first) / 4)
                        }
                        _ => return Ok(()),
                    };
                    if inner.insert(what.key()) {
                        here.push((what, end));
                        end = align_up(end + len);
                    }
                    Ok::<(), String>(())
                })?;
                if !here.is_empty() {
                    plan.insert(body.as_ptr() as usize, here);
                }
                peak = peak.max(plan_packing(p, l, body, excluded, &inner, end, plan)?);
            }
            Stmt::Loop { body, .. } | Stmt::Start { body } => {
                peak = peak.max(plan_packing(p, l, body, excluded, packed, next, plan)?);
            }
            _ => {}
        }
    }
    Ok(peak)
}

/// (constant, k-stride of the left operand in elements, whether one row at a time, and for a
/// masked run-time weight its view's strides). A masked weight's constant is its pattern, and
/// its classes' `weights_off` holds each nonzero's byte offset in the view (i32) instead of its
/// value.
pub(crate) type CsrKey = (ConstId, isize, bool, Option<[isize; 2]>);

/// The columns of a compressed sparse matrix that have `nonzeros` nonzero weights each. The
/// generated code loops over the columns of a class with a body unrolled for exactly
/// `nonzeros` weights, so no branch depends on a column's length (a loop whose trip count
/// varied per column mispredicted about once a column).
#[derive(Clone, Debug)]
pub(crate) struct CsrClass {
    pub nonzeros: usize,
    /// Number of columns in the class.
    pub columns: usize,
    /// Byte offset in the read-only data of the columns' indices (i32 each).
    pub cols_off: usize,
    /// Byte offset of their weights (f32): `nonzeros` per column, column after column.
    pub weights_off: usize,
    /// Byte offset of the byte offsets of their inputs, in the same order: u16 each when
    /// `narrow` (every offset fits), else i32. Narrow offsets cut the data streamed per
    /// nonzero from 8 to 6 bytes.
    pub offsets_off: usize,
    pub narrow: bool,
    /// Groups of four columns laid out lane by lane for f32x4 multiply-adds across columns
    /// (one row at a time): the class's first `4 * quads` columns; the fields above describe
    /// the rest.
    pub quads: usize,
    /// Byte offsets of the groups' column indices (4 i32 per group), weights (per group, per
    /// nonzero, 4 f32) and input offsets (per group, per nonzero, 4 u16).
    pub quad_cols_off: usize,
    pub quad_weights_off: usize,
    pub quad_offsets_off: usize,
}

/// Whether the output of an elementwise statement overlaps an operand other than element for
/// element (then the generated code computes into scratch first, as the interpreter reads all
/// operands before writing).
pub(crate) fn elementwise_alias(out: &View, x: &View, trip: usize) -> Result<bool, String> {
    if out.storage != x.storage {
        return Ok(false);
    }
    let xs = bcast_strides(x, &out.dims)?;
    if x.offset == out.offset && x.step_stride == out.step_stride && out_same(&xs, out) {
        return Ok(false);
    }
    Ok(overlap(out, x, trip))
}

fn out_same(xs: &[isize], out: &View) -> bool {
    xs.iter()
        .zip(&out.strides)
        .zip(&out.dims)
        .all(|((a, b), d)| a == b || *d == 1)
}

/// Whether a sparse matmul with `m` rows is vectorized across rows, four at a time: `a` is
/// transposed into scratch (`[K, M]`, row stride M), each nonzero weight multiplies a vector
/// of four rows' inputs, and the product is stored transposed (`[N, M]`, after `a`'s rows and
/// the aliased product in scratch) and then transposed into place; the last block of four
/// overlaps the one before when 4 does not divide M. Returns the transposed row stride M, or
/// None for the one-row-at-a-time path.
pub(crate) fn row_vector_rows(m: usize, w: &Weight) -> Option<usize> {
    let sparse = matches!(
        w,
        Weight::Const(_, Strategy::SparseUnrolled | Strategy::SparseCsr) | Weight::Masked(..)
    );
    (sparse && m >= 4).then_some(m)
}

/// The compressed layout's key of a product of `m` rows by `w` on vectors of rows: the table
/// the wide sparse kernel reads, when the layout made one (`Layout::csr_table`).
pub(crate) fn wide_sparse_key(m: usize, w: &Weight) -> Option<CsrKey> {
    let mm = row_vector_rows(m, w)? as isize;
    match w {
        Weight::Const(c, _) => Some((*c, mm, false, None)),
        Weight::Masked(v, c) => Some((*c, mm, false, Some([v.strides[0], v.strides[1]]))),
        Weight::View(_) => None,
    }
}

impl Layout {
    /// Whether the product of `m` rows by `w` goes to the wide sparse kernel
    /// (`matmul::sparse`).
    pub(crate) fn takes_spmm(&self, m: usize, w: &Weight) -> bool {
        wide_sparse_key(m, w).is_some_and(|k| self.csr_table.contains_key(&k))
    }
}

/// The largest scratch a statement needs (elements), for a verified program.
fn scratch_len(p: &Program) -> Result<usize, String> {
    let mut scratch = 0;
    visit::try_walk(&p.body, &mut |s, site| {
        let trip = site.trip;
        let need = match s {
            Stmt::MatMul { out, a, w, .. } => {
                let (m, k, n) = matmul_dims(p, out, a, w)?;
                let alias =
                    overlap(out, a, trip) || w.view().is_some_and(|v| overlap(out, v, trip));
                // The transposed rows first, then the aliased product, then (vectors of
                // rows) the product transposed, [N, M].
                let (transposed, product_t) =
                    row_vector_rows(m, w).map_or((0, 0), |mp| (k * mp, n * mp));
                transposed + if alias { m * n } else { 0 } + product_t
            }
            Stmt::Unary { out, x, .. } | Stmt::Clip { out, x, .. } | Stmt::Copy { out, x } => {
                if elementwise_alias(out, x, trip)? {
                    out.len()
                } else {
                    0
                }
            }
            Stmt::Binary { out, a, b, .. } => {
                if elementwise_alias(out, a, trip)? || elementwise_alias(out, b, trip)? {
                    out.len()
                } else {
                    0
                }
            }
            Stmt::Softmax { .. } | Stmt::Loop { .. } | Stmt::Start { .. } | Stmt::Barrier => 0,
        };
        scratch = scratch.max(need);
        Ok::<(), String>(())
    })?;
    Ok(scratch)
}

#[derive(Clone, Copy, PartialEq)]
enum First {
    None,
    /// The first access wrote every element in one statement.
    FullWrite,
    Other,
}

/// Buffers (Temp or Output) the code must zero on entry so that it computes what the
/// interpreter computes: those with an element read before any write, and outputs with an
/// element never written. Found by following the accesses of one run element by element (cheap:
/// reads of a buffer already complete are not followed); a program where that would take more
/// than [`SIMULATE_BUDGET`] element visits gets the coarser [`zero_set_coarse`].
fn zero_set(p: &Program) -> Vec<BufId> {
    simulate(p).unwrap_or_else(|| zero_set_coarse(p))
}

const SIMULATE_BUDGET: usize = 1 << 25;

struct Sim {
    written: Vec<Vec<bool>>,
    count: Vec<usize>,
    need: Vec<bool>,
    budget: usize,
    offs: Vec<isize>,
}

impl Sim {
    fn full(&self, b: usize) -> bool {
        self.count[b] == self.written[b].len()
    }
    fn read(&mut self, v: &View, t: usize) -> Option<()> {
        let Storage::Buf(b) = v.storage else {
            return Some(());
        };
        if self.need[b.0] || self.full(b.0) {
            return Some(());
        }
        self.budget = self.budget.checked_sub(v.len())?;
        self.offs.clear();
        v.offsets_into(t, &mut self.offs);
        if self.offs.iter().any(|o| !self.written[b.0][*o as usize]) {
            self.need[b.0] = true;
        }
        Some(())
    }
    fn write(&mut self, v: &View, t: usize) -> Option<()> {
        let Storage::Buf(b) = v.storage else {
            return Some(());
        };
        if self.full(b.0) {
            return Some(());
        }
        self.budget = self.budget.checked_sub(v.len())?;
        self.offs.clear();
        v.offsets_into(t, &mut self.offs);
        for &o in &self.offs {
            let o = o as usize;
            if !self.written[b.0][o] {
                self.written[b.0][o] = true;
                self.count[b.0] += 1;
            }
        }
        Some(())
    }
    fn exec(&mut self, body: &[Stmt], t: usize) -> Option<()> {
        for s in body {
            match s {
                Stmt::MatMul { out, a, w, .. } => {
                    self.read(a, t)?;
                    if let Some(v) = w.view() {
                        self.read(v, t)?;
                    }
                    self.write(out, t)?;
                }
                Stmt::Unary { out, x, .. }
                | Stmt::Clip { out, x, .. }
                | Stmt::Copy { out, x }
                | Stmt::Softmax { out, x, .. } => {
                    self.read(x, t)?;
                    self.write(out, t)?;
                }
                Stmt::Binary { out, a, b, .. } => {
                    self.read(a, t)?;
                    self.read(b, t)?;
                    self.write(out, t)?;
                }
                Stmt::Loop {
                    trip,
                    reverse,
                    run,
                    body,
                } => {
                    // At the longest sequence (a shorter one touches a prefix of the same
                    // buffers, step for step).
                    if *run == LoopRun::LastStep {
                        self.exec(body, trip.saturating_sub(1))?;
                        continue;
                    }
                    for i in 0..*trip {
                        self.exec(body, if *reverse { trip - 1 - i } else { i })?;
                    }
                }
                Stmt::Start { body } => self.exec(body, t)?,
                Stmt::Barrier => {}
            }
        }
        Some(())
    }
}

fn simulate(p: &Program) -> Option<Vec<BufId>> {
    let total: usize = p.buffers.iter().map(|b| b.len()).sum();
    let budget = SIMULATE_BUDGET.checked_sub(total)?;
    let mut sim = Sim {
        written: p
            .buffers
            .iter()
            .map(|b| vec![matches!(b.kind, BufKind::Input(_)); b.len()])
            .collect(),
        count: p
            .buffers
            .iter()
            .map(|b| {
                if matches!(b.kind, BufKind::Input(_)) {
                    b.len()
                } else {
                    0
                }
            })
            .collect(),
        need: vec![false; p.buffers.len()],
        budget,
        offs: Vec::new(),
    };
    sim.exec(&p.body, 0)?;
    Some(
        p.buffers
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                !matches!(b.kind, BufKind::Input(_))
                    && !b.is_empty()
                    && (sim.need[*i] || (matches!(b.kind, BufKind::Output(_)) && !sim.full(*i)))
            })
            .map(|(i, _)| BufId(i))
            .collect(),
    )
}

/// The coarse rule: zero a buffer unless its first access writes every element, or it is never
/// read and the writes of the whole program cover it.
fn zero_set_coarse(p: &Program) -> Vec<BufId> {
    let nb = p.buffers.len();
    let mut first = vec![First::None; nb];
    let mut read = vec![false; nb];
    let mut writes: Vec<Vec<(View, usize)>> = vec![Vec::new(); nb];

    fn reads_of(s: &Stmt) -> Vec<&View> {
        s.inputs()
    }
    fn covers_once(p: &Program, v: &View) -> bool {
        let Storage::Buf(b) = v.storage else {
            return false;
        };
        let len = p.buffers[b.0].len();
        if v.len() < len || len > (1 << 24) {
            return false;
        }
        let mut seen = vec![false; len];
        let mut offs = Vec::new();
        v.offsets_into(0, &mut offs);
        for o in offs {
            let o = o as usize;
            if o < len {
                seen[o] = true;
            }
        }
        seen.iter().all(|x| *x)
    }
    visit::walk(&p.body, &mut |s, site| {
        // A statement under a loop that never runs touches nothing.
        let Some(out) = s.output().filter(|_| site.iterations > 0) else {
            return;
        };
        for v in reads_of(s) {
            if let Storage::Buf(b) = v.storage {
                read[b.0] = true;
                if first[b.0] == First::None {
                    first[b.0] = First::Other;
                }
            }
        }
        if let Storage::Buf(b) = out.storage {
            if first[b.0] == First::None {
                first[b.0] = if covers_once(p, out) {
                    First::FullWrite
                } else {
                    First::Other
                };
            }
            writes[b.0].push((out.clone(), site.trip));
        }
    });

    let mut zero = Vec::new();
    for (i, b) in p.buffers.iter().enumerate() {
        if matches!(b.kind, BufKind::Input(_)) || b.is_empty() {
            continue;
        }
        if first[i] == First::FullWrite {
            continue;
        }
        if !read[i] {
            // Never read: zero only what the writes leave uncovered (checked exactly when small).
            let len = b.len();
            let total: usize = writes[i].iter().map(|(v, t)| v.len() * t).sum();
            if len <= (1 << 24) && total <= (1 << 24) && !writes[i].is_empty() {
                let mut seen = vec![false; len];
                let mut offs = Vec::new();
                for (v, trip) in &writes[i] {
                    for t in 0..*trip {
                        offs.clear();
                        v.offsets_into(t, &mut offs);
                        for &o in &offs {
                            let o = o as usize;
                            if o < len {
                                seen[o] = true;
                            }
                        }
                    }
                }
                if seen.iter().all(|x| *x) {
                    continue;
                }
            }
        }
        zero.push(BufId(i));
    }
    zero
}

/// Most products, summed over the classes of a compressed matrix, that the generated loop
/// bodies may hold (about 100 bytes of code each: the four-column, two-column and odd-column
/// bodies). Past it the counts are padded to a coarser grain: streaming a larger body through
/// the instruction cache every step cost more than the padding's extra products (at 8192 the
/// 90%-pruned H-LSTM 512 ran at 2.0 ms, at 512 at 1.0 ms; docs/kernels.md, `sparse-csr`).
const CSR_BODY_BUDGET: usize = 512;

/// A grain coarser than the budget needs is taken while its padding is at most this fraction
/// of the real products (1/20: 5%). On the 97%-pruned H-LSTMs (about 15 nonzeros a column)
/// it takes grain 2: half the class bodies' code, the same run time (docs/kernels.md).
const CSR_PADDING_SHARE: usize = 20;

/// Columns a class needs before they go four to a group (fewer run two at a time).
const QUAD_MIN_COLUMNS: usize = 8;

/// Lays out a constant [K, N] weight as compressed columns (the rows of W^T), grouped into
/// classes of equal nonzero count; `stride` is the left operand's k-stride in elements. With
/// `quads` (one row at a time), each class's columns go four to a group where it has enough.
/// With `view_strides` (a masked run-time weight, `data` its pattern), each nonzero's "weight"
/// is its byte offset in the weight view, an i32, and no columns go four to a group.
fn csr_classes(
    rodata: &mut Vec<u8>,
    data: &[f32],
    k: usize,
    n: usize,
    stride: isize,
    quads: bool,
    view_strides: Option<[isize; 2]>,
) -> Result<Vec<CsrClass>, String> {
    let quads = quads && view_strides.is_none();
    let too_large = || "matmul too large".to_string();
    // What pads a column up to its class's count: weight 0, or for a masked weight the offset
    // of a position outside the pattern (zero by `Weight::Masked`'s contract). A pattern
    // without one has no spread of counts to pad.
    let pad = match view_strides {
        None => 0.0,
        Some([sk, sn]) => match data.iter().position(|v| *v == 0.0) {
            Some(i) => {
                let at = ((i / n) as i64 * sk as i64 + (i % n) as i64 * sn as i64) * 4;
                f32::from_bits(i32::try_from(at).map_err(|_| too_large())? as u32)
            }
            None => 0.0,
        },
    };
    // Each column's nonzeros (row, value), gathered in one pass along the rows: walking down
    // the columns of a large weight (its rows 8 KiB apart) took most of the layout's time.
    let mut by_column: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
    if n > 0 {
        for (q, row) in data.chunks_exact(n).take(k).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    by_column[j].push((q, v));
                }
            }
        }
    }
    let counts: Vec<usize> = by_column.iter().map(Vec::len).collect();
    // Each class costs code for its count of products (twice: the two-column body, and the
    // odd column): when the counts are spread wide, round them up to a coarser grain, padding
    // columns with zero weights, until the bodies fit the budget.
    // Within the budget the grain still doubles while the padding stays a small share of the
    // products: half the code (and Cranelift's time on it) for a few more multiply-adds.
    let real: usize = counts.iter().sum();
    let padding =
        |grain: usize| -> usize { counts.iter().map(|c| c.div_ceil(grain) * grain - c).sum() };
    let mut grain = 1;
    let by_count = loop {
        let mut by_count: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (j, c) in counts.iter().enumerate() {
            by_count
                .entry(c.div_ceil(grain) * grain)
                .or_default()
                .push(j);
        }
        let bodies: usize = by_count.keys().sum();
        // (A masked weight's pattern may have no zero to pad with: only the budget coarsens it.)
        let fits = bodies <= CSR_BODY_BUDGET
            && !(view_strides.is_none() && padding(grain * 2) <= real / CSR_PADDING_SHARE);
        if fits || grain >= k.max(1) {
            break by_count;
        }
        grain *= 2;
    };
    let narrow = (k as i64 - 1) * stride as i64 * 4 <= u16::MAX as i64;
    let mut classes = Vec::with_capacity(by_count.len());
    for (nonzeros, all_cols) in by_count {
        // One column's nonzeros, padded up to the class's count with weight 0 times the first
        // input.
        let column = |j: usize| -> Result<(Vec<f32>, Vec<i32>), String> {
            let (mut w, mut o) = (Vec::with_capacity(nonzeros), Vec::with_capacity(nonzeros));
            for &(q, mut v) in &by_column[j] {
                if let Some([sk, sn]) = view_strides {
                    let at = (q as i64 * sk as i64 + j as i64 * sn as i64) * 4;
                    v = f32::from_bits(i32::try_from(at).map_err(|_| too_large())? as u32);
                }
                w.push(v);
                let off = q as i64 * stride as i64 * 4;
                o.push(i32::try_from(off).map_err(|_| too_large())?);
            }
            w.resize(nonzeros, pad);
            o.resize(nonzeros, 0);
            Ok((w, o))
        };
        let n_quads = if quads && narrow && nonzeros > 0 && all_cols.len() >= QUAD_MIN_COLUMNS {
            all_cols.len() / 4
        } else {
            0
        };
        let (quad_cols, cols) = all_cols.split_at(4 * n_quads);
        let (mut qw, mut qo): (Vec<f32>, Vec<u8>) = (Vec::new(), Vec::new());
        for group in quad_cols.chunks(4) {
            let lanes: Vec<(Vec<f32>, Vec<i32>)> =
                group.iter().map(|&j| column(j)).collect::<Result<_, _>>()?;
            for e in 0..nonzeros {
                for (w, o) in &lanes {
                    qw.push(w[e]);
                    qo.extend((o[e] as u16).to_le_bytes());
                }
            }
        }
        let col_ids = |cs: &[usize]| -> Result<Vec<i32>, String> {
            cs.iter()
                .map(|&j| i32::try_from(j).map_err(|_| too_large()))
                .collect()
        };
        let quad_cols_off = push_i32s(rodata, &col_ids(quad_cols)?);
        let quad_weights_off = push_f32s(rodata, &qw);
        let quad_offsets_off = push_bytes(rodata, &qo);
        let mut weights: Vec<f32> = Vec::with_capacity(cols.len() * nonzeros);
        let mut offsets: Vec<i32> = Vec::with_capacity(cols.len() * nonzeros);
        for &j in cols {
            let (w, o) = column(j)?;
            weights.extend(w);
            offsets.extend(o);
        }
        let idx = col_ids(cols)?;
        let cols_off = push_i32s(rodata, &idx);
        let weights_off = push_f32s(rodata, &weights);
        let offsets_off = if narrow {
            let narrow: Vec<u8> = offsets
                .iter()
                .flat_map(|o| (*o as u16).to_le_bytes())
                .collect();
            push_bytes(rodata, &narrow)
        } else {
            push_i32s(rodata, &offsets)
        };
        classes.push(CsrClass {
            nonzeros,
            columns: cols.len(),
            cols_off,
            weights_off,
            offsets_off,
            narrow,
            quads: n_quads,
            quad_cols_off,
            quad_weights_off,
            quad_offsets_off,
        });
    }
    Ok(classes)
}

/// Appends `data` to the read-only data at the next 64-byte boundary; returns its offset.
fn push_bytes(rodata: &mut Vec<u8>, data: &[u8]) -> usize {
    rodata.resize(rodata.len().next_multiple_of(ALIGN * 4), 0);
    let off = rodata.len();
    rodata.extend_from_slice(data);
    off
}

fn push_f32s(rodata: &mut Vec<u8>, data: &[f32]) -> usize {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    push_bytes(rodata, &bytes)
}

fn push_i32s(rodata: &mut Vec<u8>, data: &[i32]) -> usize {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    push_bytes(rodata, &bytes)
}

/// `w` [K, N] row-major, packed tile-major (see [`Layout::packed`]).
pub(crate) fn pack_tiles(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let tiles = n.div_ceil(16);
    let mut out = vec![0.0f32; tiles * k * 16];
    for t in 0..tiles {
        let (c0, c1) = (t * 16, (t * 16 + 16).min(n));
        for q in 0..k {
            let dst = (t * k + q) * 16;
            out[dst..dst + (c1 - c0)].copy_from_slice(&w[q * n + c0..q * n + c1]);
        }
    }
    out
}

/// The (left operand's k-stride, one row at a time) layouts a compressed matmul needs: four
/// rows at a time on the transposed input (row stride M); with a run-time row count also one
/// row at a time, for calls under 4 rows.
fn csr_strides(
    out: &View,
    a: &View,
    w: &Weight,
    rows_per_step: &Option<usize>,
) -> Vec<(isize, bool)> {
    let mut strides = Vec::new();
    if let Some(mp) = row_vector_rows(out.dims[0], w) {
        strides.push((mp as isize, false));
    }
    if strides.is_empty() || rows_per_step.is_some() {
        strides.push((a.strides[1], true));
    }
    strides
}

fn place_rodata(p: &Program, l: &mut Layout) -> Result<(), String> {
    let const_view = |l: &mut Layout, v: &View| {
        if let Storage::Const(c) = v.storage
            && !l.const_off.contains_key(&c)
        {
            let off = push_f32s(&mut l.rodata, &p.consts[c.0].data);
            l.const_off.insert(c, off);
        }
    };
    visit::try_walk(&p.body, &mut |s, _| {
        for v in s.inputs() {
            const_view(l, v);
        }
        let Stmt::MatMul {
            out,
            a,
            w,
            rows_per_step,
        } = s
        else {
            return Ok(());
        };
        match w {
            Weight::View(_) => {}
            Weight::Const(c, Strategy::SparseUnrolled) => {
                // The unrolled kernels need no data; the wide sparse kernel reads the
                // compressed arrays (vectors of rows only).
                if let Some(mp) = row_vector_rows(out.dims[0], w).filter(|_| l.wide)
                    && wide_sparse_rows(mp)
                {
                    compressed_for_wide(p, l, *c, mp, a.dims[1], out.dims[1])?;
                }
            }
            Weight::Const(c, Strategy::Dense) => {
                let n = out.dims[1];
                if n == 0 || l.packed.contains_key(&(*c, n)) {
                    return Ok(());
                }
                let data = &p.consts[c.0].data;
                let k = data.len() / n;
                let off = push_f32s(&mut l.rodata, &pack_tiles(data, k, n));
                l.packed.insert((*c, n), off);
            }
            Weight::Const(c, Strategy::SparseCsr) | Weight::Masked(_, c) => {
                // A masked weight: offsets into its view instead of values.
                let view_strides = w.view().map(|v| [v.strides[0], v.strides[1]]);
                for (stride, one_row) in csr_strides(out, a, w, rows_per_step) {
                    let key = (*c, stride, one_row, view_strides);
                    if l.csr.contains_key(&key) {
                        continue;
                    }
                    let (k, n) = (a.dims[1], out.dims[1]);
                    let data = &p.consts[c.0].data;
                    let classes =
                        csr_classes(&mut l.rodata, data, k, n, stride, one_row, view_strides)?;
                    if l.wide && !one_row && wide_sparse_rows(stride as usize) {
                        let off = class_table(&mut l.rodata, &classes);
                        l.csr_table.insert(key, off);
                    }
                    l.csr.insert(key, classes);
                }
            }
        }
        Ok(())
    })
}

/// Whether a sparse matmul over vectors of `rows` rows (the transposed operand's row stride)
/// runs the wide kernel when the target has one: from 8 rows, where a 16-lane vector is at
/// least half full (under 8, four rows in Cranelift's 128-bit vectors do as well).
pub(crate) fn wide_sparse_rows(rows: usize) -> bool {
    rows >= 8
}

/// The compressed arrays and class table of constant `c` ([k, n]) for the wide sparse kernel
/// on `rows` transposed rows.
fn compressed_for_wide(
    p: &Program,
    l: &mut Layout,
    c: ConstId,
    rows: usize,
    k: usize,
    n: usize,
) -> Result<(), String> {
    let key = (c, rows as isize, false, None);
    if l.csr.contains_key(&key) {
        return Ok(());
    }
    let classes = csr_classes(
        &mut l.rodata,
        &p.consts[c.0].data,
        k,
        n,
        rows as isize,
        false,
        None,
    )?;
    let off = class_table(&mut l.rodata, &classes);
    l.csr_table.insert(key, off);
    l.csr.insert(key, classes);
    Ok(())
}

/// Appends the class table the wide sparse kernel reads (see [`Layout::csr_table`]).
fn class_table(rodata: &mut Vec<u8>, classes: &[CsrClass]) -> usize {
    let mut bytes = Vec::with_capacity(classes.len() * 48);
    for c in classes {
        debug_assert_eq!(c.quads, 0, "vectors of rows have no column groups");
        for v in [
            c.nonzeros,
            c.columns,
            c.cols_off,
            c.weights_off,
            c.offsets_off,
            c.narrow as usize,
        ] {
            bytes.extend_from_slice(&(v as i64).to_le_bytes());
        }
    }
    push_bytes(rodata, &bytes)
}

/// The temporaries to compute in an output's place (see [`Layout::in_output`]). A temporary
/// that must start at zero still does: the code zeroes it, in the output, at every call.
fn outputs_in_place(p: &Program) -> HashMap<BufId, BufId> {
    let mut found = HashMap::new();
    if p.batch_axes.is_some() {
        // Run-time batches lay out outputs by the call's batch; temporaries by the largest.
        return found;
    }
    /// How a program touches one buffer: by how many views, whether in a `start` block, and
    /// the last top-level statement that writes it (at any depth inside).
    #[derive(Clone, Copy, Default)]
    struct Use {
        views: usize,
        in_start: bool,
        last_write: Option<usize>,
    }
    fn touch(body: &[Stmt], top: usize, in_start: bool, uses: &mut [Use]) {
        for s in body {
            match s {
                Stmt::Loop { body, .. } => touch(body, top, in_start, uses),
                Stmt::Start { body } => touch(body, top, true, uses),
                _ => {
                    let views = s.output().into_iter().map(|v| (v, true));
                    for (v, write) in views.chain(s.inputs().into_iter().map(|v| (v, false))) {
                        if let Storage::Buf(b) = v.storage {
                            let u = &mut uses[b.0];
                            u.views += 1;
                            u.in_start |= in_start;
                            if write {
                                u.last_write = Some(top);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut uses = vec![Use::default(); p.buffers.len()];
    for (i, s) in p.body.iter().enumerate() {
        touch(std::slice::from_ref(s), i, false, &mut uses);
    }
    let whole = |v: &View, b: BufId| {
        let buf = &p.buffers[b.0];
        v.offset == 0
            && v.step_stride == 0
            && v.len() == buf.len()
            && v.strides == hlstm_ir::kernel::row_major_strides(&v.dims)
    };
    let mut taken = HashSet::new();
    for (i, s) in p.body.iter().enumerate() {
        let Stmt::Copy { out, x } = s else {
            continue;
        };
        let (Storage::Buf(o), Storage::Buf(t)) = (out.storage, x.storage) else {
            continue;
        };
        let (ob, tb) = (&p.buffers[o.0], &p.buffers[t.0]);
        let fits = matches!(ob.kind, BufKind::Output(_))
            && tb.kind == BufKind::Temp
            && p.seq_lens != Some(t)
            && ob.step_len == tb.step_len
            && out.dims == x.dims
            && whole(out, o)
            && whole(x, t)
            // The copy is the output's only access; the temporary is not state, and nothing
            // after the copy writes it.
            && uses[o.0].views == 1
            && !uses[t.0].in_start
            && uses[t.0].last_write.is_none_or(|w| w < i)
            && !found.contains_key(&t)
            && taken.insert(o);
        if fits {
            found.insert(t, o);
        }
    }
    found
}

/// Whether a copy is one that [`Layout::in_output`] makes unnecessary (the temporary already
/// in the output, element for element).
pub(crate) fn copy_in_place(l: &Layout, out: &View, x: &View) -> bool {
    let (Storage::Buf(o), Storage::Buf(t)) = (out.storage, x.storage) else {
        return false;
    };
    l.in_output.get(&t) == Some(&o)
        && out.offset == x.offset
        && out.dims == x.dims
        && out.strides == x.strides
        && out.step_stride == x.step_stride
}

/// The layout of thread `index`'s part of `whole` split across `count` threads: the buffers
/// where the whole program has them, this thread's scratch area after the others' (each as
/// large as the whole program's, which bounds a part's), and the whole program's zero set on
/// thread 0 only.
pub(crate) fn layout_part(
    p: &Program,
    whole: &Program,
    index: usize,
    count: usize,
    wide: bool,
) -> Result<Layout, String> {
    let w = layout(whole, wide)?;
    let mut l = layout_with(p, wide, &written_in_loops(whole), Some(&w))?;
    if l.temp_off != w.temp_off {
        return Err("a thread's program has other buffers than the whole program".into());
    }
    let each = align_up(w.work_len - w.scratch_off);
    if l.work_len - l.scratch_off > each {
        return Err("a thread's part needs more scratch than the whole program".into());
    }
    l.scratch_off = w.scratch_off + index * each;
    l.work_len = w.scratch_off + count * each;
    l.zero = if index == 0 { w.zero } else { Vec::new() };
    Ok(l)
}

/// `wide`: the target has the wide kernels (`super::wide`), whose sparse one reads class
/// tables.
pub(crate) fn layout(p: &Program, wide: bool) -> Result<Layout, String> {
    layout_with(p, wide, &HashSet::new(), None)
}

/// [`layout`], packing no weight stored in `excluded` before a loop; a thread's part takes
/// the temporaries computed in outputs from `whole`'s layout.
fn layout_with(
    p: &Program,
    wide: bool,
    excluded: &HashSet<Storage>,
    whole: Option<&Layout>,
) -> Result<Layout, String> {
    hlstm_ir::kernel::verify(p)?;
    let zero = zero_set(p);
    let in_output = match whole {
        Some(w) => w.in_output.clone(),
        None => outputs_in_place(p),
    };
    let mut temp_off = vec![None; p.buffers.len()];
    let mut off = 0usize;
    for (i, b) in p.buffers.iter().enumerate() {
        if b.kind == BufKind::Temp && !in_output.contains_key(&BufId(i)) {
            temp_off[i] = Some(off);
            off = align_up(off + b.len());
        }
    }
    let scratch_off = off;
    let mut l = Layout {
        temp_off,
        scratch_off,
        work_len: 0,
        zero,
        in_output,
        rodata: Vec::new(),
        const_off: HashMap::new(),
        csr: HashMap::new(),
        packed: HashMap::new(),
        csr_table: HashMap::new(),
        wide,
        pack_before: HashMap::new(),
    };
    place_rodata(p, &mut l)?;
    // The packed weights live after the scratch, which the products inside the loop use.
    let scratch_end = align_up(scratch_len(p)?);
    let mut pack_before = HashMap::new();
    let scratch = if wide {
        let none = HashSet::new();
        plan_packing(
            p,
            &l,
            &p.body,
            excluded,
            &none,
            scratch_end,
            &mut pack_before,
        )?
    } else {
        scratch_end
    };
    l.pack_before = pack_before;
    l.work_len = align_up(scratch_off + scratch);
    if l.work_len > 1 << 29 {
        return Err("the workspace is too large".into());
    }
    if l.rodata.is_empty() && (!l.const_off.is_empty() || !l.csr.is_empty() || !l.packed.is_empty())
    {
        // Only empty constants: keep a (tiny) object so every reference has a base.
        l.rodata.resize(ALIGN * 4, 0);
    }
    if l.rodata.len() > i32::MAX as usize / 2 {
        return Err("the read-only data is too large".into());
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlstm_ir::BinOp;

    /// Decodes the classes back into y = x W (x[q] = q + 1), as the generated code computes.
    fn csr_product(rodata: &[u8], classes: &[CsrClass], n: usize, stride: usize) -> Vec<f64> {
        let word = |at: usize, len: usize| -> u32 {
            let mut b = [0u8; 4];
            b[..len].copy_from_slice(&rodata[at..at + len]);
            u32::from_le_bytes(b)
        };
        let mut y = vec![f64::NAN; n];
        for c in classes {
            for g in 0..c.quads {
                for lane in 0..4 {
                    let j = word(c.quad_cols_off + (g * 4 + lane) * 4, 4) as usize;
                    let mut sum = 0.0;
                    for e in 0..c.nonzeros {
                        let at = (g * c.nonzeros + e) * 4 + lane;
                        let w = f32::from_bits(word(c.quad_weights_off + at * 4, 4)) as f64;
                        let q = word(c.quad_offsets_off + at * 2, 2) as usize / 4 / stride;
                        sum += w * (q + 1) as f64;
                    }
                    y[j] = sum;
                }
            }
            let off_len = if c.narrow { 2 } else { 4 };
            for col in 0..c.columns {
                let j = word(c.cols_off + col * 4, 4) as usize;
                let mut sum = 0.0;
                for e in col * c.nonzeros..(col + 1) * c.nonzeros {
                    let w = f32::from_bits(word(c.weights_off + e * 4, 4)) as f64;
                    let q = word(c.offsets_off + e * off_len, off_len) as usize / 4 / stride;
                    sum += w * (q + 1) as f64;
                }
                y[j] = sum;
            }
        }
        y
    }

    #[test]
    fn csr_classes_group_equal_counts_and_pad_wide_spreads_within_the_budget() {
        // Column j of a K x N matrix has j nonzeros: N distinct counts summing past the budget.
        let (k, n) = (300, 300);
        let mut data = vec![0.0f32; k * n];
        for j in 0..n {
            for q in 0..j {
                data[q * n + j] = 0.5 + (q % 7) as f32;
            }
        }
        for (stride, quads) in [(1usize, false), (60, false), (1, true), (60, true)] {
            let mut rodata = Vec::new();
            let classes =
                csr_classes(&mut rodata, &data, k, n, stride as isize, quads, None).unwrap();
            let bodies: usize = classes.iter().map(|c| c.nonzeros).sum();
            assert!(bodies <= CSR_BODY_BUDGET, "{bodies}");
            assert!(classes.len() > 1);
            let in_quads: usize = classes.iter().map(|c| 4 * c.quads).sum();
            assert_eq!(
                classes.iter().map(|c| c.columns).sum::<usize>() + in_quads,
                n
            );
            // Groups of four only one row at a time and with u16 offsets.
            assert_eq!(in_quads > 0, quads && stride == 1, "{stride} {quads}");
            assert_eq!(classes[0].narrow, stride == 1);
            let y = csr_product(&rodata, &classes, n, stride);
            for (j, got) in y.iter().enumerate() {
                let want: f64 = (0..k)
                    .map(|q| data[q * n + j] as f64 * (q + 1) as f64)
                    .sum();
                assert_eq!(*got, want, "column {j}");
            }
        }
        // Equal counts: one class, no padding.
        let dense = vec![1.0f32; 6 * 5];
        let mut rodata = Vec::new();
        let classes = csr_classes(&mut rodata, &dense, 6, 5, 1, false, None).unwrap();
        assert_eq!(classes.len(), 1);
        assert_eq!((classes[0].nonzeros, classes[0].columns), (6, 5));
    }

    #[test]
    fn csr_classes_take_a_coarser_grain_while_its_padding_is_cheap() {
        // Counts 40 to 49 (within the budget at grain 1): grain 2 pads 5 of 445 products per
        // ten columns (1.1%), grain 4 15 (3.4%), grain 8 35 (7.9%, past the 5% share).
        let (k, n) = (64, 400);
        let mut data = vec![0.0f32; k * n];
        for j in 0..n {
            for q in 0..40 + j % 10 {
                data[q * n + j] = 1.0 + (q % 5) as f32;
            }
        }
        let mut rodata = Vec::new();
        let classes = csr_classes(&mut rodata, &data, k, n, 1, false, None).unwrap();
        let counts: Vec<usize> = classes.iter().map(|c| c.nonzeros).collect();
        assert_eq!(counts, vec![40, 44, 48, 52], "grain 4");
        let y = csr_product(&rodata, &classes, n, 1);
        for (j, got) in y.iter().enumerate() {
            let want: f64 = (0..k)
                .map(|q| data[q * n + j] as f64 * (q + 1) as f64)
                .sum();
            assert_eq!(*got, want, "column {j}");
        }
        // A masked weight's pattern is coarsened by the budget alone (here it has no zero to
        // pad with at all): one class per count.
        let dense_pattern = vec![1.0f32; 8 * 3];
        let classes = csr_classes(
            &mut Vec::new(),
            &dense_pattern,
            8,
            3,
            1,
            false,
            Some([3, 1]),
        )
        .unwrap();
        assert_eq!(
            classes.iter().map(|c| c.nonzeros).collect::<Vec<_>>(),
            vec![8]
        );
    }

    fn v(b: BufId, off: isize, dims: &[usize], strides: &[isize], step: isize) -> View {
        View {
            storage: Storage::Buf(b),
            offset: off,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            step_stride: step,
        }
    }

    /// state `h` read before written: zeroed; `y` written one row per step and read back:
    /// complete, not zeroed; `acc` first written whole: not zeroed; `part` an output written
    /// in part: zeroed.
    fn sample() -> (Program, [BufId; 5]) {
        let mut p = Program::default();
        let x = p.add_buffer("x", BufKind::Input(0), &[4, 3]);
        let y = p.add_buffer("y", BufKind::Output(0), &[4, 3]);
        let part = p.add_buffer("part", BufKind::Output(1), &[5]);
        let h = p.add_buffer("h", BufKind::Temp, &[3]);
        let acc = p.add_buffer("acc", BufKind::Temp, &[3]);
        p.inputs = vec![x];
        p.outputs = vec![y, part];
        p.body = vec![
            Stmt::Copy {
                out: View::whole(acc, &[3]),
                x: v(x, 0, &[3], &[1], 0),
            },
            Stmt::Loop {
                run: LoopRun::Fixed,
                trip: 4,
                reverse: true,
                body: vec![
                    Stmt::Binary {
                        op: BinOp::Add,
                        out: View::whole(h, &[3]),
                        a: View::whole(h, &[3]),
                        b: v(x, 0, &[3], &[1], 3),
                    },
                    Stmt::Copy {
                        out: v(y, 0, &[3], &[1], 3),
                        x: View::whole(h, &[3]),
                    },
                    Stmt::Binary {
                        op: BinOp::Add,
                        out: View::whole(acc, &[3]),
                        a: View::whole(acc, &[3]),
                        b: v(y, 0, &[3], &[1], 3),
                    },
                ],
            },
            Stmt::Copy {
                out: v(part, 1, &[3], &[1], 0),
                x: View::whole(acc, &[3]),
            },
        ];
        (p, [x, y, part, h, acc])
    }

    /// A temporary accumulated in a loop (from zero) and copied whole into an output at the
    /// top level lives in the output; one a `start` block initializes (state carried to the
    /// next call), one written after its copy, and a copy into an output that something else
    /// also writes do not; nor does a partial copy.
    #[test]
    fn temporaries_computed_in_their_outputs() {
        let mut p = Program::default();
        let x = p.add_buffer("x", BufKind::Input(0), &[4, 3]);
        let outs: Vec<BufId> = (0..5)
            .map(|k| p.add_buffer(&format!("o{k}"), BufKind::Output(k), &[3]))
            .collect();
        let temps: Vec<BufId> = (0..5)
            .map(|k| p.add_buffer(&format!("t{k}"), BufKind::Temp, &[3]))
            .collect();
        p.inputs = vec![x];
        p.outputs = outs.clone();
        let w = |b: BufId| View::whole(b, &[3]);
        let xt = v(x, 0, &[3], &[1], 3);
        let acc = |t: BufId| Stmt::Binary {
            op: BinOp::Add,
            out: w(t),
            a: w(t),
            b: xt.clone(),
        };
        let copy = |o: BufId, t: BufId| Stmt::Copy { out: w(o), x: w(t) };
        p.body = vec![
            Stmt::Start {
                body: vec![Stmt::Copy {
                    out: w(temps[1]),
                    x: v(x, 0, &[3], &[1], 0),
                }],
            },
            Stmt::Loop {
                run: LoopRun::Fixed,
                trip: 4,
                reverse: false,
                body: temps.iter().map(|&t| acc(t)).collect(),
            },
            copy(outs[0], temps[0]),
            copy(outs[1], temps[1]),
            copy(outs[2], temps[2]),
            acc(temps[2]),
            copy(outs[3], temps[3]),
            Stmt::Copy {
                out: w(outs[3]),
                x: w(temps[4]),
            },
            Stmt::Copy {
                out: v(outs[4], 0, &[2], &[1], 0),
                x: v(temps[4], 0, &[2], &[1], 0),
            },
        ];
        hlstm_ir::kernel::verify(&p).expect("valid");
        let l = layout(&p, true).expect("lays out");
        assert_eq!(l.in_output, HashMap::from([(temps[0], outs[0])]));
        assert!(l.temp_off[temps[0].0].is_none(), "no workspace for it");
        assert!(copy_in_place(&l, &w(outs[0]), &w(temps[0])));
        assert!(!copy_in_place(&l, &w(outs[1]), &w(temps[1])));
        // A thread's part takes the whole program's choice.
        let part = layout_part(&p, &p, 1, 2, true).expect("lays out");
        assert_eq!(part.in_output, l.in_output);
    }

    #[test]
    fn zero_set_follows_reads_and_writes() {
        let (p, [_, _, part, h, _]) = sample();
        assert_eq!(zero_set(&p), vec![part, h]);
        // The coarse rule zeroes more (y is read and its first write is partial), never less.
        let coarse = zero_set_coarse(&p);
        for b in zero_set(&p) {
            assert!(coarse.contains(&b));
        }
    }
}
