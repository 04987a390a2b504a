//! The worker: reads models from standard input, runs each through the pipeline and the engines,
//! and answers one line per model. The parent kills and restarts it when it crashes, runs out of
//! memory or takes too long, so nothing here needs to survive a bad case except a panic.

use hlstm_driver::test_data::compare;
use hlstm_driver::{BuildOptions, DType, Engine, Error, Model, OptimizeOptions, Tensor};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// The comparison of `hlstmc run --test-data` and tests/fixtures_interp.rs.
pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-4;

/// Inputs larger than this are not generated: the harness would spend its time filling them.
const MAX_INPUT_ELEMENTS: usize = 1 << 20;

/// What a case came to.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Ran everywhere and the engines agree (or the reference is not finite, "skipped").
    Agree { compared: bool },
    /// A clear error from the library; the kind names the stage and the error variant.
    Rejected(String),
    /// A panic, or engines that disagree on a model that imported.
    Failure(String),
}

impl Verdict {
    /// The one-line form sent to the parent.
    pub fn line(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " | ");
        match self {
            Verdict::Agree { compared: true } => "agree".into(),
            Verdict::Agree { compared: false } => "skipped".into(),
            Verdict::Rejected(k) => format!("rejected {}", one(k)),
            Verdict::Failure(m) => format!("failure {}", one(m)),
        }
    }

    pub fn parse(line: &str) -> Verdict {
        let line = line.trim_end();
        match line.split_once(' ') {
            _ if line == "agree" => Verdict::Agree { compared: true },
            _ if line == "skipped" => Verdict::Agree { compared: false },
            Some(("rejected", k)) => Verdict::Rejected(k.to_string()),
            Some(("failure", m)) => Verdict::Failure(m.to_string()),
            _ => Verdict::Failure(format!("unreadable worker answer: {line:?}")),
        }
    }
}

/// The kind of a library error, for the summary: its variant (and the import error's).
fn kind(stage: &str, e: &Error) -> String {
    use hlstm_frontends::onnx::ImportError as I;
    let v = match e {
        Error::Io { .. } => "io",
        Error::Import(I::Decode(_)) => "import-decode",
        Error::Import(I::Unsupported(_)) => "import-unsupported",
        Error::Import(I::Node { .. }) => "import-node",
        Error::Import(I::Model(_)) => "import-model",
        Error::Import(I::Io { .. }) => "import-io",
        Error::Options(_) => "options",
        Error::Shape(_) => "shape",
        Error::Input { .. } => "input",
        Error::Inputs(_) => "inputs",
        Error::Optimize(_) => "optimize",
        Error::Lower(_) => "lower",
        Error::Node { .. } => "node",
        Error::Codegen { .. } => "codegen",
        Error::Unsupported(_) => "unsupported",
        Error::Run(_) => "run",
        _ => "other",
    };
    format!("{stage}: {v}")
}

/// Inputs for a model: finite values (docs/passes.md leaves non-finite inputs outside the
/// engines' agreement), open dims filled with small sizes drawn per symbol, integer inputs
/// (sequence lengths) within the sequence.
fn inputs_for(model: &Model, seed: u64) -> Result<Vec<Tensor>, String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut syms: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for info in model.inputs() {
        let Some(shape) = &info.ty.shape else {
            return Err("inputs: unranked".into());
        };
        let dims: Vec<usize> = shape
            .iter()
            .map(|d| match d {
                hlstm_driver::Dim::Known(n) => *n,
                hlstm_driver::Dim::Sym(s) => *syms
                    .entry(s.clone())
                    .or_insert_with(|| rng.random_range(1..=4)),
                hlstm_driver::Dim::Unknown => rng.random_range(1..=4),
            })
            .collect();
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let n = match n {
            Some(n) if n <= MAX_INPUT_ELEMENTS => n,
            _ => return Err("inputs: too large to generate".into()),
        };
        // The largest dim bounds integer inputs: sequence lengths must fit the sequence.
        let top = dims.iter().copied().max().unwrap_or(1).max(1) as i64;
        let t = match info.ty.dtype {
            DType::F32 => Tensor::from_f32(
                &dims,
                (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
            ),
            DType::I64 => {
                Tensor::from_i64(&dims, (0..n).map(|_| rng.random_range(1..=top)).collect())
            }
            DType::I32 => {
                Tensor::from_i64(&dims, (0..n).map(|_| rng.random_range(1..=top)).collect())
                    .map(|t| t.cast(DType::I32))
            }
            DType::Bool => {
                Tensor::from_i64(&dims, (0..n).map(|_| rng.random_range(0..=1)).collect())
                    .map(|t| t.cast(DType::Bool))
            }
        };
        out.push(t.ok_or("inputs: shape does not fit")?);
    }
    Ok(out)
}

fn all_finite(ts: &[Tensor]) -> bool {
    ts.iter().all(|t| match t.cast(DType::F32).as_f32() {
        Some(a) => a.iter().all(|v| v.is_finite()),
        None => true,
    })
}

/// Compares an engine's outputs with the reference's; the failure text names the engine, the
/// output and the worst element.
fn agree(what: &str, got: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} outputs, the reference has {}",
            got.len(),
            want.len()
        ));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let c = compare(g, w, RTOL, ATOL).map_err(|e| format!("{what}: output {k}: {e}"))?;
        if c.bad > 0 {
            return Err(format!(
                "{what}: output {k}: {} of {} elements out of tolerance, max abs err {:.3e}",
                c.bad, c.count, c.max_abs
            ));
        }
    }
    Ok(())
}

/// Errors the kernel engines may give for a model the reference runs: things they do not take
/// (yet), stated as such.
fn kernel_declines(e: &Error) -> bool {
    matches!(
        e,
        Error::Lower(_) | Error::Unsupported(_) | Error::Codegen { .. }
    )
}

/// One case: import, the reference interpreter at -O0, the default pipeline, the interpreter
/// and the JIT after it; outputs compared with the reference.
pub fn run_case(bytes: &[u8]) -> Verdict {
    let model = match Model::from_bytes(bytes, None) {
        Ok(m) => m,
        Err(e) => return Verdict::Rejected(kind("import", &e)),
    };
    let inputs = match inputs_for(&model, fnv(bytes)) {
        Ok(i) => i,
        Err(e) => return Verdict::Rejected(e),
    };
    let model = match model.specialize_to(&inputs) {
        Ok(m) => m,
        Err(e) => return Verdict::Rejected(kind("specialize", &e)),
    };
    let reference_graph = model.graph().clone();
    let reference = model
        .clone()
        .into_runnable(&BuildOptions::engine(Engine::Interp))
        .and_then(|r| r.run(&inputs));
    let mut optimized = model;
    if let Err(e) = optimized.optimize_logged(&OptimizeOptions::default(), &mut std::io::sink()) {
        return Verdict::Rejected(kind("optimize", &e));
    }
    let interp = optimized
        .clone()
        .into_runnable(&BuildOptions::engine(Engine::Interp))
        .and_then(|r| r.run(&inputs));
    let jit = optimized
        .into_runnable(&BuildOptions::engine(Engine::Jit))
        .and_then(|r| r.run(&inputs));
    let want = match reference {
        Ok(w) => w,
        // The reference refuses the model: nothing to compare with, whatever the others do.
        Err(e) => return Verdict::Rejected(kind("interp -O0", &e)),
    };
    let interp = match interp {
        Ok(o) => o,
        Err(e) => return Verdict::Failure(format!("interp -O1 fails where -O0 runs: {e}")),
    };
    let jit = match jit {
        Ok(o) => Some(o),
        Err(e) if kernel_declines(&e) => None,
        Err(e) => return Verdict::Failure(format!("jit fails where interp -O0 runs: {e}")),
    };
    if !all_finite(&want) {
        return Verdict::Agree { compared: false };
    }
    if largest_constant(&reference_graph) > MAX_COMPARED_CONSTANT {
        return Verdict::Agree { compared: false };
    }
    if let Err(m) = agree("interp -O1", &interp, &want) {
        return Verdict::Failure(m);
    }
    if let Some(jit) = jit
        && let Err(m) = agree("jit", &jit, &want)
    {
        return Verdict::Failure(m);
    }
    Verdict::Agree { compared: true }
}

/// Constants beyond this magnitude (byte edits make values up to 3.4e38) leave the tolerance
/// of the comparison: the JIT's polynomial activations have an absolute error near 1e-7, which
/// such a weight or state multiplies past any tolerance (a GRU state of -1.7e38 gave 0.1).
const MAX_COMPARED_CONSTANT: f32 = 1e3;

/// The largest magnitude among the f32 constants of a graph and its recurrence bodies.
fn largest_constant(g: &hlstm_ir::Graph) -> f32 {
    g.nodes
        .node_weights()
        .map(|n| match &n.op {
            hlstm_ir::Op::Const(c) => c
                .value
                .as_f32()
                .map_or(0.0, |a| a.iter().fold(0.0f32, |m, v| m.max(v.abs()))),
            hlstm_ir::Op::Recurrence(r) => largest_constant(&r.body),
            _ => 0.0,
        })
        .fold(0.0, f32::max)
}

/// FNV-1a of the model bytes: the seed of its inputs, so that a saved mutant replays alone.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Panics are caught per case; the hook keeps the message and place instead of printing them.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // A panic inside std or a dependency is placed by the first frame of hlstmc's own code.
        let ours = std::backtrace::Backtrace::force_capture().to_string();
        let ours = ours
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix("at "))
            .find(|l| !l.contains("/rustc/") && !l.contains("/.cargo/") && !l.contains("fuzz/src/"))
            .map(|l| format!(" (from {l})"))
            .unwrap_or_default();
        let at = format!("{at}{ours}");
        if let Ok(mut p) = PANIC.lock() {
            *p = Some(format!("{msg}{at}"));
        }
    }));
}

/// A case with its panic caught.
pub fn run_case_caught(bytes: &[u8]) -> Verdict {
    match catch_unwind(AssertUnwindSafe(|| run_case(bytes))) {
        Ok(v) => v,
        Err(_) => {
            let msg = PANIC
                .lock()
                .ok()
                .and_then(|mut p| p.take())
                .unwrap_or_default();
            Verdict::Failure(format!("panic: {msg}"))
        }
    }
}

/// Limits the worker's address space: an allocation past it fails (and aborts the worker,
/// which the parent reports) instead of taking the machine's memory.
pub fn limit_memory(bytes: u64) -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The worker's loop: a request is a little-endian u32 length and the model bytes; the answer
/// is one line on the reply channel. Standard output is sent to standard error first, so that
/// nothing the library prints can mix into the answers.
pub fn serve(memory: u64) -> Result<(), String> {
    limit_memory(memory)?;
    install_panic_hook();
    // SAFETY: dup and dup2 on the process's own standard descriptors.
    let reply_fd = unsafe { libc::dup(1) };
    if reply_fd < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        return Err(format!("dup: {}", std::io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: reply_fd was just created by dup and is owned by this File alone.
    let mut reply = unsafe { std::fs::File::from_raw_fd(reply_fd) };
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut len = [0u8; 4];
        match stdin.read_exact(&mut len) {
            Ok(()) => {}
            // The parent closed the pipe: the run is over.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        stdin
            .read_exact(&mut bytes)
            .map_err(|e| format!("read: {e}"))?;
        let v = run_case_caught(&bytes);
        writeln!(reply, "{}", v.line()).map_err(|e| format!("reply: {e}"))?;
        reply.flush().map_err(|e| format!("reply: {e}"))?;
    }
}
