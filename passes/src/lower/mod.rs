//! Lowering from the optimized graph IR to the kernel IR (`hlstm_ir::kernel`).
//!
//! Every f32 graph value gets a place: graph inputs and outputs their Input/Output buffers, values
//! computed by a kernel a Temp buffer (or, where it can write there directly, the output or the
//! stacked per-step buffer it ends in), and values that only rearrange another value (reshape,
//! squeeze, unsqueeze, flatten, transpose, slice, split, gather with constant indices forming a
//! progression, expand, reverse) a strided view of that value's place, copied only where a
//! consumer needs a layout the view does not have. Integer and bool values must be constants
//! (shapes, axes, indices): they are evaluated here and read by the ops that take them.
//!
//! A `recurrence` becomes a `Loop`; see `recurrence.rs`. docs/kernels.md describes the result and
//! the layouts each statement is guaranteed to get.
//!
//! Weights: a matmul whose right operand is constant gets `Weight::Const` with the strategy the
//! target's [`KernelSelector`] chooses ([`LowerOptions::selector`]; or the one
//! [`LowerOptions::strategy`] forces); a run-time right operand gets `Weight::View` (or
//! `Weight::Masked`, when its pattern is known and the selector wants it).

pub mod batch;
mod recurrence;
pub mod rows_inner;
pub mod steps;
pub mod threads;
pub mod view;

use hlstm_ir::kernel::select::{KernelSelector, Thresholds};
use hlstm_ir::kernel::{
    BufId, BufKind, Const, ConstData, ConstId, Program, Stmt, Storage, Strategy, View, Weight,
    visit,
};
use hlstm_ir::{Act, BinOp, CmpOp, Constant, DType, Graph, LogicOp, Op, Tensor, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use view::ViewKey;

#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// Use this strategy for every constant weight (tests, comparisons, `--sparse-strategy`);
    /// `None` lets the selector pick one per matrix.
    pub strategy: Option<Strategy>,
    /// The target's kernel selection (`hlstm_backends::cpu::select::SELECTOR`,
    /// `hlstm_backends::ptx::select::SELECTOR`); `None`: [`NO_TARGET`].
    pub selector: Option<&'static dyn KernelSelector>,
    /// For each graph input (by index; missing or None: unknown), a pattern that is zero
    /// wherever the input always is (its elements in row-major order): the trainer's masks.
    /// A matmul whose run-time weight is such an input gets `Weight::Masked` where the selector
    /// wants it ([`KernelSelector::masked`]): a compressed kernel over the pattern's nonzeros,
    /// compiled again when the pattern changes.
    pub input_patterns: Vec<Option<Arc<Vec<f32>>>>,
}

/// The selection of a lowering that names no target: the CPU's thresholds
/// (`hlstm_backends::cpu::select`, where they are explained and measured), repeated here
/// because this crate does not depend on the backends; the root test `tests/jit.rs` checks
/// the two agree.
pub const NO_TARGET: Thresholds = Thresholds {
    sparse_max_density: 0.3,
    unroll_max_nonzeros: 4096,
    rows_innermost: Some(4),
};

impl LowerOptions {
    /// The selector in effect.
    pub fn selector(&self) -> &dyn KernelSelector {
        self.selector.unwrap_or(&NO_TARGET)
    }
}

/// Lowers an optimized graph to a kernel program. Errors name the node (and the recurrence
/// whose body holds it).
pub fn lower(g: &Graph, opts: &LowerOptions) -> Result<Program, String> {
    check_sizes(g)?;
    let mut lw = Lowerer {
        opts,
        prog: Program {
            name: "model".to_string(),
            ..Program::default()
        },
        consts: HashMap::new(),
        cut: HashMap::new(),
        scalars: HashMap::new(),
    };
    let mut sc = Scope::default();
    for (k, &n) in g.inputs.iter().enumerate() {
        let info = &g.nodes[n].results[0];
        // An integer input that only gives recurrences their sequence lengths is taken as f32
        // whole numbers (Program::seq_lens); any other non-f32 input is refused.
        let lens_only = matches!(info.ty.dtype, DType::I32 | DType::I64) && {
            let users = g.users(n);
            !users.is_empty()
                && users.iter().all(|(u, port)| match &g.nodes[*u].op {
                    Op::Recurrence(r) => r.has_seq_lens && port.in_slot + 1 == r.num_operands(),
                    _ => false,
                })
        };
        if info.ty.dtype != DType::F32 && !lens_only {
            return Err(format!(
                "input '{}' is {}: the kernel IR takes f32 inputs only (and integer sequence \
                 lengths of recurrences)",
                info.name, info.ty
            ));
        }
        let dims = info.ty.concrete().ok_or_else(|| {
            format!(
                "input '{}' has type {}: the kernel IR needs static shapes",
                info.name, info.ty
            )
        })?;
        let b = lw.prog.add_buffer(&info.name, BufKind::Input(k), &dims);
        lw.prog.inputs.push(b);
        if lens_only {
            if lw.prog.seq_lens.is_some() {
                return Err(format!(
                    "input '{}' gives sequence lengths, and so does another input: the kernel \
                     IR takes one sequence-lengths input",
                    info.name
                ));
            }
            lw.prog.seq_lens = Some(b);
        }
        sc.env
            .insert(Value { node: n, slot: 0 }, Loc::F32(View::whole(b, &dims)));
    }
    let mut outs = Vec::new();
    for (k, (name, v)) in g.outputs.iter().enumerate() {
        let ty = g.value_type(*v);
        if ty.dtype != DType::F32 {
            return Err(format!(
                "output '{name}' is {ty}: the kernel IR gives f32 outputs only"
            ));
        }
        let dims = ty.concrete().ok_or_else(|| {
            format!("output '{name}' has type {ty}: the kernel IR needs static shapes")
        })?;
        let b = lw.prog.add_buffer(name, BufKind::Output(k), &dims);
        lw.prog.outputs.push(b);
        let whole = View::whole(b, &dims);
        sc.homes.entry(*v).or_insert_with(|| whole.clone());
        outs.push((name, *v, whole));
    }
    lw.lower_graph(g, &mut sc, "")?;
    for (name, v, out) in outs {
        match sc.env.get(&v) {
            Some(Loc::F32(x)) => {
                if *x != out {
                    let x = x.clone();
                    lw.copy(&mut sc, out, x, false);
                }
            }
            _ => return Err(format!("output '{name}' was not computed")),
        }
    }
    lw.prog.body = std::mem::take(&mut sc.stmts);
    compact(&mut lw.prog);
    if lw.prog.seq_lens.is_some() {
        lw.prog.static_steps_reason = Some(
            "the sequence lengths are a run-time input: the time axis is fixed, and the \
             recurrences run the length it gives"
                .into(),
        );
    } else {
        steps::dynamic_steps(&mut lw.prog);
    }
    // The kernel engines run 1 step or more (Program::check_steps); a sequence of 0 steps is
    // refused here, at build time, so that a caller can fall back to the interpreter (the
    // fuzzer found the JIT refusing it only when run).
    if lw.prog.longest_steps() == 0 {
        return Err("the sequence has 0 steps: the kernel engines run 1 step or more".into());
    }
    if let Some(min_rows) = opts.selector().rows_innermost() {
        rows_inner::rows_innermost(&mut lw.prog, min_rows);
    }
    Ok(lw.prog)
}

/// Where a graph value lives.
#[derive(Clone, Debug)]
pub(crate) enum Loc {
    /// f32 data, in a buffer or a constant.
    F32(View),
    /// A constant integer or bool tensor (a shape, axes, indices, lengths).
    Known(Tensor),
}

/// A loop body being lowered: statements that do not depend on the step go before the loop.
#[derive(Default)]
pub(crate) struct LoopScope {
    pub pre: Vec<Stmt>,
    /// Buffers written inside the loop (state, stacked outputs, body temporaries).
    pub written: HashSet<BufId>,
}

#[derive(Default)]
pub(crate) struct Scope {
    pub env: HashMap<Value, Loc>,
    /// Where a value should be computed when a kernel computes it (an output buffer, a stacked
    /// per-step output).
    pub homes: HashMap<Value, View>,
    pub stmts: Vec<Stmt>,
    pub lp: Option<LoopScope>,
    /// Copies made so far: view -> its contiguous copy.
    memo: HashMap<ViewKey, View>,
}

impl Scope {
    /// Whether a view reads the same data at every step of the loop being lowered.
    fn invariant(&self, v: &View) -> bool {
        match &self.lp {
            None => false,
            Some(lp) => {
                v.step_stride == 0
                    && match v.storage {
                        Storage::Const(_) => true,
                        Storage::Buf(b) => !lp.written.contains(&b),
                    }
            }
        }
    }
}

pub(crate) struct Lowerer<'a> {
    opts: &'a LowerOptions,
    pub prog: Program,
    /// Graph constants already in the program, by identity.
    consts: HashMap<*const Constant, ConstId>,
    /// Constants cut out of other constants (a weight slice, a transposed weight).
    cut: HashMap<ViewKey, ConstId>,
    /// One-element constants, by bit pattern.
    scalars: HashMap<u32, ConstId>,
}

fn node_err(g: &Graph, n: NodeIndex, ctx: &str, msg: impl std::fmt::Display) -> String {
    let node = &g.nodes[n];
    format!("{ctx}node '{}' ({}): {msg}", node.name, node.op.kind())
}

/// Ops evaluated here when their operands are constants; with run-time operands only softmax,
/// log-softmax and where have statements, the others are an error.
fn needs_folding(op: &Op) -> bool {
    matches!(
        op,
        Op::Where
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::ConstantOfShape { .. }
            | Op::Shape { .. }
    )
}

impl Lowerer<'_> {
    // ----- places -----

    pub(crate) fn temp(&mut self, sc: &mut Scope, name: &str, dims: &[usize], hoist: bool) -> View {
        let b = self.prog.add_buffer(name, BufKind::Temp, dims);
        if !hoist && let Some(lp) = &mut sc.lp {
            lp.written.insert(b);
        }
        View::whole(b, dims)
    }

    /// Where a kernel computing `v` writes: its requested home, or a new temporary.
    fn home(&mut self, g: &Graph, sc: &mut Scope, v: Value, dims: &[usize], hoist: bool) -> View {
        if !hoist
            && let Some(h) = sc.homes.get(&v)
            && h.dims == dims
        {
            return h.clone();
        }
        let name = g.value_info(v).name.clone();
        self.temp(sc, &name, dims, hoist)
    }

    fn const_id(&mut self, c: &Arc<Constant>) -> Result<ConstId, String> {
        if let Some(id) = self.consts.get(&Arc::as_ptr(c)) {
            return Ok(*id);
        }
        let a = c.value.as_f32().ok_or("not an f32 constant")?;
        let data = ConstData::of_graph(c).unwrap_or_else(|| ConstData::new(f32_data(a)));
        let id = self.prog.add_const_data(&c.name, c.value.shape(), data);
        self.consts.insert(Arc::as_ptr(c), id);
        Ok(id)
    }

    /// A one-element constant, read through a view of `dims` with every stride 0.
    pub(crate) fn scalar(&mut self, v: f32, dims: &[usize]) -> View {
        let id = match self.scalars.get(&v.to_bits()) {
            Some(id) => *id,
            None => {
                let id = self.prog.add_const(&format!("{v:?}"), &[], vec![v]);
                self.scalars.insert(v.to_bits(), id);
                id
            }
        };
        View {
            storage: Storage::Const(id),
            offset: 0,
            dims: dims.to_vec(),
            strides: vec![0; dims.len()],
            step_stride: 0,
        }
    }

    /// The elements of a view of a constant, row-major.
    fn const_data(&self, v: &View) -> Option<Vec<f32>> {
        let Storage::Const(c) = v.storage else {
            return None;
        };
        let data = &self.prog.consts[c.0].data;
        view::offsets(v)
            .into_iter()
            .map(|o| usize::try_from(o).ok().and_then(|o| data.get(o).copied()))
            .collect()
    }

    /// A view of a constant as a constant of its own, row-major with the view's dims (the same
    /// constant when the view is the whole of it).
    fn cut_const(&mut self, v: &View) -> Option<ConstId> {
        let Storage::Const(c) = v.storage else {
            return None;
        };
        let whole = &self.prog.consts[c.0];
        if v.offset == 0
            && view::is_contiguous(v)
            && v.len() == whole.data.len()
            && whole.dims == v.dims
        {
            return Some(c);
        }
        if let Some(id) = self.cut.get(&view::key(v)) {
            return Some(*id);
        }
        let data = if v.offset == 0 && view::is_contiguous(v) && v.len() == whole.data.len() {
            whole.data.clone()
        } else {
            ConstData::new(self.const_data(v)?)
        };
        let name = format!("{}{}", whole.name, view_suffix(v, &whole.dims));
        self.prog.consts.push(Const {
            name,
            dims: v.dims.clone(),
            data,
        });
        let id = ConstId(self.prog.consts.len() - 1);
        self.cut.insert(view::key(v), id);
        Some(id)
    }

    /// A view as a tensor, when it reads a constant.
    fn const_tensor(&self, v: &View) -> Option<Tensor> {
        Tensor::from_f32(&v.dims, self.const_data(v)?)
    }

    // ----- statements -----

    pub(crate) fn emit(&mut self, sc: &mut Scope, s: Stmt, hoist: bool) {
        match (&mut sc.lp, hoist) {
            (Some(lp), true) => lp.pre.push(s),
            _ => sc.stmts.push(s),
        }
    }

    /// out = x, elementwise (x broadcast to out's dims).
    pub(crate) fn copy(&mut self, sc: &mut Scope, out: View, x: View, hoist: bool) {
        if out.is_empty() {
            return;
        }
        let x = view::broadcast_to(&x, &out.dims).expect("copy operands broadcast");
        let (mut out, mut x) = (out, x);
        view::coalesce(&mut [&mut out, &mut x]);
        self.emit(sc, Stmt::Copy { out, x }, hoist);
    }

    /// A row-major copy of `v` (memoized; before the loop when `v` is loop-invariant). A view
    /// of a constant is cut into a constant of its own instead.
    fn materialize(&mut self, sc: &mut Scope, v: &View, name: &str) -> View {
        if let Some(id) = self.cut_const(v) {
            return View::constant(id, &v.dims);
        }
        if let Some(m) = sc.memo.get(&view::key(v)) {
            return m.clone();
        }
        let hoist = sc.invariant(v);
        let t = self.temp(sc, &format!("{name}.copy"), &v.dims, hoist);
        self.copy(sc, t.clone(), v.clone(), hoist);
        sc.memo.insert(view::key(v), t.clone());
        t
    }

    /// A rank-2 operand of a matmul: its last dim must have stride 1 (rows may be strided).
    fn matrix(&mut self, sc: &mut Scope, v: View, name: &str) -> View {
        debug_assert_eq!(v.dims.len(), 2);
        let mut v = v;
        if v.dims[1] == 1 {
            v.strides[1] = 1;
        }
        if v.dims[0] == 1 {
            v.strides[0] = v.dims[1] as isize;
        }
        if v.strides[1] == 1 {
            return v;
        }
        self.materialize(sc, &v, name)
    }

    /// The right operand `b` [K, N] of a matmul whose left operand has `rows` rows.
    fn weight(&mut self, sc: &mut Scope, b: View, rows: usize, name: &str) -> Weight {
        if let Some(id) = self.cut_const(&b) {
            let c = &self.prog.consts[id.0];
            let strategy = self.opts.strategy.unwrap_or_else(|| {
                self.opts
                    .selector()
                    .choose(b.dims[0], b.dims[1], c.nonzeros(), rows)
            });
            return Weight::Const(id, strategy);
        }
        if let Some(pattern) = self.input_pattern(&b) {
            let nonzeros = pattern.iter().filter(|v| **v != 0.0).count();
            if self.opts.selector().masked(b.dims[0], b.dims[1], nonzeros) {
                let c = self
                    .prog
                    .add_const(&format!("{name}.pattern"), &b.dims, pattern);
                return Weight::Masked(self.matrix(sc, b, name), c);
            }
        }
        Weight::View(self.matrix(sc, b, name))
    }

    /// The [K, N] pattern of a weight view that reads a graph input with a known pattern
    /// ([`LowerOptions::input_patterns`]) the same way at every step.
    fn input_pattern(&self, v: &View) -> Option<Vec<f32>> {
        let Storage::Buf(b) = v.storage else {
            return None;
        };
        let BufKind::Input(k) = self.prog.buffers[b.0].kind else {
            return None;
        };
        let pattern = self.opts.input_patterns.get(k)?.as_ref()?;
        if v.step_stride != 0 || v.is_empty() {
            return None;
        }
        v.offsets(0)
            .into_iter()
            .map(|o| {
                usize::try_from(o)
                    .ok()
                    .and_then(|o| pattern.get(o).copied())
            })
            .collect()
    }

    /// out[M, N] = a[M, K] · b[K, N] for rank-2 views.
    fn matmul2(&mut self, sc: &mut Scope, out: View, a: View, b: View, name: &str, hoist: bool) {
        if out.is_empty() {
            return;
        }
        if a.dims[1] == 0 {
            let z = self.scalar(0.0, &out.dims);
            self.copy(sc, out, z, hoist);
            return;
        }
        let mut out = out;
        if out.dims[1] == 1 {
            out.strides[1] = 1;
        }
        if out.dims[0] == 1 {
            out.strides[0] = out.dims[1] as isize;
        }
        debug_assert_eq!(out.strides[1], 1, "a matmul result is row-major");
        let a = self.matrix(sc, a, &format!("{name}.a"));
        let w = self.weight(sc, b, a.dims[0], &format!("{name}.b"));
        let stmt = Stmt::MatMul {
            out,
            a,
            w,
            rows_per_step: None,
        };
        self.emit(sc, stmt, hoist);
    }

    /// numpy matmul: 1-D operands gain a unit axis; leading dims broadcast, and each batch
    /// element is one matmul statement, or all of them one statement when the weight has no
    /// batch dims and the left operand's rows stack.
    fn matmul(
        &mut self,
        sc: &mut Scope,
        out: View,
        a: View,
        b: View,
        name: &str,
        hoist: bool,
    ) -> Result<(), String> {
        let (ra, rb) = (a.dims.len(), b.dims.len());
        if ra == 0 || rb == 0 {
            return Err("matmul operands must have rank >= 1".into());
        }
        let a2 = if ra == 1 {
            view::reshape(&a, &[1, a.dims[0]]).expect("unit axis")
        } else {
            a
        };
        let b2 = if rb == 1 {
            view::reshape(&b, &[b.dims[0], 1]).expect("unit axis")
        } else {
            b
        };
        let (ra, rb) = (a2.dims.len(), b2.dims.len());
        let (m, k) = (a2.dims[ra - 2], a2.dims[ra - 1]);
        let (k2, n) = (b2.dims[rb - 2], b2.dims[rb - 1]);
        if k != k2 {
            return Err(format!(
                "inner dimensions differ: {} x {}",
                hlstm_ir::dims_text(&a2.dims),
                hlstm_ir::dims_text(&b2.dims)
            ));
        }
        let batch =
            hlstm_ir::interp::kernels::broadcast_shapes(&a2.dims[..ra - 2], &b2.dims[..rb - 2])?;
        let mut full = batch.clone();
        full.extend([m, n]);
        let out2 = view::reshape(&out, &full).ok_or_else(|| {
            format!(
                "the result {} does not hold {}",
                hlstm_ir::dims_text(&out.dims),
                hlstm_ir::dims_text(&full)
            )
        })?;
        let nb: usize = batch.iter().product();
        let b_batched = b2.dims[..rb - 2].iter().any(|&d| d != 1);
        if !b_batched {
            // One statement over all batch rows; a left operand whose rows do not stack is
            // copied once (cheaper than a statement per batch element).
            let bm = view::reshape(&b2, &[k, n]).expect("unit axes");
            let mut sa = batch.clone();
            sa.extend([m, k]);
            let ab = view::broadcast_to(&a2, &sa)?;
            if let Some(om) = view::reshape(&out2, &[nb * m, n]) {
                let am = match view::reshape(&ab, &[nb * m, k]) {
                    Some(am) if am.strides[1] == 1 || k == 1 => am,
                    _ => {
                        let c = self.materialize(sc, &ab, &format!("{name}.a"));
                        view::reshape(&c, &[nb * m, k]).expect("a row-major copy reshapes")
                    }
                };
                self.matmul2(sc, om, am, bm, name, hoist);
                return Ok(());
            }
        }
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb = batch.clone();
        sb.extend([k, n]);
        let ab = view::broadcast_to(&a2, &sa)?;
        let bb = view::broadcast_to(&b2, &sb)?;
        for i in 0..nb {
            let (mut av, mut bv, mut ov) = (ab.clone(), bb.clone(), out2.clone());
            let mut rest = i;
            for d in (0..batch.len()).rev() {
                let j = rest % batch[d];
                rest /= batch[d];
                av = view::index_axis(&av, d, j);
                bv = view::index_axis(&bv, d, j);
                ov = view::index_axis(&ov, d, j);
            }
            self.matmul2(sc, ov, av, bv, name, hoist);
        }
        Ok(())
    }

    // ----- graphs -----

    /// Lowers the nodes of `g` in topological order into `sc` (whose env holds the inputs).
    pub(crate) fn lower_graph(
        &mut self,
        g: &Graph,
        sc: &mut Scope,
        ctx: &str,
    ) -> Result<(), String> {
        let order = g
            .topo_order()
            .map_err(|n| format!("{ctx}the graph has a cycle through node '{n}'"))?;
        for n in order {
            if matches!(g.nodes[n].op, Op::Input) {
                continue;
            }
            self.lower_node(g, n, sc, ctx)?;
        }
        Ok(())
    }

    fn lower_node(
        &mut self,
        g: &Graph,
        n: NodeIndex,
        sc: &mut Scope,
        ctx: &str,
    ) -> Result<(), String> {
        let node = &g.nodes[n];
        let err = |msg: String| node_err(g, n, ctx, msg);
        let val = |slot: usize| Value { node: n, slot };
        match &node.op {
            Op::Const(c) => {
                let loc = if c.value.dtype() == DType::F32 {
                    let id = self.const_id(c).map_err(err)?;
                    Loc::F32(View::constant(id, c.value.shape()))
                } else {
                    Loc::Known((*c.value).clone())
                };
                sc.env.insert(val(0), loc);
                return Ok(());
            }
            Op::Recurrence(r) => {
                if sc.lp.is_some() {
                    return Err(err(
                        "nested recurrences are not supported by the kernel IR".into()
                    ));
                }
                return self.lower_recurrence(g, n, r, sc, ctx);
            }
            _ => {}
        }
        let operands = g.operands(n);
        let mut locs: Vec<Option<Loc>> = Vec::with_capacity(operands.len());
        for o in &operands {
            locs.push(match o {
                Some(v) => Some(sc.env.get(v).cloned().ok_or_else(|| {
                    err(format!(
                        "operand '{}' was not lowered",
                        g.value_info(*v).name
                    ))
                })?),
                None => None,
            });
        }
        // Shape needs only the static dims.
        if let (Op::Shape { start, end }, Some(Some(Loc::F32(x)))) = (&node.op, locs.first()) {
            let x = Tensor::from_f32(&x.dims, vec![0.0; x.len()]).ok_or("shape")?;
            let s = hlstm_ir::interp::kernels::shape_of(&x, *start, *end);
            sc.env.insert(val(0), Loc::Known(s));
            return Ok(());
        }
        // Constant operands only: evaluate ops whose results are not f32 or that no kernel
        // computes.
        let all_const = locs.iter().flatten().all(|l| match l {
            Loc::Known(_) => true,
            Loc::F32(v) => matches!(v.storage, Storage::Const(_)),
        });
        let non_f32 = node.results.iter().any(|r| r.ty.dtype != DType::F32);
        if all_const && (non_f32 || needs_folding(&node.op) || matches!(node.op, Op::Cast { .. })) {
            let tensors: Vec<Option<Tensor>> = locs
                .iter()
                .map(|l| {
                    l.as_ref().map(|l| match l {
                        Loc::Known(t) => t.clone(),
                        Loc::F32(v) => self.const_tensor(v).expect("a constant view"),
                    })
                })
                .collect();
            let refs: Vec<Option<&Tensor>> = tensors.iter().map(|t| t.as_ref()).collect();
            let results = hlstm_ir::interp::eval_op(&node.op, &refs).map_err(err)?;
            for (slot, t) in results.into_iter().enumerate() {
                let loc = match &t {
                    Tensor::F32(a) => {
                        let id =
                            self.prog
                                .add_const(&node.results[slot].name, a.shape(), f32_data(a));
                        Loc::F32(View::constant(id, a.shape()))
                    }
                    _ => Loc::Known(t),
                };
                sc.env.insert(val(slot), loc);
            }
            return Ok(());
        }
        // Bools and integers computed at run time (a Keras `Masking` layer's mask, the count of
        // its true elements) are kept as f32 values: bools as masks of 0 and 1, integers as
        // whole numbers (exact below 2^24). Only ops that keep that exact may make them; any
        // other is refused below.
        if non_f32 {
            let src = operands
                .first()
                .copied()
                .flatten()
                .map(|v| g.value_type(v).dtype);
            if let Some(why) = runtime_non_f32_refused(&node.op, src) {
                return Err(err(why));
            }
        }
        // Constant bool and integer operands of ops that compute on run-time bools are read as
        // f32 constants, like the run-time ones.
        if runtime_logic(&node.op) {
            for l in locs.iter_mut().flatten() {
                if let Loc::Known(t) = l {
                    let t = t.cast(DType::F32);
                    let a = t.as_f32().expect("cast to f32");
                    let id = self.prog.add_const(
                        &format!("{}.const", node.name),
                        a.shape(),
                        f32_data(a),
                    );
                    *l = Loc::F32(View::constant(id, a.shape()));
                }
            }
        }
        if needs_folding(&node.op)
            && !matches!(
                node.op,
                Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::Where
            )
        {
            return Err(err(format!(
                "{} on a value computed at run time is not supported by the kernel IR yet",
                node.op.kind()
            )));
        }
        let mut dims_of = Vec::with_capacity(node.results.len());
        for r in &node.results {
            dims_of.push(r.ty.concrete().ok_or_else(|| {
                err(format!(
                    "result '{}' has type {}: the kernel IR needs static shapes",
                    r.name, r.ty
                ))
            })?);
        }
        let hoist = sc.lp.is_some()
            && locs.iter().flatten().all(|l| match l {
                Loc::Known(_) => true,
                Loc::F32(v) => sc.invariant(v),
            });
        self.lower_op(g, n, sc, &locs, &dims_of, hoist).map_err(err)
    }

    /// One op with f32 results.
    fn lower_op(
        &mut self,
        g: &Graph,
        n: NodeIndex,
        sc: &mut Scope,
        locs: &[Option<Loc>],
        dims_of: &[Vec<usize>],
        hoist: bool,
    ) -> Result<(), String> {
        let node = &g.nodes[n];
        let val = |slot: usize| Value { node: n, slot };
        let name = node.name.as_str();
        let f32_at = |i: usize| -> Result<View, String> {
            match locs.get(i) {
                Some(Some(Loc::F32(v))) => Ok(v.clone()),
                Some(Some(Loc::Known(t))) => {
                    Err(format!("operand {i} is {}, expected f32", t.dtype()))
                }
                _ => Err(format!("operand {i} is missing")),
            }
        };
        let known_at = |i: usize, what: &str| -> Result<Option<Vec<i64>>, String> {
            match locs.get(i) {
                None | Some(None) => Ok(None),
                Some(Some(Loc::Known(t))) => t
                    .to_i64_vec()
                    .map(Some)
                    .ok_or_else(|| format!("{what} must be integers")),
                Some(Some(Loc::F32(_))) => Err(format!(
                    "{what} computed at run time are not supported by the kernel IR"
                )),
            }
        };
        let dims = dims_of[0].clone();
        let rank_of = |v: &View| v.dims.len();
        let set = |sc: &mut Scope, slot: usize, v: View| {
            sc.env.insert(val(slot), Loc::F32(v));
        };
        match &node.op {
            Op::Identity => set(sc, 0, f32_at(0)?),
            Op::Cast { to: DType::Bool } => {
                self.unary(g, sc, val(0), Act::NotZero, &f32_at(0)?, &dims, hoist)?
            }
            Op::Cast { .. } => set(sc, 0, f32_at(0)?),
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let log = matches!(node.op, Op::LogSoftmax { .. });
                let x = f32_at(0)?;
                let r = rank_of(&x);
                let ax = hlstm_ir::interp::kernels::norm_axis(*axis, r)?;
                if ax + 1 == r {
                    let out = self.home(g, sc, val(0), &dims, hoist);
                    set(sc, 0, out.clone());
                    self.emit(sc, Stmt::Softmax { out, x, log }, hoist);
                } else {
                    // The statement reduces the last dim: move the axis there in a view, and
                    // read the result back through the inverse permutation (no copies).
                    let mut perm: Vec<usize> = (0..r).filter(|&d| d != ax).collect();
                    perm.push(ax);
                    let mut inverse = vec![0; r];
                    for (i, &p) in perm.iter().enumerate() {
                        inverse[p] = i;
                    }
                    let xp = view::permute(&x, &perm);
                    let out = self.temp(sc, name, &xp.dims, hoist);
                    set(sc, 0, view::permute(&out, &inverse));
                    self.emit(sc, Stmt::Softmax { out, x: xp, log }, hoist);
                }
            }
            Op::Unary(act) => self.unary(g, sc, val(0), *act, &f32_at(0)?, &dims, hoist)?,
            // a > b as is_positive(a - b): exact for finite values (with gradual underflow,
            // a - b is 0 only when a == b and has its sign), NaN false; docs/kernels.md says
            // where infinities differ from IEEE.
            Op::Compare(c) => {
                let (a, b) = (f32_at(0)?, f32_at(1)?);
                let (a, b, act) = match c {
                    CmpOp::Equal => (a, b, Act::IsZero),
                    CmpOp::Greater => (a, b, Act::IsPositive),
                    CmpOp::Less => (b, a, Act::IsPositive),
                    CmpOp::GreaterOrEqual => (a, b, Act::IsNonNegative),
                    CmpOp::LessOrEqual => (b, a, Act::IsNonNegative),
                };
                let d = self.binary_temp(sc, BinOp::Sub, &a, &b, &dims, name, hoist)?;
                self.unary(g, sc, val(0), act, &d, &dims, hoist)?
            }
            // On masks of 0 and 1: and = a·b, or = [a + b != 0], xor = [a - b != 0].
            Op::Logic(l) => {
                let (a, b) = (f32_at(0)?, f32_at(1)?);
                match l {
                    LogicOp::And => {
                        let a = view::broadcast_to(&a, &dims)?;
                        let b = view::broadcast_to(&b, &dims)?;
                        let out = self.home(g, sc, val(0), &dims, hoist);
                        set(sc, 0, out.clone());
                        self.binary(sc, BinOp::Mul, out, a, b, hoist);
                    }
                    LogicOp::Or | LogicOp::Xor => {
                        let op = if *l == LogicOp::Or {
                            BinOp::Add
                        } else {
                            BinOp::Sub
                        };
                        let t = self.binary_temp(sc, op, &a, &b, &dims, name, hoist)?;
                        self.unary(g, sc, val(0), Act::NotZero, &t, &dims, hoist)?
                    }
                }
            }
            Op::Not => {
                let not = Act::Affine {
                    alpha: -1.0,
                    beta: 1.0,
                };
                self.unary(g, sc, val(0), not, &f32_at(0)?, &dims, hoist)?
            }
            // m·x + (1 - m)·y: exact for finite x and y (an infinity or NaN in the branch not
            // taken gives NaN, docs/kernels.md).
            Op::Where => {
                let m = f32_at(0)?;
                let (x, y) = (f32_at(1)?, f32_at(2)?);
                let mx = self.binary_temp(sc, BinOp::Mul, &m, &x, &dims, name, hoist)?;
                let not = Act::Affine {
                    alpha: -1.0,
                    beta: 1.0,
                };
                let mb = view::broadcast_to(&m, &dims)?;
                let nm = self.temp(sc, &format!("{name}.not"), &dims, hoist);
                let (mut o, mut xm) = (nm.clone(), mb);
                view::coalesce(&mut [&mut o, &mut xm]);
                if !o.is_empty() {
                    self.emit(
                        sc,
                        Stmt::Unary {
                            op: not,
                            out: o,
                            x: xm,
                        },
                        hoist,
                    );
                }
                let ny = self.binary_temp(sc, BinOp::Mul, &nm, &y, &dims, name, hoist)?;
                let out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                self.binary(sc, BinOp::Add, out, mx, ny, hoist);
            }
            // A product with a column of ones over the reduced axes (moved last by a view).
            Op::ReduceSum {
                noop_with_empty_axes,
                ..
            } => {
                let x = f32_at(0)?;
                let r = rank_of(&x);
                let axes = known_at(1, "reduce_sum axes")?.unwrap_or_default();
                let reduced =
                    hlstm_ir::interp::kernels::reduced_axes(r, &axes, *noop_with_empty_axes)?;
                if !reduced.contains(&true) {
                    set(sc, 0, x);
                } else {
                    let perm: Vec<usize> = (0..r)
                        .filter(|&d| !reduced[d])
                        .chain((0..r).filter(|&d| reduced[d]))
                        .collect();
                    let rows: usize = (0..r).filter(|&d| !reduced[d]).map(|d| x.dims[d]).product();
                    let k: usize = (0..r).filter(|&d| reduced[d]).map(|d| x.dims[d]).product();
                    if rows != dims.iter().product::<usize>() {
                        return Err(format!(
                            "reduce_sum of {} gives {} elements, its type says {}",
                            hlstm_ir::dims_text(&x.dims),
                            rows,
                            hlstm_ir::dims_text(&dims)
                        ));
                    }
                    let xp = view::permute(&x, &perm);
                    let xm = match view::reshape(&xp, &[rows, k]) {
                        Some(v) => v,
                        None => {
                            let c = self.materialize(sc, &xp, name);
                            view::reshape(&c, &[rows, k]).expect("a row-major copy reshapes")
                        }
                    };
                    let ones = self
                        .prog
                        .add_const(&format!("{name}.ones"), &[k, 1], vec![1.0; k]);
                    let out = self.home(g, sc, val(0), &dims, hoist);
                    set(sc, 0, out.clone());
                    let out2 = match view::reshape(&out, &[rows, 1]) {
                        Some(o) => o,
                        None => return Err("reduce_sum's result is not row-major".into()),
                    };
                    self.matmul2(sc, out2, xm, View::constant(ones, &[k, 1]), name, hoist);
                }
            }
            Op::Binary(op) => {
                let a = view::broadcast_to(&f32_at(0)?, &dims)?;
                let b = view::broadcast_to(&f32_at(1)?, &dims)?;
                let out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                self.binary(sc, *op, out, a, b, hoist);
            }
            Op::Clip => {
                let bound = |i: usize, dflt: f32| -> Result<f32, String> {
                    match locs.get(i) {
                        None | Some(None) => Ok(dflt),
                        Some(Some(Loc::F32(v))) => match self.const_data(v) {
                            Some(d) => Ok(d.first().copied().unwrap_or(dflt)),
                            None => {
                                Err("clip bounds computed at run time are not supported by the \
                                 kernel IR yet"
                                    .into())
                            }
                        },
                        Some(Some(Loc::Known(t))) => {
                            Err(format!("clip bound is {}, expected f32", t.dtype()))
                        }
                    }
                };
                let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
                // ONNX applies min, then max: min > max gives max everywhere.
                let lo = if lo > hi { hi } else { lo };
                let x = view::broadcast_to(&f32_at(0)?, &dims)?;
                let mut out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                if !out.is_empty() {
                    let mut x = x;
                    view::coalesce(&mut [&mut out, &mut x]);
                    self.emit(
                        sc,
                        Stmt::Clip {
                            out,
                            x,
                            min: lo,
                            max: hi,
                        },
                        hoist,
                    );
                }
            }
            Op::MatMul => {
                let out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                self.matmul(sc, out, f32_at(0)?, f32_at(1)?, name, hoist)?;
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let mut a = f32_at(0)?;
                let mut b = f32_at(1)?;
                if rank_of(&a) != 2 || rank_of(&b) != 2 {
                    return Err("gemm needs 2-D operands".into());
                }
                if *trans_a {
                    a = view::permute(&a, &[1, 0]);
                }
                if *trans_b {
                    b = view::permute(&b, &[1, 0]);
                }
                let c = match locs.get(2) {
                    Some(Some(_)) if *beta != 0.0 => Some(f32_at(2)?),
                    _ => None,
                };
                let out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                // alpha folds into a constant B; otherwise it scales the product.
                let mut scale = *alpha;
                if scale != 1.0
                    && let Some(mut t) = self.const_data(&b)
                {
                    t.iter_mut().for_each(|x| *x *= scale);
                    let id = self.prog.add_const(&format!("{name}.alpha_b"), &b.dims, t);
                    b = View::constant(id, &b.dims);
                    scale = 1.0;
                }
                if c.is_none() && scale == 1.0 {
                    self.matmul(sc, out, a, b, name, hoist)?;
                } else {
                    let p = self.temp(sc, &format!("{name}.ab"), &dims, hoist);
                    self.matmul(sc, p.clone(), a, b, name, hoist)?;
                    let mut acc = p;
                    if scale != 1.0 {
                        let s = self.scalar(scale, &dims);
                        let q = match c {
                            Some(_) => self.temp(sc, &format!("{name}.alpha_ab"), &dims, hoist),
                            None => out.clone(),
                        };
                        self.binary(sc, BinOp::Mul, q.clone(), acc, s, hoist);
                        acc = q;
                    }
                    if let Some(c) = c {
                        let c = view::broadcast_to(&c, &dims)?;
                        let cb = if *beta != 1.0 {
                            let s = self.scalar(*beta, &dims);
                            let t = self.temp(sc, &format!("{name}.beta_c"), &dims, hoist);
                            self.binary(sc, BinOp::Mul, t.clone(), c, s, hoist);
                            t
                        } else {
                            c
                        };
                        self.binary(sc, BinOp::Add, out, acc, cb, hoist);
                    }
                }
            }
            Op::Concat { axis } => {
                let ax = hlstm_ir::interp::kernels::norm_axis(*axis, dims.len())?;
                let out = self.home(g, sc, val(0), &dims, hoist);
                set(sc, 0, out.clone());
                let mut at = 0;
                for i in 0..locs.len() {
                    let x = f32_at(i)?;
                    if rank_of(&x) != dims.len() {
                        return Err("concat operands differ in rank".into());
                    }
                    let len = x.dims[ax];
                    let part = view::slice_axis(&out, ax, at, len, 1);
                    view::broadcast_to(&x, &part.dims)?;
                    self.copy(sc, part, x, hoist);
                    at += len;
                }
            }
            Op::Split { axis, num_outputs } => {
                let x = f32_at(0)?;
                let ax = hlstm_ir::interp::kernels::norm_axis(*axis, rank_of(&x))?;
                let sizes = known_at(1, "split sizes")?;
                let sizes = hlstm_ir::interp::kernels::split_sizes(
                    x.dims[ax],
                    sizes.as_deref(),
                    *num_outputs,
                )?;
                let mut at = 0;
                for (slot, len) in sizes.into_iter().enumerate() {
                    set(sc, slot, view::slice_axis(&x, ax, at, len, 1));
                    at += len;
                }
            }
            Op::Slice => {
                let x = f32_at(0)?;
                let starts = known_at(1, "slice starts")?.ok_or("starts are missing")?;
                let ends = known_at(2, "slice ends")?.ok_or("ends are missing")?;
                let axes = known_at(3, "slice axes")?
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = known_at(4, "slice steps")?.unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err("starts, ends, axes and steps differ in length".into());
                }
                let mut v = x.clone();
                for i in 0..starts.len() {
                    let ax = hlstm_ir::interp::kernels::norm_axis(axes[i], rank_of(&x))?;
                    let (start, len, step) = slice_range(x.dims[ax], starts[i], ends[i], steps[i])?;
                    v = view::slice_axis(&v, ax, start, len, step);
                }
                if v.dims != dims {
                    return Err(format!(
                        "slice gives {}, its type says {}",
                        hlstm_ir::dims_text(&v.dims),
                        hlstm_ir::dims_text(&dims)
                    ));
                }
                set(sc, 0, v);
            }
            Op::Gather { axis } => {
                let x = f32_at(0)?;
                let ax = hlstm_ir::interp::kernels::norm_axis(*axis, rank_of(&x))?;
                let idx_shape = match locs.get(1) {
                    Some(Some(Loc::Known(t))) => t.shape().to_vec(),
                    _ => {
                        return Err(
                            "gather with indices computed at run time is not supported by the \
                             kernel IR"
                                .into(),
                        );
                    }
                };
                let ids = known_at(1, "gather indices")?.ok_or("indices are missing")?;
                let v = self.gather(sc, &x, ax, &ids, &idx_shape, name, hoist)?;
                if v.dims != dims {
                    return Err(format!(
                        "gather gives {}, its type says {}",
                        hlstm_ir::dims_text(&v.dims),
                        hlstm_ir::dims_text(&dims)
                    ));
                }
                set(sc, 0, v);
            }
            Op::Unsqueeze | Op::Squeeze | Op::Flatten { .. } | Op::Reshape { .. } => {
                let x = f32_at(0)?;
                if x.len() != dims.iter().product::<usize>() {
                    return Err(format!(
                        "cannot reshape {} to {}",
                        hlstm_ir::dims_text(&x.dims),
                        hlstm_ir::dims_text(&dims)
                    ));
                }
                let v = match view::reshape(&x, &dims) {
                    Some(v) => v,
                    None => {
                        let m = self.materialize(sc, &x, name);
                        view::reshape(&m, &dims).expect("a row-major view reshapes")
                    }
                };
                set(sc, 0, v);
            }
            Op::Transpose { perm } => {
                let x = f32_at(0)?;
                let r = rank_of(&x);
                let p: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
                let mut seen = vec![false; r];
                if p.len() != r
                    || p.iter()
                        .any(|&i| i >= r || std::mem::replace(&mut seen[i], true))
                {
                    return Err(format!(
                        "perm {} is not a permutation of rank {r}",
                        hlstm_ir::dims_text(&p)
                    ));
                }
                set(sc, 0, view::permute(&x, &p));
            }
            Op::Expand => {
                let x = f32_at(0)?;
                set(sc, 0, view::broadcast_to(&x, &dims)?);
            }
            Op::Reverse { axis } => {
                let x = f32_at(0)?;
                let ax = hlstm_ir::interp::kernels::norm_axis(*axis, rank_of(&x))?;
                set(sc, 0, view::reverse_axis(&x, ax));
            }
            Op::Input
            | Op::Const(_)
            | Op::Recurrence(_)
            | Op::ConstantOfShape { .. }
            | Op::Shape { .. } => {
                return Err(format!(
                    "{} is not supported by the kernel IR yet",
                    node.op.kind()
                ));
            }
        }
        Ok(())
    }

    /// v = act(x), x broadcast to `dims`.
    #[allow(clippy::too_many_arguments)]
    fn unary(
        &mut self,
        g: &Graph,
        sc: &mut Scope,
        v: Value,
        act: Act,
        x: &View,
        dims: &[usize],
        hoist: bool,
    ) -> Result<(), String> {
        let mut x = view::broadcast_to(x, dims)?;
        let mut out = self.home(g, sc, v, dims, hoist);
        sc.env.insert(v, Loc::F32(out.clone()));
        if !out.is_empty() {
            view::coalesce(&mut [&mut out, &mut x]);
            self.emit(sc, Stmt::Unary { op: act, out, x }, hoist);
        }
        Ok(())
    }

    /// A new temporary holding `a op b`, both broadcast to `dims`.
    #[allow(clippy::too_many_arguments)]
    fn binary_temp(
        &mut self,
        sc: &mut Scope,
        op: BinOp,
        a: &View,
        b: &View,
        dims: &[usize],
        name: &str,
        hoist: bool,
    ) -> Result<View, String> {
        let a = view::broadcast_to(a, dims)?;
        let b = view::broadcast_to(b, dims)?;
        let t = self.temp(sc, &format!("{name}.{}", op.name()), dims, hoist);
        self.binary(sc, op, t.clone(), a, b, hoist);
        Ok(t)
    }

    fn binary(&mut self, sc: &mut Scope, op: BinOp, out: View, a: View, b: View, hoist: bool) {
        if out.is_empty() {
            return;
        }
        let (mut out, mut a, mut b) = (out, a, b);
        view::coalesce(&mut [&mut out, &mut a, &mut b]);
        self.emit(sc, Stmt::Binary { op, out, a, b }, hoist);
    }

    /// Gather along `ax` with constant indices: a view when they step evenly, otherwise copies
    /// of each evenly stepping run into a new buffer.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        sc: &mut Scope,
        x: &View,
        ax: usize,
        ids: &[i64],
        idx_shape: &[usize],
        name: &str,
        hoist: bool,
    ) -> Result<View, String> {
        let dim = x.dims[ax] as i64;
        let mut flat = Vec::with_capacity(ids.len());
        for &i in ids {
            let j = if i < 0 { i + dim } else { i };
            if j < 0 || j >= dim {
                return Err(format!("index {i} is out of range for axis of size {dim}"));
            }
            flat.push(j as usize);
        }
        let mut out_dims: Vec<usize> = x.dims[..ax].to_vec();
        out_dims.extend_from_slice(idx_shape);
        out_dims.extend_from_slice(&x.dims[ax + 1..]);
        let diff = if flat.len() >= 2 {
            flat[1] as isize - flat[0] as isize
        } else {
            0
        };
        let even = flat
            .windows(2)
            .all(|w| w[1] as isize - w[0] as isize == diff);
        let mut flat_dims: Vec<usize> = x.dims[..ax].to_vec();
        flat_dims.push(flat.len());
        flat_dims.extend_from_slice(&x.dims[ax + 1..]);
        let flat_view = if even {
            view::slice_axis(x, ax, flat.first().copied().unwrap_or(0), flat.len(), diff)
        } else {
            let t = self.temp(sc, &format!("{name}.gathered"), &flat_dims, hoist);
            let mut i = 0;
            while i < flat.len() {
                // The longest run from i with one difference.
                let mut j = i + 1;
                let d = if j < flat.len() {
                    flat[j] as isize - flat[i] as isize
                } else {
                    1
                };
                while j < flat.len() && flat[j] as isize - flat[j - 1] as isize == d {
                    j += 1;
                }
                let src = view::slice_axis(x, ax, flat[i], j - i, d);
                let dst = view::slice_axis(&t, ax, i, j - i, 1);
                self.copy(sc, dst, src, hoist);
                i = j;
            }
            t
        };
        // The flat index axis as the indices' shape.
        let mut v = View {
            dims: out_dims.clone(),
            strides: Vec::with_capacity(out_dims.len()),
            ..flat_view.clone()
        };
        v.strides.extend_from_slice(&flat_view.strides[..ax]);
        let unit = flat_view.strides[ax];
        for s in hlstm_ir::kernel::row_major_strides(idx_shape) {
            v.strides.push(s * unit);
        }
        v.strides.extend_from_slice(&flat_view.strides[ax + 1..]);
        Ok(v)
    }
}

/// Ops on run-time bools whose constant bool or integer operands are read as f32 constants.
fn runtime_logic(op: &Op) -> bool {
    matches!(op, Op::Compare(_) | Op::Logic(_) | Op::Not | Op::Where)
}

/// Why an op with a bool or integer result cannot compute it at run time, or None when it
/// can, exactly, on the f32 representation (bools as 0 and 1, integers as whole numbers):
/// comparisons, logic, casts from bools and integers and to bool, sums, selections and the ops
/// that only move data. `src` is the type of the first operand.
fn runtime_non_f32_refused(op: &Op, src: Option<DType>) -> Option<String> {
    match op {
        Op::Compare(_)
        | Op::Logic(_)
        | Op::Not
        | Op::ReduceSum { .. }
        | Op::Where
        | Op::Identity
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Gather { .. }
        | Op::Unsqueeze
        | Op::Squeeze
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Expand
        | Op::Reverse { .. } => None,
        // To bool from anything (a mask of 0 and 1); to an integer from a bool or an integer.
        Op::Cast { to: DType::Bool } => None,
        Op::Cast { .. } if src != Some(DType::F32) => None,
        Op::Cast { .. } => Some(
            "a cast to an integer type of a value computed at run time is not supported by the \
             kernel IR yet"
                .into(),
        ),
        _ => Some(
            "integer and bool values computed at run time are supported by the kernel IR only \
             from comparisons, logic, casts, reduce_sum, where and ops that move data (this \
             op computes one otherwise)"
                .into(),
        ),
    }
}

/// (first index, count, step) of an ONNX slice along an axis of `dim` elements.
fn slice_range(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(usize, usize, isize), String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    let dim = dim as i64;
    let fix = |v: i64| if v < 0 { v + dim } else { v };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, dim), fix(end).clamp(0, dim))
    } else {
        (fix(start).clamp(-1, dim - 1), fix(end).clamp(-1, dim - 1))
    };
    let len = if step > 0 {
        if e > s { (e - s + step - 1) / step } else { 0 }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok((s.max(0) as usize, len as usize, step as isize))
}

/// A readable suffix for a constant cut out of another (`[32:64,:]`, `ᵀ`).
fn view_suffix(v: &View, whole: &[usize]) -> String {
    if v.dims.len() == whole.len() && view::is_contiguous(v) {
        let strides = hlstm_ir::kernel::row_major_strides(whole);
        let mut rest = v.offset;
        let mut parts = Vec::new();
        for (d, s) in strides.iter().enumerate() {
            let at = if *s > 0 { rest / s } else { 0 };
            rest -= at * s;
            if v.dims[d] == whole[d] {
                parts.push(":".to_string());
            } else {
                parts.push(format!("{at}:{}", at as usize + v.dims[d]));
            }
        }
        return format!("[{}]", parts.join(","));
    }
    if v.dims.len() == 2 && v.strides.first() == Some(&1) {
        return ".T".to_string();
    }
    format!("[view +{} {:?}:{:?}]", v.offset, v.dims, v.strides)
}

/// Drops buffers and constants no statement, input or output uses, and renumbers the rest.
fn compact(p: &mut Program) {
    let mut used_b = vec![false; p.buffers.len()];
    let mut used_c = vec![false; p.consts.len()];
    for b in p.inputs.iter().chain(&p.outputs) {
        used_b[b.0] = true;
    }
    visit::views_mut(&mut p.body, &mut |v| match v.storage {
        Storage::Buf(b) => used_b[b.0] = true,
        Storage::Const(c) => used_c[c.0] = true,
    });
    for_each_weight(&mut p.body, &mut |c| used_c[c.0] = true);
    let mut map_b = vec![usize::MAX; p.buffers.len()];
    let mut bufs = Vec::new();
    for (i, b) in std::mem::take(&mut p.buffers).into_iter().enumerate() {
        if used_b[i] {
            map_b[i] = bufs.len();
            bufs.push(b);
        }
    }
    p.buffers = bufs;
    let mut map_c = vec![usize::MAX; p.consts.len()];
    let mut consts = Vec::new();
    for (i, c) in std::mem::take(&mut p.consts).into_iter().enumerate() {
        if used_c[i] {
            map_c[i] = consts.len();
            consts.push(c);
        }
    }
    p.consts = consts;
    for b in p
        .inputs
        .iter_mut()
        .chain(p.outputs.iter_mut())
        .chain(p.seq_lens.iter_mut())
    {
        b.0 = map_b[b.0];
    }
    visit::views_mut(&mut p.body, &mut |v| match &mut v.storage {
        Storage::Buf(b) => b.0 = map_b[b.0],
        Storage::Const(c) => c.0 = map_c[c.0],
    });
    for_each_weight(&mut p.body, &mut |c| c.0 = map_c[c.0]);
}

/// Calls `f` on the constant of every matmul weight (a constant matrix, a mask's pattern).
fn for_each_weight(body: &mut [Stmt], f: &mut impl FnMut(&mut ConstId)) {
    visit::walk_mut(body, &mut |s| {
        if let Stmt::MatMul {
            w: Weight::Const(c, _) | Weight::Masked(_, c),
            ..
        } = s
        {
            f(c)
        }
    });
}

/// Every static shape in the graph and its recurrence bodies has an element count that fits a
/// usize: the lowering multiplies dims without checking (a body input declared with a dim of
/// 2^62 overflowed there, found by the fuzzer).
fn check_sizes(g: &Graph) -> Result<(), String> {
    for n in g.nodes.node_weights() {
        for r in &n.results {
            if let Some(dims) = r.ty.concrete()
                && dims
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none()
            {
                return Err(format!(
                    "node '{}': shape {} has too many elements",
                    n.name,
                    hlstm_ir::dims_text(&dims)
                ));
            }
        }
        if let Op::Recurrence(r) = &n.op {
            check_sizes(&r.body)?;
        }
    }
    Ok(())
}

/// The elements of `a` in row-major order: one copy of the memory of an array in standard
/// layout; a matrix of other strides (a transposed weight) copied in blocks that fit the L1
/// cache, any other array one row at a time (element by element through ndarray's iterator
/// of a dynamic rank took most of the lowering's time).
fn f32_data(a: &ndarray::ArrayD<f32>) -> Vec<f32> {
    if let Some(s) = a.as_slice() {
        return s.to_vec();
    }
    if let Ok(m) = a.view().into_dimensionality::<ndarray::Ix2>() {
        const B: usize = 64;
        let (rows, cols) = m.dim();
        let mut out = vec![0.0f32; rows * cols];
        for i0 in (0..rows).step_by(B) {
            for j0 in (0..cols).step_by(B) {
                let block = m.slice(ndarray::s![i0..(i0 + B).min(rows), j0..(j0 + B).min(cols)]);
                for (di, row) in block.rows().into_iter().enumerate() {
                    let at = (i0 + di) * cols + j0;
                    for (o, v) in out[at..at + row.len()].iter_mut().zip(row) {
                        *o = *v;
                    }
                }
            }
        }
        return out;
    }
    let mut out = Vec::with_capacity(a.len());
    for row in a.rows() {
        out.extend(row.iter().copied());
    }
    out
}

#[cfg(test)]
mod copy_tests {
    use super::f32_data;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn f32_data_is_row_major_for_every_layout() {
        for (r, c) in [(1, 1), (3, 5), (64, 64), (65, 130), (200, 7)] {
            let a = ArrayD::from_shape_fn(IxDyn(&[r, c]), |i| (i[0] * 1000 + i[1]) as f32);
            assert_eq!(f32_data(&a), a.iter().copied().collect::<Vec<_>>());
            let t = a.clone().reversed_axes();
            assert_eq!(f32_data(&t), t.iter().copied().collect::<Vec<_>>());
            let s = a.slice(ndarray::s![.., ..;2]).to_owned().into_dyn();
            assert_eq!(f32_data(&s), s.iter().copied().collect::<Vec<_>>());
        }
        let a = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| {
            (i[0] * 100 + i[1] * 10 + i[2]) as f32
        });
        let p = a.permuted_axes(IxDyn(&[2, 0, 1]));
        assert_eq!(f32_data(&p), p.iter().copied().collect::<Vec<_>>());
    }
}
