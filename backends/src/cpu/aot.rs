//! Ahead-of-time compilation: a kernel [`Program`] -> a position-independent ELF object file
//! with a C ABI, and the C header that declares it (docs/c-abi.md).
//!
//! Everything in the object is generated with Cranelift (no C compiler is needed for the `.o`):
//! the program function from [`define_program`] (local, `NAME_kernel`), and the ABI functions:
//!
//! ```c
//! int    NAME_version(void);                          /* NAME_ABI_VERSION */
//! size_t NAME_num_inputs(void);
//! size_t NAME_num_outputs(void);
//! size_t NAME_max_steps(void);                        /* the longest sequence */
//! int    NAME_dynamic_steps(void);                    /* 1: any length 1..max_steps */
//! int    NAME_streamable(void);                       /* 1: NAME_step works */
//! size_t NAME_batch(void);
//! size_t NAME_input_len(size_t k, size_t steps);      /* f32 elements; 0 when out of range */
//! size_t NAME_output_len(size_t k, size_t steps);
//! size_t NAME_context_size(size_t max_steps, size_t batch);  /* bytes; 0 when not allowed */
//! int    NAME_context_init(void *mem, size_t size, size_t max_steps, size_t batch);
//! void  *NAME_context_create(size_t max_steps, size_t batch); /* aligned_alloc; NULL on error */
//! int    NAME_context_free(void *ctx);                /* NAME_OK, or why it was refused */
//! int    NAME_run(void *ctx, size_t steps, size_t batch,
//!                 const float *const *inputs, float *const *outputs);
//! int    NAME_step(void *ctx, const float *const *inputs, float *const *outputs);
//! int    NAME_reset(void *ctx);
//! ```
//!
//! A context is a 64-byte header (a magic number, its maximum steps and batch, the streaming
//! position, the pool, who owns its memory, a busy flag) followed by the program's workspace
//! (state, hoisted projections, scratch). Only `NAME_context_create` and `NAME_context_free`
//! call anything (`aligned_alloc`, `free`); a run or a step calls nothing and allocates nothing
//! (with threads: the pool's runtime). There is no global mutable state: one context per thread
//! makes concurrent calls safe, and a call that finds its context in use by another returns
//! `NAME_ERR_BUSY` (the busy flag is taken with a compare-and-swap at entry, released at exit).
//!
//! The object is generated with `is_pic = true` (a non-PIC object linked into a shared library
//! reads garbage, see shared/notes/stack-facts.md).

use super::codegen::{Keep, ThreadPart, define_program_with, mem};
use super::{CpuOptions, build_isa};
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{
    AbiParam, Block, Function, InstBuilder, Signature, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use hlstm_ir::kernel::{BufId, Program};

pub use crate::c_abi::{
    ABI_VERSION, ERR_ALIGN, ERR_BATCH, ERR_BUSY, ERR_CONTEXT, ERR_FORKED, ERR_NOT_OWNED,
    ERR_NOT_STREAMABLE, ERR_NULL, ERR_SIZE, ERR_STEPS, ERR_UNSUPPORTED, ERRORS, LibraryInfo,
    LibraryTarget, OK, TensorInfo, c_header, is_c_identifier,
};

/// Bytes of the context header before the workspace.
pub const CONTEXT_HEADER: usize = 64;
/// The context header's first word (b"hlstmctx" little-endian).
const MAGIC: i64 = i64::from_le_bytes(*b"hlstmctx");
// Header words (byte offsets).
const H_MAGIC: i32 = 0;
const H_MAX_STEPS: i32 = 8;
const H_BATCH: i32 = 16;
const H_POSITION: i32 = 24;
/// The thread pool of a library compiled for several threads (its C runtime's, see
/// [`super::runtime`]).
const H_POOL: i32 = 32;
/// 1 when `NAME_context_create` allocated the context (so `NAME_context_free` may free it), 0
/// for caller memory (`NAME_context_init`).
const H_OWNED: i32 = 40;
/// A 32-bit flag, 1 while a call uses the context (taken by compare-and-swap). 32 bits, so
/// that the 4-byte alignment the ABI requires keeps it inside one cache line (atomic).
const H_BUSY: i32 = 48;
/// The alignment `NAME_context_init` requires (f32 data, and the busy flag's atomicity).
const CONTEXT_ALIGN: i64 = 4;

/// An object file compiled ahead of time.
pub struct AotObject {
    /// The ELF relocatable object (`NAME.o`).
    pub object: Vec<u8>,
    /// What the header says: limits, tensor lengths, threads, the batch.
    pub info: LibraryInfo,
    /// Logical dims of the inputs and outputs (for the longest sequence).
    pub input_dims: Vec<Vec<usize>>,
    pub output_dims: Vec<Vec<usize>>,
    /// Workspace size in bytes, and the context size (header + workspace).
    pub workspace_bytes: usize,
    pub context_bytes: usize,
    /// Whether the code uses fused multiply-adds.
    pub fma: bool,
    /// Machine code size of the program function, in bytes.
    pub code_len: usize,
    /// Read-only data size, in bytes.
    pub rodata_len: usize,
    /// The program function's CLIF and, when asked for, its disassembly.
    pub clif: String,
    pub asm: Option<String>,
    /// Whether the code calls the wide kernels: then the object must be linked with
    /// [`super::wide::c_source`] compiled (`NAME_gemm_*`, `NAME_spmm_*`, ...).
    pub calls_wide: bool,
    /// The wide kernels' symbols the code calls.
    pub wide_symbols: Vec<String>,
}

/// What the ABI functions need to know about the program.
struct Shape {
    max_steps: usize,
    dynamic: bool,
    streamable: bool,
    batch: usize,
    work: usize,
    inputs: Vec<(usize, Option<usize>)>,
    outputs: Vec<(usize, Option<usize>)>,
    /// The sequence-lengths input: its position and element count.
    seq_lens: Option<(usize, usize)>,
    /// Threads a call runs on (more than one: through the C runtime's pool).
    threads: usize,
    /// The batch is chosen per call (up to `batch`): how each input and output is staged at
    /// the compiled batch, and where the pointer table is ([`Program::batch_axes`]).
    staging: Option<Staging>,
}

/// Where a call with a smaller batch than the compiled one copies its tensors: each tensor
/// with a batch axis has an area of the context holding it at the compiled batch (zero rows
/// past the call's batch); the kernel gets a table of pointers to those areas (and to the
/// caller's arrays for tensors without a batch axis).
struct Staging {
    /// Byte offset of the pointer table (inputs, then outputs) in the context.
    table: usize,
    inputs: Vec<Option<Staged>>,
    outputs: Vec<Option<Staged>>,
}

/// One tensor with a batch axis: `outer` rows of `batch x inner` floats (`outer` is
/// `steps x per_step_outer` for a tensor laid out by step).
#[derive(Clone, Copy)]
struct Staged {
    outer: usize,
    per_step_outer: Option<usize>,
    inner: usize,
    /// Byte offset of its area in the context.
    area: usize,
}

/// The staging of `p`'s tensors (None when its batch is fixed), laid out from byte `at` of the
/// context; returns it and the end of the context.
fn staging(p: &Program, dynamic: bool, at: usize) -> (Option<Staging>, usize) {
    let Some(axes) = &p.batch_axes else {
        return (None, at);
    };
    let table = at;
    let mut end = (table + 8 * (p.inputs.len() + p.outputs.len())).div_ceil(64) * 64;
    let mut stage = |ids: &[BufId], list: &[Option<usize>]| -> Vec<Option<Staged>> {
        ids.iter()
            .zip(list)
            .map(|(id, axis)| {
                let b = &p.buffers[id.0];
                let a = (*axis)?;
                let inner: usize = b.dims[a + 1..].iter().product();
                let outer: usize = b.dims[..a].iter().product();
                let per_step_outer = match (dynamic, b.step_len) {
                    (true, Some(_)) if a >= 1 => Some(b.dims[1..a].iter().product()),
                    _ => None,
                };
                let area = end;
                end = (end + 4 * b.len()).div_ceil(64) * 64;
                Some(Staged {
                    outer,
                    per_step_outer,
                    inner,
                    area,
                })
            })
            .collect()
    };
    let inputs = stage(&p.inputs, &axes.inputs);
    let outputs = stage(&p.outputs, &axes.outputs);
    (
        Some(Staging {
            table,
            inputs,
            outputs,
        }),
        end,
    )
}

/// Compiles `p` into an object file whose symbols all start with `NAME_`; `batch` is the
/// model's batch size (the ABI checks callers against it); `asm` keeps the disassembly.
/// `parts` (from `passes::lower::threads::split`, empty or one for a single thread) are the
/// programs of the threads a call runs on: with more than one, the object needs the C runtime
/// of [`super::runtime::c_source`] (its pool and barrier) linked in.
pub fn compile_object(
    p: &Program,
    parts: &[Program],
    opts: &CpuOptions,
    name: &str,
    batch: usize,
    asm: bool,
) -> Result<AotObject, String> {
    if !is_c_identifier(name) {
        return Err(format!(
            "the library name {name:?} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    let isa = build_isa(opts, true)?;
    let builder = ObjectBuilder::new(isa, name, cranelift_module::default_libcall_names())
        .map_err(|e| format!("cranelift-object: {e}"))?;
    let mut module = ObjectModule::new(builder);
    let threads = parts.len().max(1);
    let (c, kernels) = if threads == 1 {
        let c = define_program_with(
            &mut module,
            p,
            &format!("{name}_kernel"),
            Linkage::Local,
            Keep::text(asm),
            None,
            &format!("{name}_"),
        )?;
        let id = c.func_id;
        (c, vec![id])
    } else {
        // One function per thread, hidden (global in the object, not exported from the
        // shared library) so that the runtime's pool can call them.
        let barrier = format!("{name}_barrier");
        let mut all = Vec::with_capacity(threads);
        for (index, part) in parts.iter().enumerate() {
            let t = ThreadPart {
                index,
                count: threads,
                whole: p,
                barrier: &barrier,
            };
            all.push(define_program_with(
                &mut module,
                part,
                &format!("{name}_kernel_{index}"),
                Linkage::Hidden,
                Keep::text(asm && index == 0),
                Some(t),
                &format!("{name}_"),
            )?);
        }
        let ids = all.iter().map(|c| c.func_id).collect();
        let mut c = all.remove(0);
        c.work_len = all.iter().map(|x| x.work_len).fold(c.work_len, usize::max);
        c.code_len += all.iter().map(|x| x.code_len).sum::<usize>();
        c.rodata_len += all.iter().map(|x| x.rodata_len).sum::<usize>();
        for x in &all {
            for sym in &x.wide_symbols {
                if !c.wide_symbols.contains(sym) {
                    c.wide_symbols.push(sym.clone());
                }
            }
        }
        (c, ids)
    };

    let max_steps = p.check_steps(None)?;
    let dynamic = p.max_steps.is_some();
    let per_step = |ids: &[BufId]| -> Vec<(usize, Option<usize>)> {
        ids.iter()
            .map(|id| {
                let b = &p.buffers[id.0];
                (b.len(), if dynamic { b.step_len } else { None })
            })
            .collect()
    };
    let shape = Shape {
        max_steps,
        dynamic,
        streamable: p.streamable(),
        batch,
        work: c.work_len * 4,
        inputs: per_step(&p.inputs),
        outputs: per_step(&p.outputs),
        seq_lens: p
            .seq_lens_input()
            .map(|k| (k, p.buffers[p.inputs[k].0].len())),
        threads,
        staging: None,
    };
    let (staging, context_bytes) =
        staging(p, dynamic, CONTEXT_HEADER + shape.work.div_ceil(64) * 64);
    let shape = Shape { staging, ..shape };

    let mut g = Gen {
        module: &mut module,
        fbc: FunctionBuilderContext::new(),
        name: name.to_string(),
    };
    g.constant("version", I32, ABI_VERSION as i64)?;
    g.constant("num_inputs", I64, shape.inputs.len() as i64)?;
    g.constant("num_outputs", I64, shape.outputs.len() as i64)?;
    g.constant("max_steps", I64, max_steps as i64)?;
    g.constant("dynamic_steps", I32, dynamic as i64)?;
    g.constant("streamable", I32, shape.streamable as i64)?;
    g.constant("batch", I64, batch as i64)?;
    g.lengths("input_len", &shape, &shape.inputs)?;
    g.lengths("output_len", &shape, &shape.outputs)?;
    g.constant("dynamic_batch", I32, shape.staging.is_some() as i64)?;
    let dyn_in = shape.staging.as_ref().map(|s| s.inputs.clone());
    let dyn_out = shape.staging.as_ref().map(|s| s.outputs.clone());
    g.batch_lengths("input_len_for", &shape, &shape.inputs, dyn_in.as_deref())?;
    g.batch_lengths("output_len_for", &shape, &shape.outputs, dyn_out.as_deref())?;
    let size = g.context_size(&shape, context_bytes)?;
    let init = g.context_init(&shape, size)?;
    let rt = (threads > 1).then(|| g.runtime()).transpose()?;
    g.context_create(size, init, rt.as_ref())?;
    g.context_free(rt.as_ref())?;
    let call = match &rt {
        Some(rt) => Call::Pool(rt.run),
        None => Call::Kernel(kernels[0]),
    };
    let run = g.run(&shape, call)?;
    g.entry("run", &[I64; 5], run, rt.as_ref())?;
    let step = g.step(&shape, call)?;
    g.entry("step", &[I64; 3], step, rt.as_ref())?;
    let reset = g.reset()?;
    g.entry("reset", &[I64], reset, rt.as_ref())?;

    let product = module.finish();
    let object = product
        .emit()
        .map_err(|e| format!("cannot write the object file: {e}"))?;
    let dims = |ids: &[BufId]| -> Vec<Vec<usize>> {
        ids.iter().map(|id| p.buffers[id.0].dims.clone()).collect()
    };
    Ok(AotObject {
        object,
        info: LibraryInfo {
            target: LibraryTarget::X86_64 { context_bytes },
            max_steps,
            dynamic_steps: dynamic,
            streamable: shape.streamable,
            batch,
            static_steps_reason: p.static_steps_reason.clone(),
            seq_lens_input: p.seq_lens_input(),
            threads,
            dynamic_batch: shape.staging.is_some(),
            input_lens: shape.inputs.iter().map(|x| x.0).collect(),
            output_lens: shape.outputs.iter().map(|x| x.0).collect(),
            input_step_lens: shape.inputs.iter().map(|x| x.1).collect(),
            output_step_lens: shape.outputs.iter().map(|x| x.1).collect(),
        },
        input_dims: dims(&p.inputs),
        output_dims: dims(&p.outputs),
        workspace_bytes: shape.work,
        context_bytes,
        fma: c.fma,
        code_len: c.code_len,
        rodata_len: c.rodata_len,
        calls_wide: !c.wide_symbols.is_empty(),
        wide_symbols: c.wide_symbols.clone(),
        clif: c.clif,
        asm: c.asm,
    })
}

/// The C runtime's entry points in a threaded library.
struct RuntimeFns {
    /// `int NAME_rt_start(void **pool)`: 0, or nonzero when the threads cannot start.
    start: FuncId,
    /// `void NAME_rt_run(void *pool, ins, outs, work, steps, resume)`: one call on every thread.
    run: FuncId,
    /// `void NAME_rt_stop(void *pool)`: joins the threads and frees the pool (in a forked
    /// child, where the threads are not, only frees it).
    stop: FuncId,
    /// `int NAME_rt_usable(void *pool)`: 0 in the process that started the pool, nonzero in a
    /// forked child (whose pool has no threads).
    usable: FuncId,
}

/// How `NAME_run` and `NAME_step` run the program: the kernel, or the runtime's pool.
#[derive(Clone, Copy)]
enum Call {
    Kernel(FuncId),
    Pool(FuncId),
}

impl Call {
    /// Runs the program on the context's workspace: `[ins, outs, steps, resume]`.
    fn emit(self, b: &mut FunctionBuilder, module: &mut ObjectModule, ctx: Value, a: [Value; 4]) {
        let [ins, outs, steps, resume] = a;
        let work = b.ins().iadd_imm_s(ctx, CONTEXT_HEADER as i64);
        match self {
            Call::Kernel(kernel) => {
                let f = module.declare_func_in_func(kernel, b.func);
                let runtime = b.ins().iconst(I64, 0);
                b.ins().call(f, &[ins, outs, work, steps, resume, runtime]);
            }
            Call::Pool(run) => {
                let pool = b.ins().load(I64, mem(), ctx, H_POOL);
                let f = module.declare_func_in_func(run, b.func);
                b.ins().call(f, &[pool, ins, outs, work, steps, resume]);
            }
        }
    }
}

/// Generates the ABI functions, each `NAME_<suffix>`.
struct Gen<'m> {
    module: &'m mut ObjectModule,
    fbc: FunctionBuilderContext,
    name: String,
}

/// Returns `code` from the function unless `ok` is true.
fn guard(b: &mut FunctionBuilder, ok: Value, code: i32) {
    let (pass, fail) = (b.create_block(), b.create_block());
    b.ins().brif(ok, pass, &[], fail, &[]);
    b.switch_to_block(fail);
    let e = b.ins().iconst(I32, code as i64);
    b.ins().return_(&[e]);
    b.switch_to_block(pass);
}

/// Whether `steps` is a length the model takes, at most `most` (a value) when dynamic.
fn steps_ok(b: &mut FunctionBuilder, shape: &Shape, steps: Value, most: Value) -> Value {
    if shape.dynamic {
        let pos = b
            .ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, steps, 1);
        let within = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, steps, most);
        b.ins().band(pos, within)
    } else {
        b.ins()
            .icmp_imm_u(IntCC::Equal, steps, shape.max_steps as i64)
    }
}

/// The count of the time loops for a call of `steps` steps: `steps`, or the value of the
/// sequence-lengths input, checked to be a whole number from 0 to `steps` and the same for
/// every batch element (else returns `ERR_STEPS`). The input arrays are checked already.
fn loop_steps(b: &mut FunctionBuilder, shape: &Shape, steps: Value, ins: Value) -> Value {
    let Some((k, count)) = shape.seq_lens else {
        return steps;
    };
    let lens = b.ins().load(I64, mem(), ins, (8 * k) as i32);
    if count == 0 {
        return steps;
    }
    let first = b.ins().load(F32, mem(), lens, 0);
    let zero = b.ins().f32const(0.0);
    let most = b.ins().fcvt_from_uint(F32, steps);
    let ge = b.ins().fcmp(FloatCC::GreaterThanOrEqual, first, zero);
    let le = b.ins().fcmp(FloatCC::LessThanOrEqual, first, most);
    let floor = b.ins().floor(first);
    let whole = b.ins().fcmp(FloatCC::Equal, floor, first);
    let mut ok = b.ins().band(ge, le);
    ok = b.ins().band(ok, whole);
    for i in 1..count {
        let v = b.ins().load(F32, mem(), lens, (4 * i) as i32);
        let same = b.ins().fcmp(FloatCC::Equal, v, first);
        ok = b.ins().band(ok, same);
    }
    guard(b, ok, ERR_STEPS);
    b.ins().fcvt_to_uint_sat(I64, first)
}

/// Whether `batch` is one the library takes, at most `most` (a value) when chosen per call.
fn batch_ok(b: &mut FunctionBuilder, shape: &Shape, batch: Value, most: Value) -> Value {
    if shape.staging.is_some() {
        let pos = b
            .ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, batch, 1);
        let within = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, batch, most);
        b.ins().band(pos, within)
    } else {
        b.ins().icmp_imm_u(IntCC::Equal, batch, shape.batch as i64)
    }
}

/// `for i in 0..n { body(i) }` (n a value, possibly 0).
fn for_range(b: &mut FunctionBuilder, n: Value, body: &mut dyn FnMut(&mut FunctionBuilder, Value)) {
    let var = b.declare_var(I64);
    let zero = b.ins().iconst(I64, 0);
    b.def_var(var, zero);
    let (head, work, exit) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let i = b.use_var(var);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, i, n);
    b.ins().brif(more, work, &[], exit, &[]);
    b.switch_to_block(work);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, 1);
    b.def_var(var, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
}

/// Copies a tensor between the caller's array at batch `batch` and its staging area at the
/// compiled batch `max`: `outer` rows of `batch x inner` floats; into the area (`to_area`) the
/// rows past `batch` are zeroed.
#[allow(clippy::too_many_arguments)]
fn stage_copy(
    b: &mut FunctionBuilder,
    t: Staged,
    max: usize,
    steps: Value,
    batch: Value,
    caller: Value,
    area: Value,
    to_area: bool,
) {
    let outer = match t.per_step_outer {
        Some(n) => b.ins().imul_imm_s(steps, n as i64),
        None => b.ins().iconst(I64, t.outer as i64),
    };
    let row = b.ins().imul_imm_s(batch, t.inner as i64);
    let full = (max * t.inner) as i64;
    let pad = b.ins().iconst(I64, full);
    let pad = b.ins().isub(pad, row);
    for_range(b, outer, &mut |b, o| {
        let src_row = b.ins().imul(o, row);
        let src_row = b.ins().ishl_imm_u(src_row, 2);
        let caller_row = b.ins().iadd(caller, src_row);
        let dst_row = b.ins().imul_imm_s(o, full * 4);
        let area_row = b.ins().iadd(area, dst_row);
        let (from, to) = if to_area {
            (caller_row, area_row)
        } else {
            (area_row, caller_row)
        };
        for_range(b, row, &mut |b, i| {
            let off = b.ins().ishl_imm_u(i, 2);
            let s = b.ins().iadd(from, off);
            let d = b.ins().iadd(to, off);
            let v = b.ins().load(F32, mem(), s, 0);
            b.ins().store(mem(), v, d, 0);
        });
        if to_area {
            let zero = b.ins().f32const(0.0);
            let tail = b.ins().ishl_imm_u(row, 2);
            let tail = b.ins().iadd(area_row, tail);
            for_range(b, pad, &mut |b, i| {
                let off = b.ins().ishl_imm_u(i, 2);
                let d = b.ins().iadd(tail, off);
                b.ins().store(mem(), zero, d, 0);
            });
        }
    });
}

/// Runs the program for `batch` (a value): at the compiled batch straight on the caller's
/// arrays, below it through the staging areas (inputs copied in and zero-padded, outputs
/// copied out).
#[allow(clippy::too_many_arguments)]
fn call_batched(
    b: &mut FunctionBuilder,
    module: &mut ObjectModule,
    shape: &Shape,
    call: Call,
    ctx: Value,
    [ins, outs, steps, count, resume]: [Value; 5],
    batch: Value,
) {
    let Some(st) = &shape.staging else {
        call.emit(b, module, ctx, [ins, outs, count, resume]);
        return;
    };
    let (direct, staged, done) = (b.create_block(), b.create_block(), b.create_block());
    let full = b.ins().icmp_imm_u(IntCC::Equal, batch, shape.batch as i64);
    b.ins().brif(full, direct, &[], staged, &[]);
    b.switch_to_block(direct);
    call.emit(b, module, ctx, [ins, outs, count, resume]);
    b.ins().jump(done, &[]);
    b.switch_to_block(staged);
    let table = b.ins().iadd_imm_s(ctx, st.table as i64);
    let ni = st.inputs.len();
    for (k, t) in st.inputs.iter().enumerate() {
        let given = b.ins().load(I64, mem(), ins, (8 * k) as i32);
        let ptr = match t {
            Some(t) => {
                let area = b.ins().iadd_imm_s(ctx, t.area as i64);
                stage_copy(b, *t, shape.batch, steps, batch, given, area, true);
                area
            }
            None => given,
        };
        b.ins().store(mem(), ptr, table, (8 * k) as i32);
    }
    for (k, t) in st.outputs.iter().enumerate() {
        let ptr = match t {
            Some(t) => b.ins().iadd_imm_s(ctx, t.area as i64),
            None => b.ins().load(I64, mem(), outs, (8 * k) as i32),
        };
        b.ins().store(mem(), ptr, table, (8 * (ni + k)) as i32);
    }
    let table_out = b.ins().iadd_imm_s(table, (8 * ni) as i64);
    call.emit(b, module, ctx, [table, table_out, count, resume]);
    for (k, t) in st.outputs.iter().enumerate() {
        if let Some(t) = t {
            let given = b.ins().load(I64, mem(), outs, (8 * k) as i32);
            let area = b.ins().iadd_imm_s(ctx, t.area as i64);
            stage_copy(b, *t, shape.batch, steps, batch, given, area, false);
        }
    }
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
}

/// `ctx` is non-null and carries the magic number (else returns the error).
fn check_context(b: &mut FunctionBuilder, ctx: Value) {
    guard(b, ctx, ERR_NULL);
    let magic = b.ins().load(I64, mem(), ctx, H_MAGIC);
    let ok = b.ins().icmp_imm_s(IntCC::Equal, magic, MAGIC);
    guard(b, ok, ERR_CONTEXT);
}

/// Takes the context's busy flag (0 -> 1, one atomic compare-and-swap), else returns
/// `ERR_BUSY`: another call is using the context.
fn acquire(b: &mut FunctionBuilder, ctx: Value) {
    let flag = b.ins().iadd_imm_s(ctx, H_BUSY as i64);
    let (idle, taken) = (b.ins().iconst(I32, 0), b.ins().iconst(I32, 1));
    let old = b.ins().atomic_cas(mem(), flag, idle, taken);
    let was_idle = b.ins().icmp_imm_u(IntCC::Equal, old, 0);
    guard(b, was_idle, ERR_BUSY);
}

/// Releases the busy flag that [`acquire`] took.
fn release(b: &mut FunctionBuilder, ctx: Value) {
    let flag = b.ins().iadd_imm_s(ctx, H_BUSY as i64);
    let idle = b.ins().iconst(I32, 0);
    b.ins().atomic_store(mem(), idle, flag);
}

/// The arrays and each of their entries are non-null (else returns `ERR_NULL`).
fn check_arrays(b: &mut FunctionBuilder, shape: &Shape, ins: Value, outs: Value) {
    guard(b, ins, ERR_NULL);
    guard(b, outs, ERR_NULL);
    for (arr, n) in [(ins, shape.inputs.len()), (outs, shape.outputs.len())] {
        for k in 0..n {
            let v = b.ins().load(I64, mem(), arr, (8 * k) as i32);
            guard(b, v, ERR_NULL);
        }
    }
}

impl Gen<'_> {
    fn define(
        &mut self,
        suffix: &str,
        params: &[Type],
        ret: Option<Type>,
        body: &mut dyn FnMut(&mut FunctionBuilder, &mut ObjectModule, &[Value]),
    ) -> Result<FuncId, String> {
        self.define_linkage(suffix, Linkage::Export, params, ret, body)
    }

    fn define_linkage(
        &mut self,
        suffix: &str,
        linkage: Linkage,
        params: &[Type],
        ret: Option<Type>,
        body: &mut dyn FnMut(&mut FunctionBuilder, &mut ObjectModule, &[Value]),
    ) -> Result<FuncId, String> {
        let name = format!("{}_{suffix}", self.name);
        let mut sig: Signature = self.module.make_signature();
        for t in params {
            sig.params.push(AbiParam::new(*t));
        }
        sig.returns.extend(ret.map(AbiParam::new));
        let id = self
            .module
            .declare_function(&name, linkage, &sig)
            .map_err(|e| e.to_string())?;
        let mut ctx: Context = self.module.make_context();
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fbc);
            let entry: Block = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let ps = b.block_params(entry).to_vec();
            body(&mut b, self.module, &ps);
            b.seal_all_blocks();
            b.finalize(self.module.target_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("cranelift: {e:?}"))?;
        Ok(id)
    }

    /// `ty NAME_suffix(void) { return value; }`
    fn constant(&mut self, suffix: &str, ty: Type, value: i64) -> Result<(), String> {
        self.define(suffix, &[], Some(ty), &mut |b, _, _| {
            let v = b.ins().iconst(ty, value);
            b.ins().return_(&[v]);
        })?;
        Ok(())
    }

    /// `size_t NAME_suffix(size_t k, size_t steps)`: tensor k's length for `steps` steps, 0
    /// when k or steps is out of range.
    fn lengths(
        &mut self,
        suffix: &str,
        shape: &Shape,
        list: &[(usize, Option<usize>)],
    ) -> Result<(), String> {
        self.define(suffix, &[I64, I64], Some(I64), &mut |b, _, ps| {
            let (k, steps) = (ps[0], ps[1]);
            let zero = b.ins().iconst(I64, 0);
            let mut r = zero;
            for (i, (whole, per)) in list.iter().enumerate() {
                let v = match per {
                    Some(n) => b.ins().imul_imm_s(steps, *n as i64),
                    None => b.ins().iconst(I64, *whole as i64),
                };
                let is = b.ins().icmp_imm_u(IntCC::Equal, k, i as i64);
                r = b.ins().select(is, v, r);
            }
            let most = b.ins().iconst(I64, shape.max_steps as i64);
            let ok = steps_ok(b, shape, steps, most);
            let r = b.ins().select(ok, r, zero);
            b.ins().return_(&[r]);
        })?;
        Ok(())
    }

    /// `size_t NAME_suffix(size_t k, size_t steps, size_t batch)`: tensor k's length for
    /// `steps` steps of `batch` (0 when k, steps or batch is out of range). `staged` (when the
    /// batch is chosen per call) says which tensors scale with the batch.
    fn batch_lengths(
        &mut self,
        suffix: &str,
        shape: &Shape,
        list: &[(usize, Option<usize>)],
        staged: Option<&[Option<Staged>]>,
    ) -> Result<(), String> {
        self.define(suffix, &[I64, I64, I64], Some(I64), &mut |b, _, ps| {
            let (k, steps, batch) = (ps[0], ps[1], ps[2]);
            let zero = b.ins().iconst(I64, 0);
            let mut r = zero;
            for (i, (whole, per)) in list.iter().enumerate() {
                let mut v = match per {
                    Some(n) => b.ins().imul_imm_s(steps, *n as i64),
                    None => b.ins().iconst(I64, *whole as i64),
                };
                if staged.is_some_and(|s| s[i].is_some()) {
                    // Proportional to the batch (the compiled batch divides the length).
                    v = b.ins().udiv_imm_u(v, shape.batch as i64);
                    v = b.ins().imul(v, batch);
                }
                let is = b.ins().icmp_imm_u(IntCC::Equal, k, i as i64);
                r = b.ins().select(is, v, r);
            }
            let most = b.ins().iconst(I64, shape.max_steps as i64);
            let ok = steps_ok(b, shape, steps, most);
            let largest = b.ins().iconst(I64, shape.batch as i64);
            let fits = batch_ok(b, shape, batch, largest);
            let ok = b.ins().band(ok, fits);
            let r = b.ins().select(ok, r, zero);
            b.ins().return_(&[r]);
        })?;
        Ok(())
    }

    /// `size_t NAME_context_size(size_t max_steps, size_t batch)`.
    fn context_size(&mut self, shape: &Shape, bytes: usize) -> Result<FuncId, String> {
        self.define("context_size", &[I64, I64], Some(I64), &mut |b, _, ps| {
            let (steps, batch) = (ps[0], ps[1]);
            let most = b.ins().iconst(I64, shape.max_steps as i64);
            let ok = steps_ok(b, shape, steps, most);
            let largest = b.ins().iconst(I64, shape.batch as i64);
            let same = batch_ok(b, shape, batch, largest);
            let ok = b.ins().band(ok, same);
            let (n, zero) = (b.ins().iconst(I64, bytes as i64), b.ins().iconst(I64, 0));
            let r = b.ins().select(ok, n, zero);
            b.ins().return_(&[r]);
        })
    }

    /// `int NAME_context_init(void *mem, size_t size, size_t max_steps, size_t batch)`. With
    /// threads it is `NAME_ERR_UNSUPPORTED` (a pool's threads need `NAME_context_free`), and
    /// the function returned (for `NAME_context_create`) is a local one.
    fn context_init(&mut self, shape: &Shape, size: FuncId) -> Result<FuncId, String> {
        let threaded = shape.threads > 1;
        if threaded {
            self.define("context_init", &[I64; 4], Some(I32), &mut |b, _, _| {
                let r = b.ins().iconst(I32, ERR_UNSUPPORTED as i64);
                b.ins().return_(&[r]);
            })?;
        }
        self.define_linkage(
            if threaded {
                "context_init_local"
            } else {
                "context_init"
            },
            if threaded {
                Linkage::Local
            } else {
                Linkage::Export
            },
            &[I64; 4],
            Some(I32),
            &mut |b, module, ps| {
                let (ctx, have, steps, batch) = (ps[0], ps[1], ps[2], ps[3]);
                guard(b, ctx, ERR_NULL);
                let low = b.ins().band_imm_u(ctx, CONTEXT_ALIGN - 1);
                let aligned = b.ins().icmp_imm_u(IntCC::Equal, low, 0);
                guard(b, aligned, ERR_ALIGN);
                let most = b.ins().iconst(I64, shape.max_steps as i64);
                let ok = steps_ok(b, shape, steps, most);
                guard(b, ok, ERR_STEPS);
                let largest = b.ins().iconst(I64, shape.batch as i64);
                let same = batch_ok(b, shape, batch, largest);
                guard(b, same, ERR_BATCH);
                let f = module.declare_func_in_func(size, b.func);
                let call = b.ins().call(f, &[steps, batch]);
                let need = b.inst_results(call)[0];
                let enough = b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, have, need);
                guard(b, enough, ERR_SIZE);
                let magic = b.ins().iconst(I64, MAGIC);
                b.ins().store(mem(), magic, ctx, H_MAGIC);
                b.ins().store(mem(), steps, ctx, H_MAX_STEPS);
                b.ins().store(mem(), batch, ctx, H_BATCH);
                let zero = b.ins().iconst(I64, 0);
                b.ins().store(mem(), zero, ctx, H_POSITION);
                b.ins().store(mem(), zero, ctx, H_POOL);
                b.ins().store(mem(), zero, ctx, H_OWNED);
                let idle = b.ins().iconst(I32, 0);
                b.ins().store(mem(), idle, ctx, H_BUSY);
                let r = b.ins().iconst(I32, OK as i64);
                b.ins().return_(&[r]);
            },
        )
    }

    /// The C runtime's functions a threaded library calls ([`super::runtime`]).
    fn runtime(&mut self) -> Result<RuntimeFns, String> {
        let mut import = |suffix: &str, params: &[Type], ret: Option<Type>| {
            let mut sig = self.module.make_signature();
            sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
            sig.returns.extend(ret.map(AbiParam::new));
            self.module
                .declare_function(&format!("{}_{suffix}", self.name), Linkage::Import, &sig)
                .map_err(|e| e.to_string())
        };
        Ok(RuntimeFns {
            start: import("rt_start", &[I64], Some(I32))?,
            run: import("rt_run", &[I64; 6], None)?,
            stop: import("rt_stop", &[I64], None)?,
            usable: import("rt_usable", &[I64], Some(I32))?,
        })
    }

    /// `void *NAME_context_create(size_t max_steps, size_t batch)`: `aligned_alloc` and init
    /// (and, with threads, the runtime's pool: NULL if its threads cannot start).
    fn context_create(
        &mut self,
        size: FuncId,
        init: FuncId,
        rt: Option<&RuntimeFns>,
    ) -> Result<(), String> {
        let mut sig = self.module.make_signature();
        sig.params.extend([AbiParam::new(I64), AbiParam::new(I64)]);
        sig.returns.push(AbiParam::new(I64));
        let alloc = self
            .module
            .declare_function("aligned_alloc", Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        let free = self.free()?;
        self.define(
            "context_create",
            &[I64, I64],
            Some(I64),
            &mut |b, module, ps| {
                let (steps, batch) = (ps[0], ps[1]);
                let zero = b.ins().iconst(I64, 0);
                let fail = b.create_block();
                let size_f = module.declare_func_in_func(size, b.func);
                let call = b.ins().call(size_f, &[steps, batch]);
                let n = b.inst_results(call)[0];
                let next = b.create_block();
                b.ins().brif(n, next, &[], fail, &[]);
                b.switch_to_block(next);
                let alloc_f = module.declare_func_in_func(alloc, b.func);
                let align = b.ins().iconst(I64, 64);
                let call = b.ins().call(alloc_f, &[align, n]);
                let p = b.inst_results(call)[0];
                let next = b.create_block();
                b.ins().brif(p, next, &[], fail, &[]);
                b.switch_to_block(next);
                let init_f = module.declare_func_in_func(init, b.func);
                b.ins().call(init_f, &[p, n, steps, batch]);
                // The library's memory: NAME_context_free may free it.
                let one = b.ins().iconst(I64, 1);
                b.ins().store(mem(), one, p, H_OWNED);
                if let Some(rt) = rt {
                    // The pool: its pointer goes into the header; on failure, nothing is left.
                    let start = module.declare_func_in_func(rt.start, b.func);
                    let slot = b.ins().iadd_imm_s(p, H_POOL as i64);
                    let call = b.ins().call(start, &[slot]);
                    let failed = b.inst_results(call)[0];
                    let (bad, good) = (b.create_block(), b.create_block());
                    b.ins().brif(failed, bad, &[], good, &[]);
                    b.switch_to_block(bad);
                    let cleared = b.ins().iconst(I64, 0);
                    b.ins().store(mem(), cleared, p, H_MAGIC);
                    let free_f = module.declare_func_in_func(free, b.func);
                    b.ins().call(free_f, &[p]);
                    b.ins().jump(fail, &[]);
                    b.switch_to_block(good);
                }
                b.ins().return_(&[p]);
                b.switch_to_block(fail);
                b.ins().return_(&[zero]);
            },
        )?;
        Ok(())
    }

    /// libc's `free`.
    fn free(&mut self) -> Result<FuncId, String> {
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(I64));
        self.module
            .declare_function("free", Linkage::Import, &sig)
            .map_err(|e| e.to_string())
    }

    /// `int NAME_context_free(void *ctx)`: frees a context of `NAME_context_create` and returns
    /// `OK` (also for a null pointer). Refused, with nothing freed: memory without the magic
    /// number (`ERR_CONTEXT`: never a context, or freed already, its magic cleared before
    /// `free`), caller memory (`ERR_NOT_OWNED`), a context in use (`ERR_BUSY`). With threads,
    /// the pool is stopped first.
    fn context_free(&mut self, rt: Option<&RuntimeFns>) -> Result<(), String> {
        let free = self.free()?;
        self.define("context_free", &[I64], Some(I32), &mut |b, module, ps| {
            let ctx = ps[0];
            let (go, null) = (b.create_block(), b.create_block());
            b.ins().brif(ctx, go, &[], null, &[]);
            b.switch_to_block(null);
            let ok = b.ins().iconst(I32, OK as i64);
            b.ins().return_(&[ok]);
            b.switch_to_block(go);
            check_context(b, ctx);
            let owned = b.ins().load(I64, mem(), ctx, H_OWNED);
            guard(b, owned, ERR_NOT_OWNED);
            // Taken and never released: the context ends here.
            acquire(b, ctx);
            if let Some(rt) = rt {
                let pool = b.ins().load(I64, mem(), ctx, H_POOL);
                let stop_f = module.declare_func_in_func(rt.stop, b.func);
                b.ins().call(stop_f, &[pool]);
            }
            // Cleared before `free`, so that a second call finds no context while the memory
            // is still readable.
            let zero = b.ins().iconst(I64, 0);
            b.ins().store(mem(), zero, ctx, H_MAGIC);
            let f = module.declare_func_in_func(free, b.func);
            b.ins().call(f, &[ctx]);
            let ok = b.ins().iconst(I32, OK as i64);
            b.ins().return_(&[ok]);
        })?;
        Ok(())
    }

    /// `int NAME_suffix(void *ctx, ...)`, the exported entry of a call on a context: checks the
    /// context (null, magic), takes its busy flag (else `ERR_BUSY`), with threads checks that
    /// the pool belongs to this process (else `ERR_FORKED`: a forked child has none of its
    /// threads), calls `inner` (the same parameters), releases the flag, returns inner's code.
    fn entry(
        &mut self,
        suffix: &str,
        params: &[Type],
        inner: FuncId,
        rt: Option<&RuntimeFns>,
    ) -> Result<(), String> {
        self.define(suffix, params, Some(I32), &mut |b, module, ps| {
            let ctx = ps[0];
            check_context(b, ctx);
            acquire(b, ctx);
            if let Some(rt) = rt {
                let pool = b.ins().load(I64, mem(), ctx, H_POOL);
                let usable = module.declare_func_in_func(rt.usable, b.func);
                let call = b.ins().call(usable, &[pool]);
                let foreign = b.inst_results(call)[0];
                let (forked, go) = (b.create_block(), b.create_block());
                b.ins().brif(foreign, forked, &[], go, &[]);
                b.switch_to_block(forked);
                release(b, ctx);
                let e = b.ins().iconst(I32, ERR_FORKED as i64);
                b.ins().return_(&[e]);
                b.switch_to_block(go);
            }
            let f = module.declare_func_in_func(inner, b.func);
            let call = b.ins().call(f, ps);
            let r = b.inst_results(call)[0];
            release(b, ctx);
            b.ins().return_(&[r]);
        })?;
        Ok(())
    }

    /// `int NAME_run(void *ctx, size_t steps, size_t batch, const float *const *inputs,
    /// float *const *outputs)`: checks everything, runs a whole sequence, and ends any
    /// sequence being streamed. Local (`NAME_run_locked`): [`Gen::entry`] checks the context
    /// and holds its busy flag around it.
    fn run(&mut self, shape: &Shape, call: Call) -> Result<FuncId, String> {
        let local = Linkage::Local;
        self.define_linkage(
            "run_locked",
            local,
            &[I64; 5],
            Some(I32),
            &mut |b, module, ps| {
                let (ctx, steps, batch, ins, outs) = (ps[0], ps[1], ps[2], ps[3], ps[4]);
                let largest = b.ins().load(I64, mem(), ctx, H_BATCH);
                let same = batch_ok(b, shape, batch, largest);
                guard(b, same, ERR_BATCH);
                let most = b.ins().load(I64, mem(), ctx, H_MAX_STEPS);
                let ok = steps_ok(b, shape, steps, most);
                guard(b, ok, ERR_STEPS);
                check_arrays(b, shape, ins, outs);
                let count = loop_steps(b, shape, steps, ins);
                let resume = b.ins().iconst(I64, 0);
                call_batched(
                    b,
                    module,
                    shape,
                    call,
                    ctx,
                    [ins, outs, steps, count, resume],
                    batch,
                );
                b.ins().store(mem(), resume, ctx, H_POSITION);
                let r = b.ins().iconst(I32, OK as i64);
                b.ins().return_(&[r]);
            },
        )
    }

    /// `int NAME_step(void *ctx, const float *const *inputs, float *const *outputs)`: one time
    /// step, continuing the sequence unless it is the first since `NAME_context_init`,
    /// `NAME_run` or `NAME_reset`. Inputs and outputs laid out by step hold one step; the
    /// others (the final state) are whole. Local (`NAME_step_locked`), as [`Gen::run`].
    fn step(&mut self, shape: &Shape, call: Call) -> Result<FuncId, String> {
        let local = Linkage::Local;
        self.define_linkage(
            "step_locked",
            local,
            &[I64; 3],
            Some(I32),
            &mut |b, module, ps| {
                let (ctx, ins, outs) = (ps[0], ps[1], ps[2]);
                if !shape.streamable {
                    let r = b.ins().iconst(I32, ERR_NOT_STREAMABLE as i64);
                    b.ins().return_(&[r]);
                    return;
                }
                check_arrays(b, shape, ins, outs);
                let pos = b.ins().load(I64, mem(), ctx, H_POSITION);
                let started = b.ins().icmp_imm_u(IntCC::NotEqual, pos, 0);
                let resume = b.ins().uextend(I64, started);
                let one = b.ins().iconst(I64, 1);
                // A stream runs at the context's batch.
                let batch = b.ins().load(I64, mem(), ctx, H_BATCH);
                call_batched(
                    b,
                    module,
                    shape,
                    call,
                    ctx,
                    [ins, outs, one, one, resume],
                    batch,
                );
                let next = b.ins().iadd_imm_s(pos, 1);
                b.ins().store(mem(), next, ctx, H_POSITION);
                let r = b.ins().iconst(I32, OK as i64);
                b.ins().return_(&[r]);
            },
        )
    }

    /// `int NAME_reset(void *ctx)`: the next `NAME_step` starts a new sequence. Local
    /// (`NAME_reset_locked`), as [`Gen::run`].
    fn reset(&mut self) -> Result<FuncId, String> {
        let local = Linkage::Local;
        self.define_linkage("reset_locked", local, &[I64], Some(I32), &mut |b, _, ps| {
            let zero = b.ins().iconst(I64, 0);
            b.ins().store(mem(), zero, ps[0], H_POSITION);
            let r = b.ins().iconst(I32, OK as i64);
            b.ins().return_(&[r]);
        })
    }
}
