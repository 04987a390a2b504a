//! x86-64 code generation with Cranelift for a kernel IR [`Program`](hlstm_ir::kernel::Program).
//!
//! - [`codegen::define_program`] turns a program into one function
//!   `fn(inputs: *const *const f32, outputs: *const *mut f32, work: *mut f32)` in any
//!   `cranelift_module::Module` (the JIT here, an object file later), plus one read-only data
//!   object with the constants the code reads from memory.
//! - [`JitProgram`] compiles a program in memory and runs it.
//! - [`aot::compile_object`] compiles it into a position-independent object file with a C ABI
//!   (docs/c-abi.md).
//!
//! docs/kernels.md ("Code generation") describes what is generated for each statement.

pub mod aot;
pub mod codegen;
mod elementwise;
mod epilogue;
pub mod image;
mod jit;
mod layout;
pub mod math;
mod matmul;
mod pool;
pub mod runtime;
pub mod select;
mod softmax;
pub mod wide;

pub use codegen::{Compiled, define_program, define_program_opts, program_signature};
pub use jit::{JitContext, JitProgram};

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;

/// The instruction set the code is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CpuIsa {
    /// Every feature of the machine the compiler runs on (the JIT's default).
    #[default]
    Native,
    /// x86-64-v2: SSE4.2, POPCNT; no AVX, no FMA (multiply then add).
    X86_64V2,
    /// x86-64-v3: AVX, AVX2, FMA, BMI1/2, LZCNT.
    X86_64V3,
}

impl CpuIsa {
    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Native => "native",
            CpuIsa::X86_64V2 => "x86-64-v2",
            CpuIsa::X86_64V3 => "x86-64-v3",
        }
    }
}

impl FromStr for CpuIsa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(CpuIsa::Native),
            "x86-64-v2" => Ok(CpuIsa::X86_64V2),
            "x86-64-v3" => Ok(CpuIsa::X86_64V3),
            _ => Err(format!(
                "unknown cpu {s:?} (expected native, x86-64-v2 or x86-64-v3)"
            )),
        }
    }
}

/// Cranelift's optimization level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OptLevel {
    /// No IR optimization (fastest compile; for big straight-line sparse kernels often the
    /// fastest code too, see ../shared/notes/stack-facts.md).
    #[default]
    None,
    /// Cranelift's `speed` (e-graph optimizations, GVN, LICM).
    Speed,
}

impl OptLevel {
    pub fn name(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        }
    }
}

impl FromStr for OptLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(OptLevel::None),
            "speed" => Ok(OptLevel::Speed),
            _ => Err(format!("unknown opt level {s:?} (expected none or speed)")),
        }
    }
}

/// Code generation options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuOptions {
    pub isa: CpuIsa,
    pub opt_level: OptLevel,
}

/// Builds the Cranelift target for `opts`. `pic` must be true for code that goes into a shared
/// library (and false for the JIT).
pub fn build_isa(opts: &CpuOptions, pic: bool) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift flag {k}={v}: {e}"))
    };
    set(&mut flags, "opt_level", opts.opt_level.name())?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    // Cranelift's IR verifier costs about a fifth of its compile time on a large kernel: on
    // in debug builds (every test), off in release builds, as production users of Cranelift
    // (wasmtime) run it.
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    set(&mut flags, "enable_verifier", verify)?;
    let mut ib = match opts.isa {
        CpuIsa::Native => cranelift_native::builder().map_err(|e| e.to_string())?,
        // The host's triple with no host features: only the preset's features are enabled.
        CpuIsa::X86_64V2 | CpuIsa::X86_64V3 => {
            cranelift_native::builder_with_options(false).map_err(|e| e.to_string())?
        }
    };
    match opts.isa {
        CpuIsa::Native => {}
        CpuIsa::X86_64V2 => ib.enable("x86-64-v2").map_err(|e| e.to_string())?,
        CpuIsa::X86_64V3 => {
            ib.enable("x86-64-v3").map_err(|e| e.to_string())?;
            // Cranelift's x86-64-v3 preset leaves out `has_avx`, and its FMA lowering needs
            // both has_avx and has_fma (without them fma becomes a call to fmaf).
            ib.enable("has_avx").map_err(|e| e.to_string())?;
        }
    }
    ib.finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())
}

/// Whether the target executes `fma` as one instruction (Cranelift lowers it to vfmadd only
/// with both has_avx and has_fma; otherwise the code uses fmul then fadd).
pub fn isa_has_fma(isa: &dyn isa::TargetIsa) -> bool {
    let flag = |n: &str| {
        isa.isa_flags()
            .iter()
            .any(|v| v.name == n && v.as_bool() == Some(true))
    };
    flag("has_avx") && flag("has_fma")
}
