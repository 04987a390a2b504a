//! The host library of the PTX target (docs/ptx.md, "The C library"): C source with the x86-64
//! target's ABI (docs/c-abi.md) over the CUDA driver API, with the PTX text and the launch
//! description embedded as constants. `hlstmc compile --target ptx` compiles it with `cc` into
//! `NAME.o`, `libhlstmc_NAME.so` and `libhlstmc_NAME.a`.
//!
//! It does what [`CudaProgram`](super::CudaProgram) does, in C, so that a C or Rust program links
//! it without Rust or cudarc: `NAME_context_open` opens `libcuda.so.1` with `dlopen` (its absence
//! is `NAME_ERR_DRIVER`, with a message, not a crash), calls `cuInit`, retains the device's
//! primary context, loads the PTX (`cuModuleLoadData`), checks that the grid can be resident at
//! once for the cooperative launch, and allocates the device buffers for the context's longest
//! sequence (the workspace zeroed). `NAME_run` copies the inputs in, launches the persistent
//! kernel with `cuLaunchCooperativeKernel`, waits, and copies the outputs out; `NAME_step` is a
//! run of one step that resumes the sequence. Each context holds its own driver table, module and
//! buffers: there is no global mutable state, only the calling thread's last error message.
//!
//! Misuse is refused as in the x86-64 library (docs/c-abi.md, "Ownership and misuse"): a busy
//! flag taken by compare-and-swap at every call on a context (`NAME_ERR_BUSY` for a second
//! thread), the magic number cleared before the context is freed (a second `NAME_context_free`
//! is `NAME_ERR_CONTEXT` while the memory is readable), and the process recorded when the
//! context is opened: in a `fork()`ed child, where the CUDA driver's state does not carry over,
//! calls return `NAME_ERR_FORKED` and `NAME_context_free` frees only the host memory.
//!
//! Why C and not Cranelift, as for the x86-64 ABI: the host side is glue over `dlopen`, `dlsym`
//! and driver calls, with no kernel in it, and `cc` is needed for the libraries anyway. The
//! generated file is written with `--emit c` for reading.

use super::{Slot, slots};
use crate::c_abi::{
    ABI_VERSION, ERR_BATCH, ERR_BUSY, ERR_CONTEXT, ERR_DRIVER, ERR_FORKED, ERR_NOT_STREAMABLE,
    ERR_NULL, ERR_STEPS, ERR_UNSUPPORTED, LibraryInfo, LibraryTarget, OK, is_c_identifier,
};
use crate::ptx::PtxModule;
use hlstm_ir::kernel::Program;
use std::fmt::Write;

/// The context's first word (b"hlstmgpu" little-endian).
const MAGIC: u64 = u64::from_le_bytes(*b"hlstmgpu");

/// How a call with a smaller batch stages each input and output (`hlstmc compile --max-batch`,
/// [`Program::batch_axes`]): per tensor with a batch axis, `(outer, per_step_outer, inner)` as
/// the x86-64 library's staging (`outer` rows of `batch x inner` floats; `per_step_outer` when
/// the tensor is laid out by step, its rows per step).
#[derive(Clone, Debug, Default)]
pub struct BatchStaging {
    pub inputs: Vec<Option<(usize, Option<usize>, usize)>>,
    pub outputs: Vec<Option<(usize, Option<usize>, usize)>>,
}

impl BatchStaging {
    /// The staging of `p`'s tensors, or None when its batch is fixed.
    pub fn of(p: &Program) -> Option<BatchStaging> {
        let axes = p.batch_axes.as_ref()?;
        let dynamic = p.max_steps.is_some();
        let stage = |ids: &[hlstm_ir::kernel::BufId], list: &[Option<usize>]| {
            ids.iter()
                .zip(list)
                .map(|(id, axis)| {
                    let b = &p.buffers[id.0];
                    let a = (*axis)?;
                    let per = match (dynamic, b.step_len) {
                        (true, Some(_)) if a >= 1 => Some(b.dims[1..a].iter().product()),
                        _ => None,
                    };
                    Some((
                        b.dims[..a].iter().product(),
                        per,
                        b.dims[a + 1..].iter().product(),
                    ))
                })
                .collect()
        };
        Some(BatchStaging {
            inputs: stage(&p.inputs, &axes.inputs),
            outputs: stage(&p.outputs, &axes.outputs),
        })
    }
}

/// What the header says about the library of `m` (its batch is the model's, fixed when the
/// model was compiled, or the largest, with `staging`).
pub fn library_info(
    m: &PtxModule,
    batch: usize,
    staging: Option<&BatchStaging>,
) -> Result<LibraryInfo, String> {
    let l = &m.launch;
    let slots = slots(l)?;
    let (mut ins, mut outs) = (Vec::new(), Vec::new());
    for s in &slots {
        match s {
            Slot::Input {
                elements, per_step, ..
            } => ins.push((*elements, *per_step)),
            Slot::Output {
                elements, per_step, ..
            } => outs.push((*elements, *per_step)),
            _ => {}
        }
    }
    Ok(LibraryInfo {
        target: LibraryTarget::Ptx { sm: l.sm },
        max_steps: l.max_steps,
        dynamic_steps: l.dynamic_steps,
        streamable: l.streamable,
        batch,
        static_steps_reason: None,
        seq_lens_input: l.seq_lens_input,
        threads: 1,
        dynamic_batch: staging.is_some(),
        input_lens: ins.iter().map(|x| x.0).collect(),
        output_lens: outs.iter().map(|x| x.0).collect(),
        input_step_lens: ins.iter().map(|x| x.1).collect(),
        output_step_lens: outs.iter().map(|x| x.1).collect(),
    })
}

/// A C string literal of `text`, one source line per line of text.
fn c_string(text: &str) -> String {
    let mut o = String::new();
    for line in text.split_inclusive('\n') {
        o.push_str("    \"");
        for c in line.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                '\t' => o.push_str("\\t"),
                c if c.is_ascii() && !c.is_ascii_control() && c != '?' => o.push(c),
                // Octal escapes (three digits, so a following digit is not absorbed); `?` too,
                // which could start a trigraph.
                c => {
                    let mut b = [0u8; 4];
                    for byte in c.encode_utf8(&mut b).bytes() {
                        let _ = write!(o, "\\{byte:03o}");
                    }
                }
            }
        }
        o.push_str("\"\n");
    }
    if o.is_empty() {
        o.push_str("    \"\"\n");
    }
    o
}

/// A C array initializer of `xs` (a trailing 0, so an empty list is still an array).
fn c_array(xs: impl IntoIterator<Item = usize>) -> String {
    let mut v: Vec<String> = xs.into_iter().map(|x| format!("{x}u")).collect();
    v.push("0u".into());
    v.join(", ")
}

/// The C source of the host library for `m`, with every exported symbol prefixed `NAME_`.
pub fn c_source(
    m: &PtxModule,
    name: &str,
    batch: usize,
    staging: Option<&BatchStaging>,
    model: &str,
) -> Result<String, String> {
    if !is_c_identifier(name) {
        return Err(format!(
            "the library name {name:?} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    if m.ptx.contains('\0') {
        return Err("the PTX holds a NUL byte".into());
    }
    let l = &m.launch;
    let slots = slots(l)?;
    if l.grid[1] * l.grid[2] * l.block[1] * l.block[2] != 1 {
        return Err("the host library launches one-dimensional grids and blocks only".into());
    }
    let info = library_info(m, batch, staging)?;
    let columns = |list: Option<&Vec<Option<(usize, Option<usize>, usize)>>>, n: usize| {
        let get = |k: usize| list.and_then(|l| l.get(k).copied().flatten());
        (
            c_array((0..n).map(|k| get(k).map_or(0, |t| t.0))),
            c_array((0..n).map(|k| get(k).and_then(|t| t.1).unwrap_or(0))),
            c_array((0..n).map(|k| get(k).map_or(0, |t| t.2))),
        )
    };
    let (in_outer, in_step_outer, in_inner) =
        columns(staging.map(|s| &s.inputs), info.input_lens.len());
    let (out_outer, out_step_outer, out_inner) =
        columns(staging.map(|s| &s.outputs), info.output_lens.len());
    let mut params = String::new();
    for s in &slots {
        let (role, index, elements, per_step, bytes) = match s {
            Slot::Input {
                k,
                elements,
                per_step,
            } => ("ROLE_INPUT", *k, *elements, per_step.unwrap_or(0), 0),
            Slot::Output {
                k,
                elements,
                per_step,
            } => ("ROLE_OUTPUT", *k, *elements, per_step.unwrap_or(0), 0),
            Slot::Workspace { bytes } => ("ROLE_WORKSPACE", 0, 0, 0, *bytes),
            Slot::Steps => ("ROLE_STEPS", 0, 0, 0, 0),
            Slot::Resume => ("ROLE_RESUME", 0, 0, 0, 0),
        };
        let _ = writeln!(
            params,
            "    {{{role}, {index}u, {elements}u, {per_step}u, {bytes}u}},"
        );
    }
    let per = |v: &[Option<usize>]| c_array(v.iter().map(|x| x.unwrap_or(0)));
    let model = model.replace("*/", "* /").replace(['\n', '\r'], " ");
    let src = TEMPLATE
        .replace("@MODEL@", &model)
        .replace("@ABI_VERSION@", &ABI_VERSION.to_string())
        .replace("@OK@", &OK.to_string())
        .replace("@ERR_NULL@", &ERR_NULL.to_string())
        .replace("@ERR_STEPS@", &ERR_STEPS.to_string())
        .replace("@ERR_BATCH@", &ERR_BATCH.to_string())
        .replace("@ERR_NOT_STREAMABLE@", &ERR_NOT_STREAMABLE.to_string())
        .replace("@ERR_CONTEXT@", &ERR_CONTEXT.to_string())
        .replace("@ERR_DRIVER@", &ERR_DRIVER.to_string())
        .replace("@ERR_UNSUPPORTED@", &ERR_UNSUPPORTED.to_string())
        .replace("@ERR_BUSY@", &ERR_BUSY.to_string())
        .replace("@ERR_FORKED@", &ERR_FORKED.to_string())
        .replace("@MAGIC@", &format!("{MAGIC:#x}"))
        .replace("@NUM_INPUTS@", &info.input_lens.len().to_string())
        .replace("@NUM_OUTPUTS@", &info.output_lens.len().to_string())
        .replace("@NUM_PARAMS@", &slots.len().to_string())
        .replace("@MAX_STEPS@", &l.max_steps.to_string())
        .replace("@DYNAMIC@", &(l.dynamic_steps as u8).to_string())
        .replace("@STREAMABLE@", &(l.streamable as u8).to_string())
        .replace("@BATCH@", &batch.to_string())
        .replace("@SM@", &l.sm.to_string())
        .replace("@GRID@", &l.grid[0].to_string())
        .replace("@BLOCK@", &l.block[0].to_string())
        .replace(
            "@SEQ_LENS@",
            &l.seq_lens_input.map_or(-1, |k| k as i64).to_string(),
        )
        .replace("@INPUT_WHOLE@", &c_array(info.input_lens.iter().copied()))
        .replace("@INPUT_PER_STEP@", &per(&info.input_step_lens))
        .replace("@OUTPUT_WHOLE@", &c_array(info.output_lens.iter().copied()))
        .replace("@OUTPUT_PER_STEP@", &per(&info.output_step_lens))
        .replace("@PARAMS@", params.trim_end())
        .replace("@DYNAMIC_BATCH@", &(staging.is_some() as u8).to_string())
        .replace("@IN_OUTER@", &in_outer)
        .replace("@IN_STEP_OUTER@", &in_step_outer)
        .replace("@IN_INNER@", &in_inner)
        .replace("@OUT_OUTER@", &out_outer)
        .replace("@OUT_STEP_OUTER@", &out_step_outer)
        .replace("@OUT_INNER@", &out_inner)
        .replace("@KERNEL@", &c_string(&l.kernel))
        .replace("@PTX@", &c_string(&m.ptx))
        .replace("NAME_", &format!("{name}_"))
        .replace("@NAME@", name);
    Ok(src)
}

/// The host library; `@X@` are filled in by [`c_source`] and `NAME_` becomes the library name.
const TEMPLATE: &str = r#"/* NAME_host.c: the host library of the PTX target, generated by hlstmc from @MODEL@.
 * Do not edit. The C ABI of docs/c-abi.md over the CUDA driver API, opened with dlopen when a
 * context is created (docs/ptx.md). Build: cc -O2 -fPIC -c NAME_host.c; link with -ldl. */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum {
    OK = @OK@, ERR_NULL = @ERR_NULL@, ERR_STEPS = @ERR_STEPS@, ERR_BATCH = @ERR_BATCH@,
    ERR_NOT_STREAMABLE = @ERR_NOT_STREAMABLE@, ERR_CONTEXT = @ERR_CONTEXT@,
    ERR_DRIVER = @ERR_DRIVER@, ERR_UNSUPPORTED = @ERR_UNSUPPORTED@, ERR_BUSY = @ERR_BUSY@,
    ERR_FORKED = @ERR_FORKED@
};

#define NUM_INPUTS @NUM_INPUTS@u
#define NUM_OUTPUTS @NUM_OUTPUTS@u
#define NUM_PARAMS @NUM_PARAMS@u
#define MAX_STEPS @MAX_STEPS@u
#define DYNAMIC_STEPS @DYNAMIC@
#define STREAMABLE @STREAMABLE@
#define BATCH @BATCH@u
#define SM @SM@
#define GRID @GRID@u
#define BLOCK @BLOCK@u
#define MAGIC @MAGIC@ull
#define SEQ_LENS_INPUT @SEQ_LENS@ /* the input giving the sequence lengths; -1: none */

/* The driver API's types and the attributes used (cuda.h, CUDA 12). */
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;
#define ATTR_MULTIPROCESSORS 16
#define ATTR_CC_MAJOR 75
#define ATTR_CC_MINOR 76
#define ATTR_COOPERATIVE_LAUNCH 95

/* Per kernel parameter: its role, the tensor index, f32 elements for the compiled longest
 * sequence and per step (0: not laid out by step), workspace bytes. */
enum { ROLE_INPUT, ROLE_OUTPUT, ROLE_WORKSPACE, ROLE_STEPS, ROLE_RESUME };
struct param {
    int role;
    unsigned index;
    size_t elements, per_step, bytes;
};
static const struct param PARAMS[NUM_PARAMS] = {
@PARAMS@
};
static const size_t INPUT_WHOLE[] = {@INPUT_WHOLE@};
static const size_t INPUT_PER_STEP[] = {@INPUT_PER_STEP@};
static const size_t OUTPUT_WHOLE[] = {@OUTPUT_WHOLE@};
static const size_t OUTPUT_PER_STEP[] = {@OUTPUT_PER_STEP@};

/* The batch chosen per call (hlstmc compile --max-batch): BATCH is the largest, and a smaller
 * batch runs zero-padded to it through host staging buffers. Per tensor: `outer` rows of
 * `batch x inner` floats (`step_outer` rows per step for tensors laid out by step); inner 0:
 * no batch axis. */
#define DYNAMIC_BATCH @DYNAMIC_BATCH@
static const size_t IN_OUTER[] = {@IN_OUTER@};
static const size_t IN_STEP_OUTER[] = {@IN_STEP_OUTER@};
static const size_t IN_INNER[] = {@IN_INNER@};
static const size_t OUT_OUTER[] = {@OUT_OUTER@};
static const size_t OUT_STEP_OUTER[] = {@OUT_STEP_OUTER@};
static const size_t OUT_INNER[] = {@OUT_INNER@};

static const char KERNEL[] =
@KERNEL@;
static const char PTX[] =
@PTX@;

/* The driver entry points a context uses, resolved with dlsym when it is opened. */
struct driver {
    void *lib;
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
    CUresult (*cuCtxSetCurrent)(CUcontext);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuModuleLoadData)(CUmodule *, const void *);
    CUresult (*cuModuleUnload)(CUmodule);
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *, CUfunction, int, size_t);
    CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree_v2)(CUdeviceptr);
    CUresult (*cuMemsetD8_v2)(CUdeviceptr, unsigned char, size_t);
    CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void *, size_t);
    CUresult (*cuMemcpyDtoH_v2)(void *, CUdeviceptr, size_t);
    CUresult (*cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                                          unsigned, unsigned, unsigned, CUstream, void **);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuGetErrorString)(CUresult, const char **);
};

struct context {
    uint64_t magic;
    size_t max_steps, batch, position;
    atomic_int busy; /* 1 while a call uses the context (compare-and-swap at entry) */
    pid_t pid;       /* the process that opened it: the driver's state is not a child's */
    struct driver d;
    CUdevice device;
    CUcontext cu;     /* the device's primary context, retained */
    CUmodule module;
    CUfunction kernel;
    CUdeviceptr buf[NUM_PARAMS]; /* per parameter; 0 for the scalars */
    float *stage_in[NUM_INPUTS + 1];   /* host staging at BATCH (DYNAMIC_BATCH only) */
    float *stage_out[NUM_OUTPUTS + 1];
};

/* The calling thread's last failure: the only state outside a context. */
static _Thread_local char last_error[512];

static int fail(int code, const char *message) {
    snprintf(last_error, sizeof last_error, "%s", message);
    return code;
}

static int driver_fail(const struct driver *d, const char *call, CUresult r) {
    const char *name = NULL, *text = NULL;
    if (d->cuGetErrorName) d->cuGetErrorName(r, &name);
    if (d->cuGetErrorString) d->cuGetErrorString(r, &text);
    snprintf(last_error, sizeof last_error, "CUDA driver: %s: %s (%s)", call,
             name ? name : "an unknown error", text ? text : "");
    return ERR_DRIVER;
}

#define CALL(c, f, ...)                                                        \
    do {                                                                       \
        CUresult r_ = (c)->d.f(__VA_ARGS__);                                   \
        if (r_ != 0) return driver_fail(&(c)->d, #f, r_);                      \
    } while (0)

static int steps_ok(size_t steps, size_t most) {
    return DYNAMIC_STEPS ? steps >= 1 && steps <= most : steps == MAX_STEPS;
}

static size_t tensor_len(size_t whole, size_t per_step, size_t steps) {
    return per_step ? per_step * steps : whole;
}

static int batch_ok(size_t batch, size_t most) {
    return DYNAMIC_BATCH ? batch >= 1 && batch <= most : batch == BATCH;
}

/* Copies `outer` rows between an array at `batch` and its staging at BATCH (rows past `batch`
 * zeroed when staging in). */
static void stage(float *area, float *given, size_t outer, size_t inner, size_t batch,
                  int in) {
    size_t row = batch * inner, full = BATCH * inner;
    for (size_t o = 0; o < outer; o++) {
        if (in) {
            memcpy(area + o * full, given + o * row, row * sizeof(float));
            memset(area + o * full + row, 0, (full - row) * sizeof(float));
        } else {
            memcpy(given + o * row, area + o * full, row * sizeof(float));
        }
    }
}

static int open_driver(struct driver *d) {
    d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->lib)
        return fail(ERR_DRIVER, "no CUDA driver found (libcuda.so.1): the @NAME@ library needs an "
                                "NVIDIA GPU and driver");
#define SYM(f)                                                                 \
    do {                                                                       \
        *(void **)(&d->f) = dlsym(d->lib, #f);                                 \
        if (!d->f) return fail(ERR_DRIVER, "the CUDA driver (libcuda.so.1) lacks " #f); \
    } while (0)
    SYM(cuGetErrorName);
    SYM(cuGetErrorString);
    SYM(cuInit);
    SYM(cuDeviceGetCount);
    SYM(cuDeviceGet);
    SYM(cuDeviceGetAttribute);
    SYM(cuDevicePrimaryCtxRetain);
    SYM(cuDevicePrimaryCtxRelease_v2);
    SYM(cuCtxSetCurrent);
    SYM(cuCtxSynchronize);
    SYM(cuModuleLoadData);
    SYM(cuModuleUnload);
    SYM(cuModuleGetFunction);
    SYM(cuOccupancyMaxActiveBlocksPerMultiprocessor);
    SYM(cuMemAlloc_v2);
    SYM(cuMemFree_v2);
    SYM(cuMemsetD8_v2);
    SYM(cuMemcpyHtoD_v2);
    SYM(cuMemcpyDtoH_v2);
    SYM(cuLaunchCooperativeKernel);
#undef SYM
    return OK;
}

/* Releases whatever a context holds (also a partly opened one) and the context. In a forked
 * child (c->pid is the parent's) the device side belongs to the parent's driver state, which
 * the child cannot use: only the host memory is freed. */
static void release(struct context *c) {
    int here = c->pid == getpid();
    if (here && c->cu && c->d.cuCtxSetCurrent && c->d.cuCtxSetCurrent(c->cu) == 0) {
        for (size_t i = 0; i < NUM_PARAMS; i++)
            if (c->buf[i]) c->d.cuMemFree_v2(c->buf[i]);
        if (c->module) c->d.cuModuleUnload(c->module);
    }
    if (here && c->cu) c->d.cuDevicePrimaryCtxRelease_v2(c->device);
    if (here && c->d.lib) dlclose(c->d.lib);
    for (size_t k = 0; k < NUM_INPUTS; k++) free(c->stage_in[k]);
    for (size_t k = 0; k < NUM_OUTPUTS; k++) free(c->stage_out[k]);
    c->magic = 0;
    free(c);
}

static int open_context(struct context *c, int device) {
    int rc = open_driver(&c->d);
    if (rc != OK) return rc;
    CALL(c, cuInit, 0);
    int count = 0;
    CALL(c, cuDeviceGetCount, &count);
    if (device < 0 || device >= count) {
        snprintf(last_error, sizeof last_error,
                 "no CUDA device %d: the driver reports %d device(s)", device, count);
        return ERR_DRIVER;
    }
    CALL(c, cuDeviceGet, &c->device, device);
    int major = 0, minor = 0, sms = 0, coop = 0;
    CALL(c, cuDeviceGetAttribute, &major, ATTR_CC_MAJOR, c->device);
    CALL(c, cuDeviceGetAttribute, &minor, ATTR_CC_MINOR, c->device);
    CALL(c, cuDeviceGetAttribute, &sms, ATTR_MULTIPROCESSORS, c->device);
    CALL(c, cuDeviceGetAttribute, &coop, ATTR_COOPERATIVE_LAUNCH, c->device);
    if (major * 10 + minor < SM) {
        snprintf(last_error, sizeof last_error,
                 "the PTX targets sm_%d; GPU %d has compute capability %d.%d", SM, device, major,
                 minor);
        return ERR_DRIVER;
    }
    if (!coop)
        return fail(ERR_DRIVER, "the GPU does not support cooperative launches, which the "
                                "persistent kernel needs");
    CALL(c, cuDevicePrimaryCtxRetain, &c->cu, c->device);
    CALL(c, cuCtxSetCurrent, c->cu);
    CALL(c, cuModuleLoadData, &c->module, PTX);
    CALL(c, cuModuleGetFunction, &c->kernel, c->module, KERNEL);
    int per_sm = 0;
    CALL(c, cuOccupancyMaxActiveBlocksPerMultiprocessor, &per_sm, c->kernel, (int)BLOCK, 0);
    if ((unsigned long long)(per_sm > 0 ? per_sm : 0) * (unsigned long long)(sms > 0 ? sms : 0) <
        GRID) {
        snprintf(last_error, sizeof last_error,
                 "the grid of %u blocks of %u threads cannot be resident at once (%d per "
                 "multiprocessor x %d multiprocessors)",
                 GRID, BLOCK, per_sm, sms);
        return ERR_DRIVER;
    }
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        const struct param *p = &PARAMS[i];
        size_t bytes;
        switch (p->role) {
        case ROLE_INPUT:
        case ROLE_OUTPUT: bytes = 4 * tensor_len(p->elements, p->per_step, c->max_steps); break;
        case ROLE_WORKSPACE: bytes = p->bytes; break;
        default: continue;
        }
        CALL(c, cuMemAlloc_v2, &c->buf[i], bytes > 4 ? bytes : 4);
        if (p->role == ROLE_WORKSPACE && bytes > 0) CALL(c, cuMemsetD8_v2, c->buf[i], 0, bytes);
    }
    return OK;
}

EXPORT int NAME_context_open(void **out, int device, size_t max_steps, size_t batch) {
    if (!out) return ERR_NULL;
    *out = NULL;
    if (!steps_ok(max_steps, MAX_STEPS)) return ERR_STEPS;
    if (!batch_ok(batch, BATCH)) return ERR_BATCH;
    struct context *c = calloc(1, sizeof *c);
    if (!c) return fail(ERR_DRIVER, "out of host memory");
    c->max_steps = max_steps;
    c->batch = batch;
    c->pid = getpid();
    for (size_t k = 0; DYNAMIC_BATCH && k < NUM_INPUTS; k++)
        if (IN_INNER[k] && !(c->stage_in[k] = calloc(
                                 tensor_len(INPUT_WHOLE[k], INPUT_PER_STEP[k], max_steps) + 1,
                                 sizeof(float)))) {
            release(c);
            return fail(ERR_DRIVER, "out of host memory");
        }
    for (size_t k = 0; DYNAMIC_BATCH && k < NUM_OUTPUTS; k++)
        if (OUT_INNER[k] && !(c->stage_out[k] = calloc(
                                  tensor_len(OUTPUT_WHOLE[k], OUTPUT_PER_STEP[k], max_steps) + 1,
                                  sizeof(float)))) {
            release(c);
            return fail(ERR_DRIVER, "out of host memory");
        }
    int rc = open_context(c, device);
    if (rc != OK) {
        release(c);
        return rc;
    }
    c->magic = MAGIC;
    *out = c;
    return OK;
}

EXPORT void *NAME_context_create(size_t max_steps, size_t batch) {
    void *c = NULL;
    return NAME_context_open(&c, 0, max_steps, batch) == OK ? c : NULL;
}

static int check_context(const struct context *c);

EXPORT int NAME_context_free(void *ctx) {
    struct context *c = ctx;
    if (!c) return OK;
    int rc = check_context(c);
    if (rc != OK) return rc;
    /* Taken and never released: the context ends here (release() clears the magic first). */
    int idle = 0;
    if (!atomic_compare_exchange_strong(&c->busy, &idle, 1))
        return fail(ERR_BUSY, "NAME_context_free: the context is in use by another call");
    release(c);
    return OK;
}

EXPORT size_t NAME_context_size(size_t max_steps, size_t batch) {
    (void)max_steps;
    (void)batch;
    return 0;
}

EXPORT int NAME_context_init(void *mem, size_t size, size_t max_steps, size_t batch) {
    (void)mem;
    (void)size;
    (void)max_steps;
    (void)batch;
    return fail(ERR_UNSUPPORTED, "NAME_context_init: a GPU context cannot live in caller "
                                 "memory; use NAME_context_create");
}

EXPORT const char *NAME_error_message(void) { return last_error; }

EXPORT int NAME_version(void) { return @ABI_VERSION@; }
EXPORT size_t NAME_num_inputs(void) { return NUM_INPUTS; }
EXPORT size_t NAME_num_outputs(void) { return NUM_OUTPUTS; }
EXPORT size_t NAME_max_steps(void) { return MAX_STEPS; }
EXPORT int NAME_dynamic_steps(void) { return DYNAMIC_STEPS; }
EXPORT int NAME_streamable(void) { return STREAMABLE; }
EXPORT size_t NAME_batch(void) { return BATCH; }

EXPORT size_t NAME_input_len(size_t k, size_t steps) {
    if (k >= NUM_INPUTS || !steps_ok(steps, MAX_STEPS)) return 0;
    return tensor_len(INPUT_WHOLE[k], INPUT_PER_STEP[k], steps);
}

EXPORT size_t NAME_output_len(size_t k, size_t steps) {
    if (k >= NUM_OUTPUTS || !steps_ok(steps, MAX_STEPS)) return 0;
    return tensor_len(OUTPUT_WHOLE[k], OUTPUT_PER_STEP[k], steps);
}

EXPORT int NAME_dynamic_batch(void) { return DYNAMIC_BATCH; }
EXPORT size_t NAME_input_len_for(size_t k, size_t steps, size_t batch) {
    if (!batch_ok(batch, BATCH)) return 0;
    size_t n = NAME_input_len(k, steps);
    return k < NUM_INPUTS && IN_INNER[k] ? n / BATCH * batch : n;
}
EXPORT size_t NAME_output_len_for(size_t k, size_t steps, size_t batch) {
    if (!batch_ok(batch, BATCH)) return 0;
    size_t n = NAME_output_len(k, steps);
    return k < NUM_OUTPUTS && OUT_INNER[k] ? n / BATCH * batch : n;
}

static int launch(struct context *c, size_t steps, unsigned resume, const float *const *in,
                  float *const *out);

/* launch() for a call of `batch`: below BATCH through the staging buffers. */
static int launch_batch(struct context *c, size_t steps, size_t count, unsigned resume,
                        size_t batch, const float *const *in, float *const *out) {
    if (!DYNAMIC_BATCH || batch == BATCH) return launch(c, count, resume, in, out);
    const float *ins[NUM_INPUTS + 1];
    float *outs[NUM_OUTPUTS + 1];
    for (size_t k = 0; k < NUM_INPUTS; k++) {
        ins[k] = in[k];
        if (IN_INNER[k]) {
            size_t outer = IN_STEP_OUTER[k] ? IN_STEP_OUTER[k] * steps : IN_OUTER[k];
            stage(c->stage_in[k], (float *)in[k], outer, IN_INNER[k], batch, 1);
            ins[k] = c->stage_in[k];
        }
    }
    for (size_t k = 0; k < NUM_OUTPUTS; k++) outs[k] = OUT_INNER[k] ? c->stage_out[k] : out[k];
    int rc = launch(c, count, resume, ins, outs);
    if (rc != OK) return rc;
    for (size_t k = 0; k < NUM_OUTPUTS; k++)
        if (OUT_INNER[k]) {
            size_t outer = OUT_STEP_OUTER[k] ? OUT_STEP_OUTER[k] * steps : OUT_OUTER[k];
            stage(c->stage_out[k], out[k], outer, OUT_INNER[k], batch, 0);
        }
    return OK;
}

static int check_context(const struct context *c) {
    if (!c) return ERR_NULL;
    return c->magic == MAGIC ? OK : ERR_CONTEXT;
}

/* The entry of a call on a context: checks it, takes its busy flag, and refuses a context
 * opened by another process (a fork()ed child's copy). leave() releases the flag. */
static int enter(struct context *c) {
    int rc = check_context(c);
    if (rc != OK) return rc;
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&c->busy, &idle, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        return fail(ERR_BUSY, "the context is in use by another call (one context per thread)");
    if (c->pid != getpid()) {
        atomic_store_explicit(&c->busy, 0, memory_order_release);
        return fail(ERR_FORKED, "the context was opened by another process (before fork()): "
                                "the CUDA driver's state does not carry over to a child");
    }
    return OK;
}

static void leave(struct context *c) { atomic_store_explicit(&c->busy, 0, memory_order_release); }

static int check_arrays(const float *const *in, float *const *out) {
    if (!in || !out) return ERR_NULL;
    for (size_t k = 0; k < NUM_INPUTS; k++)
        if (!in[k]) return ERR_NULL;
    for (size_t k = 0; k < NUM_OUTPUTS; k++)
        if (!out[k]) return ERR_NULL;
    return OK;
}

/* One launch of `steps` steps: inputs in, the persistent kernel, outputs out. */
static int launch(struct context *c, size_t steps, unsigned resume, const float *const *in,
                  float *const *out) {
    CALL(c, cuCtxSetCurrent, c->cu);
    unsigned steps32 = (unsigned)steps, resume32 = resume;
    void *args[NUM_PARAMS + 1];
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        const struct param *p = &PARAMS[i];
        switch (p->role) {
        case ROLE_INPUT: {
            size_t n = tensor_len(p->elements, p->per_step, steps);
            if (n) CALL(c, cuMemcpyHtoD_v2, c->buf[i], in[p->index], 4 * n);
            args[i] = &c->buf[i];
            break;
        }
        case ROLE_STEPS: args[i] = &steps32; break;
        case ROLE_RESUME: args[i] = &resume32; break;
        default: args[i] = &c->buf[i]; break;
        }
    }
    CALL(c, cuLaunchCooperativeKernel, c->kernel, GRID, 1, 1, BLOCK, 1, 1, 0, NULL, args);
    CALL(c, cuCtxSynchronize);
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        const struct param *p = &PARAMS[i];
        if (p->role != ROLE_OUTPUT) continue;
        size_t n = tensor_len(p->elements, p->per_step, steps);
        if (n) CALL(c, cuMemcpyDtoH_v2, out[p->index], c->buf[i], 4 * n);
    }
    return OK;
}

static int run_locked(struct context *c, size_t steps, size_t batch, const float *const *inputs,
                      float *const *outputs) {
    int rc;
    if (!batch_ok(batch, c->batch)) return ERR_BATCH;
    if (!steps_ok(steps, c->max_steps)) return ERR_STEPS;
    if ((rc = check_arrays(inputs, outputs)) != OK) return rc;
    size_t count = steps;
#if SEQ_LENS_INPUT >= 0
    /* The time loops run the sequence lengths' common value: a whole number up to steps. */
    const float *lens = inputs[SEQ_LENS_INPUT];
    size_t n = INPUT_WHOLE[SEQ_LENS_INPUT];
    if (n > 0) {
        float first = lens[0];
        if (!(first >= 0.0f && first <= (float)steps && first == (float)(size_t)first))
            return ERR_STEPS;
        for (size_t b = 1; b < n; b++)
            if (lens[b] != first) return ERR_STEPS;
        count = (size_t)first;
    }
#endif
    rc = launch_batch(c, steps, count, 0, batch, inputs, outputs);
    c->position = 0;
    return rc;
}

EXPORT int NAME_run(void *ctx, size_t steps, size_t batch, const float *const *inputs,
                    float *const *outputs) {
    struct context *c = ctx;
    int rc = enter(c);
    if (rc != OK) return rc;
    rc = run_locked(c, steps, batch, inputs, outputs);
    leave(c);
    return rc;
}

static int step_locked(struct context *c, const float *const *inputs, float *const *outputs) {
    int rc;
    if (!STREAMABLE) return ERR_NOT_STREAMABLE;
    if ((rc = check_arrays(inputs, outputs)) != OK) return rc;
    /* A stream runs at the context's batch. */
    rc = launch_batch(c, 1, 1, c->position != 0, c->batch, inputs, outputs);
    if (rc == OK) c->position++;
    return rc;
}

EXPORT int NAME_step(void *ctx, const float *const *inputs, float *const *outputs) {
    struct context *c = ctx;
    int rc = enter(c);
    if (rc != OK) return rc;
    rc = step_locked(c, inputs, outputs);
    leave(c);
    return rc;
}

EXPORT int NAME_reset(void *ctx) {
    struct context *c = ctx;
    int rc = enter(c);
    if (rc != OK) return rc;
    c->position = 0;
    leave(c);
    return OK;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_escape_quotes_backslashes_and_non_ascii() {
        assert_eq!(c_string("a\"b\\c\n"), "    \"a\\\"b\\\\c\\n\"\n");
        assert_eq!(c_string("x?y"), "    \"x\\077y\"\n");
        assert_eq!(c_string("é"), "    \"\\303\\251\"\n");
        assert_eq!(c_string(""), "    \"\"\n");
        assert_eq!(c_string("l1\nl2"), "    \"l1\\n\"\n    \"l2\"\n");
    }

    #[test]
    fn arrays_end_in_zero() {
        assert_eq!(c_array([]), "0u");
        assert_eq!(c_array([3, 4]), "3u, 4u, 0u");
    }
}
