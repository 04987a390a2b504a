//! Legalization: the kernel IR rewritten into what the PTX printer prints, so that the printer
//! never meets a statement or an operation it has no template for.
//!
//! - Elementwise statements (`unary`, binary ops, `clip`, `copy`) become a [`Map`]: canonical
//!   views (unit dims dropped, dims contiguous in every operand merged) and a short program of
//!   [`Micro`] operations over f32 registers; every activation is expanded here into the
//!   primitive operations of [`super::table`].
//! - Matmuls become [`LStmt::Dense`] (a constant weight of strategy `dense`, or a run-time
//!   weight) or [`LStmt::Csr`] (constant weights of the sparse strategies, stored by column:
//!   column starts, row indices, values).
//! - A softmax becomes [`LStmt::Softmax`]: one work item per row.
//! - Storage is placed: inputs and outputs are kernel parameters, temporaries live in the
//!   workspace after the grid barrier's two words, constants are module arrays, copied to shared
//!   memory at kernel entry when they fit ([`SHARED_BUDGET`]).
//! - Grid barriers are inserted where a thread could read or overwrite an element another
//!   thread wrote or read since the last barrier, and at the end of every loop iteration and of
//!   every `start` block (the same rule as `passes::lower::threads`, on whole buffers except
//!   where two accesses map every work item to the same element: the same thread does both).

use super::table::Micro;
use hlstm_ir::kernel::{BufKind, LoopRun, Program, Stmt, Storage, Strategy, View, Weight, verify};
use hlstm_ir::op::{Act, BinOp};

/// Bytes of shared memory per block that constants may take (static shared memory is limited
/// to 48 KiB; a little is left for the compiler).
pub const SHARED_BUDGET: usize = 46 * 1024;

/// Words at the start of the workspace used by the grid barrier: arrival count, generation.
pub const SYNC_WORDS: usize = 2;

/// Where a view's storage starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// Kernel parameter: the program's input k.
    Input(usize),
    /// Kernel parameter: the program's output k.
    Output(usize),
    /// Workspace, this many words from its start.
    Work(usize),
    /// Module array number i (see [`Array`]).
    Array(usize),
}

/// A legal view: element `i` (row-major over `dims`) at step `t` is word
/// `offset + step * t + sum(i_d * strides[d])` of its place.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LView {
    pub place: Place,
    pub offset: i64,
    pub step: i64,
    pub dims: Vec<usize>,
    pub strides: Vec<i64>,
}

/// Element type of a module array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayTy {
    F32,
    U32,
}

/// A constant array of the module: in global memory always, and copied to shared memory at
/// kernel entry when `shared` is Some(byte offset in the block's shared area).
#[derive(Clone, Debug)]
pub struct Array {
    pub name: String,
    pub ty: ArrayTy,
    /// Raw 32-bit words (f32 bits or u32).
    pub words: Vec<u32>,
    pub shared: Option<usize>,
    /// Read inside a time loop.
    pub in_loop: bool,
}

/// Rows of a matmul: a fixed count, or r per time step (a call computes `steps * r`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    Fixed(usize),
    PerStep(usize),
}

/// How many times a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Fixed(usize),
    Steps,
    /// Once, t = steps - 1.
    Last,
}

/// An elementwise statement: load `ins`, run `ops` (registers: 0..ins.len() are the inputs,
/// then one per operation), store register `result` to `out`.
#[derive(Clone, Debug)]
pub struct Map {
    pub out: LView,
    pub ins: Vec<LView>,
    pub ops: Vec<Micro>,
    pub result: usize,
    /// The kernel-IR statement, for the comment.
    pub what: String,
}

#[derive(Clone, Debug)]
pub enum LStmt {
    Map(Map),
    /// out[M, N] = a[M, K] w[K, N], w read through a view (dense constant or run-time).
    Dense {
        out: LView,
        a: LView,
        w: LView,
        rows: Rows,
        k: usize,
        n: usize,
        what: String,
    },
    /// out[M, N] = a[M, K] w[K, N], w compressed by column: arrays `ptr` (N + 1 starts), `idx`
    /// (row of each nonzero), `val`.
    Csr {
        out: LView,
        a: LView,
        ptr: usize,
        idx: Option<usize>,
        val: Option<usize>,
        rows: Rows,
        n: usize,
        what: String,
    },
    /// Softmax (log-softmax with `log`) over the last dim: one work item per row (every
    /// position of the other dims), which walks its row three times (max, sum of exponentials,
    /// result).
    Softmax {
        out: LView,
        x: LView,
        log: bool,
        what: String,
    },
    Loop {
        count: Count,
        reverse: bool,
        body: Vec<LStmt>,
    },
    Start {
        body: Vec<LStmt>,
    },
    GridBarrier,
}

/// A legalized program.
#[derive(Clone, Debug)]
pub struct LProgram {
    pub name: String,
    pub body: Vec<LStmt>,
    pub arrays: Vec<Array>,
    /// Input and output buffers: (name, elements, elements per step).
    pub inputs: Vec<(String, usize, Option<usize>)>,
    pub outputs: Vec<(String, usize, Option<usize>)>,
    /// Workspace words (barrier words and temporaries).
    pub work_words: usize,
    pub shared_bytes: usize,
    /// The most work items of any statement in a loop (of any statement when there is no
    /// loop): sizes the grid.
    pub max_work: usize,
    pub max_steps: usize,
    pub dynamic_steps: bool,
    pub streamable: bool,
    /// The position of the sequence-lengths input ([`Program::seq_lens`]), if any.
    pub seq_lens_input: Option<usize>,
}

struct Cx<'a> {
    p: &'a Program,
    /// Workspace word offset of each temp buffer.
    temp_at: Vec<Option<usize>>,
    /// Array index of each constant read through a view (dense copy).
    const_dense: Vec<Option<usize>>,
    arrays: Vec<Array>,
    max_work: usize,
    loop_work: usize,
    trip: usize,
}

/// Legalizes a program that passed the kernel-IR verifier (`hlstm_ir::kernel::verify`, which
/// [`super::compile`] runs first): what it checks is not checked again here, only what this
/// backend needs beyond it (operands of the result's dims, views of rank >= 1 within 32-bit
/// indexing).
pub fn legalize(p: &Program) -> Result<LProgram, String> {
    let mut temp_at = vec![None; p.buffers.len()];
    let mut work = SYNC_WORDS;
    for (i, b) in p.buffers.iter().enumerate() {
        if b.kind == BufKind::Temp {
            // 16-byte alignment for each temporary.
            work = work.div_ceil(4) * 4;
            temp_at[i] = Some(work);
            work += b.len();
        }
    }
    let io = |ids: &[hlstm_ir::kernel::BufId]| -> Vec<(String, usize, Option<usize>)> {
        ids.iter()
            .map(|b| {
                let buf = &p.buffers[b.0];
                (buf.name.clone(), buf.len(), buf.step_len)
            })
            .collect()
    };
    let mut cx = Cx {
        p,
        temp_at,
        const_dense: vec![None; p.consts.len()],
        arrays: Vec::new(),
        max_work: 1,
        loop_work: 0,
        trip: 1,
    };
    let body = cx.block(&p.body, false)?;
    let body = place_barriers(&body);
    let max_steps = p.longest_steps();
    let mut arrays = cx.arrays;
    let shared_bytes = place_shared(&mut arrays);
    Ok(LProgram {
        name: p.name.clone(),
        body,
        arrays,
        inputs: io(&p.inputs),
        outputs: io(&p.outputs),
        work_words: work,
        shared_bytes,
        max_work: if cx.loop_work > 0 {
            cx.loop_work
        } else {
            cx.max_work
        },
        max_steps,
        dynamic_steps: p.max_steps.is_some(),
        streamable: p.streamable(),
        seq_lens_input: p.seq_lens_input(),
    })
}

/// Puts arrays read in loops into shared memory while they fit, smallest first (the others
/// are read once, from global memory); returns the shared bytes used.
fn place_shared(arrays: &mut [Array]) -> usize {
    let mut order: Vec<usize> = (0..arrays.len()).filter(|&i| arrays[i].in_loop).collect();
    order.sort_by_key(|&i| (arrays[i].words.len(), i));
    let mut used = 0;
    for i in order {
        let bytes = arrays[i].words.len() * 4;
        if bytes == 0 || used + bytes > SHARED_BUDGET {
            continue;
        }
        arrays[i].shared = Some(used);
        used += bytes.div_ceil(16) * 16;
    }
    used
}

/// Drops unit dims and merges dims contiguous in every view; at least one dim remains.
pub fn canonical(views: &mut [&mut LView]) {
    let rank = views[0].dims.len();
    let mut keep: Vec<usize> = (0..rank).filter(|&d| views[0].dims[d] != 1).collect();
    if keep.is_empty() {
        for v in views.iter_mut() {
            v.dims = vec![1];
            v.strides = vec![0];
        }
        return;
    }
    let mut dims: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<i64>> = vec![Vec::new(); views.len()];
    for d in keep.drain(..) {
        let n = views[0].dims[d];
        let can_merge = !dims.is_empty()
            && views.iter().enumerate().all(|(vi, v)| {
                let last = *strides[vi].last().unwrap();
                last == v.strides[d] * n as i64
            });
        if can_merge {
            *dims.last_mut().unwrap() *= n;
            for (vi, v) in views.iter().enumerate() {
                *strides[vi].last_mut().unwrap() = v.strides[d];
            }
        } else {
            dims.push(n);
            for (vi, v) in views.iter().enumerate() {
                strides[vi].push(v.strides[d]);
            }
        }
    }
    for (v, s) in views.iter_mut().zip(strides) {
        v.dims = dims.clone();
        v.strides = s;
    }
}

fn act_ops(act: Act, x: usize, first: usize) -> (Vec<Micro>, usize) {
    use super::table::Arg::{Imm, Reg};
    use super::table::Prim::*;
    let mut ops: Vec<Micro> = Vec::new();
    let mut push = |prim, args: Vec<super::table::Arg>| {
        ops.push(Micro { prim, args });
        first + ops.len() - 1
    };
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2: f32 = std::f32::consts::LN_2;
    // exp(y) as ex2(y * log2 e).
    let tanh = |push: &mut dyn FnMut(super::table::Prim, Vec<super::table::Arg>) -> usize,
                y: usize| {
        // tanh y = 1 - 2 / (1 + e^(2y)): exact limits at both infinities.
        let s = push(Mul, vec![Reg(y), Imm(2.0 * LOG2E)]);
        let e = push(Ex2, vec![Reg(s)]);
        let d = push(Add, vec![Reg(e), Imm(1.0)]);
        let q = push(Div, vec![Imm(2.0), Reg(d)]);
        push(Sub, vec![Imm(1.0), Reg(q)])
    };
    let r = match act {
        Act::Sigmoid => {
            let s = push(Mul, vec![Reg(x), Imm(-LOG2E)]);
            let e = push(Ex2, vec![Reg(s)]);
            let d = push(Add, vec![Reg(e), Imm(1.0)]);
            push(Div, vec![Imm(1.0), Reg(d)])
        }
        Act::Tanh => tanh(&mut push, x),
        Act::Relu => push(Max, vec![Reg(x), Imm(0.0)]),
        Act::Exp => {
            let s = push(Mul, vec![Reg(x), Imm(LOG2E)]);
            push(Ex2, vec![Reg(s)])
        }
        Act::Neg => push(Neg, vec![Reg(x)]),
        Act::LeakyRelu { alpha } => {
            let m = push(Mul, vec![Reg(x), Imm(alpha)]);
            push(SelLt, vec![Reg(x), Imm(0.0), Reg(m), Reg(x)])
        }
        Act::HardSigmoid { alpha, beta } => {
            let f = push(Fma, vec![Reg(x), Imm(alpha), Imm(beta)]);
            let lo = push(Max, vec![Reg(f), Imm(0.0)]);
            push(Min, vec![Reg(lo), Imm(1.0)])
        }
        Act::Affine { alpha, beta } => {
            let m = push(Mul, vec![Reg(x), Imm(alpha)]);
            push(Add, vec![Reg(m), Imm(beta)])
        }
        Act::ThresholdedRelu { alpha } => push(SelGt, vec![Reg(x), Imm(alpha), Reg(x), Imm(0.0)]),
        Act::ScaledTanh { alpha, beta } => {
            let b = push(Mul, vec![Reg(x), Imm(beta)]);
            let t = tanh(&mut push, b);
            push(Mul, vec![Reg(t), Imm(alpha)])
        }
        Act::Elu { alpha } => {
            let s = push(Mul, vec![Reg(x), Imm(LOG2E)]);
            let e = push(Ex2, vec![Reg(s)]);
            let m1 = push(Sub, vec![Reg(e), Imm(1.0)]);
            let a = push(Mul, vec![Reg(m1), Imm(alpha)]);
            push(SelLt, vec![Reg(x), Imm(0.0), Reg(a), Reg(x)])
        }
        Act::NotZero => {
            let a = push(Abs, vec![Reg(x)]);
            push(SelGt, vec![Reg(a), Imm(0.0), Imm(1.0), Imm(0.0)])
        }
        // setp without .ftz compares subnormals exactly; every comparison with NaN is false.
        // x == 0: |x| < the smallest subnormal.
        Act::IsZero => {
            let a = push(Abs, vec![Reg(x)]);
            push(
                SelLt,
                vec![Reg(a), Imm(f32::from_bits(1)), Imm(1.0), Imm(0.0)],
            )
        }
        Act::IsPositive => push(SelGt, vec![Reg(x), Imm(0.0), Imm(1.0), Imm(0.0)]),
        // x >= 0: not x < 0, and not NaN (x > -inf).
        Act::IsNonNegative => {
            let m = push(SelLt, vec![Reg(x), Imm(0.0), Imm(0.0), Imm(1.0)]);
            push(
                SelGt,
                vec![Reg(x), Imm(f32::NEG_INFINITY), Reg(m), Imm(0.0)],
            )
        }
        Act::Softsign => {
            let a = push(Abs, vec![Reg(x)]);
            let d = push(Add, vec![Reg(a), Imm(1.0)]);
            push(Div, vec![Reg(x), Reg(d)])
        }
        Act::Softplus => {
            // max(x, 0) + ln(1 + e^-|x|)
            let a = push(Abs, vec![Reg(x)]);
            let s = push(Mul, vec![Reg(a), Imm(-LOG2E)]);
            let e = push(Ex2, vec![Reg(s)]);
            let d = push(Add, vec![Reg(e), Imm(1.0)]);
            let l = push(Lg2, vec![Reg(d)]);
            let ln = push(Mul, vec![Reg(l), Imm(LN2)]);
            let m = push(Max, vec![Reg(x), Imm(0.0)]);
            push(Add, vec![Reg(m), Reg(ln)])
        }
    };
    (ops, r)
}

impl Cx<'_> {
    fn work(&mut self, n: usize, in_loop: bool) {
        self.max_work = self.max_work.max(n);
        if in_loop {
            self.loop_work = self.loop_work.max(n);
        }
    }

    fn place(&mut self, s: Storage, in_loop: bool) -> Place {
        match s {
            Storage::Buf(b) => match self.p.buffers[b.0].kind {
                BufKind::Input(k) => Place::Input(k),
                BufKind::Output(k) => Place::Output(k),
                BufKind::Temp => Place::Work(self.temp_at[b.0].expect("temp placed")),
            },
            Storage::Const(c) => {
                let i = match self.const_dense[c.0] {
                    Some(i) => i,
                    None => {
                        let k = &self.p.consts[c.0];
                        self.arrays.push(Array {
                            name: format!("c{}", c.0),
                            ty: ArrayTy::F32,
                            words: k.data.iter().map(|v| v.to_bits()).collect(),
                            shared: None,
                            in_loop: false,
                        });
                        self.const_dense[c.0] = Some(self.arrays.len() - 1);
                        self.arrays.len() - 1
                    }
                };
                self.arrays[i].in_loop |= in_loop;
                Place::Array(i)
            }
        }
    }

    /// A view of a verified program (inside its storage at every step of its loop), checked
    /// to fit 32-bit indexing.
    fn view(&mut self, v: &View, in_loop: bool, what: &str) -> Result<LView, String> {
        if v.dims.len() != v.strides.len() || v.dims.is_empty() {
            return Err(format!(
                "{what}: a view of rank {} is malformed",
                v.dims.len()
            ));
        }
        if let Some((_, hi)) = verify::span(v, self.trip)
            && hi >= i32::MAX as i128 / 8
        {
            return Err(format!("{what}: a view is too large for 32-bit indexing"));
        }
        Ok(LView {
            place: self.place(v.storage, in_loop),
            offset: v.offset as i64,
            step: v.step_stride as i64,
            dims: v.dims.clone(),
            strides: v.strides.iter().map(|s| *s as i64).collect(),
        })
    }

    fn block(&mut self, body: &[Stmt], in_loop: bool) -> Result<Vec<LStmt>, String> {
        let mut out = Vec::new();
        for (i, s) in body.iter().enumerate() {
            let what = format!("statement {}", i + 1);
            if let Some(l) = self.stmt(s, in_loop, &what)? {
                out.push(l);
            }
        }
        Ok(out)
    }

    fn elementwise(
        &mut self,
        out: &View,
        ins: &[&View],
        ops: Vec<Micro>,
        result: usize,
        in_loop: bool,
        what: String,
    ) -> Result<LStmt, String> {
        for x in ins {
            if x.dims != out.dims {
                return Err(format!(
                    "{what}: an operand of dims {:?} for a result of dims {:?} (the lowering spells broadcasts as stride-0 dims)",
                    x.dims, out.dims
                ));
            }
        }
        let mut o = self.view(out, in_loop, &what)?;
        let mut xs: Vec<LView> = ins
            .iter()
            .map(|x| self.view(x, in_loop, &what))
            .collect::<Result<_, _>>()?;
        {
            let mut all: Vec<&mut LView> = vec![&mut o];
            all.extend(xs.iter_mut());
            canonical(&mut all);
        }
        self.work(o.dims.iter().product(), in_loop);
        Ok(LStmt::Map(Map {
            out: o,
            ins: xs,
            ops,
            result,
            what,
        }))
    }

    fn stmt(&mut self, s: &Stmt, in_loop: bool, what: &str) -> Result<Option<LStmt>, String> {
        use super::table::Arg::{Imm, Reg};
        use super::table::Prim;
        let desc = hlstm_ir::kernel::print_stmt;
        Ok(Some(match s {
            Stmt::Unary { op, out, x } => {
                let (ops, r) = act_ops(*op, 0, 1);
                self.elementwise(out, &[x], ops, r, in_loop, desc(s))?
            }
            Stmt::Binary { op, out, a, b } => {
                let prim = match op {
                    BinOp::Add => Prim::Add,
                    BinOp::Sub => Prim::Sub,
                    BinOp::Mul => Prim::Mul,
                    BinOp::Div => Prim::Div,
                };
                let ops = vec![Micro {
                    prim,
                    args: vec![Reg(0), Reg(1)],
                }];
                self.elementwise(out, &[a, b], ops, 2, in_loop, desc(s))?
            }
            Stmt::Clip { out, x, min, max } => {
                // x < min ? min : (x > max ? max : x), as the interpreter does it.
                let ops = vec![
                    Micro {
                        prim: Prim::SelGt,
                        args: vec![Reg(0), Imm(*max), Imm(*max), Reg(0)],
                    },
                    Micro {
                        prim: Prim::SelLt,
                        args: vec![Reg(0), Imm(*min), Imm(*min), Reg(1)],
                    },
                ];
                self.elementwise(out, &[x], ops, 2, in_loop, desc(s))?
            }
            Stmt::Copy { out, x } => self.elementwise(out, &[x], vec![], 0, in_loop, desc(s))?,
            Stmt::Softmax { out, x, log } => {
                let what = desc(s);
                if out.dims.contains(&0) {
                    return Ok(None);
                }
                let rows = out.dims[..out.dims.len() - 1].iter().product();
                self.work(rows, in_loop);
                LStmt::Softmax {
                    out: self.view(out, in_loop, &what)?,
                    x: self.view(x, in_loop, &what)?,
                    log: *log,
                    what,
                }
            }
            Stmt::MatMul {
                out,
                a,
                w,
                rows_per_step,
            } => {
                let what = desc(s);
                let (m, k, n) = (out.dims[0], a.dims[1], out.dims[1]);
                let rows = match rows_per_step {
                    Some(r) => Rows::PerStep(*r),
                    None => Rows::Fixed(m),
                };
                self.work(m * n, in_loop);
                let (o, av) = (
                    self.view(out, in_loop, &what)?,
                    self.view(a, in_loop, &what)?,
                );
                match w {
                    // A masked weight is zero wherever its pattern is (`Weight::Masked`), so
                    // the dense kernel reading it whole computes the same product.
                    Weight::View(wv) | Weight::Masked(wv, _) => {
                        let w = self.view(wv, in_loop, &what)?;
                        LStmt::Dense {
                            out: o,
                            a: av,
                            w,
                            rows,
                            k,
                            n,
                            what,
                        }
                    }
                    Weight::Const(c, strategy) => {
                        let cst = &self.p.consts[c.0];
                        if cst.dims != [k, n] {
                            return Err(format!("{what}: weight dims {:?}", cst.dims));
                        }
                        if *strategy == Strategy::Dense {
                            let wv = View::constant(*c, &[k, n]);
                            let w = self.view(&wv, in_loop, &what)?;
                            LStmt::Dense {
                                out: o,
                                a: av,
                                w,
                                rows,
                                k,
                                n,
                                what,
                            }
                        } else {
                            let (mut ptr, mut idx, mut val) = (vec![0u32], vec![], vec![]);
                            for j in 0..n {
                                for q in 0..k {
                                    let x = cst.data[q * n + j];
                                    if x != 0.0 {
                                        idx.push(q as u32);
                                        val.push(x.to_bits());
                                    }
                                }
                                ptr.push(idx.len() as u32);
                            }
                            let mut add = |suffix: &str, ty, words: Vec<u32>| {
                                self.arrays.push(Array {
                                    name: format!("c{}_{suffix}", c.0),
                                    ty,
                                    words,
                                    shared: None,
                                    in_loop,
                                });
                                self.arrays.len() - 1
                            };
                            let nonzero = !idx.is_empty();
                            let ptr = add("colptr", ArrayTy::U32, ptr);
                            let (idx, val) = if nonzero {
                                (
                                    Some(add("rows", ArrayTy::U32, idx)),
                                    Some(add("vals", ArrayTy::F32, val)),
                                )
                            } else {
                                (None, None)
                            };
                            LStmt::Csr {
                                out: o,
                                a: av,
                                ptr,
                                idx,
                                val,
                                rows,
                                n,
                                what,
                            }
                        }
                    }
                }
            }
            Stmt::Loop {
                trip,
                reverse,
                run,
                body,
            } => {
                let saved = self.trip;
                self.trip = *trip;
                let body = self.block(body, true)?;
                self.trip = saved;
                LStmt::Loop {
                    count: match run {
                        LoopRun::Fixed => Count::Fixed(*trip),
                        LoopRun::Steps => Count::Steps,
                        LoopRun::LastStep => Count::Last,
                    },
                    reverse: *reverse,
                    body,
                }
            }
            Stmt::Start { body } => LStmt::Start {
                body: self.block(body, in_loop)?,
            },
            // Barriers of a program split across CPU threads: this backend places its own.
            Stmt::Barrier => {
                let _ = what;
                return Ok(None);
            }
        }))
    }
}

/// One access to a place: the whole place (any thread, any element), or the elements a
/// work item maps to through this canonical view (the same thread touches them).
#[derive(Clone, Debug, PartialEq)]
enum Access {
    Any(Place),
    Aligned(LView),
}

impl Access {
    fn place(&self) -> Place {
        match self {
            Access::Any(p) => *p,
            Access::Aligned(v) => v.place,
        }
    }
    fn conflicts(&self, other: &Access) -> bool {
        if self.place() != other.place() {
            return false;
        }
        !matches!((self, other), (Access::Aligned(a), Access::Aligned(b)) if a == b)
    }
}

/// A view alone in canonical form (the function from work item to element it denotes).
fn aligned(v: &LView) -> Access {
    let mut c = v.clone();
    canonical(&mut [&mut c]);
    Access::Aligned(c)
}

fn accesses(s: &LStmt) -> (Vec<Access>, Vec<Access>) {
    let writable = |p: Place| !matches!(p, Place::Array(_));
    let mut r = Vec::new();
    let w = match s {
        LStmt::Map(m) => {
            for x in &m.ins {
                if writable(x.place) {
                    r.push(aligned(x));
                }
            }
            vec![aligned(&m.out)]
        }
        LStmt::Dense {
            out,
            a,
            w: wt,
            rows,
            ..
        } => {
            for v in [a, wt] {
                if writable(v.place) {
                    r.push(Access::Any(v.place));
                }
            }
            vec![match rows {
                Rows::Fixed(_) => aligned(out),
                Rows::PerStep(_) => Access::Any(out.place),
            }]
        }
        // A work item walks a whole row: other threads' rows are read and written.
        LStmt::Softmax { out, x, .. } => {
            if writable(x.place) {
                r.push(Access::Any(x.place));
            }
            vec![Access::Any(out.place)]
        }
        LStmt::Csr { out, a, rows, .. } => {
            if writable(a.place) {
                r.push(Access::Any(a.place));
            }
            vec![match rows {
                Rows::Fixed(_) => aligned(out),
                Rows::PerStep(_) => Access::Any(out.place),
            }]
        }
        _ => vec![],
    };
    (r, w)
}

#[derive(Default)]
struct Since {
    read: Vec<Access>,
    written: Vec<Access>,
}

impl Since {
    fn any(&self) -> bool {
        !self.read.is_empty() || !self.written.is_empty()
    }
    fn clear(&mut self) {
        self.read.clear();
        self.written.clear();
    }
}

fn place_barriers(body: &[LStmt]) -> Vec<LStmt> {
    let mut out = Vec::new();
    let mut since = Since::default();
    for s in body {
        match s {
            LStmt::Loop {
                count,
                reverse,
                body,
            } => {
                if since.any() {
                    out.push(LStmt::GridBarrier);
                    since.clear();
                }
                let mut b = place_barriers(body);
                b.push(LStmt::GridBarrier);
                out.push(LStmt::Loop {
                    count: *count,
                    reverse: *reverse,
                    body: b,
                });
            }
            LStmt::Start { body } => {
                if since.any() {
                    out.push(LStmt::GridBarrier);
                    since.clear();
                }
                let mut b = place_barriers(body);
                b.push(LStmt::GridBarrier);
                out.push(LStmt::Start { body: b });
            }
            LStmt::GridBarrier => {
                out.push(LStmt::GridBarrier);
                since.clear();
            }
            s => {
                let (r, w) = accesses(s);
                let hazard = r
                    .iter()
                    .any(|x| since.written.iter().any(|y| x.conflicts(y)))
                    || w.iter().any(|x| {
                        since
                            .written
                            .iter()
                            .chain(&since.read)
                            .any(|y| x.conflicts(y))
                    });
                if hazard {
                    out.push(LStmt::GridBarrier);
                    since.clear();
                }
                since.read.extend(r);
                since.written.extend(w);
                out.push(s.clone());
            }
        }
    }
    out
}
