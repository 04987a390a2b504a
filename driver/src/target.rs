//! What a model is built for: the engine and its code-generation choices.

pub use hlstm_backends::cpu::CpuIsa;
pub use hlstm_ir::kernel::Strategy;
use std::sync::Arc;

/// The engines a model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The reference interpreter on the graph IR: exact (matmuls accumulate in f64), slow, the
    /// oracle for every other engine. Takes every input type.
    Interp,
    /// The reference interpreter's semantics with f32 matrix products (ndarray's blocked
    /// GEMM): results differ from the interpreter's by f32 rounding; many times faster on
    /// large matmuls. What the trainer's `fast` engine runs.
    FastInterp,
    /// The kernel IR run by its plain interpreter: checks the lowering without code
    /// generation.
    KernelInterp,
    /// Native x86-64 code generated in memory by Cranelift.
    Jit,
    /// PTX run on an NVIDIA GPU through the CUDA driver, loaded at run time.
    Cuda,
}

impl Engine {
    /// Every engine, in the order the CLI lists them.
    pub const ALL: [Engine; 5] = [
        Engine::Interp,
        Engine::FastInterp,
        Engine::KernelInterp,
        Engine::Jit,
        Engine::Cuda,
    ];

    /// The engine's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::FastInterp => "fast-interp",
            Engine::KernelInterp => "kernel-interp",
            Engine::Jit => "jit",
            Engine::Cuda => "cuda",
        }
    }

    /// Whether the engine runs the kernel IR (f32 inputs, and integer sequence lengths).
    pub fn lowers(self) -> bool {
        !matches!(self, Engine::Interp | Engine::FastInterp)
    }
}

/// How [`crate::Model::into_runnable`] builds a model.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// What runs the model.
    pub engine: Engine,
    /// Generate every constant weight with this kernel instead of letting the target choose
    /// per matrix.
    pub strategy: Option<Strategy>,
    /// The CPU the JIT generates code for.
    pub cpu: CpuIsa,
    /// Threads that split each step's work (JIT; 1 to 64).
    pub threads: usize,
    /// By graph input (missing or None: unknown): a pattern that is zero wherever the input
    /// always is, in row-major order (the trainer's masks). A matmul whose run-time weight is
    /// such an input, sparse enough, gets a compressed kernel over the pattern.
    pub input_patterns: Vec<Option<Arc<Vec<f32>>>>,
}

impl Default for BuildOptions {
    /// The JIT for this machine, one thread, kernels chosen per matrix.
    fn default() -> Self {
        BuildOptions {
            engine: Engine::Jit,
            strategy: None,
            cpu: CpuIsa::Native,
            threads: 1,
            input_patterns: Vec::new(),
        }
    }
}

impl BuildOptions {
    /// The default options for `engine`.
    pub fn engine(engine: Engine) -> Self {
        BuildOptions {
            engine,
            ..Self::default()
        }
    }

    /// Most threads a program is split across.
    pub const MAX_THREADS: usize = 64;
}
