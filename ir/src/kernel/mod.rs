//! The kernel IR: what code generation sees. A program is a list of statements over flat f32
//! buffers addressed through strided views; the time loop is a statement whose views advance by
//! a step stride each iteration. Shapes are static here (the lowering picks them from the
//! graph), except the sequence length: a program whose time loops allow it runs any number of
//! steps up to the static one (see [`Program::max_steps`] and [`LoopRun`]); weights are
//! constants the backend may bake into code.
//!
//! Text form (`.kir`, printed by [`print`], read back by [`parse`]; constants of more than
//! 16 elements print by hash, their data in the store of [`print_with_weights`], which
//! [`parse_with_weights`] reads and `text::side_file_path` names the side file of):
//!
//! ```text
//! program "model"
//! buffer %0 "X" input 0 [8,1,32]
//! buffer %1 "Y" output 0 [8,1,64]
//! buffer %2 "h" temp [1,64]
//! const $0 "W1" [96,256] nnz 736 sha256:5f1c...
//! loop t in 0..8 {
//!   matmul %3[+0; 1x256 : 256,1] = %2[+0; 1x64 : 64,1] x $0 (sparse-unrolled)
//!   sigmoid %4[+0; 1x64 : 64,1] = %3[+0; 1x64 : 256,1]
//!   copy %1[+0 +64t; 1x64 : 64,1] = %4[+0; 1x64 : 64,1]
//! }
//! ```

pub mod interp;
mod parse;
mod print;
pub mod select;
pub mod verify;
pub mod visit;

pub use parse::{parse, parse_with_weights};
pub use print::{print, print_stmt, print_with_weights};
pub use select::KernelSelector;
pub use verify::verify;

use crate::op::{Act, BinOp};
use std::sync::Arc;

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub usize);

/// Index of a constant in [`Program::consts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConstId(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// The program's input number k (caller-owned, read-only).
    Input(usize),
    /// The program's output number k (caller-owned, written).
    Output(usize),
    /// Scratch or carried state, owned by the context.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub kind: BufKind,
    /// Logical dims (for printing and for inputs/outputs); the buffer holds their product.
    pub dims: Vec<usize>,
    /// Elements per time step, for a buffer laid out step after step (time outermost) in a
    /// program with a run-time sequence length: a call with `steps` steps uses (and the caller
    /// passes, for inputs and outputs) the first `steps * step_len` elements.
    pub step_len: Option<usize>,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A constant tensor (a weight), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: ConstData,
}

/// A constant's elements, row-major, shared and read-only. The lowering shares a graph
/// constant's own storage where it is already row-major, so that a weight of many megabytes is
/// not held twice while the graph and its program both live (BENCHMARKS.md, "Memory").
#[derive(Clone)]
pub struct ConstData(ConstRepr);

#[derive(Clone)]
enum ConstRepr {
    Own(Arc<Vec<f32>>),
    /// An f32 graph constant in standard layout (checked when made).
    Graph(Arc<crate::Constant>),
}

impl ConstData {
    pub fn new(data: Vec<f32>) -> ConstData {
        ConstData(ConstRepr::Own(Arc::new(data)))
    }

    /// The elements of a graph constant in place, where it is an f32 tensor in standard layout.
    pub fn of_graph(c: &Arc<crate::Constant>) -> Option<ConstData> {
        c.value.as_f32()?.as_slice()?;
        Some(ConstData(ConstRepr::Graph(c.clone())))
    }
}

impl std::ops::Deref for ConstData {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.0 {
            ConstRepr::Own(v) => v,
            // `of_graph` checked the layout, and a graph constant is never mutated.
            ConstRepr::Graph(c) => c.value.as_f32().and_then(|a| a.as_slice()).unwrap_or(&[]),
        }
    }
}

impl std::fmt::Debug for ConstData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for ConstData {
    fn eq(&self, other: &ConstData) -> bool {
        **self == **other
    }
}

impl Const {
    pub fn nonzeros(&self) -> usize {
        self.data.iter().filter(|v| **v != 0.0).count()
    }
}

/// Where a view's elements live: a buffer, or a constant (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    Buf(BufId),
    Const(ConstId),
}

/// A strided view of a buffer or constant: element `(i_0, ..., i_{r-1})` at step `t` of the innermost
/// enclosing loop lives at `offset + t * step_stride + sum(i_d * strides[d])`. A stride of 0
/// broadcasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub storage: Storage,
    pub offset: isize,
    pub dims: Vec<usize>,
    pub strides: Vec<isize>,
    /// Added per iteration of the innermost enclosing loop (0 outside loops, or for values that
    /// are the same every step).
    pub step_stride: isize,
}

impl View {
    /// A contiguous row-major view of a whole buffer.
    pub fn whole(buf: BufId, dims: &[usize]) -> View {
        View {
            storage: Storage::Buf(buf),
            offset: 0,
            dims: dims.to_vec(),
            strides: row_major_strides(dims),
            step_stride: 0,
        }
    }
    /// A contiguous row-major view of a whole constant.
    pub fn constant(c: ConstId, dims: &[usize]) -> View {
        View {
            storage: Storage::Const(c),
            offset: 0,
            dims: dims.to_vec(),
            strides: row_major_strides(dims),
            step_stride: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn row_major_strides(dims: &[usize]) -> Vec<isize> {
    let mut s = vec![0isize; dims.len()];
    let mut acc = 1isize;
    for d in (0..dims.len()).rev() {
        s[d] = acc;
        // Saturating: a buffer too large for its strides is the verifier's error to report.
        acc = acc.saturating_mul(dims[d] as isize);
    }
    s
}

/// How a matmul with a constant weight is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Dense tiled SIMD loops reading the weight from read-only data.
    Dense,
    /// One FMA per nonzero weight, the weight an immediate: no loop, no index.
    SparseUnrolled,
    /// A compressed-row loop over the nonzeros (values and column indices in read-only data).
    SparseCsr,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [
        Strategy::Dense,
        Strategy::SparseUnrolled,
        Strategy::SparseCsr,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dense => "dense",
            Strategy::SparseUnrolled => "sparse-unrolled",
            Strategy::SparseCsr => "sparse-csr",
        }
    }
}

/// The right operand of a matmul.
#[derive(Clone, Debug, PartialEq)]
pub enum Weight {
    /// A constant [K, N] matrix.
    Const(ConstId, Strategy),
    /// A run-time [K, N] matrix (a weight given as a model input), read by a dense kernel.
    View(View),
    /// A run-time [K, N] matrix whose zeros are known when compiling: it must be zero wherever
    /// the constant [K, N] pattern is (the trainer's masked weights: values change every step,
    /// the mask only between grow and prune rounds). A compressed-row kernel whose structure
    /// the pattern fixes reads the values at the pattern's nonzeros at run time (and, as
    /// padding, some of its zeros).
    Masked(View, ConstId),
}

impl Weight {
    /// The run-time view a weight reads, if any.
    pub fn view(&self) -> Option<&View> {
        match self {
            Weight::Const(..) => None,
            Weight::View(v) | Weight::Masked(v, _) => Some(v),
        }
    }
    pub fn view_mut(&mut self) -> Option<&mut View> {
        match self {
            Weight::Const(..) => None,
            Weight::View(v) | Weight::Masked(v, _) => Some(v),
        }
    }
}

/// How many times a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoopRun {
    /// `trip` times.
    #[default]
    Fixed,
    /// The run-time sequence length `steps` times (1 <= steps <= trip).
    Steps,
    /// Once, with t = steps - 1: a statement on the last step of the sequence.
    LastStep,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// out[M, N] = a[M, K] · w[K, N] (views of rank 2). With `rows_per_step` = Some(r), the
    /// rows are r per time step and a call runs `steps * r` of them (M = max_steps * r is the
    /// most).
    MatMul {
        out: View,
        a: View,
        w: Weight,
        rows_per_step: Option<usize>,
    },
    /// out = act(x), elementwise over out's dims (x broadcast to them by its strides).
    Unary { op: Act, out: View, x: View },
    /// out = a op b, elementwise; a and b are broadcast to out's dims by their strides.
    Binary {
        op: BinOp,
        out: View,
        a: View,
        b: View,
    },
    /// out = clamp(x, min, max).
    Clip {
        out: View,
        x: View,
        min: f32,
        max: f32,
    },
    /// out = x (any strides: slices, concats, transposes, broadcasts are copies of views; x may
    /// be a constant).
    Copy { out: View, x: View },
    /// Softmax (or, with `log`, log-softmax) of x over the last dim, for every position of the
    /// other dims: x - max is exponentiated and summed, so no exp overflows. out and x have the
    /// same dims; out is x itself or does not overlap it.
    Softmax { out: View, x: View, log: bool },
    /// Runs `body` for t in 0..trip (or trip-1 down to 0 when `reverse`); views inside use t.
    /// `run` says whether the count is `trip` or the run-time sequence length.
    Loop {
        trip: usize,
        reverse: bool,
        run: LoopRun,
        body: Vec<Stmt>,
    },
    /// Statements that start a sequence (initial state): skipped by a call that resumes a
    /// sequence (the streaming step API).
    Start { body: Vec<Stmt> },
    /// Every thread of a multi-threaded program waits here until all have arrived (each thread
    /// runs its own program with the same barriers; see `passes::lower::threads`).
    Barrier,
}

impl Stmt {
    /// The view a statement writes (None for loops, `start` blocks and barriers).
    pub fn output(&self) -> Option<&View> {
        match self {
            Stmt::MatMul { out, .. }
            | Stmt::Unary { out, .. }
            | Stmt::Binary { out, .. }
            | Stmt::Clip { out, .. }
            | Stmt::Copy { out, .. }
            | Stmt::Softmax { out, .. } => Some(out),
            Stmt::Loop { .. } | Stmt::Start { .. } | Stmt::Barrier => None,
        }
    }

    /// The views a statement reads (a run-time weight included; none for loops, `start` blocks
    /// and barriers, whose bodies are statements of their own).
    pub fn inputs(&self) -> Vec<&View> {
        match self {
            Stmt::MatMul { a, w, .. } => {
                let mut r = vec![a];
                r.extend(w.view());
                r
            }
            Stmt::Unary { x, .. }
            | Stmt::Clip { x, .. }
            | Stmt::Copy { x, .. }
            | Stmt::Softmax { x, .. } => vec![x],
            Stmt::Binary { a, b, .. } => vec![a, b],
            Stmt::Loop { .. } | Stmt::Start { .. } | Stmt::Barrier => vec![],
        }
    }
}

impl View {
    /// The element offsets the view touches at step `t`, in row-major order of its dims.
    pub fn offsets(&self, t: usize) -> Vec<isize> {
        let mut out = Vec::with_capacity(self.len());
        self.offsets_into(t, &mut out);
        out
    }

    /// [`View::offsets`] appended to `out` (which a caller may reuse).
    pub fn offsets_into(&self, t: usize, out: &mut Vec<isize>) {
        let base = self.offset + self.step_stride * t as isize;
        let n: usize = self.dims.iter().product();
        let mut idx = vec![0usize; self.dims.len()];
        for _ in 0..n {
            let inner: isize = idx
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| *i as isize * s)
                .sum();
            out.push(base + inner);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub consts: Vec<Const>,
    /// Buffers of the inputs and outputs, in the model's order.
    pub inputs: Vec<BufId>,
    pub outputs: Vec<BufId>,
    pub body: Vec<Stmt>,
    /// Some(T): the program runs any sequence length from 1 to T, given at run time (its time
    /// loops are [`LoopRun::Steps`]); None: only the static one.
    pub max_steps: Option<usize>,
    /// Why the sequence length is static, when it is (for error messages and docs).
    pub static_steps_reason: Option<String>,
    /// The input buffer holding the sequence lengths, when the model takes them at run time
    /// (ONNX LSTM's `sequence_lens` as a graph input): f32 whole numbers, all equal, at most
    /// the (static) time axis. The recurrences that read them run their loops
    /// [`LoopRun::Steps`] times, with `steps` = that length ([`Program::loop_steps`]); their
    /// stacked outputs are zero past it. No statement reads the buffer.
    pub seq_lens: Option<BufId>,
    /// Set when the batch is chosen per call (up to the compiled one): each input's and
    /// output's batch axis (None: it has none), checked by `passes::lower::batch` to keep the
    /// batch elements independent, so a smaller batch can run zero-padded.
    pub batch_axes: Option<BatchAxes>,
}

/// The batch axis of each input and output of a program (see [`Program::batch_axes`]).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BatchAxes {
    /// The compiled (largest) batch.
    pub max: usize,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<Option<usize>>,
}

/// The number of steps sequence lengths `lens` ask for in a sequence of `steps`: their common
/// value, which must be a whole number from 0 to `steps` (an empty batch runs `steps`).
pub fn steps_from_lengths(lens: &[f32], steps: usize) -> Result<usize, String> {
    let Some(&first) = lens.first() else {
        return Ok(steps);
    };
    if let Some(bad) = lens.iter().find(|&&l| l != first) {
        return Err(format!(
            "sequence lengths {first} and {bad} differ: the compiled model runs one length for \
             the whole batch"
        ));
    }
    if !(first >= 0.0 && first <= steps as f32 && first.fract() == 0.0) {
        return Err(format!(
            "sequence length {first} is not a whole number from 0 to {steps}"
        ));
    }
    Ok(first as usize)
}

impl Program {
    pub fn add_buffer(&mut self, name: &str, kind: BufKind, dims: &[usize]) -> BufId {
        self.buffers.push(Buffer {
            name: name.to_string(),
            kind,
            dims: dims.to_vec(),
            step_len: None,
        });
        BufId(self.buffers.len() - 1)
    }
    pub fn add_const(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> ConstId {
        self.add_const_data(name, dims, ConstData::new(data))
    }

    /// [`Program::add_const`] of elements that may be shared (a graph constant's).
    pub fn add_const_data(&mut self, name: &str, dims: &[usize], data: ConstData) -> ConstId {
        self.consts.push(Const {
            name: name.to_string(),
            dims: dims.to_vec(),
            data,
        });
        ConstId(self.consts.len() - 1)
    }

    /// Whether a call may resume a sequence where the previous call left it (streaming, one
    /// step at a time): a run-time sequence length, time loops that all run forward, and the
    /// initial state in [`Stmt::Start`] blocks.
    pub fn streamable(&self) -> bool {
        self.max_steps.is_some()
            && self.body.iter().all(|s| match s {
                Stmt::Loop { reverse, .. } => !reverse,
                _ => true,
            })
    }

    /// The position in [`Program::inputs`] of the sequence-lengths input, if any.
    pub fn seq_lens_input(&self) -> Option<usize> {
        let b = self.seq_lens?;
        self.inputs.iter().position(|x| *x == b)
    }

    /// The count of the [`LoopRun::Steps`] loops for a call of `steps` steps with these inputs:
    /// `steps`, or the length the sequence-lengths input gives.
    pub fn loop_steps(&self, inputs: &[&[f32]], steps: usize) -> Result<usize, String> {
        match self.seq_lens_input() {
            Some(k) => {
                let lens = inputs
                    .get(k)
                    .ok_or_else(|| format!("input {k} (the sequence lengths) is missing"))?;
                steps_from_lengths(lens, steps)
            }
            None => Ok(steps),
        }
    }

    /// Elements of input or output buffer `b` for a call of `steps` steps.
    pub fn len_for_steps(&self, b: BufId, steps: usize) -> usize {
        let buf = &self.buffers[b.0];
        match (self.max_steps, buf.step_len) {
            (Some(_), Some(step)) => steps * step,
            _ => buf.len(),
        }
    }

    /// Multiply-adds on constant weights per run, counting only nonzero weights (what the
    /// sparse strategies execute), and on run-time weights densely. Loop bodies count once per
    /// iteration.
    pub fn weight_macs(&self) -> (u64, u64) {
        let mut acc = (0, 0);
        visit::walk(&self.body, &mut |st, site| {
            if let Stmt::MatMul { out, a, w, .. } = st {
                let trips = site.iterations;
                let m = out.dims[0] as u64;
                let k = *a.dims.last().unwrap_or(&1) as u64;
                let n = *out.dims.last().unwrap_or(&1) as u64;
                acc.0 += trips * m * k * n;
                acc.1 += trips
                    * match w {
                        Weight::Const(c, _) => m * self.consts[c.0].nonzeros() as u64,
                        Weight::View(_) => m * k * n,
                        Weight::Masked(_, c) => m * self.consts[c.0].nonzeros() as u64,
                    };
            }
        });
        acc
    }

    /// The sequence length of a program without a run-time one: the trip of its first
    /// top-level loop, or 1.
    pub fn static_steps(&self) -> usize {
        self.body
            .iter()
            .find_map(|s| match s {
                Stmt::Loop { trip, .. } => Some(*trip),
                _ => None,
            })
            .unwrap_or(1)
    }

    /// The most steps a call runs: [`Program::max_steps`], or the static length.
    pub fn longest_steps(&self) -> usize {
        self.max_steps.unwrap_or_else(|| self.static_steps())
    }

    /// The number of steps a call runs: `steps` checked against the program, or its longest.
    pub fn check_steps(&self, steps: Option<usize>) -> Result<usize, String> {
        let fixed = self.static_steps();
        match (self.max_steps, steps) {
            (Some(max), None) => Ok(max),
            (Some(max), Some(s)) if (1..=max).contains(&s) => Ok(s),
            (Some(max), Some(s)) => Err(format!(
                "a sequence of {s} steps: this program runs 1 to {max} steps"
            )),
            (None, None) => Ok(fixed),
            (None, Some(s)) if s == fixed => Ok(s),
            (None, Some(s)) => Err(format!(
                "a sequence of {s} steps: this program runs exactly {fixed} ({})",
                self.static_steps_reason
                    .as_deref()
                    .unwrap_or("static shapes")
            )),
        }
    }
}
