//! One kernel IR program -> one Cranelift function in a `cranelift_module::Module`: the JIT's
//! module and the object module of `hlstmc compile` take the same code path.
//!
//! The function has the signature of [`program_signature`], `fn(inputs: *const *const f32,
//! outputs: *const *mut f32, work: *mut f32, steps: i64, resume: i64, runtime: *mut c_void)`,
//! in the target's default calling convention. `inputs[k]`/`outputs[k]` point to the program's
//! k-th input/output buffer; `work` to a workspace of [`Compiled::work_len`] f32 elements
//! (64-byte alignment is best, 4 is enough) holding the Temp buffers, the recurrent state
//! between streaming calls and a scratch area. The function allocates nothing; a program split
//! across threads calls the runtime's barrier, and nothing else.
//!
//! Constants: weights of `dense` matmuls, constants read through views, and the arrays of
//! `sparse-csr` matmuls live in one read-only data object declared through the module
//! (`<name>_rodata`, local linkage, 64-byte aligned), addressed with `symbol_value`; in the JIT
//! that becomes an absolute address, in a PIC object a GOT/PC-relative one. Weights of
//! `sparse-unrolled` matmuls are `f32const` immediates in the code and need no data.

use super::elementwise::{self, EOp};
use super::isa_has_fma;
use super::layout::{self, Layout};
use super::matmul;
use super::softmax;
use super::wide::WideIsa;
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, FuncRef, Function, InstBuilder, MemFlagsData, Signature, SourceLoc, Type,
    UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use hlstm_ir::kernel::{BufKind, LoopRun, Program, Stmt, Storage, View};
use std::collections::HashMap;

/// What [`define_program`] declared and defined.
pub struct Compiled {
    pub func_id: FuncId,
    /// The read-only data object, when the program needs one.
    pub data_id: Option<DataId>,
    /// The CLIF text of the function as generated (before Cranelift's own optimizations);
    /// empty unless [`Keep::clif`].
    pub clif: String,
    /// Workspace length the function needs, in f32 elements.
    pub work_len: usize,
    /// Read-only data size in bytes.
    pub rodata_len: usize,
    /// Whether the code uses fused multiply-adds (the target has AVX and FMA).
    pub fma: bool,
    /// Cranelift's disassembly of the compiled function (machine instructions, with calls and
    /// constant-pool loads visible), when asked for.
    pub asm: Option<String>,
    /// Machine code size in bytes.
    pub code_len: usize,
    /// The function as bytes, when [`Keep::image`] asked for it (or why it cannot be).
    pub image: Option<Result<super::image::FuncImage, String>>,
    /// The wide kernels' symbols the function calls (empty when it calls none): a library
    /// links [`super::wide::c_source`] in when any part calls one.
    pub wide_symbols: Vec<String>,
}

/// The signature of a generated program function:
/// `(inputs: *const *const f32, outputs: *const *mut f32, work: *mut f32, steps: i64,
/// resume: i64, runtime: *mut c_void)`. `steps` is the sequence length of the call (ignored
/// when the program's is static); `resume` != 0 continues the sequence the previous call left
/// in `work` (the `Start` blocks are skipped); `runtime` is what a thread passes to the barrier
/// (null for a single-threaded program, which has none).
pub fn program_signature<M: Module>(module: &M) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for _ in 0..6 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig
}

/// Declares and defines `name` (exported) and `<name>_rodata` (local) in `module`.
pub fn define_program<M: Module>(
    module: &mut M,
    p: &Program,
    name: &str,
) -> Result<Compiled, String> {
    define_program_opts(module, p, name, false)
}

/// [`define_program`], optionally keeping Cranelift's disassembly in [`Compiled::asm`].
pub fn define_program_opts<M: Module>(
    module: &mut M,
    p: &Program,
    name: &str,
    asm: bool,
) -> Result<Compiled, String> {
    define_program_linkage(module, p, name, Linkage::Export, asm)
}

/// [`define_program_opts`] with the function's linkage (`Local` in a library, where only the
/// ABI functions are exported).
pub fn define_program_linkage<M: Module>(
    module: &mut M,
    p: &Program,
    name: &str,
    linkage: Linkage,
    asm: bool,
) -> Result<Compiled, String> {
    define_program_part(module, p, name, linkage, Keep::text(asm), None)
}

/// What [`define_program_part`] keeps besides the code: the CLIF text of the function as
/// generated ([`Compiled::clif`]; printing it costs about a tenth of the compile time of a large
/// unrolled kernel) and Cranelift's disassembly.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    pub clif: bool,
    pub asm: bool,
    /// The machine code, its relocations and read-only data as bytes
    /// ([`super::image::FuncImage`], for a compiled-code cache).
    pub image: bool,
}

impl Keep {
    /// The CLIF text, and the disassembly when `asm`.
    pub fn text(asm: bool) -> Keep {
        Keep {
            clif: true,
            asm,
            image: false,
        }
    }
}

/// One thread's program of a program split across threads (`passes::lower::threads::split`):
/// its index, the thread count, and the whole program (for the shared workspace layout).
#[derive(Clone, Copy)]
pub struct ThreadPart<'a> {
    pub index: usize,
    pub count: usize,
    pub whole: &'a Program,
    /// The barrier function's symbol ([`BARRIER_SYMBOL`] in the JIT, `NAME_barrier` in a
    /// library).
    pub barrier: &'a str,
}

/// The name of the runtime's barrier, the one function a multi-threaded program calls:
/// `void hlstm_barrier(void *runtime)`.
pub const BARRIER_SYMBOL: &str = "hlstm_barrier";

/// [`define_program_linkage`] for one thread's part: every part lays out the workspace like
/// the whole program, with a scratch area of its own; thread 0 zeroes what the whole program
/// needs zeroed, then all meet at a barrier.
pub fn define_program_part<M: Module>(
    module: &mut M,
    p: &Program,
    name: &str,
    linkage: Linkage,
    keep: Keep,
    part: Option<ThreadPart>,
) -> Result<Compiled, String> {
    define_program_with(module, p, name, linkage, keep, part, JIT_KERNEL_PREFIX)
}

/// The prefix of the wide kernels' symbols in the JIT (`hlstm_gemm_avx512`, ...); a library
/// uses its name (`NAME_gemm_avx512`), and links [`super::wide::c_source`] in.
pub const JIT_KERNEL_PREFIX: &str = "hlstm_";

/// [`define_program_part`], the wide kernels' symbols starting with `kernel_prefix`.
pub fn define_program_with<M: Module>(
    module: &mut M,
    p: &Program,
    name: &str,
    linkage: Linkage,
    keep: Keep,
    part: Option<ThreadPart>,
    kernel_prefix: &str,
) -> Result<Compiled, String> {
    let asm = keep.asm;
    if module.target_config().pointer_type() != I64 {
        return Err("code generation supports 64-bit targets only".into());
    }
    let wide = WideIsa::of(module.isa());
    let l = hlstm_ir::timing::phase("compile/codegen/layout", || match part {
        None => layout::layout(p, wide.is_some()),
        Some(t) => layout::layout_part(p, t.whole, t.index, t.count, wide.is_some()),
    })?;
    let fma = isa_has_fma(module.isa());
    // The wide kernels the program calls, declared as imports.
    let calls = wide_calls(p, &l)?;
    let mut wide_symbols = Vec::new();
    let mut import = |module: &mut M, symbol: String, params: usize| {
        let mut sig = module.make_signature();
        for _ in 0..params {
            sig.params.push(AbiParam::new(I64));
        }
        let id = module
            .declare_function(&symbol, Linkage::Import, &sig)
            .map_err(|e| e.to_string());
        wide_symbols.push(symbol);
        id
    };
    let gemm_id = match wide {
        Some(w) if calls.gemm => Some(import(module, w.gemm_symbol(kernel_prefix), 8)?),
        _ => None,
    };
    let gemm_rm_id = match wide {
        Some(w) if calls.gemm_rm => Some(import(module, w.gemm_rm_symbol(kernel_prefix), 9)?),
        _ => None,
    };
    let pack_id = match wide {
        Some(_) if calls.pack => Some(import(module, WideIsa::pack_symbol(kernel_prefix), 5)?),
        _ => None,
    };
    let gather_id = match wide {
        Some(_) if calls.gather => Some(import(module, WideIsa::gather_symbol(kernel_prefix), 6)?),
        _ => None,
    };
    let spmm_id = match wide {
        Some(w) if calls.spmm => Some(import(module, w.spmm_symbol(kernel_prefix), 11)?),
        _ => None,
    };
    let transpose_id = match wide {
        Some(w) if calls.transpose => Some(import(module, w.transpose_symbol(kernel_prefix), 6)?),
        _ => None,
    };
    let act_id = match wide {
        Some(w) if calls.act => Some(import(module, w.act_symbol(kernel_prefix), 4)?),
        _ => None,
    };
    let binary_id = match wide {
        Some(w) if calls.binary => Some(import(module, w.binary_symbol(kernel_prefix), 9)?),
        _ => None,
    };
    let sig = program_signature(module);
    let func_id = module
        .declare_function(name, linkage, &sig)
        .map_err(|e| e.to_string())?;
    let data_id = if l.rodata.is_empty() {
        None
    } else {
        let id = module
            .declare_data(&format!("{name}_rodata"), Linkage::Local, false, false)
            .map_err(|e| e.to_string())?;
        let mut desc = DataDescription::new();
        desc.define(l.rodata.clone().into_boxed_slice());
        desc.set_align(64);
        module.define_data(id, &desc).map_err(|e| e.to_string())?;
        Some(id)
    };

    let barrier_id = match part {
        Some(t) if t.count > 1 => {
            let mut bsig = module.make_signature();
            bsig.params.push(AbiParam::new(I64));
            Some(
                module
                    .declare_function(t.barrier, Linkage::Import, &bsig)
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => None,
    };
    let mut ctx: Context = module.make_context();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, func_id.as_u32()), sig);
    let gv = data_id.map(|d| module.declare_data_in_func(d, &mut ctx.func));
    let barrier = barrier_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let gemm = gemm_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let gemm_rm = gemm_rm_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let spmm = spmm_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let pack = pack_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let gather = gather_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let act = act_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let transpose = transpose_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let binary = binary_id.map(|id| module.declare_func_in_func(id, &mut ctx.func));
    let mut fbc = FunctionBuilderContext::new();
    let build_start = std::time::Instant::now();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        let ptr = module.target_config().pointer_type();
        let rodata = gv.map(|g| b.ins().symbol_value(ptr, g));
        let mut cx = Cx::new(&mut b, p, &l, ptr, fma, rodata, &params)?;
        cx.barrier = barrier;
        cx.gemm = gemm;
        cx.gemm_rm = gemm_rm;
        cx.pack = pack;
        cx.gather = gather;
        cx.spmm = spmm;
        if spmm.is_some() && part.is_none() {
            cx.epilogues = super::epilogue::plan(p, &l);
        }
        cx.act = act;
        cx.transpose = transpose;
        cx.binary = binary;
        cx.zero_buffers(&l);
        if barrier.is_some() {
            // Thread 0 zeroed; the others wait for it.
            cx.stmt(&Stmt::Barrier)?;
        }
        cx.stmts(&p.body)?;
        cx.b.ins().return_(&[]);
        b.finalize(module.target_config());
    }
    hlstm_ir::timing::add("compile/codegen/build CLIF", build_start.elapsed());
    let clif = if keep.clif {
        hlstm_ir::timing::phase("compile/codegen/CLIF text", || {
            ctx.func.display().to_string()
        })
    } else {
        String::new()
    };
    ctx.set_disasm(asm);
    hlstm_ir::timing::phase("compile/codegen/cranelift", || {
        module.define_function(func_id, &mut ctx)
    })
    .map_err(|e| format!("cranelift: {e:?}"))?;
    let asm = if asm {
        ctx.compiled_code().and_then(|c| c.vcode.clone())
    } else {
        None
    };
    let code_len = ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
    let image = keep.image.then(|| {
        let rodata = (!l.rodata.is_empty()).then(|| l.rodata.clone());
        super::image::capture(module, &ctx, func_id, name, rodata)
    });
    Ok(Compiled {
        func_id,
        data_id,
        clif,
        work_len: l.work_len,
        rodata_len: l.rodata.len(),
        fma,
        asm,
        code_len,
        image,
        wide_symbols,
    })
}

/// The wide activation kernel's `kind` for `out = act(x)` when it runs it: sigmoid (0), tanh
/// (1) or relu (2), `out` and `x` each one contiguous run of at least `WIDE_ACT_MIN` elements, the
/// same run or not overlapping.
fn wide_activation_kind(act: hlstm_ir::Act, out: &View, x: &View) -> Option<i64> {
    let kind = match act {
        hlstm_ir::Act::Sigmoid => 0,
        hlstm_ir::Act::Tanh => 1,
        hlstm_ir::Act::Relu => 2,
        _ => return None,
    };
    let contiguous =
        |v: &View| v.dims == out.dims && v.strides == hlstm_ir::kernel::row_major_strides(&v.dims);
    let same_or_apart = x.storage != out.storage
        || (x.offset == out.offset && x.step_stride == out.step_stride)
        || !hlstm_ir::kernel::verify::overlap(out, x, 1);
    (out.len() >= WIDE_ACT_MIN && contiguous(out) && contiguous(x) && same_or_apart).then_some(kind)
}

/// `out = x` as a transpose, when it is one: two dims of at least 4, `out` contiguous along
/// the second and `x` along the first (a copy between a buffer stored rows innermost and one stored rows
/// outermost, `hlstm_passes::lower::rows_inner`), not overlapping. Returns the rows and
/// columns of the source (x's second dim, then its first) and the row strides of source and
/// destination, in elements.
fn transposing_copy(out: &View, x: &View, trip: usize) -> Option<(usize, usize, isize, isize)> {
    let [d0, d1] = out.dims[..] else {
        return None;
    };
    let xs = hlstm_ir::kernel::verify::bcast_strides(x, &out.dims).ok()?;
    let transposed = d0 >= 4 && d1 >= 4 && out.strides[1] == 1 && xs[0] == 1;
    let apart = !hlstm_ir::kernel::verify::overlap(out, x, trip);
    (transposed && apart && xs[1] > 0 && out.strides[0] > 0).then_some((
        d1,
        d0,
        xs[1],
        out.strides[0],
    ))
}

/// Elements from which sigmoid and tanh call the wide kernel (under that, the call and the
/// masked tail cost more than the wider vectors save).
const WIDE_ACT_MIN: usize = 64;

/// Rows, columns and the row strides (elements) of `ins` and `out` when a binary statement runs
/// the wide kernel: at least `WIDE_ACT_MIN` elements, every operand's last dim contiguous and
/// its rows at any stride (0: broadcast), at most two dims, no operand overlapping the output
/// other than element for element.
fn wide_binary_shape(
    out: &View,
    ins: &[&View],
    trip: usize,
) -> Result<Option<(usize, usize, [isize; 3])>, String> {
    let (rows, cols) = match out.dims[..] {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => return Ok(None),
    };
    if out.len() < WIDE_ACT_MIN || *out.strides.last().expect("a dim") != 1 {
        return Ok(None);
    }
    let mut strides = [0isize; 3];
    for (i, x) in ins.iter().enumerate() {
        let s = hlstm_ir::kernel::verify::bcast_strides(x, &out.dims)?;
        if *s.last().expect("a dim") != 1 || layout::elementwise_alias(out, x, trip)? {
            return Ok(None);
        }
        strides[i] = if s.len() == 2 { s[0] } else { 0 };
    }
    strides[2] = if out.dims.len() == 2 {
        out.strides[0]
    } else {
        0
    };
    Ok(Some((rows, cols, strides)))
}

/// The wide kernels a program calls (see `super::wide`): one walk over its statements, the
/// same decisions as the code generation makes (the matmuls' in `matmul::note_wide_calls`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WideCalls {
    pub gemm: bool,
    /// The dense products by a row-major run-time weight.
    pub gemm_rm: bool,
    /// The packing of dense run-time weights and the gathering of masked ones before loops
    /// (`Layout::pack_before`).
    pub pack: bool,
    pub gather: bool,
    pub spmm: bool,
    /// The transposes of vectors of rows.
    pub transpose: bool,
    pub act: bool,
    pub binary: bool,
}

fn wide_calls(p: &Program, l: &Layout) -> Result<WideCalls, String> {
    let mut calls = WideCalls::default();
    if !l.wide {
        return Ok(calls);
    }
    for (packed, _) in l.pack_before.values().flatten() {
        match packed {
            layout::Packed::Dense(_) => {
                calls.pack = true;
                calls.gemm = true;
            }
            layout::Packed::Masked { .. } => {
                calls.gather = true;
                calls.spmm = true;
            }
        }
    }
    hlstm_ir::kernel::visit::try_walk(&p.body, &mut |s, site| {
        match s {
            Stmt::MatMul { out, a, w, .. } => matmul::note_wide_calls(p, l, out, a, w, &mut calls)?,
            Stmt::Unary { op, out, x } => calls.act |= wide_activation_kind(*op, out, x).is_some(),
            Stmt::Copy { out, x } => {
                calls.transpose |= transposing_copy(out, x, site.trip).is_some()
            }
            Stmt::Binary { out, a, b, .. } => {
                calls.binary |= wide_binary_shape(out, &[a, b], site.trip)?.is_some()
            }
            _ => {}
        }
        Ok::<(), String>(())
    })?;
    Ok(calls)
}

/// A trip count: known when generating, or a run-time value (the sequence length).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Static(usize),
    Dyn(Value),
}

/// A view resolved to a base pointer, a byte offset and byte strides.
#[derive(Clone, Debug)]
pub(crate) struct Rv {
    pub base: Value,
    pub off: i64,
    pub strides: Vec<i64>,
}

/// Code generation state for one function.
pub(crate) struct Cx<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    pub p: &'a Program,
    pub l: &'a Layout,
    pub fma: bool,
    /// Base pointer of each buffer.
    bufs: Vec<Value>,
    rodata: Option<Value>,
    /// Base of the scratch area.
    pub scratch: Value,
    /// The step of the innermost enclosing loop.
    t: Option<Value>,
    trip: usize,
    /// The call's sequence length and resume flag (function parameters).
    pub steps: Value,
    resume: Value,
    /// The runtime pointer and the barrier function (multi-threaded programs only).
    runtime: Value,
    barrier: Option<FuncRef>,
    /// The wide kernels this function calls (see `super::wide`): dense (a packed constant
    /// weight, a row-major run-time one), sparse.
    pub gemm: Option<FuncRef>,
    pub gemm_rm: Option<FuncRef>,
    /// The packing of a dense run-time weight and the gathering of a masked one, and the
    /// weights packed for the loops being generated (`Layout::pack_before`): element offset
    /// from the scratch area's base, and a gathered masked weight's `first` (0 for a dense one).
    pub pack: Option<FuncRef>,
    pub gather: Option<FuncRef>,
    pub packed_rt: HashMap<layout::PackKey, (usize, usize)>,
    pub spmm: Option<FuncRef>,
    /// The epilogues fused into the wide sparse kernel's products (`super::epilogue`), by
    /// the address of the product's statement, and the one of the product being generated.
    epilogues: HashMap<usize, super::epilogue::Epilogue>,
    pub epilogue: Option<super::epilogue::Epilogue>,
    /// The wide sigmoid and tanh (see `super::wide`).
    pub act: Option<FuncRef>,
    /// The wide transpose of vectors of rows' operands and products.
    pub transpose: Option<FuncRef>,
    pub binary: Option<FuncRef>,
    /// Number of the statement being generated (1-based, pre-order, as `.kir` lists them):
    /// the source location of its instructions, shown as `@NNNN` (hex) in CLIF.
    stmt_no: u32,
}

/// Memory flags of every access: in bounds (checked at compile time), not necessarily aligned.
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Memory flags of read-only data.
pub(crate) fn mem_ro() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

impl<'a, 'f> Cx<'a, 'f> {
    fn new(
        b: &'a mut FunctionBuilder<'f>,
        p: &'a Program,
        l: &'a Layout,
        ptr: Type,
        fma: bool,
        rodata: Option<Value>,
        params: &[Value],
    ) -> Result<Self, String> {
        let (inputs, outputs, work) = (params[0], params[1], params[2]);
        let mut bufs = Vec::with_capacity(p.buffers.len());
        for (i, buf) in p.buffers.iter().enumerate() {
            let v = match buf.kind {
                BufKind::Input(k) => b.ins().load(ptr, mem(), inputs, (k * 8) as i32),
                BufKind::Output(k) => b.ins().load(ptr, mem(), outputs, (k * 8) as i32),
                BufKind::Temp => match l.in_output.get(&hlstm_ir::kernel::BufId(i)) {
                    Some(o) => {
                        let BufKind::Output(k) = p.buffers[o.0].kind else {
                            return Err("a temporary is computed in a non-output".into());
                        };
                        b.ins().load(ptr, mem(), outputs, (k * 8) as i32)
                    }
                    None => {
                        let off = l.temp_off[i].expect("temp offset") as i64 * 4;
                        b.ins().iadd_imm_s(work, off)
                    }
                },
            };
            bufs.push(v);
        }
        let scratch = b.ins().iadd_imm_s(work, l.scratch_off as i64 * 4);
        Ok(Cx {
            b,
            p,
            l,
            fma,
            bufs,
            rodata,
            scratch,
            t: None,
            trip: 1,
            steps: params[3],
            resume: params[4],
            runtime: params[5],
            barrier: None,
            gemm: None,
            gemm_rm: None,
            pack: None,
            gather: None,
            packed_rt: HashMap::new(),
            spmm: None,
            epilogues: HashMap::new(),
            epilogue: None,
            act: None,
            transpose: None,
            binary: None,
            stmt_no: 0,
        })
    }

    pub fn rodata(&self) -> Value {
        self.rodata.expect("read-only data")
    }

    /// Base pointer of a storage (constants: the read-only data plus the constant's offset).
    fn storage_base(&mut self, s: Storage) -> (Value, i64) {
        match s {
            Storage::Buf(b) => (self.bufs[b.0], 0),
            Storage::Const(c) => (self.rodata(), self.l.const_off[&c] as i64),
        }
    }

    /// Resolves a view at the current step, its strides taken from `strides` (the view's own or
    /// broadcast ones).
    pub fn resolve_with(&mut self, v: &View, strides: &[isize]) -> Rv {
        let (mut base, off0) = self.storage_base(v.storage);
        if v.step_stride != 0
            && let Some(t) = self.t
        {
            let d = self.b.ins().imul_imm_s(t, v.step_stride as i64 * 4);
            base = self.b.ins().iadd(base, d);
        }
        Rv {
            base,
            off: off0 + v.offset as i64 * 4,
            strides: strides.iter().map(|s| *s as i64 * 4).collect(),
        }
    }

    pub fn resolve(&mut self, v: &View) -> Rv {
        let s = v.strides.clone();
        self.resolve_with(v, &s)
    }

    /// A base pointer and an immediate offset for a byte offset from `base`.
    pub(crate) fn addr(&mut self, base: Value, off: i64) -> (Value, i32) {
        match i32::try_from(off) {
            Ok(o) => (base, o),
            Err(_) => (self.b.ins().iadd_imm_s(base, off), 0),
        }
    }

    pub fn load(&mut self, ty: Type, base: Value, off: i64) -> Value {
        let (b, o) = self.addr(base, off);
        self.b.ins().load(ty, mem(), b, o)
    }

    pub fn load_ro(&mut self, ty: Type, base: Value, off: i64) -> Value {
        let (b, o) = self.addr(base, off);
        self.b.ins().load(ty, mem_ro(), b, o)
    }

    pub fn store(&mut self, v: Value, base: Value, off: i64) {
        let (b, o) = self.addr(base, off);
        self.b.ins().store(mem(), v, b, o);
    }

    /// `base + i * stride` (bytes).
    pub fn advance(&mut self, base: Value, i: Value, stride: i64) -> Value {
        if stride == 0 {
            return base;
        }
        let d = if stride == 1 {
            i
        } else if stride > 0 && (stride as u64).is_power_of_two() {
            self.b.ins().ishl_imm_u(i, stride.trailing_zeros() as i64)
        } else {
            self.b.ins().imul_imm_s(i, stride)
        };
        self.b.ins().iadd(base, d)
    }

    /// Emits `for i in 0..trip { body(i) }` for trip >= 1 with an i64 counter (a bottom-tested
    /// loop: the body block's parameter is the counter).
    pub fn counted_loop(
        &mut self,
        trip: usize,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), String>,
    ) -> Result<(), String> {
        debug_assert!(trip >= 1);
        if trip == 1 {
            let zero = self.b.ins().iconst(I64, 0);
            return body(self, zero);
        }
        let var = self.b.declare_var(I64);
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(var, zero);
        let blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(blk, &[]);
        self.b.switch_to_block(blk);
        let i = self.b.use_var(var);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        let c = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, next, trip as i64);
        self.b.ins().brif(c, blk, &[], exit, &[]);
        self.b.seal_block(blk);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// Zeroes the buffers the interpreter's semantics need zeroed (see layout::zero_set).
    fn zero_buffers(&mut self, l: &Layout) {
        for id in l.zero.clone() {
            let buf = &self.p.buffers[id.0];
            let base = self.bufs[id.0];
            match (self.p.max_steps, buf.step_len) {
                // Only the call's steps: an output holds no more.
                (Some(_), Some(step)) => {
                    let steps = Count::Dyn(self.steps);
                    let _ = self.loop_n(steps, &mut |cx, t| {
                        let row = cx.advance(base, t, step as i64 * 4);
                        elementwise::fill_zero(cx, row, step);
                        Ok(())
                    });
                }
                _ => elementwise::fill_zero(self, base, buf.len()),
            }
        }
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), String> {
        let mut i = 0;
        while i < body.len() {
            let s = &body[i];
            i += 1;
            let Some(e) = self.epilogues.get(&(s as *const Stmt as usize)).cloned() else {
                self.stmt(s)?;
                continue;
            };
            // The product with the statements after it as its epilogue.
            let fused = e.fused;
            self.epilogue = Some(e);
            self.stmt(s)?;
            if self.epilogue.take().is_some() {
                return Err(
                    "an epilogue was planned for a product the wide kernel did not take".into(),
                );
            }
            i += fused;
            self.stmt_no += fused as u32;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), String> {
        self.stmt_no += 1;
        self.b.set_srcloc(SourceLoc::new(self.stmt_no));
        match s {
            Stmt::MatMul {
                out,
                a,
                w,
                rows_per_step,
            } => matmul::emit(self, out, a, w, self.trip, *rows_per_step),
            Stmt::Unary { op, out, x } => self.elementwise(EOp::Act(*op), out, &[x]),
            Stmt::Binary { op, out, a, b } => self.elementwise(EOp::Bin(*op), out, &[a, b]),
            Stmt::Clip { out, x, min, max } => self.elementwise(EOp::Clip(*min, *max), out, &[x]),
            // The temporary already lives in the output (`Layout::in_output`).
            Stmt::Copy { out, x } if layout::copy_in_place(self.l, out, x) => Ok(()),
            Stmt::Copy { out, x } => self.elementwise(EOp::Copy, out, &[x]),
            Stmt::Softmax { out, x, log } => softmax::emit(self, out, x, *log),
            Stmt::Barrier => {
                let f = self
                    .barrier
                    .ok_or("a barrier in a program compiled for one thread")?;
                self.b.ins().call(f, &[self.runtime]);
                Ok(())
            }
            Stmt::Start { body } => {
                // Skipped when the call resumes a sequence.
                let run = self.b.create_block();
                let done = self.b.create_block();
                self.b.ins().brif(self.resume, done, &[], run, &[]);
                self.b.switch_to_block(run);
                self.b.seal_block(run);
                self.stmts(body)?;
                self.b.ins().jump(done, &[]);
                self.b.switch_to_block(done);
                self.b.seal_block(done);
                Ok(())
            }
            Stmt::Loop {
                trip,
                reverse,
                run,
                body,
            } => {
                if *trip == 0 {
                    return Ok(());
                }
                let packed = self.pack_weights(body)?;
                let (saved_t, saved_trip) = (self.t, self.trip);
                self.trip = *trip;
                let reverse = *reverse;
                let count = match run {
                    LoopRun::Fixed => Count::Static(*trip),
                    LoopRun::Steps => Count::Dyn(self.steps),
                    LoopRun::LastStep => {
                        let t = self.b.ins().iadd_imm_s(self.steps, -1);
                        self.t = Some(t);
                        self.stmts(body)?;
                        self.t = saved_t;
                        self.trip = saved_trip;
                        return Ok(());
                    }
                };
                self.loop_n(count, &mut |cx, i| {
                    let t = if reverse {
                        // t = count - 1 - i
                        let last = match count {
                            Count::Static(n) => cx.b.ins().iconst(I64, n as i64 - 1),
                            Count::Dyn(n) => cx.b.ins().iadd_imm_s(n, -1),
                        };
                        cx.b.ins().isub(last, i)
                    } else {
                        i
                    };
                    cx.t = Some(t);
                    cx.stmts(body)
                })?;
                self.t = saved_t;
                self.trip = saved_trip;
                for key in packed {
                    self.packed_rt.remove(&key);
                }
                Ok(())
            }
        }
    }

    /// Packs the run-time weights the layout packs before the loop whose body is `body`
    /// (`Layout::pack_before`), for the products inside to read; returns their keys.
    fn pack_weights(&mut self, body: &[Stmt]) -> Result<Vec<layout::PackKey>, String> {
        let l = self.l;
        let Some(list) = l.pack_before.get(&(body.as_ptr() as usize)) else {
            return Ok(Vec::new());
        };
        let undeclared = || "a packed weight's kernel was not declared".to_string();
        let mut keys = Vec::with_capacity(list.len());
        for (packed, off) in list {
            let dst = self.b.ins().iadd_imm_s(self.scratch, *off as i64 * 4);
            match packed {
                layout::Packed::Dense(v) => {
                    let pack = self.pack.ok_or_else(undeclared)?;
                    let rw = self.resolve(v);
                    let args = [
                        self.b.ins().iconst(I64, v.dims[0] as i64),
                        self.b.ins().iconst(I64, v.dims[1] as i64),
                        self.b.ins().iadd_imm_s(rw.base, rw.off),
                        self.b.ins().iconst(I64, rw.strides[0] / 4),
                        dst,
                    ];
                    self.b.ins().call(pack, &args);
                }
                layout::Packed::Masked { view, key, first } => {
                    let gather = self.gather.ok_or_else(undeclared)?;
                    let rw = self.resolve(view);
                    let rodata = self.rodata();
                    let args = [
                        rodata,
                        self.b.ins().iadd_imm_s(rodata, l.csr_table[key] as i64),
                        self.b.ins().iconst(I64, l.csr[key].len() as i64),
                        self.b.ins().iadd_imm_s(rw.base, rw.off),
                        dst,
                        self.b.ins().iconst(I64, *first as i64),
                    ];
                    self.b.ins().call(gather, &args);
                }
            }
            let first = match packed {
                layout::Packed::Masked { first, .. } => *first,
                layout::Packed::Dense(_) => 0,
            };
            let key = packed.key();
            self.packed_rt.insert(key, (*off, first));
            keys.push(key);
        }
        Ok(keys)
    }

    /// A loop of `n` iterations, static or known at run time (then possibly none).
    pub fn loop_n(
        &mut self,
        n: Count,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let n = match n {
            Count::Static(0) => return Ok(()),
            Count::Static(n) => return self.counted_loop(n, body),
            Count::Dyn(n) => n,
        };
        let var = self.b.declare_var(I64);
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(var, zero);
        let blk = self.b.create_block();
        let exit = self.b.create_block();
        let any = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, n, 0);
        self.b.ins().brif(any, blk, &[], exit, &[]);
        self.b.switch_to_block(blk);
        let i = self.b.use_var(var);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, next, n);
        self.b.ins().brif(c, blk, &[], exit, &[]);
        self.b.seal_block(blk);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    fn elementwise(&mut self, op: EOp, out: &View, ins: &[&View]) -> Result<(), String> {
        if out.dims.contains(&0) {
            return Ok(());
        }
        if let (Some(f), EOp::Act(act), [x]) = (self.act, op, ins)
            && let Some(kind) = wide_activation_kind(act, out, x)
        {
            // The wide kernel over the contiguous run (see `super::wide`).
            let (rx, rout) = (self.resolve(x), self.resolve(out));
            let kind = self.b.ins().iconst(I64, kind);
            let n = self.b.ins().iconst(I64, out.len() as i64);
            let xp = self.b.ins().iadd_imm_s(rx.base, rx.off);
            let op = self.b.ins().iadd_imm_s(rout.base, rout.off);
            self.b.ins().call(f, &[kind, n, xp, op]);
            return Ok(());
        }
        if let (Some(f), EOp::Bin(bop), [a, b]) = (self.binary, op, ins)
            && let Some((rows, cols, strides)) = wide_binary_shape(out, &[a, b], self.trip)?
        {
            // The wide kernel over rows of contiguous elements (see `super::wide`).
            let code = match bop {
                hlstm_ir::BinOp::Add => 0,
                hlstm_ir::BinOp::Sub => 1,
                hlstm_ir::BinOp::Mul => 2,
                hlstm_ir::BinOp::Div => 3,
            };
            let mut args = vec![
                self.b.ins().iconst(I64, code),
                self.b.ins().iconst(I64, rows as i64),
                self.b.ins().iconst(I64, cols as i64),
            ];
            for (v, stride) in [a, b, out].into_iter().zip(strides) {
                let rv = self.resolve(v);
                args.push(self.b.ins().iadd_imm_s(rv.base, rv.off));
                args.push(self.b.ins().iconst(I64, stride as i64));
            }
            self.b.ins().call(f, &args);
            return Ok(());
        }
        if let (EOp::Copy, [x]) = (op, ins)
            && let Some((r, c, src_row, dst_row)) = transposing_copy(out, x, self.trip)
        {
            let (rx, rout) = (self.resolve(x), self.resolve(out));
            let (src, dst) = ((rx.base, rx.off), (rout.base, rout.off));
            matmul::transpose_copy(self, r, c, src, src_row as i64 * 4, dst, dst_row as i64 * 4);
            return Ok(());
        }
        let mut alias = false;
        for x in ins {
            alias |= layout::elementwise_alias(out, x, self.trip)?;
        }
        let mut rins = Vec::with_capacity(ins.len());
        for x in ins {
            let s = hlstm_ir::kernel::verify::bcast_strides(x, &out.dims)?;
            rins.push(self.resolve_with(x, &s));
        }
        let rout = self.resolve(out);
        if alias {
            // Compute into scratch (contiguous), then copy: the operands are all read first.
            let sc = self.scratch_rv(&out.dims);
            elementwise::emit(self, op, &out.dims, &sc, &rins)?;
            elementwise::emit(self, EOp::Copy, &out.dims, &rout, &[sc])
        } else {
            elementwise::emit(self, op, &out.dims, &rout, &rins)
        }
    }

    /// A contiguous row-major view of the scratch area with `dims`.
    pub fn scratch_rv(&self, dims: &[usize]) -> Rv {
        Rv {
            base: self.scratch,
            off: 0,
            strides: hlstm_ir::kernel::row_major_strides(dims)
                .iter()
                .map(|s| *s as i64 * 4)
                .collect(),
        }
    }
}
