//! `hlstmc bench`: time a model's run with one engine, per sequence and per time step.

mod report;
mod timing;

use super::engine::{Cpu, Engine, SparseStrategy, build_options};
use anyhow::{Result, anyhow, bail};
use clap::Args;
use hlstmc::ir::stats::graph_stats;
use hlstmc::ir::timing::record;
use hlstmc::ir::{DType, Dim, Graph, Op, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use timing::{DEFAULT_ROUNDS, Plan, measure, summarize};

/// Time a model: compile once, then time whole-sequence calls.
///
/// The model is imported, optimized (the default pipeline unless told otherwise) and, for the
/// kernel-interp and jit engines, lowered and compiled once; the compile time is reported. The
/// inputs are those of a --test-data folder (DIR/input_K.pb), or random f32 values in [-1, 1)
/// from a fixed seed, of the shapes the model declares (static shapes only).
///
/// After --warmup untimed calls, each timed call is one measurement (--runs N of them; by
/// default as many as fit in about 1 s, at least 10). With --rounds/--iters instead, each
/// measurement is a round of --iters calls divided by --iters. The report gives the median,
/// minimum, 90th percentile and maximum over the measurements, per sequence and per time step,
/// the nonzero GFLOP/s (2 x the multiply-adds on nonzero weights, see docs/cli.md, per second
/// at the median), and the compile time.
///
/// Examples:
///   hlstmc bench examples/hlstm_sp97/model.onnx
///   hlstmc bench examples/hlstm_sp97/model.onnx --warmup 5 --runs 200 --json
///   hlstmc bench examples/hlstm_sp97/model.onnx --test-data examples/hlstm_sp97/test_data_set_0 --rounds 3 --iters 100
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value = "jit")]
    pub engine: Engine,
    /// Threads that split each step's work (jit engine): each matmul's columns and each
    /// elementwise statement's elements, with a barrier between dependent statements.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: u64,
    /// Untimed calls before timing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub warmup: u64,
    /// Timed calls, each one measurement (default: as many as fit in about 1 s, at least 10,
    /// at most 100000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000), conflicts_with_all = ["rounds", "iters"])]
    pub runs: Option<u64>,
    /// Time rounds of --iters calls instead of single calls: the number of rounds (default 5
    /// when --iters is given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rounds: Option<u64>,
    /// Calls per round (default: enough for about 0.2 s per round).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub iters: Option<u64>,
    /// Take the inputs from DIR/input_K.pb (K in the model's input order) instead of random
    /// values.
    #[arg(long, value_name = "DIR")]
    pub test_data: Option<PathBuf>,
    /// With --engine kernel-interp or jit: generate every constant weight this way instead of
    /// choosing per matrix.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub sparse_strategy: Option<SparseStrategy>,
    /// With --engine jit: the CPU to generate code for.
    #[arg(long, value_enum, default_value = "native")]
    pub cpu: Cpu,
    /// Print one JSON object (on the last line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Keep the compiled code in DIR and reuse it (jit engine; docs/cache.md): a second run of
    /// the same model with the same options skips import, optimization and compilation.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

/// Most threads a program is split across.
const MAX_THREADS: u64 = hlstmc::BuildOptions::MAX_THREADS as u64;

/// The thread count, checked.
fn checked_threads(threads: u64) -> Result<usize> {
    if threads > MAX_THREADS {
        bail!("--threads {threads}: at most {MAX_THREADS}");
    }
    Ok(threads as usize)
}

/// The seed of `bench`'s random inputs (bench/compare_ort.py draws the same values).
const INPUT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Random inputs of the model's declared input shapes, which must be static: f32 values in
/// [-1, 1) (`hlstm_ir::interp::random_inputs`), and integer inputs (sequence lengths, the only
/// ones the kernel IR takes) the whole sequence.
fn random_inputs(g: &Graph) -> Result<Vec<Tensor>> {
    for n in &g.inputs {
        let node = &g.nodes[*n];
        let ty = &node.results[0].ty;
        let shape = ty
            .shape
            .as_ref()
            .ok_or_else(|| anyhow!("input '{}' has no declared shape", node.name))?;
        if let Some(d) = shape.iter().find(|d| d.known().is_none()) {
            bail!(
                "input '{}' has a dimension not known statically ({d}); bench needs static shapes (give --test-data, whose inputs fix it)",
                node.name
            );
        }
        // The size limit of every tensor read from outside, before allocating random values.
        let dims: Vec<usize> = shape.iter().filter_map(|d| d.known()).collect();
        hlstmc::ir::interp::kernels::check_size(&dims)
            .map_err(|e| anyhow!("input '{}': {e}", node.name))?;
    }
    let full = sequence_steps(g).unwrap_or(1) as f32;
    Ok(hlstmc::ir::interp::random_inputs(g, INPUT_SEED)
        .into_iter()
        .map(|t| match t.dtype() {
            DType::F32 | DType::Bool => t,
            d => Tensor::from_f32(t.shape(), vec![full; t.len()]).map_or(t.clone(), |f| f.cast(d)),
        })
        .collect())
}

/// The sequence length one call runs: axis 0 of the sequence operand of the model's first
/// recurrence, or, for a model without one, axis 0 of its first rank-3 f32 input (`[T, B, F]`).
/// None when neither exists or the dim is not known.
fn sequence_steps(g: &Graph) -> Option<usize> {
    for n in g.nodes.node_indices() {
        if let Op::Recurrence(r) = &g.nodes[n].op {
            let v = g.operands(n).get(r.num_carried).copied().flatten()?;
            return g
                .value_type(v)
                .shape
                .as_ref()
                .and_then(|s| s.first().and_then(Dim::known));
        }
    }
    g.inputs.iter().find_map(|&i| {
        let ty = &g.nodes[i].results[0].ty;
        match &ty.shape {
            Some(s) if s.len() == 3 && ty.dtype == DType::F32 => s[0].known(),
            _ => None,
        }
    })
}

pub fn main(a: BenchArgs) -> Result<ExitCode> {
    let threads = checked_threads(a.threads)?;
    super::engine::check_threads(a.engine.into(), a.threads)?;
    if let Engine::Cuda = a.engine {
        super::check_cuda_driver()?;
    }
    let mut device: Option<String> = None;
    let plan = match (a.runs, a.rounds, a.iters) {
        (Some(n), _, _) => Plan::Runs(Some(n)),
        (None, None, None) => Plan::Runs(None),
        (None, rounds, iters) => Plan::Rounds {
            rounds: rounds.unwrap_or(DEFAULT_ROUNDS),
            iters,
        },
    };
    let opt = a.opt.options()?;
    let opts = build_options(a.engine.into(), a.sparse_strategy, a.cpu, threads as u64);
    let mut preloaded = None;
    let mut cache_note = None;
    if let Some(dir) = &a.cache_dir {
        if !matches!(a.engine, Engine::Jit) {
            bail!("--cache-dir holds JIT code: use it with --engine jit");
        }
        let cache = hlstmc::cache::Cache::new(dir);
        let t0 = Instant::now();
        let extra = |m: &hlstmc::Model| {
            let st = graph_stats(m.graph());
            serde_json::json!({
                "steps": sequence_steps(m.graph()),
                "batch": st.batch,
                "macs_per_call": st.macs_per_step_nonzero * st.steps as f64 * st.batch as f64,
            })
        };
        let (found, phases) = record(|| cache.load_or_build(&a.model, &opt, &opts, &extra));
        let total = t0.elapsed();
        match found {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {}: {w}", a.model.display());
                }
                if let hlstmc::cache::Outcome::Rebuilt(why) = &c.outcome {
                    eprintln!("warning: cache entry {}: {why}; rebuilt", c.path.display());
                }
                return cached_bench(&a, c, total, phases, plan);
            }
            Err(Ok(nc)) => {
                eprintln!("note: not cached: {}", nc.reason);
                cache_note = Some(format!("not cached: {}", nc.reason));
                preloaded = Some(nc.model);
            }
            Err(Err(e)) => {
                return Err(anyhow::Error::from(e).context(a.model.display().to_string()));
            }
        }
    }
    let t0 = Instant::now();
    let (loaded, mut phases) = record(|| -> Result<_> {
        let model = match preloaded.take() {
            Some(m) => m,
            None => super::load_model(&a.model)?,
        };
        // Test data fixes the dims an export left open (as `run` does).
        let given = match &a.test_data {
            Some(dir) => {
                let infos = model.inputs();
                let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
                Some(hlstmc::test_data::TestData::load(dir, &names, 0)?.inputs)
            }
            None => None,
        };
        let model = match &given {
            Some(inputs) => model.specialize_to(inputs)?,
            None => model,
        };
        Ok((model, given))
    });
    let (model, given) = loaded?;
    let import = t0.elapsed();
    let t0 = Instant::now();
    let (model, more) = record(|| model.optimize(&opt));
    let model = model?;
    let optimize = t0.elapsed();
    phases.extend(more);
    let inputs = match given {
        Some(inputs) => inputs,
        None => random_inputs(model.graph())?,
    };

    // What one call costs, counted on the optimized graph that runs.
    let st = graph_stats(model.graph());
    let steps = sequence_steps(model.graph());
    let macs_per_call = st.macs_per_step_nonzero * st.steps as f64 * st.batch as f64;

    let t0 = Instant::now();
    if let Engine::Cuda = a.engine {
        let gpu = hlstmc::backends::cuda::Gpu::open(0).map_err(|e| anyhow!("{e}"))?;
        device = Some(format!(
            "{} (sm_{}{}, {} SMs)",
            gpu.name, gpu.capability.0, gpu.capability.1, gpu.multiprocessors
        ));
    }
    // One call: a whole sequence in one state (for the GPU: the inputs copied to it, the
    // kernel launched and waited for, the outputs copied back).
    let (built, more) = record(|| -> Result<_> {
        let runnable = model.into_runnable(&opts)?;
        let state = runnable.new_state()?;
        Ok((runnable, state))
    });
    let (_runnable, mut state) = built?;
    phases.extend(more);
    let mut outputs = Vec::new();
    let mut call = || -> Result<()> {
        state.run_into(&inputs, &mut outputs)?;
        Ok(())
    };
    let compile = t0.elapsed();

    let (per_call_us, iters) = measure(&mut call, a.warmup, plan)?;
    let report = report::Report {
        model: &a.model,
        engine: hlstmc::Engine::from(a.engine).name(),
        device: device.as_deref(),
        threads,
        test_data: a.test_data.is_some(),
        import,
        optimize,
        compile,
        phases: &phases,
        cache: cache_note,
        plan,
        warmup: a.warmup,
        runs: per_call_us.len() as u64,
        iters,
        summary: summarize(per_call_us),
        steps,
        batch: st.batch,
        macs_per_call,
    };
    finish(&a, &report, [import, optimize, compile], &phases)
}

/// `bench` of a model from the compiled-code cache (hit, or miss and stored): the setup is
/// split into its stages by the phases recorded (import: reading and hashing the file, and on
/// a miss importing it; optimize; the rest: lowering and code generation, or loading the
/// cached code).
fn cached_bench(
    a: &BenchArgs,
    c: hlstmc::cache::Cached,
    total: std::time::Duration,
    phases: super::setup_time::Phases,
    plan: Plan,
) -> Result<ExitCode> {
    use std::time::Duration;
    let top = |stage: &str| -> Duration {
        phases
            .iter()
            .filter(|(n, _)| {
                n == stage || (n.starts_with(&format!("{stage}/")) && n.matches('/').count() == 1)
            })
            .map(|(_, d)| *d)
            .sum()
    };
    let import = top("import");
    let optimize = phases
        .iter()
        .find(|(n, _)| n == "optimize")
        .map_or(Duration::ZERO, |(_, d)| *d);
    let compile = total.saturating_sub(import + optimize);
    let steps = c.extra["steps"].as_u64().map(|t| t as usize);
    let batch = c.extra["batch"].as_u64().unwrap_or(1) as usize;
    let macs_per_call = c.extra["macs_per_call"].as_f64().unwrap_or(0.0);
    let inputs = match &a.test_data {
        Some(dir) => {
            let infos = c.runnable.inputs();
            let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
            hlstmc::test_data::TestData::load(dir, &names, 0)?.inputs
        }
        None => random_inputs_of(c.runnable.inputs(), steps.unwrap_or(1))?,
    };
    let mut state = c.runnable.new_state()?;
    let mut outputs = Vec::new();
    let mut call = || -> Result<()> {
        state.run_into(&inputs, &mut outputs)?;
        Ok(())
    };
    let (per_call_us, iters) = measure(&mut call, a.warmup, plan)?;
    let report = report::Report {
        model: &a.model,
        engine: "jit",
        device: None,
        threads: a.threads as usize,
        test_data: a.test_data.is_some(),
        import,
        optimize,
        compile,
        phases: &phases,
        cache: Some(format!("{} {}", c.outcome.name(), c.path.display())),
        plan,
        warmup: a.warmup,
        runs: per_call_us.len() as u64,
        iters,
        summary: summarize(per_call_us),
        steps,
        batch,
        macs_per_call,
    };
    finish(&a, &report, [import, optimize, compile], &phases)
}

/// [`random_inputs`] from the inputs' declared types alone (a model from the cache has no
/// graph): the same generator, seed and order, so the same values.
fn random_inputs_of(infos: &[hlstmc::TensorInfo], steps: usize) -> Result<Vec<Tensor>> {
    let mut rng = hlstmc::ir::rng::Rng::new(INPUT_SEED);
    infos
        .iter()
        .map(|i| {
            let dims: Vec<usize> =
                i.ty.shape
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|d| d.known().unwrap_or(2))
                    .collect();
            let n: usize = dims.iter().product();
            Ok(match i.ty.dtype {
                DType::F32 => Tensor::from_f32(&dims, rng.vec(n, -1.0, 1.0))
                    .ok_or_else(|| anyhow!("input '{}': too large", i.name))?,
                DType::Bool => Tensor::from_f32(&dims, vec![1.0; n])
                    .ok_or_else(|| anyhow!("input '{}': too large", i.name))?
                    .cast(DType::Bool),
                d => Tensor::from_f32(&dims, vec![steps as f32; n])
                    .ok_or_else(|| anyhow!("input '{}': too large", i.name))?
                    .cast(d),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded() {
        assert_eq!(checked_threads(2).unwrap(), 2);
        let e = checked_threads(65).unwrap_err().to_string();
        assert!(e.contains("at most 64"), "{e}");
    }
}

/// Prints the setup time report (with --time-passes: the import, optimize and compile times
/// and their phases) and the report, as JSON or text.
fn finish(
    a: &BenchArgs,
    report: &report::Report,
    [import, optimize, compile]: [std::time::Duration; 3],
    phases: &super::setup_time::Phases,
) -> anyhow::Result<ExitCode> {
    if a.opt.time_passes {
        let stages = [
            ("import", import),
            ("optimize", optimize),
            ("compile", compile),
        ];
        eprint!("{}", super::setup_time::table(&stages, phases));
    }
    if a.json {
        report.print_json()?;
    } else {
        report.print_text()?;
    }
    Ok(ExitCode::SUCCESS)
}
