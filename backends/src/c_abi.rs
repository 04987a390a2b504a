//! The C ABI shared by the libraries `hlstmc compile` writes (docs/c-abi.md): its version, its
//! error codes, and the header `NAME.h` with the prototypes, the codes and a comment giving the
//! model's tensors and limits. The x86-64 target generates the functions with Cranelift
//! ([`crate::cpu::aot`]); the PTX target generates C host code over the CUDA driver
//! ([`crate::cuda::host`]), with the same functions and two more (docs/ptx.md).

/// The value `NAME_version()` returns; raised whenever the ABI changes.
pub const ABI_VERSION: i32 = 3;
/// Success.
pub const OK: i32 = 0;
/// A null pointer: the context, an array, or one of its entries. Nothing was written.
pub const ERR_NULL: i32 = 1;
/// A sequence length the model or the context does not take (0, more than the context's
/// maximum, or another length than the static one).
pub const ERR_STEPS: i32 = 2;
/// A batch size other than the compiled one.
pub const ERR_BATCH: i32 = 3;
/// `NAME_context_init` was given fewer bytes than `NAME_context_size` asks for.
pub const ERR_SIZE: i32 = 4;
/// `NAME_step` on a model that cannot run step by step (a reverse or bidirectional recurrence,
/// or a static sequence length).
pub const ERR_NOT_STREAMABLE: i32 = 5;
/// The pointer is not an initialised context.
pub const ERR_CONTEXT: i32 = 6;
/// A CUDA driver that is absent or failed (PTX target): `NAME_error_message()` says which call.
pub const ERR_DRIVER: i32 = 7;
/// A function this library does not provide: `NAME_context_init` on the GPU (device memory
/// cannot live in a caller's buffer) or with threads (their pool needs `NAME_context_free`).
pub const ERR_UNSUPPORTED: i32 = 8;
// Codes 9 to 12 report misuse that was undefined before them (docs/c-abi.md, "Ownership and
// misuse"); they were appended within ABI version 3, whose functions keep their binary shape.
/// `NAME_context_init` on memory that is not 4-byte aligned.
pub const ERR_ALIGN: i32 = 9;
/// The context is in use by another call (on another thread, or reentered from a signal
/// handler): nothing was done.
pub const ERR_BUSY: i32 = 10;
/// `NAME_context_free` on a context in the caller's memory (`NAME_context_init`): the caller
/// releases it; nothing was done.
pub const ERR_NOT_OWNED: i32 = 11;
/// The context was created in another process (before a `fork()`): its threads, or its GPU
/// state, are not in this one. Only `NAME_context_free` works on it.
pub const ERR_FORKED: i32 = 12;

/// Every error code with its name and meaning, for the header and the docs.
pub const ERRORS: &[(&str, i32, &str)] = &[
    ("OK", OK, "success"),
    (
        "ERR_NULL",
        ERR_NULL,
        "a null context, array or array entry: nothing was written",
    ),
    (
        "ERR_STEPS",
        ERR_STEPS,
        "a sequence length the model or the context does not take",
    ),
    ("ERR_BATCH", ERR_BATCH, "a batch other than NAME_batch()"),
    (
        "ERR_SIZE",
        ERR_SIZE,
        "a context buffer smaller than NAME_context_size()",
    ),
    (
        "ERR_NOT_STREAMABLE",
        ERR_NOT_STREAMABLE,
        "NAME_step on a model that cannot run step by step",
    ),
    (
        "ERR_CONTEXT",
        ERR_CONTEXT,
        "not a context made by NAME_context_init or NAME_context_create",
    ),
    (
        "ERR_UNSUPPORTED",
        ERR_UNSUPPORTED,
        "not available for this library (NAME_context_init on the GPU or with threads)",
    ),
    (
        "ERR_ALIGN",
        ERR_ALIGN,
        "NAME_context_init on memory that is not 4-byte aligned",
    ),
    (
        "ERR_BUSY",
        ERR_BUSY,
        "the context is in use by another call (another thread): nothing was done",
    ),
    (
        "ERR_NOT_OWNED",
        ERR_NOT_OWNED,
        "NAME_context_free on caller memory (NAME_context_init): release it yourself; nothing was done",
    ),
    (
        "ERR_FORKED",
        ERR_FORKED,
        "the context was created before a fork(), in the parent: only NAME_context_free works on it",
    ),
];

/// The error codes only the PTX target returns (its header lists them after [`ERRORS`]).
pub const GPU_ERRORS: &[(&str, i32, &str)] = &[(
    "ERR_DRIVER",
    ERR_DRIVER,
    "the CUDA driver is absent or a driver call failed: NAME_error_message() says which",
)];

/// Whether `name` can prefix C identifiers: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_c_identifier(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The target a library runs on, for its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibraryTarget {
    /// Machine code; `context_bytes` is what `NAME_context_size` returns.
    X86_64 { context_bytes: usize },
    /// PTX run through the CUDA driver; the context lives on the host and the GPU.
    Ptx { sm: u32 },
}

/// What a header says about a library: its limits and tensors.
pub struct LibraryInfo {
    pub target: LibraryTarget,
    pub max_steps: usize,
    pub dynamic_steps: bool,
    pub streamable: bool,
    pub batch: usize,
    pub static_steps_reason: Option<String>,
    /// The position of the sequence-lengths input, if the model takes them at run time.
    pub seq_lens_input: Option<usize>,
    /// Threads a call runs on (x86-64 libraries compiled with `--threads`).
    pub threads: usize,
    /// Whether the batch is chosen per call, from 1 to `batch`.
    pub dynamic_batch: bool,
    /// Element counts (f32) for the longest sequence, and per step for tensors laid out by step.
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
    pub input_step_lens: Vec<Option<usize>>,
    pub output_step_lens: Vec<Option<usize>>,
}

/// One model input or output, for the header's comment.
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
}

/// The C header `NAME.h` of a library. `inputs` and `outputs` name the model's tensors in
/// order (for the comment only).
pub fn c_header(
    name: &str,
    obj: &LibraryInfo,
    model: &str,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
) -> String {
    let guard = format!("{}_H", name.to_ascii_uppercase());
    let mut s = String::new();
    let mut line = |t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    line(&format!(
        "/* {name}.h: generated by hlstmc from {}. Do not edit. */",
        sanitize_comment(model)
    ));
    line("/*");
    line(" * All tensors are f32, row-major, in the layouts the ONNX model declares.");
    let steps = if obj.dynamic_steps {
        format!(
            " * Sequence length: any from 1 to {} per NAME_run (and without limit through NAME_step).",
            obj.max_steps
        )
    } else {
        format!(
            " * Sequence length: exactly {} ({}).",
            obj.max_steps,
            sanitize_comment(obj.static_steps_reason.as_deref().unwrap_or("static"))
        )
    };
    line(&steps.replace("NAME", name));
    if obj.dynamic_batch {
        line(&format!(
            " * Batch: any from 1 to {} per call (the lengths below are for {}; see NAME_input_len_for).",
            obj.batch, obj.batch
        ).replace("NAME", name));
    } else {
        line(&format!(" * Batch: {}.", obj.batch));
    }
    line(
        &format!(
            " * NAME_step: {}.",
            if obj.streamable {
                "supported"
            } else {
                "not supported (returns NAME_ERR_NOT_STREAMABLE)"
            }
        )
        .replace("NAME", name),
    );
    let list = |line: &mut dyn FnMut(&str),
                ts: &[TensorInfo],
                lens: &[usize],
                per: &[Option<usize>],
                lens_input: Option<usize>| {
        for (k, t) in ts.iter().enumerate() {
            let d: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
            let n = lens.get(k).copied().unwrap_or(0);
            let by_step = match per.get(k).copied().flatten() {
                Some(p) => format!(", {p} per step: steps x {p}"),
                None if lens_input == Some(k) => {
                    ", the sequence lengths: f32 whole numbers, all equal, at most steps"
                        .to_string()
                }
                None => String::new(),
            };
            line(&format!(
                " *   {k}: {} [{}] ({n} floats for the longest sequence{by_step})",
                sanitize_comment(&t.name),
                d.join(" x ")
            ));
        }
    };
    line(" * Inputs (in the order of the `inputs` array):");
    list(
        &mut line,
        inputs,
        &obj.input_lens,
        &obj.input_step_lens,
        obj.seq_lens_input,
    );
    line(" * Outputs (in the order of the `outputs` array):");
    list(
        &mut line,
        outputs,
        &obj.output_lens,
        &obj.output_step_lens,
        None,
    );
    let gpu = matches!(obj.target, LibraryTarget::Ptx { .. });
    match obj.target {
        LibraryTarget::X86_64 { context_bytes } => {
            line(&format!(
                " * Context: {context_bytes} bytes (a {}-byte header and the workspace), 64-byte aligned (4 required).",
                crate::cpu::aot::CONTEXT_HEADER
            ));
            if obj.threads > 1 {
                line(&format!(
                    " * Threads: {} per call, a pool started by NAME_context_create (NAME_context_init",
                    obj.threads
                ).replace("NAME", name));
                line(&" * is not available). Link with -pthread.".replace("NAME", name));
            }
        }
        LibraryTarget::Ptx { sm } => {
            line(&format!(
                " * Target: PTX for sm_{sm} and newer, loaded through the CUDA driver (libcuda.so.1,"
            ));
            line(" * opened when a context is created). A context holds the loaded module and its");
            line(
                " * device buffers; NAME_context_init is not available. Link with -ldl."
                    .replace("NAME", name)
                    .as_str(),
            );
        }
    }
    line(
        &" * A context serves one call at a time (another gets NAME_ERR_BUSY); use one per thread."
            .replace("NAME", name),
    );
    line(" * See docs/c-abi.md.");
    line(" */");
    line(&format!("#ifndef {guard}"));
    line(&format!("#define {guard}"));
    line("");
    line("#include <stddef.h>");
    line("");
    line("#ifdef __cplusplus");
    line("extern \"C\" {");
    line("#endif");
    line("");
    line(&format!(
        "#define {name}_ABI_VERSION {ABI_VERSION} /* what {name}_version() returns */"
    ));
    let (target_macro, errors): (&str, &[_]) = if gpu {
        ("TARGET_PTX", GPU_ERRORS)
    } else {
        ("TARGET_X86_64", &[])
    };
    line(&format!(
        "#define {name}_{target_macro} 1 /* the target this library was compiled for */"
    ));
    line(&format!(
        "#define {name}_THREADS {} /* threads a call runs on */",
        obj.threads
    ));
    line(&format!(
        "#define {name}_SEQ_LENS_INPUT {} /* the input giving the sequence lengths (f32 whole numbers, all equal, at most steps; else {name}_ERR_STEPS); -1: none */",
        obj.seq_lens_input.map_or(-1, |k| k as i64)
    ));
    for (code, value, doc) in ERRORS.iter().chain(errors) {
        line(&format!(
            "#define {name}_{code} {value} /* {} */",
            doc.replace("NAME", name)
        ));
    }
    line("");
    let mut functions = vec![
        ("int", "version", "void", "The ABI version."),
        ("size_t", "num_inputs", "void", "The number of inputs."),
        ("size_t", "num_outputs", "void", "The number of outputs."),
        (
            "size_t",
            "max_steps",
            "void",
            "The longest sequence NAME_run takes.",
        ),
        (
            "int",
            "dynamic_steps",
            "void",
            "1 if NAME_run takes any length from 1 to NAME_max_steps(), 0 if only that one.",
        ),
        ("int", "streamable", "void", "1 if NAME_step works."),
        (
            "size_t",
            "batch",
            "void",
            "The batch size (the largest, when NAME_dynamic_batch()).",
        ),
        (
            "int",
            "dynamic_batch",
            "void",
            "1 if NAME_run takes any batch from 1 to NAME_batch() (up to the context's), 0 if only that one.",
        ),
        (
            "size_t",
            "input_len",
            "size_t k, size_t steps",
            "Input k's length in floats for a sequence of `steps` steps (0 if k or steps is out of range).",
        ),
        (
            "size_t",
            "output_len",
            "size_t k, size_t steps",
            "Output k's length in floats for `steps` steps (0 if out of range).",
        ),
        (
            "size_t",
            "input_len_for",
            "size_t k, size_t steps, size_t batch",
            "Input k's length in floats for `steps` steps of `batch` (0 if out of range).",
        ),
        (
            "size_t",
            "output_len_for",
            "size_t k, size_t steps, size_t batch",
            "Output k's length in floats for `steps` steps of `batch` (0 if out of range).",
        ),
        (
            "size_t",
            "context_size",
            "size_t max_steps, size_t batch",
            "Bytes of a context for sequences up to max_steps (0 if the model does not take them).",
        ),
        (
            "int",
            "context_init",
            "void *mem, size_t size, size_t max_steps, size_t batch",
            "Makes `size` bytes at `mem` (64-byte aligned is best, 4 required) a context. NAME_OK or an error.",
        ),
        (
            "void *",
            "context_create",
            "size_t max_steps, size_t batch",
            "Allocates and initialises a context (aligned_alloc); NULL if not allowed or out of memory.",
        ),
        (
            "int",
            "context_free",
            "void *ctx",
            "Frees a context from NAME_context_create: NAME_OK (also for NULL), or an error and nothing freed.",
        ),
        (
            "int",
            "run",
            "void *ctx, size_t steps, size_t batch, const float *const *inputs, float *const *outputs",
            "Runs a whole sequence of `steps` steps. NAME_OK, or an error code (nothing written).",
        ),
        (
            "int",
            "step",
            "void *ctx, const float *const *inputs, float *const *outputs",
            "Runs one time step, continuing the sequence (one step of each per-step tensor). NAME_OK or an error.",
        ),
        (
            "int",
            "reset",
            "void *ctx",
            "The next NAME_step starts a new sequence.",
        ),
    ];
    if gpu {
        for f in &mut functions {
            f.3 = match f.1 {
                "context_size" => {
                    "0: a GPU context cannot live in caller memory (use NAME_context_create)."
                }
                "context_init" => "NAME_ERR_UNSUPPORTED on the GPU (use NAME_context_create).",
                "context_create" => {
                    "Loads the PTX on GPU 0 and allocates device buffers for max_steps; NULL on any error (NAME_context_open says which)."
                }
                "context_free" => {
                    "Frees a context's device buffers and module, and the context: NAME_OK (also for NULL), or an error and nothing freed."
                }
                _ => f.3,
            };
        }
        functions.extend([
            (
                "int",
                "context_open",
                "void **ctx, int device, size_t max_steps, size_t batch",
                "NAME_context_create on GPU `device`, with an error code: NAME_OK and *ctx set, or an error and *ctx NULL.",
            ),
            (
                "const char *",
                "error_message",
                "void",
                "The calling thread's last driver failure (NAME_ERR_DRIVER), as text; \"\" if none.",
            ),
        ]);
    }
    for (ret, f, args, doc) in functions {
        line(&format!("/* {} */", doc.replace("NAME", name)));
        let sep = if ret.ends_with('*') { "" } else { " " };
        line(&format!("{ret}{sep}{name}_{f}({args});"));
    }
    line("");
    line("#ifdef __cplusplus");
    line("}");
    line("#endif");
    line("");
    line(&format!("#endif /* {guard} */"));
    s
}

/// Keeps a name from closing the header's comment.
fn sanitize_comment(s: &str) -> String {
    s.replace("*/", "* /").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_identifiers() {
        assert!(is_c_identifier("model_1"));
        assert!(is_c_identifier("_m"));
        assert!(!is_c_identifier("1m"));
        assert!(!is_c_identifier("a-b"));
        assert!(!is_c_identifier(""));
    }

    #[test]
    fn error_codes_are_distinct() {
        let mut codes: Vec<i32> = ERRORS.iter().map(|e| e.1).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ERRORS.len());
    }
}
