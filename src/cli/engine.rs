//! The engine flags `run` and `bench` share, and their mapping onto the library's
//! [`BuildOptions`].

use clap::ValueEnum;
use hlstmc::{BuildOptions, CpuIsa, Strategy};

#[derive(Clone, Copy, ValueEnum)]
pub enum Engine {
    /// The reference interpreter: exact, slow, the oracle for every other engine.
    Interp,
    /// The reference interpreter's semantics with f32 matrix products (blocked GEMM): results
    /// within f32 rounding of the interpreter's, many times faster on large matmuls; takes every
    /// model the interpreter takes.
    FastInterp,
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

impl From<Engine> for hlstmc::Engine {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Interp => hlstmc::Engine::Interp,
            Engine::FastInterp => hlstmc::Engine::FastInterp,
            Engine::KernelInterp => hlstmc::Engine::KernelInterp,
            Engine::Jit => hlstmc::Engine::Jit,
            Engine::Cuda => hlstmc::Engine::Cuda,
        }
    }
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

impl From<Cpu> for CpuIsa {
    fn from(c: Cpu) -> Self {
        match c {
            Cpu::Native => CpuIsa::Native,
            Cpu::X86_64V2 => CpuIsa::X86_64V2,
            Cpu::X86_64V3 => CpuIsa::X86_64V3,
        }
    }
}

/// How matmuls with constant weights are generated (`--sparse-strategy`).
#[derive(Clone, Copy, ValueEnum)]
pub enum SparseStrategy {
    /// Dense tiled SIMD loops.
    Dense,
    /// One FMA per nonzero weight, the weight an immediate.
    SparseUnrolled,
    /// A compressed-row loop over the nonzeros.
    SparseCsr,
}

impl From<SparseStrategy> for Strategy {
    fn from(s: SparseStrategy) -> Self {
        match s {
            SparseStrategy::Dense => Strategy::Dense,
            SparseStrategy::SparseUnrolled => Strategy::SparseUnrolled,
            SparseStrategy::SparseCsr => Strategy::SparseCsr,
        }
    }
}

/// The library's build options for these flags.
pub fn build_options(
    engine: hlstmc::Engine,
    strategy: Option<SparseStrategy>,
    cpu: Cpu,
    threads: u64,
) -> BuildOptions {
    BuildOptions {
        engine,
        strategy: strategy.map(Into::into),
        cpu: cpu.into(),
        threads: threads as usize,
        ..BuildOptions::default()
    }
}

/// `--threads N` above 1 is for the JIT (the engine that splits a step's work); the
/// interpreters run on one thread, and saying otherwise would mislead (a bench report of 8
/// threads that ran on one).
pub fn check_threads(engine: hlstmc::Engine, threads: u64) -> anyhow::Result<()> {
    if threads > 1 && engine != hlstmc::Engine::Jit {
        anyhow::bail!(
            "--threads {threads} is for --engine jit; --engine {} runs on one thread",
            engine.name()
        );
    }
    Ok(())
}
