//! The engines that run the kernel IR: its interpreter, the JIT and the CUDA runner. A model
//! whose input shapes are all known is lowered and compiled once, when it is built; one with
//! open dims (a symbolic batch or sequence length) is specialized inside the IR to the shapes
//! of each call's inputs and compiled on first use of those shapes, the variants cached.
//!
//! A program whose sequence length is a run-time value ([`Program::max_steps`]) takes inputs
//! of 1 to T steps along axis 0 of its per-step inputs, and streams: [`State::step`] resumes
//! where the last call left off.

use super::onehot::{Feed, fill_onehot, onehot_inputs};
use crate::runtime::{Runnable, State, TensorInfo, check_inputs};
use crate::{BuildOptions, Engine, Error, Model, Result};
use hlstm_backends::cpu::{CpuOptions, JitContext, JitProgram};
use hlstm_ir::kernel::{Program, interp::Machine};
use hlstm_ir::{DType, Graph, Tensor, dims_text};
use hlstm_passes::lower::LowerOptions;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Most specializations kept per model; the oldest is dropped past it.
const MAX_VARIANTS: usize = 8;

/// The lowering's options for a build: the strategy forced, or the choice of the engine's
/// target (the GPU's for `cuda`, the CPU's for the others), and the patterns of masked run-time
/// weights.
pub fn lower_options(opts: &BuildOptions) -> LowerOptions {
    let selector: &'static dyn hlstm_ir::kernel::KernelSelector = match opts.engine {
        Engine::Cuda => &hlstm_backends::ptx::select::SELECTOR,
        _ => &hlstm_backends::cpu::select::SELECTOR,
    };
    LowerOptions {
        strategy: opts.strategy,
        input_patterns: opts.input_patterns.clone(),
        selector: Some(selector),
    }
}

/// The kernel program the kernel engines run for a graph with static input shapes: integer
/// class inputs become one-hot f32 inputs (see `onehot.rs`), then the graph is lowered with
/// [`lower_options`]. For dumps (`hlstm_ir::kernel::print`) and tests.
pub fn kernel_program(g: &Graph, opts: &BuildOptions) -> Result<Program> {
    lower(g, opts).map(|(p, _)| p)
}

fn lower(g: &Graph, opts: &BuildOptions) -> Result<(Program, Vec<Feed>)> {
    use hlstm_ir::timing::phase;
    let (lowered, feeds) = phase("compile/one-hot inputs", || -> Result<_> {
        let mut lowered = g.clone();
        let feeds = onehot_inputs(&mut lowered)?;
        if feeds.iter().any(|f| *f != Feed::Plain) {
            // The gathers the one-hot replaced leave their tables' producers behind.
            hlstm_passes::dce::dce_graph(&mut lowered);
        }
        Ok((lowered, feeds))
    })?;
    let program = phase("compile/lower", || {
        hlstm_passes::lower::lower(&lowered, &lower_options(opts))
    })
    .map_err(Error::Lower)?;
    Ok((program, feeds))
}

/// The model compiled for one set of input shapes.
struct Variant {
    program: Program,
    /// How each input is fed to the program.
    feeds: Vec<Feed>,
    code: Code,
    /// Dims of each output for the longest sequence.
    output_dims: Vec<Vec<usize>>,
}

enum Code {
    Interp,
    Jit(JitProgram),
    Cuda(hlstm_backends::ptx::PtxModule),
}

struct Shared {
    engine: Engine,
    opts: BuildOptions,
    graph: Graph,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    /// The one variant of a model whose input shapes are all known, made when it is built.
    fixed: Option<Arc<Variant>>,
    /// For a model with open dims: the variants by the input shapes they were specialized to,
    /// newest last.
    variants: Mutex<Vec<(Vec<Vec<usize>>, Arc<Variant>)>>,
}

pub(crate) struct KernelRunnable(Arc<Shared>);

impl KernelRunnable {
    pub(crate) fn new(model: Model, opts: &BuildOptions) -> Result<Self> {
        Self::new_or_back(model, opts).map_err(|(e, _)| e)
    }

    /// [`KernelRunnable::new`]; where the model does not lower, the error and the model given
    /// back (for another engine, without a copy of its weights kept beside this attempt).
    #[allow(clippy::result_large_err)]
    pub(crate) fn new_or_back(
        model: Model,
        opts: &BuildOptions,
    ) -> std::result::Result<Self, (Error, Option<Model>)> {
        if opts.engine == Engine::Cuda && !hlstm_backends::cuda::driver_present() {
            return Err((
                Error::Unsupported(hlstm_backends::cuda::no_driver_message()),
                Some(model),
            ));
        }
        let (inputs, outputs) = (model.inputs(), model.outputs());
        let static_inputs = model.has_static_inputs();
        let warnings = model.warnings().to_vec();
        let mut shared = Shared {
            engine: opts.engine,
            opts: opts.clone(),
            inputs,
            outputs,
            fixed: None,
            variants: Mutex::new(Vec::new()),
            graph: model.into_graph(),
        };
        if static_inputs {
            let (program, feeds) = match lower(&shared.graph, opts) {
                Ok(p) => p,
                Err(e) => return Err((e, Some(Model::from_parts(shared.graph, warnings)))),
            };
            // A model of static shapes is never specialized: its graph, and the weights the
            // program holds a copy of, are not kept while the code is generated and run.
            shared.graph = Graph::default();
            shared.fixed = Some(Arc::new(
                finish(&shared, program, feeds).map_err(|e| (e, None))?,
            ));
        }
        Ok(KernelRunnable(Arc::new(shared)))
    }
}

/// Compiles a kernel program with the JIT for `opts` (its CPU, and its threads: the program is
/// split across them). Every JIT build goes through here: the engine's and the trainer's.
pub fn compile_jit(program: &Program, opts: &BuildOptions) -> Result<JitProgram> {
    let parts = if opts.threads > 1 {
        hlstm_ir::timing::phase("compile/split threads", || {
            hlstm_passes::lower::threads::split(program, opts.threads)
        })
    } else {
        Vec::new()
    };
    let cpu = CpuOptions {
        isa: opts.cpu,
        ..CpuOptions::default()
    };
    hlstm_ir::timing::phase("compile/codegen", || {
        // The engines never print the CLIF text: not kept (it costs about a tenth of the time).
        JitProgram::compile_parts_keep(program, &parts, &cpu, Default::default())
    })
    .map_err(|msg| Error::Codegen { target: "jit", msg })
}

/// [`compile_jit`], keeping what `keep` asks for (the image, for the compiled-code cache).
pub(crate) fn compile_jit_keep(
    program: &Program,
    opts: &BuildOptions,
    keep: hlstm_backends::cpu::codegen::Keep,
) -> Result<JitProgram> {
    let parts = if opts.threads > 1 {
        hlstm_passes::lower::threads::split(program, opts.threads)
    } else {
        Vec::new()
    };
    let cpu = CpuOptions {
        isa: opts.cpu,
        ..CpuOptions::default()
    };
    JitProgram::compile_parts_keep(program, &parts, &cpu, keep)
        .map_err(|msg| Error::Codegen { target: "jit", msg })
}

/// The kernel program of a graph with static input shapes, and whether every input is fed
/// as it is (no one-hot input).
pub(crate) fn lower_plain(g: &Graph, opts: &BuildOptions) -> Result<(Program, bool)> {
    let (p, feeds) = lower(g, opts)?;
    Ok((p, feeds.iter().all(|f| *f == Feed::Plain)))
}

/// Lowers and compiles a graph with static input shapes.
fn compile(sh: &Shared, g: &Graph) -> Result<Variant> {
    let (program, feeds) = lower(g, &sh.opts)?;
    finish(sh, program, feeds)
}

/// Generates the code of a lowered program.
fn finish(sh: &Shared, program: Program, feeds: Vec<Feed>) -> Result<Variant> {
    let code = match sh.engine {
        Engine::Jit => Code::Jit(compile_jit(&program, &sh.opts)?),
        Engine::Cuda => {
            let gpu = hlstm_backends::cuda::Gpu::open(0).map_err(Error::Unsupported)?;
            let sm = gpu.sm_target().map_err(Error::Unsupported)?;
            let opts = hlstm_backends::ptx::PtxOptions {
                sm,
                ..Default::default()
            };
            let m = hlstm_backends::ptx::compile(&program, &opts)
                .map_err(|msg| Error::Codegen { target: "PTX", msg })?;
            Code::Cuda(m)
        }
        _ => Code::Interp,
    };
    let output_dims = program
        .outputs
        .iter()
        .map(|b| program.buffers[b.0].dims.clone())
        .collect();
    Ok(Variant {
        program,
        feeds,
        code,
        output_dims,
    })
}

impl Shared {
    /// The variant for these inputs: the one of a static model, or the one specialized to
    /// their shapes (made on first use).
    fn variant(&self, inputs: &[Tensor]) -> Result<Arc<Variant>> {
        if let Some(v) = &self.fixed {
            return Ok(Arc::clone(v));
        }
        let mut cache = self.variants.lock().unwrap_or_else(|e| e.into_inner());
        let same = |d: &Vec<Vec<usize>>| {
            d.len() == inputs.len() && d.iter().zip(inputs).all(|(d, t)| d == t.shape())
        };
        if let Some((_, v)) = cache.iter().find(|(d, _)| same(d)) {
            return Ok(Arc::clone(v));
        }
        let dims: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        check_inputs(&self.inputs, inputs)?;
        let shapes: Vec<(String, Vec<usize>)> = self
            .inputs
            .iter()
            .zip(&dims)
            .filter(|(i, _)| i.ty.concrete().is_none())
            .map(|(i, d)| (i.name.clone(), d.clone()))
            .collect();
        let mut g = self.graph.clone();
        hlstm_ir::specialize::bind_input_shapes(&mut g, &shapes).map_err(Error::Shape)?;
        let v = Arc::new(compile(self, &g)?);
        if cache.len() >= MAX_VARIANTS {
            cache.remove(0);
        }
        cache.push((dims, Arc::clone(&v)));
        Ok(v)
    }
}

impl Runnable for KernelRunnable {
    fn engine(&self) -> Engine {
        self.0.engine
    }
    fn inputs(&self) -> &[TensorInfo] {
        &self.0.inputs
    }
    fn outputs(&self) -> &[TensorInfo] {
        &self.0.outputs
    }
    fn streamable(&self) -> bool {
        match &self.0.fixed {
            Some(v) => v.program.streamable(),
            // Decided per variant: a step call says so when its variant cannot stream.
            None => true,
        }
    }
    fn new_state(&self) -> Result<Box<dyn State>> {
        Ok(Box::new(KernelState {
            shared: Arc::clone(&self.0),
            current: None,
            resume: false,
        }))
    }
}

/// A state's working memory for one variant.
enum Ctx {
    Interp(Machine),
    Jit(JitContext),
    Cuda(Box<hlstm_backends::cuda::CudaProgram>),
}

struct KernelState {
    shared: Arc<Shared>,
    /// The variant last run and the working memory for it.
    current: Option<(Arc<Variant>, Ctx)>,
    /// Whether the next step continues a sequence.
    resume: bool,
}

impl KernelState {
    /// One call: the whole sequence, or (with `resume`) a continuation; the outputs go to
    /// `out`, whose tensors are reused when they have the call's shapes.
    fn call(&mut self, inputs: &[Tensor], resume: bool, out: &mut Vec<Tensor>) -> Result<()> {
        let sh = Arc::clone(&self.shared);
        let v = sh.variant(inputs)?;
        let same = matches!(&self.current, Some((cur, _)) if Arc::ptr_eq(cur, &v));
        if !same {
            if resume && self.resume {
                return Err(Error::Unsupported(
                    "a step with inputs of other shapes than the sequence it continues; \
                     reset first"
                        .into(),
                ));
            }
            let ctx = match &v.code {
                Code::Interp => Ctx::Interp(Machine::new(&v.program).map_err(Error::Run)?),
                Code::Jit(j) => Ctx::Jit(j.new_context()),
                Code::Cuda(m) => {
                    let gpu = hlstm_backends::cuda::Gpu::open(0).map_err(Error::Unsupported)?;
                    let prog = hlstm_backends::cuda::CudaProgram::load(gpu, m).map_err(|msg| {
                        Error::Codegen {
                            target: "cuda",
                            msg,
                        }
                    })?;
                    Ctx::Cuda(Box::new(prog))
                }
            };
            self.current = Some((Arc::clone(&v), ctx));
        }
        let p = &v.program;
        // Inputs as declared, or (a program with a run-time sequence length) fewer steps; a
        // mismatch is reported against the declared types, as every engine does.
        let steps = match feed_steps(&sh.inputs, &v, inputs) {
            Ok(steps) => steps,
            Err(e) => {
                check_inputs(&sh.inputs, inputs)?;
                return Err(e);
            }
        };
        if resume && !p.streamable() {
            return Err(Error::Unsupported(
                "this model cannot run step by step (a reverse or bidirectional recurrence, or \
                 a static sequence length)"
                    .into(),
            ));
        }
        let flat = flat_inputs(&sh.inputs, &v, inputs)?;
        let refs: Vec<&[f32]> = flat.iter().map(|v| v.as_ref()).collect();
        let Some((_, ctx)) = &mut self.current else {
            unreachable!("set above")
        };
        // `out` is reused where it already holds this call's outputs (no allocation then).
        let dims = || {
            p.outputs
                .iter()
                .zip(&v.output_dims)
                .map(|(&b, d)| dims_for_steps(p, b, d, steps))
        };
        let reusable = out.len() == p.outputs.len()
            && out.iter().zip(dims()).all(|(t, d)| {
                t.shape() == &*d && t.as_f32().is_some_and(|a| a.is_standard_layout())
            });
        if !reusable {
            *out = dims().map(|d| Tensor::zeros(DType::F32, &d)).collect();
        }
        let mut views: Vec<&mut [f32]> = out
            .iter_mut()
            .filter_map(|t| match t {
                Tensor::F32(a) => a.as_slice_mut(),
                _ => None,
            })
            .collect();
        match ctx {
            Ctx::Jit(c) => {
                let Code::Jit(j) = &v.code else {
                    unreachable!("a JIT context is made for JIT code")
                };
                j.run_in(c, &refs, &mut views, Some(steps), resume)
                    .map_err(Error::Run)?;
            }
            Ctx::Interp(m) => {
                let outs = m.run(p, &refs, Some(steps), resume).map_err(Error::Run)?;
                copy_into(&mut views, outs)?;
            }
            Ctx::Cuda(prog) => {
                prog.run_into(&refs, &mut views, steps, resume)
                    .map_err(Error::Run)?;
            }
        }
        Ok(())
    }
}

/// Copies an engine's outputs into the caller's.
fn copy_into(views: &mut [&mut [f32]], outs: Vec<Vec<f32>>) -> Result<()> {
    for (dst, src) in views.iter_mut().zip(outs) {
        if dst.len() != src.len() {
            return Err(Error::Run("an output does not fit its dims".into()));
        }
        dst.copy_from_slice(&src);
    }
    Ok(())
}

/// `State` for a type with a `resume: bool` field and `fn call(&mut self, inputs, resume,
/// outputs) -> Result<()>` that runs from the initial state or continues the last sequence
/// (the compiled engines and the cached one).
macro_rules! resumable_state {
    ($t:ty) => {
        impl $crate::runtime::State for $t {
            fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
                let mut out = Vec::new();
                self.run_into(inputs, &mut out)?;
                Ok(out)
            }
            fn run_into(&mut self, inputs: &[Tensor], out: &mut Vec<Tensor>) -> Result<()> {
                self.resume = false;
                self.call(inputs, false, out)
            }
            fn step(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
                let mut out = Vec::new();
                self.call(inputs, self.resume, &mut out)?;
                self.resume = true;
                Ok(out)
            }
            fn reset(&mut self) {
                self.resume = false;
            }
        }
    };
}
pub(crate) use resumable_state;

resumable_state!(KernelState);

/// Whether buffer `b` holds one row per step and the program takes fewer steps than the
/// longest (then axis 0 of its dims is the sequence).
fn per_step(p: &Program, b: hlstm_ir::kernel::BufId) -> bool {
    p.max_steps.is_some() && p.buffers[b.0].step_len.is_some()
}

/// The dims of buffer `b` for a call of `steps` steps.
fn dims_for_steps<'d>(
    p: &Program,
    b: hlstm_ir::kernel::BufId,
    dims: &'d [usize],
    steps: usize,
) -> Cow<'d, [usize]> {
    if per_step(p, b) && dims.first() == p.max_steps.as_ref() {
        let mut d = dims.to_vec();
        d[0] = steps;
        Cow::Owned(d)
    } else {
        Cow::Borrowed(dims)
    }
}

/// The steps a call runs: the length of axis 0 of the per-step inputs (all equal), or the
/// static one. Checks every input's dims against the program's.
fn feed_steps(infos: &[TensorInfo], v: &Variant, inputs: &[Tensor]) -> Result<usize> {
    let p = &v.program;
    if inputs.len() != p.inputs.len() {
        return Err(Error::Inputs(format!(
            "expected {} inputs, got {}",
            p.inputs.len(),
            inputs.len()
        )));
    }
    let max = p.check_steps(None).map_err(Error::Run)?;
    let mut steps = None;
    for (((info, t), &b), feed) in infos.iter().zip(inputs).zip(&p.inputs).zip(&v.feeds) {
        let mut want = p.buffers[b.0].dims.as_slice();
        if let Feed::OneHot { .. } = feed {
            // The indices lack the one-hot's last axis.
            want = &want[..want.len().saturating_sub(1)];
        }
        let got = t.shape();
        let fits = if per_step(p, b) && want.first() == Some(&max) {
            got.len() == want.len() && got[1..] == want[1..] && (1..=max).contains(&got[0]) && {
                let s = *steps.get_or_insert(got[0]);
                s == got[0]
            }
        } else {
            got == want
        };
        if !fits {
            let expected = if per_step(p, b) {
                format!("{} (or 1 to {max} steps along axis 0)", dims_text(want))
            } else {
                dims_text(want)
            };
            return Err(Error::input(
                &info.name,
                format!(
                    "has shape {}; the model was compiled for {expected}",
                    dims_text(got)
                ),
            ));
        }
    }
    Ok(steps.unwrap_or(max))
}

/// The inputs as the kernel IR takes them: f32 (borrowed where the tensor is contiguous), and
/// integer sequence lengths as f32 whole numbers.
fn flat_inputs<'t>(
    infos: &[TensorInfo],
    v: &Variant,
    inputs: &'t [Tensor],
) -> Result<Vec<Cow<'t, [f32]>>> {
    let p = &v.program;
    inputs
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if let Feed::OneHot { classes } = v.feeds[k] {
                let mut onehot = Vec::new();
                fill_onehot(&infos[k].name, t, classes, &mut onehot)?;
                return Ok(Cow::Owned(onehot));
            }
            if p.seq_lens_input() == Some(k) {
                let lens = t.cast(DType::F32);
                let a = lens.as_f32().into_iter().flat_map(|a| a.iter().copied());
                return Ok(Cow::Owned(a.collect()));
            }
            let a = t.as_f32().ok_or_else(|| {
                Error::input(
                    &infos[k].name,
                    format!(
                        "is {}: the kernel IR engines take f32 inputs only (and integer sequence \
                         lengths)",
                        t.dtype()
                    ),
                )
            })?;
            Ok(match a.as_slice() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(a.iter().copied().collect()),
            })
        })
        .collect()
}
