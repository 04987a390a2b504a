//! The JIT: a program compiled in memory, with its workspace allocated once.

use super::codegen::{BARRIER_SYMBOL, Keep, ThreadPart, define_program_part, program_signature};
use super::image::{CodeImage, StepsImage, Target, module_reloc};
use super::pool::{Entry, Job, Pool, Runtime, call, hlstm_barrier};
use super::{CpuIsa, CpuOptions, build_isa};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use hlstm_ir::kernel::Program;
use std::sync::Mutex;

/// Owns the JIT module (code and read-only data) and frees its memory on drop.
struct Code(Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is never used again except to free its
// memory in `drop` (which needs `&mut self`, so no other reference exists then); the code and
// data it owns are immutable.
unsafe impl Send for Code {}
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the only function pointer into this memory lives in the JitProgram
            // being dropped.
            unsafe { m.free_memory() };
        }
    }
}

/// Address space each JIT module reserves beyond 16 bytes a constant's byte: room for the
/// code, the workspace layout's tables and alignment.
const ARENA_BASE: usize = 256 << 20;
/// The most a module reserves: its code and constants must stay within a 32-bit PC-relative
/// reach of each other.
const ARENA_MAX: usize = (7 << 30) / 4;

/// The state of one caller of a [`JitProgram`]: its workspace (the recurrent state lives
/// there between streaming calls), the pointer arrays passed to the code and, for a program
/// split across threads, the worker threads. A program is shared; each thread that runs it
/// concurrently has a context of its own ([`JitProgram::new_context`]).
pub struct JitContext {
    /// The program this context was made for ([`JitProgram::id`]).
    program: u64,
    work: Box<[f32]>,
    ins: Box<[*const f32]>,
    outs: Box<[*mut f32]>,
    /// With more than one thread: the pool that runs the threads' parts.
    pool: Option<Pool>,
}

// SAFETY: the pointer arrays are only written and read inside `run_in`, which holds the
// context mutably, and point to the caller's slices only for the duration of that call.
unsafe impl Send for JitContext {}

/// Distinguishes programs, so that a context is never run with code it was not sized for.
static NEXT_PROGRAM_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A kernel program compiled to native code in memory. It is `Send + Sync`: several threads
/// may run it at once, each with its own [`JitContext`]; [`JitProgram::run`] uses a built-in
/// context behind a lock.
pub struct JitProgram {
    id: u64,
    /// One entry per thread part (one for a single-threaded program).
    entries: Vec<Entry>,
    work_len: usize,
    /// The context of [`JitProgram::run`] and [`JitProgram::run_steps`].
    ctx: Mutex<JitContext>,
    /// The number of inputs and outputs.
    n_in: usize,
    n_out: usize,
    steps: StepsInfo,
    /// The program as bytes, when compiled with [`Keep::image`].
    image: Option<Result<CodeImage, String>>,
    clif: String,
    fma: bool,
    rodata_len: usize,
    asm: Option<String>,
    code_len: usize,
    // Last: dropped after `entry` can no longer be called.
    _code: Code,
}

/// What a call needs to know about the sequence length, from the program.
struct StepsInfo {
    /// The longest sequence (the static one when not dynamic).
    max: usize,
    dynamic: bool,
    streamable: bool,
    reason: Option<String>,
    /// The position of the sequence-lengths input ([`Program::seq_lens`]), if any.
    seq_lens: Option<usize>,
    /// Per input and output: (whole length, elements per step when laid out by step).
    inputs: Vec<(usize, Option<usize>)>,
    outputs: Vec<(usize, Option<usize>)>,
}

impl StepsInfo {
    fn of(p: &Program) -> StepsInfo {
        let max = p.check_steps(None).unwrap_or(1);
        let dynamic = p.max_steps.is_some();
        let lens = |ids: &[hlstm_ir::kernel::BufId]| {
            ids.iter()
                .map(|b| {
                    let buf = &p.buffers[b.0];
                    (buf.len(), if dynamic { buf.step_len } else { None })
                })
                .collect()
        };
        StepsInfo {
            max,
            dynamic,
            streamable: p.streamable(),
            reason: p.static_steps_reason.clone(),
            seq_lens: p.seq_lens_input(),
            inputs: lens(&p.inputs),
            outputs: lens(&p.outputs),
        }
    }

    fn image(&self) -> StepsImage {
        StepsImage {
            max: self.max,
            dynamic: self.dynamic,
            streamable: self.streamable,
            reason: self.reason.clone(),
            seq_lens: self.seq_lens,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        }
    }

    fn from_image(s: &StepsImage) -> StepsInfo {
        StepsInfo {
            max: s.max,
            dynamic: s.dynamic,
            streamable: s.streamable,
            reason: s.reason.clone(),
            seq_lens: s.seq_lens,
            inputs: s.inputs.clone(),
            outputs: s.outputs.clone(),
        }
    }

    fn check(&self, steps: Option<usize>) -> Result<usize, String> {
        match steps {
            None => Ok(self.max),
            Some(s) if self.dynamic && (1..=self.max).contains(&s) => Ok(s),
            Some(s) if !self.dynamic && s == self.max => Ok(s),
            Some(s) if self.dynamic => Err(format!(
                "a sequence of {s} steps: this program runs 1 to {} steps",
                self.max
            )),
            Some(s) => Err(format!(
                "a sequence of {s} steps: this program runs exactly {} ({})",
                self.max,
                self.reason.as_deref().unwrap_or("static shapes")
            )),
        }
    }

    fn len(&self, (whole, per_step): (usize, Option<usize>), steps: usize) -> usize {
        per_step.map_or(whole, |n| n * steps)
    }
}

/// Whether the machine running us can execute code for `isa`.
fn host_supports(isa: CpuIsa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            CpuIsa::Native => true,
            CpuIsa::X86_64V2 => {
                std::is_x86_feature_detected!("sse4.2") && std::is_x86_feature_detected!("popcnt")
            }
            CpuIsa::X86_64V3 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("bmi1")
                    && std::is_x86_feature_detected!("bmi2")
                    && std::is_x86_feature_detected!("lzcnt")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        isa == CpuIsa::Native
    }
}

/// Appends the compiled function to `/tmp/perf-PID.map`, the file `perf report` reads to name
/// JIT code (best effort: a profiling aid, enabled by `HLSTMC_PERF_MAP`).
fn write_perf_map(ptr: *const u8, len: usize, name: &str) {
    use std::io::Write;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{:x} {len:x} hlstm_program[{name}]", ptr as usize);
    }
}

impl JitContext {
    fn new(program: u64, entries: &[Entry], work_len: usize, ins: usize, outs: usize) -> Self {
        JitContext {
            program,
            work: vec![0.0f32; work_len].into_boxed_slice(),
            ins: vec![std::ptr::null(); ins].into_boxed_slice(),
            outs: vec![std::ptr::null_mut(); outs].into_boxed_slice(),
            pool: (entries.len() > 1).then(|| Pool::new(entries.to_vec())),
        }
    }
}

impl JitProgram {
    /// Generates and compiles `p`, and allocates its workspace.
    pub fn compile(p: &Program, opts: &CpuOptions) -> Result<JitProgram, String> {
        Self::compile_opts(p, opts, false)
    }

    /// [`JitProgram::compile`], keeping the disassembly of the compiled code when `asm`.
    pub fn compile_opts(p: &Program, opts: &CpuOptions, asm: bool) -> Result<JitProgram, String> {
        if !host_supports(opts.isa) {
            return Err(format!(
                "this machine cannot run {} code in the JIT",
                opts.isa.name()
            ));
        }
        Self::compile_parts(p, &[], opts, asm)
    }

    /// Compiles a program split across threads (`passes::lower::threads::split` makes
    /// `parts`, one per thread; empty or one: single-threaded) and starts the worker threads,
    /// which live as long as the program.
    pub fn compile_parts(
        p: &Program,
        parts: &[Program],
        opts: &CpuOptions,
        asm: bool,
    ) -> Result<JitProgram, String> {
        Self::compile_parts_keep(p, parts, opts, Keep::text(asm))
    }

    /// [`JitProgram::compile_parts`], keeping the CLIF text ([`JitProgram::clif`]) and the
    /// disassembly only as `keep` says: an engine that never prints them skips their cost.
    pub fn compile_parts_keep(
        p: &Program,
        parts: &[Program],
        opts: &CpuOptions,
        keep: Keep,
    ) -> Result<JitProgram, String> {
        if !host_supports(opts.isa) {
            return Err(format!(
                "this machine cannot run {} code in the JIT",
                opts.isa.name()
            ));
        }
        let const_bytes: usize = std::iter::once(p)
            .chain(parts)
            .flat_map(|q| q.consts.iter())
            .map(|c| c.data.len() * 4)
            .sum();
        let mut code = Code(Some(new_module(opts, const_bytes)?));
        let module = code.0.as_mut().expect("module");
        let threads = parts.len().max(1);
        let mut compiled = Vec::with_capacity(threads);
        if threads == 1 {
            compiled.push(define_program_part(
                module,
                p,
                "hlstm_program",
                Linkage::Export,
                keep,
                None,
            )?);
        } else {
            for (index, part) in parts.iter().enumerate() {
                let t = ThreadPart {
                    index,
                    count: threads,
                    whole: p,
                    barrier: BARRIER_SYMBOL,
                };
                let name = format!("hlstm_program_{index}");
                let k = Keep {
                    asm: keep.asm && index == 0,
                    ..keep
                };
                compiled.push(define_program_part(
                    module,
                    part,
                    &name,
                    Linkage::Export,
                    k,
                    Some(t),
                )?);
            }
        }
        hlstm_ir::timing::phase("compile/codegen/finalize", || module.finalize_definitions())
            .map_err(|e| format!("cranelift: {e}"))?;
        let mut entries = Vec::with_capacity(threads);
        for c in &compiled {
            let ptr = module.get_finalized_function(c.func_id);
            if std::env::var_os("HLSTMC_PERF_MAP").is_some() {
                write_perf_map(ptr, c.code_len, &p.name);
            }
            // SAFETY: the function was defined with `program_signature` (six 64-bit
            // parameters, no results) in the target's default calling convention, which is
            // "C" on this host.
            entries.push(unsafe { std::mem::transmute::<*const u8, Entry>(ptr) });
        }
        let code_len: usize = compiled.iter().map(|x| x.code_len).sum();
        let rodata_len: usize = compiled.iter().map(|x| x.rodata_len).sum();
        let steps = StepsInfo::of(p);
        let image = keep.image.then(|| -> Result<CodeImage, String> {
            let funcs = compiled
                .iter_mut()
                .map(|c| c.image.take().unwrap_or(Err("not imaged".into())))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(CodeImage {
                funcs,
                work_len: compiled[0].work_len,
                fma: compiled[0].fma,
                code_len,
                rodata_len,
                steps: steps.image(),
            })
        });
        let c = compiled.swap_remove(0);
        let work_len = c.work_len.max(1);
        let mut j = Self::assemble(entries, work_len, steps, c.fma, code_len, rodata_len, code);
        j.clif = c.clif;
        j.asm = c.asm;
        j.image = image;
        Ok(j)
    }

    /// The program's parts put together, with a context for [`JitProgram::run`].
    fn assemble(
        entries: Vec<Entry>,
        work_len: usize,
        steps: StepsInfo,
        fma: bool,
        code_len: usize,
        rodata_len: usize,
        code: Code,
    ) -> JitProgram {
        let id = NEXT_PROGRAM_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (n_in, n_out) = (steps.inputs.len(), steps.outputs.len());
        let ctx = JitContext::new(id, &entries, work_len, n_in, n_out);
        JitProgram {
            id,
            entries,
            work_len,
            ctx: Mutex::new(ctx),
            n_in,
            n_out,
            steps,
            image: None,
            clif: String::new(),
            fma,
            rodata_len,
            asm: None,
            code_len,
            _code: code,
        }
    }

    /// The program as bytes, when it was compiled with [`Keep::image`]; an error says why
    /// there is none (not asked for, or code an image cannot hold).
    pub fn image(&self) -> Result<&CodeImage, String> {
        match &self.image {
            Some(Ok(i)) => Ok(i),
            Some(Err(e)) => Err(e.clone()),
            None => Err("compiled without an image".into()),
        }
    }

    /// Loads a program from its image ([`JitProgram::image`]) for the CPU `opts` names, which
    /// must be the one it was compiled for: its code and data are laid out in a fresh module,
    /// relocated and finalized, without compiling anything.
    pub fn from_image(img: &CodeImage, opts: &CpuOptions) -> Result<JitProgram, String> {
        if !host_supports(opts.isa) {
            return Err(format!(
                "this machine cannot run {} code in the JIT",
                opts.isa.name()
            ));
        }
        let data_bytes: usize = img
            .funcs
            .iter()
            .filter_map(|f| f.rodata.as_ref())
            .map(Vec::len)
            .sum();
        // The arena is sized as for the compiled program (16 bytes per constant byte).
        let mut code = Code(Some(new_module(opts, data_bytes)?));
        let module = code.0.as_mut().expect("module");
        let sig = program_signature(module);
        let mut ids = Vec::with_capacity(img.funcs.len());
        for f in &img.funcs {
            let id = module
                .declare_function(&f.name, Linkage::Export, &sig)
                .map_err(|e| e.to_string())?;
            if let Some(d) = &f.rodata {
                let did = module
                    .declare_data(&format!("{}_rodata", f.name), Linkage::Local, false, false)
                    .map_err(|e| e.to_string())?;
                let mut desc = cranelift_module::DataDescription::new();
                desc.define(d.clone().into_boxed_slice());
                desc.set_align(64);
                module.define_data(did, &desc).map_err(|e| e.to_string())?;
            }
            ids.push(id);
        }
        let imports: std::collections::BTreeSet<&str> = img
            .funcs
            .iter()
            .flat_map(|f| &f.relocs)
            .filter_map(|r| match &r.target {
                Target::Import(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for n in imports {
            // The symbols `new_module` gives the JIT; a relocation needs only the address, so
            // the declaration's signature does not matter.
            let provided =
                n == BARRIER_SYMBOL || super::wide::jit_symbols().iter().any(|(s, _)| *s == n);
            if !provided {
                return Err(format!(
                    "the image imports {n}, which the JIT does not provide"
                ));
            }
            let bsig = module.make_signature();
            module
                .declare_function(n, Linkage::Import, &bsig)
                .map_err(|e| e.to_string())?;
        }
        for (f, &id) in img.funcs.iter().zip(&ids) {
            let relocs = f
                .relocs
                .iter()
                .map(|r| module_reloc(module, r))
                .collect::<Result<Vec<_>, String>>()?;
            module
                .define_function_bytes(id, f.alignment, &f.code, &relocs)
                .map_err(|e| format!("cranelift: {e}"))?;
        }
        module
            .finalize_definitions()
            .map_err(|e| format!("cranelift: {e}"))?;
        let entries = ids
            .iter()
            .map(|&id| {
                let ptr = module.get_finalized_function(id);
                // SAFETY: as in `compile_parts_keep`: the bytes are those Cranelift made for
                // a function of `program_signature`.
                unsafe { std::mem::transmute::<*const u8, Entry>(ptr) }
            })
            .collect();
        let mut j = Self::assemble(
            entries,
            img.work_len.max(1),
            StepsInfo::from_image(&img.steps),
            img.fma,
            img.code_len,
            img.rodata_len,
            code,
        );
        j.image = None;
        Ok(j)
    }

    /// Runs the program on a whole sequence (its longest, when its length is a run-time one):
    /// checks the number and lengths of inputs and outputs, then calls the generated code
    /// (which allocates nothing). Concurrent calls on one program wait for each other (they
    /// share the workspace).
    pub fn run(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), String> {
        self.run_steps(inputs, outputs, None, false)
    }

    /// Runs `steps` time steps (None: the longest), on inputs and outputs of that many steps
    /// ([`JitProgram::input_len`]); with `resume`, continues the sequence the previous call
    /// left in the workspace (streaming; see [`JitProgram::streamable`]). Uses the program's
    /// built-in context: concurrent calls wait for each other.
    pub fn run_steps(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        steps: Option<usize>,
        resume: bool,
    ) -> Result<(), String> {
        let mut ctx = self.ctx.lock().unwrap_or_else(|e| e.into_inner());
        self.run_in(&mut ctx, inputs, outputs, steps, resume)
    }

    /// A new context for this program: a workspace of its own (and worker threads, for a
    /// program split across threads), so that callers on several threads run at once.
    pub fn new_context(&self) -> JitContext {
        JitContext::new(self.id, &self.entries, self.work_len, self.n_in, self.n_out)
    }

    /// [`JitProgram::run_steps`] in a context of this program's ([`JitProgram::new_context`]).
    pub fn run_in(
        &self,
        ctx: &mut JitContext,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        steps: Option<usize>,
        resume: bool,
    ) -> Result<(), String> {
        if ctx.program != self.id {
            return Err("this context belongs to another compiled program".into());
        }
        let steps = self.steps.check(steps)?;
        if resume && !self.steps.streamable {
            return Err(
                "this model cannot run step by step (a reverse or bidirectional \
                        recurrence, or a static sequence length)"
                    .into(),
            );
        }
        if inputs.len() != self.n_in {
            return Err(format!(
                "expected {} inputs, got {}",
                self.n_in,
                inputs.len()
            ));
        }
        if outputs.len() != self.n_out {
            return Err(format!(
                "expected {} outputs, got {}",
                self.n_out,
                outputs.len()
            ));
        }
        for (k, x) in inputs.iter().enumerate() {
            let n = self.input_len(k, steps);
            if x.len() != n {
                return Err(format!("input {k} has {} elements, expected {n}", x.len()));
            }
        }
        for (k, x) in outputs.iter().enumerate() {
            let n = self.output_len(k, steps);
            if x.len() != n {
                return Err(format!("output {k} has {} elements, expected {n}", x.len()));
            }
        }
        // The count of the time loops: the sequence length, or the one the lengths input gives.
        let loop_steps = match self.steps.seq_lens {
            Some(k) => hlstm_ir::kernel::steps_from_lengths(inputs[k], steps)?,
            None => steps,
        };
        for (slot, x) in ctx.ins.iter_mut().zip(inputs) {
            *slot = x.as_ptr();
        }
        for (slot, x) in ctx.outs.iter_mut().zip(outputs.iter_mut()) {
            *slot = x.as_mut_ptr();
        }
        // SAFETY: every pointer refers to a live slice of the length the code reads or writes
        // for `steps` steps (checked above; the code touches only those rows, and its views
        // were checked against the longest sequence at compile time), writes only outputs and
        // the workspace, and the workspace (sized for this program, checked by its id) is ours
        // through `&mut ctx`.
        let job = Job {
            ins: ctx.ins.as_ptr() as usize,
            outs: ctx.outs.as_ptr() as usize,
            work: ctx.work.as_mut_ptr() as usize,
            steps: loop_steps as i64,
            resume: resume as i64,
        };
        match &ctx.pool {
            Some(pool) => pool.run(job),
            None => {
                let rt = Runtime::single();
                unsafe { call(self.entries[0], job, &rt) }
            }
        }
        Ok(())
    }

    /// Input k's length in f32 elements for a call of `steps` steps.
    pub fn input_len(&self, k: usize, steps: usize) -> usize {
        self.steps.len(self.steps.inputs[k], steps)
    }

    /// Output k's length in f32 elements for a call of `steps` steps.
    pub fn output_len(&self, k: usize, steps: usize) -> usize {
        self.steps.len(self.steps.outputs[k], steps)
    }

    /// The most steps a call runs, and whether fewer are allowed (a run-time sequence length).
    pub fn max_steps(&self) -> (usize, bool) {
        (self.steps.max, self.steps.dynamic)
    }

    /// Whether calls can resume a sequence one step at a time.
    pub fn streamable(&self) -> bool {
        self.steps.streamable
    }

    /// The CLIF text of the generated function (empty when compiled without it:
    /// [`JitProgram::compile_parts_keep`]).
    pub fn clif(&self) -> String {
        self.clif.clone()
    }

    /// The disassembly of the compiled code (from [`JitProgram::compile_opts`] with `asm`).
    pub fn asm(&self) -> Option<&str> {
        self.asm.as_deref()
    }

    /// Whether the code uses fused multiply-adds.
    pub fn has_fma(&self) -> bool {
        self.fma
    }

    /// Workspace size in f32 elements.
    pub fn work_len(&self) -> usize {
        self.work_len
    }

    /// Machine code size in bytes.
    pub fn code_len(&self) -> usize {
        self.code_len
    }

    /// Read-only data size in bytes.
    pub fn rodata_len(&self) -> usize {
        self.rodata_len
    }
}

/// A JIT module for `opts` in an arena of its own.
///
/// Code reaches its constants PC-relative (32-bit offsets). With the default provider the code
/// and the constants are separate heap allocations, which in a process with a large heap (a
/// Python interpreter that has loaded numpy and compiled many models) can land more than 2 GiB
/// apart: cranelift-jit then panics while relocating. One arena per module keeps every segment
/// within the reservation, which is address space only (PROT_NONE until used) and is unmapped
/// with the module.
fn new_module(opts: &CpuOptions, const_bytes: usize) -> Result<JITModule, String> {
    let isa = build_isa(opts, false)?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    builder.symbol(BARRIER_SYMBOL, hlstm_barrier as *const u8);
    for (name, f) in super::wide::jit_symbols() {
        builder.symbol(name, f);
    }
    let reserve = (ARENA_BASE + 16 * const_bytes).min(ARENA_MAX);
    let arena = cranelift_jit::ArenaMemoryProvider::new_with_size(reserve)
        .map_err(|e| format!("cannot reserve {reserve} bytes for the JIT's code: {e}"))?;
    builder.memory_provider(Box::new(arena));
    Ok(JITModule::new(builder))
}
