//! `hlstmc run`: run a model on inputs, or check it against ONNX test data.

use super::io::{file_stem, read_tensor, write_npy};
use super::opt::SparseStrategy;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use hlstm_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
pub enum Engine {
    /// The reference interpreter: exact, slow, the oracle for every other engine.
    Interp,
    /// The model lowered to the kernel IR and run by its plain interpreter (f32 inputs and
    /// outputs, and integer sequence lengths).
    KernelInterp,
    /// The model lowered to the kernel IR and compiled to native code with Cranelift (f32 inputs
    /// and outputs, integer sequence lengths, static shapes).
    Jit,
    /// The model lowered to the kernel IR, compiled to PTX and run on an NVIDIA GPU through
    /// the CUDA driver (loaded at run time; an error without one).
    Cuda,
}

/// Which CPU the JIT generates code for.
#[derive(Clone, Copy, ValueEnum, Default)]
pub enum Cpu {
    /// Every feature of this machine.
    #[default]
    Native,
    /// x86-64-v2: SSE4.2; multiply then add (no FMA).
    #[value(name = "x86-64-v2")]
    X86_64V2,
    /// x86-64-v3: AVX2 and FMA.
    #[value(name = "x86-64-v3")]
    X86_64V3,
}

/// The engine and its code-generation choices.
#[derive(Clone, Copy)]
struct EngineChoice {
    /// None: the JIT where the model lowers to the kernel IR with f32 inputs, else the interpreter.
    engine: Option<Engine>,
    strategy: Option<SparseStrategy>,
    cpu: Cpu,
    threads: usize,
}

/// Run a model on inputs, or check it against reference test data.
///
/// Inputs come from .npy files or serialized ONNX TensorProto (.pb) files, one `-i NAME=FILE`
/// per model input. With `-o DIR` each output is written to DIR/<output name>.npy; otherwise a
/// summary of each output is printed.
///
/// `--test-data DIR` reads DIR/input_K.pb (K in the model's input order), runs, compares with
/// DIR/output_K.pb and prints the largest absolute and relative error per output. It exits 0 only
/// if every element satisfies |got - want| <= atol + rtol * |want|.
///
/// The default optimization pipeline runs first; -O0 runs the imported graph as it is.
///
/// Examples:
///   hlstmc run model.onnx -i X=x.npy -o out/
///   hlstmc run model.onnx --test-data model_dir/test_data_set_0
#[derive(Args)]
pub struct RunArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// An input, as NAME=FILE (.npy or .pb); repeat for each model input.
    #[arg(short = 'i', long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Write each output to DIR/<output name>.npy.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// An ONNX test-data folder (input_K.pb, output_K.pb) to run and check against.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub test_data: Option<PathBuf>,
    /// Relative tolerance for --test-data.
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Absolute tolerance for --test-data.
    #[arg(long, default_value_t = 1e-4)]
    pub atol: f64,
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
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

pub fn main(a: RunArgs) -> Result<ExitCode> {
    // The flags first: a bad pass name is reported before any file is read.
    super::optimize::pass_manager(&a.opt)?;
    if matches!(a.engine, Some(Engine::Cuda)) {
        check_cuda_driver()?;
    }
    let g = super::load_model(&a.model)?;
    let inputs = match &a.test_data {
        Some(dir) => test_inputs(&g, dir)?,
        None => named_inputs(&g, &a.inputs)?,
    };
    let mut g = specialize(&a.model, g, &inputs)?;
    super::optimize::optimize(&mut g, &a.opt)?;
    let choice = EngineChoice {
        engine: a.engine,
        strategy: a.sparse_strategy,
        cpu: a.cpu,
        threads: a.threads as usize,
    };
    if let Some(dir) = &a.test_data {
        return check_test_data(&g, dir, &inputs, a.rtol, a.atol, choice);
    }
    let outputs = execute(&g, &inputs, choice)?;
    match &a.out {
        Some(dir) => write_outputs(&g, &outputs, dir)?,
        None => {
            for ((name, _), t) in g.outputs.iter().zip(&outputs) {
                println!("{name}: {}", summary(t));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn execute(g: &Graph, inputs: &[Tensor], choice: EngineChoice) -> Result<Vec<Tensor>> {
    // Every engine reports a wrong input the same way.
    hlstm_ir::interp::check_inputs(g, inputs).map_err(|e| anyhow!("{e}"))?;
    // The engine, and the program lowered for it (lowered once).
    let (engine, program) = match choice.engine {
        Some(Engine::Interp) => (Engine::Interp, None),
        Some(e) => (e, Some(super::opt::lower(g, choice.strategy)?)),
        None => match super::opt::lower(g, choice.strategy) {
            Ok(p) if kernel_inputs_fit(&p, inputs) => (Engine::Jit, Some(p)),
            Ok(_) => {
                eprintln!("note: the JIT takes f32 inputs only; running the interpreter instead");
                (Engine::Interp, None)
            }
            Err(e) => {
                eprintln!("note: {e:#}; running the interpreter instead");
                (Engine::Interp, None)
            }
        },
    };
    match (engine, program) {
        (Engine::Interp, _) | (_, None) => {
            hlstm_ir::interp::run(g, inputs).map_err(|e| anyhow!("{e}"))
        }
        (_, Some(p)) => {
            let names = input_names(g);
            let mut flat = Vec::with_capacity(inputs.len());
            for (k, t) in inputs.iter().enumerate() {
                // Integer sequence lengths travel as f32 whole numbers.
                let cast;
                let t = if p.seq_lens_input() == Some(k) {
                    cast = t.cast(hlstm_ir::DType::F32);
                    &cast
                } else {
                    t
                };
                let a = t.as_f32().ok_or_else(|| {
                    anyhow!(
                        "input '{}' is {}: the kernel IR engines take f32 inputs only",
                        names.get(k).unwrap_or(&"?"),
                        t.dtype()
                    )
                })?;
                let dims = &p.buffers[p.inputs[k].0].dims;
                if a.shape() != dims.as_slice() {
                    bail!(
                        "input '{}' has shape {:?}; the model was compiled for {dims:?}",
                        names.get(k).unwrap_or(&"?"),
                        a.shape()
                    );
                }
                flat.push(a.iter().copied().collect::<Vec<f32>>());
            }
            let refs: Vec<&[f32]> = flat.iter().map(|v| v.as_slice()).collect();
            let outs = match engine {
                Engine::Jit => run_jit(&p, &refs, choice.cpu, choice.threads)?,
                Engine::Cuda => run_cuda(&p, &refs)?,
                _ => hlstm_ir::kernel::interp::run(&p, &refs).map_err(|e| anyhow!("{e}"))?,
            };
            outs.into_iter()
                .zip(&p.outputs)
                .map(|(data, b)| {
                    Tensor::from_f32(&p.buffers[b.0].dims, data)
                        .ok_or_else(|| anyhow!("an output does not fit its dims"))
                })
                .collect()
        }
    }
}

/// Whether the kernel IR engines take these inputs: f32, or integer sequence lengths.
fn kernel_inputs_fit(p: &hlstm_ir::kernel::Program, inputs: &[Tensor]) -> bool {
    inputs
        .iter()
        .enumerate()
        .all(|(k, t)| t.dtype() == hlstm_ir::DType::F32 || p.seq_lens_input() == Some(k))
}

/// Compiles the program with Cranelift and runs it once.
fn run_jit(
    p: &hlstm_ir::kernel::Program,
    inputs: &[&[f32]],
    cpu: Cpu,
    threads: usize,
) -> Result<Vec<Vec<f32>>> {
    use hlstm_backends::cpu::{CpuIsa, CpuOptions, JitProgram};
    let isa = match cpu {
        Cpu::Native => CpuIsa::Native,
        Cpu::X86_64V2 => CpuIsa::X86_64V2,
        Cpu::X86_64V3 => CpuIsa::X86_64V3,
    };
    let parts = if threads > 1 {
        hlstm_passes::lower::threads::split(p, threads)
    } else {
        Vec::new()
    };
    let opts = CpuOptions {
        isa,
        ..CpuOptions::default()
    };
    let jit = JitProgram::compile_parts(p, &parts, &opts, false).map_err(|e| anyhow!("{e}"))?;
    let mut outs: Vec<Vec<f32>> = p
        .outputs
        .iter()
        .map(|b| vec![0.0; p.buffers[b.0].len()])
        .collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    jit.run(inputs, &mut views).map_err(|e| anyhow!("{e}"))?;
    Ok(outs)
}

/// Fails at once, before any other work, where the CUDA driver library is absent.
pub(super) fn check_cuda_driver() -> Result<()> {
    if hlstm_backends::cuda::driver_present() {
        Ok(())
    } else {
        Err(anyhow!("{}", hlstm_backends::cuda::no_driver_message()))
    }
}

/// The program compiled to PTX for the GPU and loaded on it (device 0; buffers for its
/// sequence length).
pub(super) fn load_cuda(
    p: &hlstm_ir::kernel::Program,
) -> Result<hlstm_backends::cuda::CudaProgram> {
    use hlstm_backends::cuda::{CudaProgram, Gpu};
    use hlstm_backends::ptx::{PtxOptions, compile};
    let gpu = Gpu::open(0).map_err(|e| anyhow!("{e}"))?;
    let sm = gpu.sm_target().map_err(|e| anyhow!("{e}"))?;
    let m = compile(
        p,
        &PtxOptions {
            sm,
            ..PtxOptions::default()
        },
    )
    .map_err(|e| anyhow!("PTX: {e}"))?;
    CudaProgram::load(gpu, &m).map_err(|e| anyhow!("{e}"))
}

/// Compiles the program to PTX and runs it once on the GPU (the whole sequence).
fn run_cuda(p: &hlstm_ir::kernel::Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
    let mut prog = load_cuda(p)?;
    let steps = prog.launch().max_steps;
    prog.run(inputs, steps, false).map_err(|e| anyhow!("{e}"))
}

pub(super) fn input_names(g: &Graph) -> Vec<&str> {
    g.inputs.iter().map(|n| g.nodes[*n].name.as_str()).collect()
}

/// Orders `-i NAME=FILE` arguments by the model's inputs.
fn named_inputs(g: &Graph, args: &[String]) -> Result<Vec<Tensor>> {
    let names = input_names(g);
    let mut got: Vec<Option<Tensor>> = vec![None; names.len()];
    for arg in args {
        let (name, file) = arg
            .split_once('=')
            .ok_or_else(|| anyhow!("-i expects NAME=FILE, got '{arg}'"))?;
        let k = names.iter().position(|n| *n == name).ok_or_else(|| {
            anyhow!(
                "the model has no input named '{name}'; its inputs are: {}",
                names.join(", ")
            )
        })?;
        got[k] = Some(read_tensor(Path::new(file))?);
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&got)
        .filter(|(_, t)| t.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing inputs: {} (give each with -i NAME=FILE)",
            missing.join(", ")
        );
    }
    Ok(got.into_iter().flatten().collect())
}

/// Writes every output, or none: each goes to a temporary file first, renamed once all succeed.
fn write_outputs(g: &Graph, outputs: &[Tensor], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| {
        for ((name, _), t) in g.outputs.iter().zip(outputs) {
            let path = dir.join(format!("{}.npy", file_stem(name)));
            let tmp = dir.join(format!(".{}.npy.partial", file_stem(name)));
            write_npy(&tmp, t)?;
            written.push((tmp, path));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in &written {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    for (tmp, path) in written {
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn summary(t: &Tensor) -> String {
    let vals: Vec<String> = match t {
        Tensor::F32(a) => a.iter().take(6).map(|v| format!("{v:.6}")).collect(),
        Tensor::I64(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
        Tensor::I32(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
        Tensor::Bool(a) => a.iter().take(6).map(|v| v.to_string()).collect(),
    };
    let more = if t.len() > 6 { ", ..." } else { "" };
    format!("{}{:?} [{}{more}]", t.dtype(), t.shape(), vals.join(", "))
}

/// The inputs of a `--test-data` folder, in the model's order.
fn test_inputs(g: &Graph, dir: &Path) -> Result<Vec<Tensor>> {
    let names = input_names(g);
    let mut inputs = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("input_{k}.pb"));
        if !p.exists() {
            break;
        }
        inputs.push(read_tensor(&p)?);
    }
    if inputs.len() != names.len() {
        bail!(
            "{} holds {} inputs, the model takes {} ({})",
            dir.display(),
            inputs.len(),
            names.len(),
            names.join(", ")
        );
    }
    Ok(inputs)
}

/// The graph with every input's symbolic or unknown dims fixed to the given inputs' (the model
/// imported again with those shapes): the JIT needs static shapes, and a model exported with an
/// open batch or sequence length runs at the one it is given. Unchanged when every input shape
/// is known already (a wrong shape is then reported by the engines' own check).
pub(super) fn specialize(model: &Path, g: Graph, inputs: &[Tensor]) -> Result<Graph> {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    specialize_to(model, g, &shapes)
}

/// [`specialize`] to the given input shapes (in the model's input order).
pub(super) fn specialize_to(model: &Path, g: Graph, dims: &[Vec<usize>]) -> Result<Graph> {
    let open = g
        .inputs
        .iter()
        .any(|n| g.nodes[*n].results[0].ty.concrete().is_none());
    if !open || dims.len() != g.inputs.len() {
        return Ok(g);
    }
    let shapes: Vec<(String, Vec<usize>)> = g
        .inputs
        .iter()
        .zip(dims)
        .filter(|(n, _)| g.nodes[**n].results[0].ty.concrete().is_none())
        .map(|(n, d)| (g.nodes[*n].name.clone(), d.clone()))
        .collect();
    hlstm_frontends::onnx::import_file_with_shapes(model, &shapes)
        .with_context(|| format!("{} (with the inputs' shapes)", model.display()))
}

fn check_test_data(
    g: &Graph,
    dir: &Path,
    inputs: &[Tensor],
    rtol: f64,
    atol: f64,
    choice: EngineChoice,
) -> Result<ExitCode> {
    let outputs = execute(g, inputs, choice)?;
    let mut ok = true;
    for (k, ((name, _), got)) in g.outputs.iter().zip(&outputs).enumerate() {
        let p = dir.join(format!("output_{k}.pb"));
        if !p.exists() {
            println!("{name}: no reference ({} is absent)", p.display());
            continue;
        }
        let want = read_tensor(&p)?;
        match compare(got, &want, rtol, atol) {
            Ok(c) => {
                let verdict = if c.bad == 0 { "ok" } else { "MISMATCH" };
                println!(
                    "{name}: {verdict}  max abs err {:.3e}  max rel err {:.3e}  ({} of {} elements out of tolerance)",
                    c.max_abs, c.max_rel, c.bad, c.count
                );
                ok &= c.bad == 0;
            }
            Err(e) => {
                println!("{name}: MISMATCH  {e}");
                ok = false;
            }
        }
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Comparison {
    max_abs: f64,
    max_rel: f64,
    bad: usize,
    count: usize,
}

fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<Comparison> {
    if got.shape() != want.shape() {
        bail!("shape {:?}, expected {:?}", got.shape(), want.shape());
    }
    if got.dtype() != want.dtype() {
        bail!("type {}, expected {}", got.dtype(), want.dtype());
    }
    let as_f64 = |t: &Tensor| -> Vec<f64> {
        match t.cast(hlstm_ir::DType::F32) {
            Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
            _ => unreachable!("cast to f32"),
        }
    };
    let (g, w) = (as_f64(got), as_f64(want));
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        bad: 0,
        count: g.len(),
    };
    for (x, y) in g.iter().zip(&w) {
        let d = if x == y { 0.0 } else { (x - y).abs() };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        c.max_abs = c.max_abs.max(d);
        if *y != 0.0 {
            c.max_rel = c.max_rel.max(d / y.abs());
        }
        if d > atol + rtol * y.abs() {
            c.bad += 1;
        }
    }
    Ok(c)
}
