//! `hlstmc bench`: time a model's run on random inputs with one engine.

use super::opt::SparseStrategy;
use super::run::{Cpu, Engine, input_names};
use anyhow::{Result, anyhow, bail};
use clap::Args;
use hlstm_ir::{Dim, Graph, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Time a model: compile once, then run it on random inputs, round after round.
///
/// The model is imported, optimized (the default pipeline unless told otherwise) and, for the
/// kernel-interp and jit engines, lowered and compiled once; the compile time is reported. Every
/// model input gets random f32 values in [-1, 1) from a fixed seed, of the shape the model
/// declares (static shapes only). Each round times --iters calls; the report gives the median
/// per-call time over the rounds, and the fastest and slowest round.
///
/// Examples:
///   hlstmc bench tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx
///   hlstmc bench model.onnx --engine jit --rounds 9 --json
#[derive(Args)]
pub struct BenchArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value = "jit")]
    pub engine: Engine,
    /// Timed rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Calls per round (default: enough for about 0.2 s per round).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    /// With --engine kernel-interp or jit: generate every constant weight this way instead of
    /// choosing per matrix.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub sparse_strategy: Option<SparseStrategy>,
    /// With --engine jit: the CPU to generate code for.
    #[arg(long, value_enum, default_value = "native")]
    pub cpu: Cpu,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

/// A small xorshift generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random f32 inputs of the model's declared input shapes.
fn random_inputs(g: &Graph) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let names = input_names(g);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    for (k, n) in g.inputs.iter().enumerate() {
        let ty = &g.nodes[*n]
            .results
            .first()
            .ok_or_else(|| anyhow!("input '{}' has no type", names[k]))?
            .ty;
        let shape = ty
            .shape
            .as_ref()
            .ok_or_else(|| anyhow!("input '{}' has no declared shape", names[k]))?;
        let dims: Vec<usize> = shape
            .iter()
            .map(|d| match d {
                Dim::Known(v) => Ok(*v),
                _ => Err(anyhow!(
                    "input '{}' has a dimension not known statically ({d:?}); bench needs static shapes",
                    names[k]
                )),
            })
            .collect::<Result<_>>()?;
        let len = dims.iter().product();
        out.push((dims, (0..len).map(|_| rng.next_f32()).collect()));
    }
    Ok(out)
}

pub fn main(a: BenchArgs) -> Result<ExitCode> {
    let mut g = super::load_model(&a.model)?;
    super::optimize::optimize(&mut g, &a.opt)?;
    let inputs = random_inputs(&g)?;
    let flat: Vec<&[f32]> = inputs.iter().map(|(_, v)| v.as_slice()).collect();

    let t0 = Instant::now();
    let mut call: Box<dyn FnMut() -> Result<()> + '_> = match a.engine {
        Engine::Interp => {
            let tensors: Vec<Tensor> = inputs
                .iter()
                .map(|(d, v)| {
                    Tensor::from_f32(d, v.clone()).ok_or_else(|| anyhow!("input does not fit"))
                })
                .collect::<Result<_>>()?;
            let g = &g;
            Box::new(move || {
                hlstm_ir::interp::run(g, &tensors)
                    .map(drop)
                    .map_err(|e| anyhow!("{e}"))
            })
        }
        Engine::KernelInterp => {
            let p = super::opt::lower(&g, a.sparse_strategy)?;
            check_lens(&p, &flat)?;
            let flat = flat.clone();
            Box::new(move || {
                hlstm_ir::kernel::interp::run(&p, &flat)
                    .map(drop)
                    .map_err(|e| anyhow!("{e}"))
            })
        }
        Engine::Jit => {
            use hlstm_backends::cpu::{CpuIsa, CpuOptions, JitProgram};
            let p = super::opt::lower(&g, a.sparse_strategy)?;
            check_lens(&p, &flat)?;
            let isa = match a.cpu {
                Cpu::Native => CpuIsa::Native,
                Cpu::X86_64V2 => CpuIsa::X86_64V2,
                Cpu::X86_64V3 => CpuIsa::X86_64V3,
            };
            let jit = JitProgram::compile(
                &p,
                &CpuOptions {
                    isa,
                    ..CpuOptions::default()
                },
            )
            .map_err(|e| anyhow!("{e}"))?;
            let mut outs: Vec<Vec<f32>> = p
                .outputs
                .iter()
                .map(|b| vec![0.0; p.buffers[b.0].len()])
                .collect();
            let flat = flat.clone();
            Box::new(move || {
                let mut views: Vec<&mut [f32]> =
                    outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                jit.run(&flat, &mut views).map_err(|e| anyhow!("{e}"))
            })
        }
    };
    let compile = t0.elapsed();

    // One warm-up call, which also sizes the rounds.
    let t = Instant::now();
    call()?;
    let one = t.elapsed().max(Duration::from_nanos(1));
    let iters = a.iters.unwrap_or_else(|| {
        (Duration::from_millis(200).as_secs_f64() / one.as_secs_f64()).ceil() as u64
    });
    let iters = iters.max(1);
    let mut per_call_us: Vec<f64> = Vec::with_capacity(a.rounds as usize);
    for _ in 0..a.rounds {
        let t = Instant::now();
        for _ in 0..iters {
            call()?;
        }
        per_call_us.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    drop(call);
    per_call_us.sort_by(f64::total_cmp);
    let n = per_call_us.len();
    let median = if n % 2 == 1 {
        per_call_us[n / 2]
    } else {
        (per_call_us[n / 2 - 1] + per_call_us[n / 2]) / 2.0
    };
    let (min, max) = (per_call_us[0], per_call_us[n - 1]);
    let engine = match a.engine {
        Engine::Interp => "interp",
        Engine::KernelInterp => "kernel-interp",
        Engine::Jit => "jit",
    };
    let compile_ms = compile.as_secs_f64() * 1e3;
    if a.json {
        let obj = serde_json::json!({
            "model": a.model.display().to_string(),
            "engine": engine,
            "compile_ms": compile_ms,
            "median_us": median,
            "min_us": min,
            "max_us": max,
            "rounds": a.rounds,
            "iters": iters,
        });
        println!("{obj}");
    } else {
        println!("model:    {}", a.model.display());
        println!("engine:   {engine}");
        println!("compile:  {compile_ms:.2} ms");
        println!("rounds:   {} x {iters} calls", a.rounds);
        println!("per call: median {median:.2} us [min {min:.2}, max {max:.2}]");
    }
    Ok(ExitCode::SUCCESS)
}

/// The random inputs must have the lengths the lowered program expects.
fn check_lens(p: &hlstm_ir::kernel::Program, inputs: &[&[f32]]) -> Result<()> {
    if p.inputs.len() != inputs.len() {
        bail!(
            "the lowered program takes {} inputs, the model declares {}",
            p.inputs.len(),
            inputs.len()
        );
    }
    for (k, (b, v)) in p.inputs.iter().zip(inputs).enumerate() {
        if p.buffers[b.0].len() != v.len() {
            bail!(
                "input {k}: the lowered program expects {} values, the declared shape has {}",
                p.buffers[b.0].len(),
                v.len()
            );
        }
    }
    Ok(())
}
