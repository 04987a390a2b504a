//! The rest of the CLI as functions: `inspect`, `optimize`, `compile`.

use crate::convert::{self, Source};
use crate::errors::{choose, invalid, io_error, to_py};
use hlstmc::library::{Artifact, LibraryOptions, LibraryTarget, compile_library};
use hlstmc::{CpuIsa, OptimizeOptions, Strategy};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a model holds and costs, as the dict `hlstmc inspect --json` prints: inputs, outputs,
/// op counts, each weight with its nonzeros and density, parameters, multiply-adds per step.
/// With `optimized=True`, of the model after the optimizer.
#[pyfunction]
#[pyo3(signature = (path_or_bytes, *, optimized=false))]
pub fn inspect(
    py: Python<'_>,
    path_or_bytes: &Bound<'_, PyAny>,
    optimized: bool,
) -> PyResult<Py<PyAny>> {
    let source = Source::extract(path_or_bytes)?;
    let report = py
        .detach(|| -> hlstmc::Result<_> {
            let mut model = source.load()?;
            if optimized {
                model = model.optimize(&OptimizeOptions::default())?;
            }
            Ok(hlstmc::inspect::report(&model, &source.describe()))
        })
        .map_err(to_py)?;
    convert::json_to_py(py, &report)
}

/// Writes the optimizer's log (timings, statistics) to Python's `sys.stderr`, so that it shows
/// where Python's output goes (a notebook, a captured stream).
fn to_python_stderr(py: Python<'_>, log: &[u8]) -> PyResult<()> {
    if log.is_empty() {
        return Ok(());
    }
    let err = py.import("sys")?.getattr("stderr")?;
    err.call_method1("write", (String::from_utf8_lossy(log),))?;
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all (`hlstmc::write_atomic`).
fn write_atomically(path: &Path, bytes: &[u8]) -> PyResult<()> {
    hlstmc::write_atomic(path, bytes)
        .map_err(|e| io_error(e.kind(), format!("cannot write {}: {e}", path.display())))
}

/// Optimizes a model and returns it: as ONNX bytes (`format="onnx"`, a recurrence written as a
/// `Scan`), or as the graph IR's text (`format="hir"`). With `output`, writes it there instead
/// (whole or not at all) and returns the path.
///
/// `passes` replaces the default pipeline (`hlstmc passes` lists them); `level=0` runs no
/// pass. The pass-debugging options are the CLI's: `dump_dir` (the IR after each pass),
/// `verify_each` (the verifier and the interpreter's outputs compared after each pass),
/// `stats` and `time_passes` (tables on `sys.stderr`).
#[pyfunction]
#[pyo3(signature = (path_or_bytes, *, passes=None, level=1, dump_dir=None, verify_each=false, stats=false, time_passes=false, output=None, format="onnx"))]
#[allow(clippy::too_many_arguments)]
pub fn optimize(
    py: Python<'_>,
    path_or_bytes: &Bound<'_, PyAny>,
    passes: Option<Vec<String>>,
    level: u8,
    dump_dir: Option<PathBuf>,
    verify_each: bool,
    stats: bool,
    time_passes: bool,
    output: Option<PathBuf>,
    format: &str,
) -> PyResult<Py<PyAny>> {
    if level > 1 {
        return Err(invalid(format!(
            "level {level}: the levels are 0 (no pass) and 1"
        )));
    }
    let hir = match format {
        "onnx" => false,
        "hir" => true,
        other => {
            return Err(invalid(format!(
                "format '{other}' is not one of: onnx, hir"
            )));
        }
    };
    let mut opts = OptimizeOptions {
        level,
        passes,
        ..OptimizeOptions::default()
    };
    opts.instrumentation.dump_dir = dump_dir;
    opts.instrumentation.verify_each = verify_each;
    opts.instrumentation.stats = stats;
    opts.instrumentation.time_passes = time_passes;
    // A bad pass name is reported before the model is read.
    opts.pass_manager().map_err(to_py)?;
    let source = Source::extract(path_or_bytes)?;
    let mut log = Vec::new();
    let done = py.detach(|| -> hlstmc::Result<Vec<u8>> {
        let mut model = source.load()?;
        model.optimize_logged(&opts, &mut log)?;
        if hir {
            Ok(hlstmc::ir::text::print(model.graph()).into_bytes())
        } else {
            model.to_onnx("hlstmc")
        }
    });
    to_python_stderr(py, &log)?;
    let bytes = done.map_err(to_py)?;
    match output {
        Some(path) => {
            write_atomically(&path, &bytes)?;
            Ok(PyString::new(py, &path.display().to_string())
                .into_any()
                .unbind())
        }
        None if hir => Ok(PyString::new(py, &String::from_utf8_lossy(&bytes))
            .into_any()
            .unbind()),
        None => Ok(PyBytes::new(py, &bytes).into_any().unbind()),
    }
}

/// Compiles a model into a library, as `hlstmc compile` does, and returns the paths written.
///
/// `target`: "x86_64" (by default NAME.o, libhlstmc_NAME.so, libhlstmc_NAME.a, NAME.h and the
/// pkg-config and CMake files hlstmc_NAME.pc and hlstmc_NAMEConfig.cmake) or "ptx" (NAME.ptx,
/// NAME.launch.json and a host library of the same C ABI). `emit` picks the files: "obj",
/// "so", "a", "header", "pc", "cmake", "clif", "asm", "kir", "ptx", "c". `name` (a C identifier; default:
/// the file's stem) prefixes every symbol. `shapes` fixes open input dims ({name: dims});
/// `max_batch` makes a library that takes any batch from 1 to it per call. docs/c-abi.md
/// describes the C API.
#[pyfunction]
#[pyo3(signature = (path_or_bytes, target="x86_64", out_dir=None, *, name=None, emit=None, threads=1, max_batch=None, shapes=None, cpu="x86-64-v3", sm=80, sparse_strategy=None, level=1))]
#[allow(clippy::too_many_arguments)]
pub fn compile(
    py: Python<'_>,
    path_or_bytes: &Bound<'_, PyAny>,
    target: &str,
    out_dir: Option<PathBuf>,
    name: Option<String>,
    emit: Option<Vec<String>>,
    threads: usize,
    max_batch: Option<usize>,
    shapes: Option<BTreeMap<String, Vec<usize>>>,
    cpu: &str,
    sm: u32,
    sparse_strategy: Option<&str>,
    level: u8,
) -> PyResult<Vec<String>> {
    let out_dir = out_dir.unwrap_or_else(|| PathBuf::from("."));
    let target = choose("target", target, &LibraryTarget::ALL, LibraryTarget::name)?;
    let source = Source::extract(path_or_bytes)?;
    let name = match (name, &source) {
        (Some(n), _) => n,
        (None, Source::Path(p)) => hlstmc::library::default_name(p),
        (None, Source::Bytes(_)) => "model".to_string(),
    };
    let mut lib = LibraryOptions::new(&name, target);
    if let Some(list) = emit {
        lib.emit = list
            .iter()
            .map(|e| choose("emit", e, &Artifact::ALL, Artifact::name))
            .collect::<PyResult<_>>()?;
    }
    if !(1..=hlstmc::BuildOptions::MAX_THREADS).contains(&threads) {
        return Err(invalid(format!(
            "threads = {threads}: a library runs on 1 to {} threads",
            hlstmc::BuildOptions::MAX_THREADS
        )));
    }
    if !(80..=90).contains(&sm) {
        return Err(invalid(format!(
            "sm = {sm}: the architectures are sm_80 to sm_90"
        )));
    }
    if max_batch == Some(0) {
        return Err(invalid("max_batch = 0: a batch is at least 1"));
    }
    if level > 1 {
        return Err(invalid(format!(
            "level {level}: the levels are 0 (no pass) and 1"
        )));
    }
    lib.threads = threads;
    lib.sm = sm;
    lib.max_batch = max_batch;
    lib.cpu = cpu
        .parse::<CpuIsa>()
        .map_err(|e| invalid(format!("cpu: {e}")))?;
    lib.strategy = sparse_strategy
        .map(|s| choose("sparse_strategy", s, &Strategy::ALL, Strategy::name))
        .transpose()?;
    lib.shapes = shapes.unwrap_or_default().into_iter().collect();
    lib.source = source.describe();
    let opt = OptimizeOptions {
        level,
        ..OptimizeOptions::default()
    };
    let written = py
        .detach(|| compile_library(source.load()?, &opt, &lib, &out_dir))
        .map_err(to_py)?;
    Ok(written
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect())
}

/// The resource limits in force, as a dict: `elements` (of one tensor), `bytes` (of one file
/// as read, after decompression) and `nesting` (of graph bodies). docs/limits.md.
#[pyfunction]
pub fn limits(py: Python<'_>) -> PyResult<Py<PyAny>> {
    limits_dict(py, hlstmc::limits::current())
}

/// Changes the resource limits for the whole process (those not given stay) and returns the
/// previous ones, so that `hlstmc.set_limits(**old)` restores them.
#[pyfunction]
#[pyo3(signature = (*, elements=None, bytes=None, nesting=None))]
pub fn set_limits(
    py: Python<'_>,
    elements: Option<u64>,
    bytes: Option<u64>,
    nesting: Option<u64>,
) -> PyResult<Py<PyAny>> {
    let old = hlstmc::limits::current();
    let mut new = old;
    for (key, value) in [
        ("elements", elements),
        ("bytes", bytes),
        ("nesting", nesting),
    ] {
        if let Some(v) = value {
            new.set_key(key, &v.to_string())
                .map_err(|e| invalid(e.replace("--limit ", "")))?;
        }
    }
    hlstmc::limits::set(new);
    limits_dict(py, old)
}

fn limits_dict(py: Python<'_>, l: hlstmc::Limits) -> PyResult<Py<PyAny>> {
    let json = serde_json::json!({"elements": l.elements, "bytes": l.bytes, "nesting": l.nesting});
    convert::json_to_py(py, &json)
}
