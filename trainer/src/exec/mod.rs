//! What runs a training or evaluation graph. The trainer only needs "inputs in, outputs out" and
//! masks, so the engine sits behind two small traits. Every engine is the library's
//! (`hlstm_driver`, the same types `hlstmc run` uses): `Interp` the reference interpreter,
//! `Fast` its f32 variant (`fast-interp`), `Jit` the Cranelift JIT with the masks as input
//! patterns. Swapping engines changes no training code.

pub mod factored;
mod jit;
pub mod products;

pub use jit::{Jit, kernel_program};

use crate::Error;
use crate::gp::Masks;
use hlstm_ir::{Graph, Tensor};

/// A graph prepared for repeated runs (compiled, or just checked).
pub trait Executable {
    /// Runs on inputs in the graph's input order; outputs in its output order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error>;
    /// [`Executable::run`] into `out`, whose tensors an engine may write over when they have
    /// this run's shapes (the JIT then allocates nothing for its outputs).
    fn run_into(&mut self, inputs: &[Tensor], out: &mut Vec<Tensor>) -> Result<(), Error> {
        *out = self.run(inputs)?;
        Ok(())
    }
    /// Where the parameters, the graph's last `masks.len()` inputs, are zero from now on:
    /// outside their masks (`None`: anywhere). An engine that can skip the zeros (the JIT)
    /// compiles again when the masks change; the others need not know.
    fn set_masks(&mut self, _masks: &Masks) {}
}

/// Prepares graphs for running.
pub trait Engine {
    fn load(&self, g: &Graph) -> Result<Box<dyn Executable>, Error>;
    /// [`Engine::load`] on `threads` threads (`train.threads`). An engine that runs on one
    /// thread only (the interpreters) ignores it; the JIT splits each step's work across them,
    /// with the same arithmetic per element, so the results do not depend on the count.
    fn load_threads(&self, g: &Graph, threads: usize) -> Result<Box<dyn Executable>, Error> {
        let _ = threads;
        self.load(g)
    }
    fn name(&self) -> &'static str;
}

/// The engine a config names.
pub fn engine(name: crate::config::EngineName) -> &'static dyn Engine {
    match name {
        crate::config::EngineName::Interp => &Interp,
        crate::config::EngineName::Fast => &Fast,
        crate::config::EngineName::Jit => &Jit,
    }
}

/// Loads a graph on one of the library's engines.
fn load_on(engine: hlstm_driver::Engine, g: &Graph) -> Result<Box<dyn Executable>, Error> {
    // Checked once here (by the library), so a bad graph fails before training starts, not
    // mid-epoch.
    let opts = hlstm_driver::BuildOptions::engine(engine);
    let state = hlstm_driver::Model::from_graph(g.clone())
        .and_then(|m| m.into_runnable(&opts))
        .and_then(|r| r.new_state())
        .map_err(|e| Error::new(format!("graph: {e}")))?;
    Ok(Box::new(Loaded(state)))
}

/// The reference interpreter (`hlstm_ir::interp`), as the library builds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interp;

/// The library's `fast-interp` engine: the interpreter with f32 matrix products.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fast;

struct Loaded(Box<dyn hlstm_driver::State>);

impl Engine for Interp {
    fn load(&self, g: &Graph) -> Result<Box<dyn Executable>, Error> {
        load_on(hlstm_driver::Engine::Interp, g)
    }
    fn name(&self) -> &'static str {
        "interp"
    }
}

impl Engine for Fast {
    fn load(&self, g: &Graph) -> Result<Box<dyn Executable>, Error> {
        load_on(hlstm_driver::Engine::FastInterp, g)
    }
    fn name(&self) -> &'static str {
        "fast"
    }
}

impl Executable for Loaded {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        self.0
            .run(inputs)
            .map_err(|e| Error::new(format!("running the graph: {e}")))
    }
}
