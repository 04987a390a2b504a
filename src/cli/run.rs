//! `hlstmc run`: run a model on inputs, or check it against ONNX test data.

use super::engine::{Cpu, Engine, SparseStrategy, build_options};
use super::io::{
    declared_input, dims, file_stem, persist, read_npz, read_tensor_stored, temp_beside, write_npy,
    write_npz,
};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hlstmc::test_data::{TestData, compare, tolerances};
use hlstmc::{Model, Runnable, StoredType, StoredTypes, Tensor, TensorInfo};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Run a model on inputs, or check it against reference test data.
///
/// Inputs come from .npy files or serialized ONNX TensorProto (.pb) files, one `-i NAME=FILE`
/// per model input, or from a .npz file (`-i inputs.npz`: numpy's `np.savez(path, X=x, ...)`,
/// arrays named after the model's inputs). With `-o DIR` each output is written to
/// DIR/<output name>.npy, with `-o FILE.npz` all of them to one .npz (`np.load(FILE)[name]`);
/// otherwise a summary of each output is printed.
///
/// `--test-data DIR` reads DIR/input_K.pb (K in the model's input order), runs, compares with
/// DIR/output_K.pb and prints the largest absolute and relative error per output. It exits 0 only
/// if every output has its reference and every element satisfies |got - want| <= atol + rtol *
/// |want| (a NaN or infinite value matches only the same value). A reference stored in another
/// float type than the output's declared one is a mismatch.
///
/// float16, bfloat16 and float64 inputs and outputs are computed in f32: inputs of any float
/// type are rounded to the declared one, outputs are given back in theirs (.npy `<f2`, `<f8`,
/// and `<u2` bfloat16 bit patterns), and the default tolerances follow the precision
/// (docs/precision.md).
///
/// The default optimization pipeline runs first; -O0 runs the imported graph as it is.
///
/// `--cache-dir DIR` keeps the compiled code in DIR (jit engine; docs/cache.md): a second run of
/// the same model with the same options reads it instead of importing, optimizing and compiling.
///
/// Examples:
///   hlstmc run examples/hlstm_sp97/model.onnx -i X=examples/hlstm_sp97/test_data_set_0/input_0.pb
///   hlstmc run examples/hlstm_sp97/model.onnx -i X=examples/hlstm_sp97/test_data_set_0/input_0.pb -o out/
///   hlstmc run examples/hlstm_sp97/model.onnx -i X=examples/hlstm_sp97/test_data_set_0/input_0.pb -o out/outputs.npz
///   hlstmc run examples/hlstm_sp97/model.onnx --test-data examples/hlstm_sp97/test_data_set_0
///   hlstmc run examples/digits-hlstm.onnx --test-data examples/digits-hlstm/test_data_set_0 --engine interp -O0
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// An input, as NAME=FILE (.npy or .pb), or FILE.npz holding inputs by name; repeatable.
    #[arg(short = 'i', long = "input", value_name = "NAME=FILE|FILE.npz")]
    pub inputs: Vec<String>,
    /// Write each output to DIR/<output name>.npy, or all of them to FILE.npz.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "output-dir",
        value_name = "DIR|FILE.npz",
        conflicts_with = "test_data"
    )]
    pub out: Option<PathBuf>,
    /// An ONNX test-data folder (input_K.pb, output_K.pb) to run and check against.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub test_data: Option<PathBuf>,
    /// Relative tolerance for --test-data.
    /// Default: 1e-3, or 4e-3 where the model's inputs or the output are float16, 3e-2 where
    /// bfloat16 (docs/precision.md).
    #[arg(long)]
    pub rtol: Option<f64>,
    /// Absolute tolerance for --test-data.
    /// Default: 1e-4, or 1e-3 for float16, 8e-3 for bfloat16.
    #[arg(long)]
    pub atol: Option<f64>,
    /// Which engine runs the model.
    /// Default: jit, or the interpreter (with a note) for a model the JIT cannot take yet
    /// (integer inputs other than sequence lengths, ops the kernel IR lacks).
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// With --engine kernel-interp or jit: generate every constant weight this way instead of
    /// choosing per matrix.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub sparse_strategy: Option<SparseStrategy>,
    /// With --engine jit: the CPU to generate code for.
    #[arg(long, value_enum, default_value = "native")]
    pub cpu: Cpu,
    /// With --engine jit: threads that split each step's work (1 to 64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Keep the compiled code in DIR and reuse it (jit engine; docs/cache.md): a second run of
    /// the same model with the same options skips import, optimization and compilation.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

/// What runs: a model to build, or code from the compiled-code cache.
enum Source {
    Model(Model),
    Cached(Arc<dyn Runnable>),
}

pub fn main(a: RunArgs) -> Result<ExitCode> {
    // The flags first: a bad pass name or tolerance is reported before any file is read.
    let opt = a.opt.options()?;
    opt.pass_manager()?;
    for (flag, t) in [("--rtol", a.rtol), ("--atol", a.atol)] {
        if let Some(t) = t.filter(|t| !(*t >= 0.0)) {
            bail!("{flag} {t}: a tolerance must be a number >= 0");
        }
    }
    if let Some(e) = a.engine {
        super::engine::check_threads(e.into(), a.threads)?;
    }
    if matches!(a.engine, Some(Engine::Cuda)) {
        super::check_cuda_driver()?;
    }
    let (source, mut phases) = hlstmc::ir::timing::record(|| match &a.cache_dir {
        Some(dir) => from_cache(dir, &opt, &a),
        None => Ok(Source::Model(super::load_model(&a.model)?)),
    });
    let source = source?;
    // A model from the cache is all f32 (docs/cache.md): it has no other stored types.
    let (infos, outputs_count, stored) = match &source {
        Source::Model(m) => (m.inputs(), m.outputs().len(), m.stored_types().clone()),
        Source::Cached(r) => (
            r.inputs().to_vec(),
            r.outputs().len(),
            StoredTypes::default(),
        ),
    };
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    let (inputs, references) = match &a.test_data {
        Some(dir) => {
            let data = TestData::load(dir, &names, outputs_count)?;
            let refs = data.outputs.into_iter().zip(data.output_types);
            (data.inputs, refs.map(|(t, s)| t.map(|t| (t, s))).collect())
        }
        None => (named_inputs(&names, &stored, &a.inputs)?, Vec::new()),
    };
    let (runnable, more) = hlstmc::ir::timing::record(|| -> Result<_> {
        Ok(match source {
            Source::Cached(r) => r,
            Source::Model(model) => {
                // A model exported with an open batch or sequence length runs at the one it is
                // given.
                let model = model
                    .specialize_to(&inputs)
                    .with_context(|| format!("{} (with the inputs' shapes)", a.model.display()))?
                    .optimize(&opt)?;
                build(model, &a)?
            }
        })
    });
    let runnable = runnable?;
    phases.extend(more);
    if a.opt.time_passes {
        eprint!("{}", super::setup_time::table(&stages(&phases), &phases));
    }
    let outputs = runnable.run(&inputs)?;
    if let Some(dir) = &a.test_data {
        let infos = runnable.outputs();
        let tol = Tolerance {
            rtol: a.rtol,
            atol: a.atol,
            stored: &stored,
        };
        return check_test_data(infos, &outputs, &references, dir, &tol);
    }
    match &a.out {
        Some(dir) => write_outputs(runnable.outputs(), &stored, &outputs, dir)?,
        None => {
            for (info, t) in runnable.outputs().iter().zip(&outputs) {
                let s = summary(t, stored.output(&info.name));
                outln!("{}: {s}", info.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The stages of a run's setup in the order they ran (import, optimize, compile; cache for
/// the compiled-code cache), each the time of its phase of its own name or else the sum of
/// its phases one level down.
fn stages(phases: &super::setup_time::Phases) -> Vec<(&str, std::time::Duration)> {
    let mut out: Vec<(&str, std::time::Duration)> = Vec::new();
    for (n, _) in phases {
        let stage = n.split('/').next().unwrap_or(n);
        if out.iter().any(|(s, _)| *s == stage) {
            continue;
        }
        let whole = phases.iter().find(|(p, _)| p == stage).map(|(_, d)| *d);
        let parts = phases
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(stage)
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|r| !r.contains('/'))
            })
            .map(|(_, d)| *d)
            .sum();
        out.push((stage, whole.unwrap_or(parts)));
    }
    out
}

/// The model from the compiled-code cache in `dir` (a hit, or built and stored), or imported
/// for the usual build where the cache does not take it (with a note why).
fn from_cache(dir: &Path, opt: &hlstmc::OptimizeOptions, a: &RunArgs) -> Result<Source> {
    if a.engine.is_some_and(|e| !matches!(e, Engine::Jit)) {
        bail!("--cache-dir holds JIT code: use it with --engine jit (the default)");
    }
    let cache = hlstmc::cache::Cache::new(dir);
    let opts = build_options(hlstmc::Engine::Jit, a.sparse_strategy, a.cpu, a.threads);
    match cache.load_or_build(&a.model, opt, &opts, &|_| serde_json::Value::Null) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {}: {w}", a.model.display());
            }
            if let hlstmc::cache::Outcome::Rebuilt(why) = &c.outcome {
                eprintln!("warning: cache entry {}: {why}; rebuilt", c.path.display());
            }
            Ok(Source::Cached(c.runnable))
        }
        Err(Ok(nc)) => {
            eprintln!("note: not cached: {}", nc.reason);
            for w in nc.model.warnings() {
                eprintln!("warning: {}: {w}", a.model.display());
            }
            Ok(Source::Model(nc.model))
        }
        // Without --engine, a model the JIT cannot take runs on the interpreter, as it does
        // without the cache: it is imported again and built as usual (which says why).
        Err(Err(_)) if a.engine.is_none() => Ok(Source::Model(super::load_model(&a.model)?)),
        Err(Err(e)) => Err(anyhow::Error::from(e).context(a.model.display().to_string())),
    }
}

/// The model built for the engine asked for; without one, the JIT, or the interpreter (with a
/// note) for a model the kernel IR cannot take.
fn build(model: Model, a: &RunArgs) -> Result<Arc<dyn Runnable>> {
    let opts = |e: hlstmc::Engine| build_options(e, a.sparse_strategy, a.cpu, a.threads);
    if let Some(e) = a.engine {
        return Ok(model.into_runnable(&opts(e.into()))?);
    }
    let (runnable, fallback) = model.into_runnable_or_interp(&opts(hlstmc::Engine::Jit))?;
    if let Some(e) = fallback {
        eprintln!("note: {e}; running the interpreter instead");
    }
    Ok(runnable)
}

/// Orders `-i NAME=FILE` arguments by the model's inputs, decoding bfloat16 bit patterns for
/// the inputs declared bfloat16.
fn named_inputs(names: &[&str], stored: &StoredTypes, args: &[String]) -> Result<Vec<Tensor>> {
    let mut got: Vec<Option<(Tensor, String)>> = vec![None; names.len()];
    let mut put = |name: &str, (t, file): (Tensor, StoredType), from: String| -> Result<()> {
        let k = names.iter().position(|n| *n == name).ok_or_else(|| {
            anyhow!(
                "{from}: the model has no input named '{name}'; its inputs are: {}",
                names.join(", ")
            )
        })?;
        if let Some((_, first)) = &got[k] {
            bail!("input '{name}' is given twice: by {first} and by {from}");
        }
        let t = declared_input(name, t, file, stored.input(name), &from)?;
        got[k] = Some((t, from));
        Ok(())
    };
    for arg in args {
        // An input whose name holds '=' (X=Y=file.npy): the split after a name the model has.
        let split = arg
            .match_indices('=')
            .map(|(i, _)| i)
            .find(|&i| names.contains(&&arg[..i]))
            .or_else(|| arg.find('='));
        match split.map(|i| (&arg[..i], &arg[i + 1..])) {
            Some((name, file)) => put(
                name,
                read_tensor_stored(Path::new(file))?,
                format!("-i {arg}"),
            )?,
            None if arg.ends_with(".npz") => {
                for (name, t, s) in read_npz(Path::new(arg))? {
                    put(&name, (t, s), format!("{arg} (array '{name}')"))?;
                }
            }
            None => bail!("-i expects NAME=FILE or FILE.npz, got '{arg}'"),
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&got)
        .filter(|(_, t)| t.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing inputs: {} (give each with -i NAME=FILE, or in a .npz)",
            missing.join(", ")
        );
    }
    Ok(got.into_iter().flatten().map(|(t, _)| t).collect())
}

fn write_outputs(
    infos: &[TensorInfo],
    stored: &StoredTypes,
    outputs: &[Tensor],
    dir: &Path,
) -> Result<()> {
    if dir.extension().is_some_and(|e| e == "npz") {
        super::io::create_parent(dir)?;
        // One file, whole or not at all: made under a random name beside it, then renamed.
        let tmp = temp_beside(dir)?;
        let named: Vec<(&str, &Tensor, StoredType)> = infos
            .iter()
            .zip(outputs)
            .map(|(i, t)| (i.name.as_str(), t, stored.output(&i.name)))
            .collect();
        write_npz(tmp.as_file(), dir, &named)?;
        persist(tmp, dir)?;
        outln!("wrote {}", dir.display());
        return Ok(());
    }
    // Outputs whose names make one file name (a/b and a_b) are an error before any write.
    let paths: Vec<PathBuf> = infos
        .iter()
        .map(|i| dir.join(format!("{}.npy", file_stem(&i.name))))
        .collect();
    for (k, p) in paths.iter().enumerate() {
        if let Some(j) = paths[..k].iter().position(|q| q == p) {
            bail!(
                "outputs '{}' and '{}' would both be written to {}; use -o FILE.npz, which keeps the names",
                infos[j].name,
                infos[k].name,
                p.display()
            );
        }
    }
    if let Some(p) = paths.iter().find(|p| p.is_dir()) {
        bail!("cannot write {}: a folder is in its place", p.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Every output is made first; a failure drops (removes) the ones made, and none is renamed.
    let mut made = Vec::new();
    for ((t, path), info) in outputs.iter().zip(&paths).zip(infos) {
        let tmp = temp_beside(path)?;
        write_npy(tmp.as_file(), path, t, stored.output(&info.name))?;
        made.push((tmp, path));
    }
    for (tmp, path) in made {
        persist(tmp, path)?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

fn summary(t: &Tensor, stored: StoredType) -> String {
    let vals: Vec<String> = match t {
        Tensor::F32(a) => a.iter().take(6).map(|v| format!("{v:.6}")).collect(),
        Tensor::I64(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
        Tensor::I32(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
        Tensor::Bool(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
    };
    let more = if t.len() > 6 { ", ..." } else { "" };
    let dtype = match (t.dtype(), stored) {
        (hlstmc::DType::F32, s) => s.name(),
        (d, _) => d.name(),
    };
    format!("{}{} [{}{more}]", dtype, dims(t.shape()), vals.join(", "))
}

/// The tolerances asked for, or else those of each output's precision.
struct Tolerance<'a> {
    rtol: Option<f64>,
    atol: Option<f64>,
    stored: &'a StoredTypes,
}

/// Compares the outputs with a test-data folder's references; prints a line per output and
/// PASS or FAIL.
fn check_test_data(
    infos: &[TensorInfo],
    outputs: &[Tensor],
    references: &[Option<(Tensor, StoredType)>],
    dir: &Path,
    tol: &Tolerance,
) -> Result<ExitCode> {
    let mut ok = true;
    for (k, (info, got)) in infos.iter().zip(outputs).enumerate() {
        let name = &info.name;
        let Some((want, want_type)) = &references[k] else {
            // A check with nothing to compare must not pass.
            let p = dir.join(format!("output_{k}.pb"));
            outln!("{name}: MISSING  no reference ({} is absent)", p.display());
            ok = false;
            continue;
        };
        let declared = tol.stored.output(name);
        if got.dtype() == hlstmc::DType::F32 && *want_type != declared {
            outln!(
                "{name}: MISMATCH  the reference is {want_type}, the output is declared {declared}"
            );
            ok = false;
            continue;
        }
        let (rtol, atol) = tolerances(tol.stored, name);
        let (rtol, atol) = (tol.rtol.unwrap_or(rtol), tol.atol.unwrap_or(atol));
        match compare(got, want, rtol, atol) {
            Ok(c) => {
                let verdict = if c.bad == 0 { "ok" } else { "MISMATCH" };
                outln!(
                    "{name}: {verdict}  max abs err {:.3e}  max rel err {:.3e}  ({} of {} elements out of tolerance)",
                    c.max_abs,
                    c.max_rel,
                    c.bad,
                    c.count
                );
                ok &= c.bad == 0;
            }
            Err(e) => {
                outln!("{name}: MISMATCH  {e}");
                ok = false;
            }
        }
    }
    outln!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
