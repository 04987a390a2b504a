//! The engines behind [`crate::Runnable`]: the reference interpreter on the graph IR and its
//! faster f32 variant, and the
//! three that run the kernel IR (its interpreter, the JIT, the CUDA runner), which share the
//! specialization cache and the f32 feeding in `kernel.rs`.

mod fast;
mod interp;
pub(crate) mod kernel;
mod onehot;

use crate::runtime::Runnable;
use crate::{BuildOptions, Engine, Error, Model, Result};
use std::sync::Arc;

pub use kernel::{compile_jit, kernel_program, lower_options};
pub(crate) use kernel::{compile_jit_keep, lower_plain};

/// Builds `model` for `opts.engine`.
pub(crate) fn build(model: Model, opts: &BuildOptions) -> Result<Arc<dyn Runnable>> {
    if opts.threads == 0 || opts.threads > BuildOptions::MAX_THREADS {
        return Err(Error::Options(format!(
            "threads {}: give 1 to {}",
            opts.threads,
            BuildOptions::MAX_THREADS
        )));
    }
    Ok(match opts.engine {
        Engine::Interp => Arc::new(interp::InterpRunnable::new(model, false)?),
        Engine::FastInterp => Arc::new(interp::InterpRunnable::new(model, true)?),
        _ => Arc::new(kernel::KernelRunnable::new(model, opts)?),
    })
}
