//! `Jit`: training and evaluation graphs built by the library's JIT engine
//! (`hlstm_driver`, the engine `hlstmc run` uses for inference). The weights stay graph inputs,
//! so they lower to run-time matmul operands and one compiled program serves the whole run;
//! nothing is recompiled when the weights change. Integer class inputs (labels, tokens) are fed
//! as one-hot f32 inputs by the library, and the parameters' masks become its input patterns
//! (compressed kernels over the kept weights), compiled again when they change.

use super::{Engine, Executable};
use crate::Error;
use crate::gp::Masks;
use hlstm_driver::{BuildOptions, Model, State};
use hlstm_ir::kernel::Program;
use hlstm_ir::{Graph, Tensor};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default)]
pub struct Jit;

struct Loaded {
    graph: Graph,
    /// Threads of the build (`BuildOptions::threads`).
    threads: usize,
    /// The state of the library's JIT build of the graph for the current masks (it holds the
    /// build).
    state: Box<dyn State>,
    /// The parameters' masks the build was made for ([`Executable::set_masks`]).
    masks: Masks,
}

type Patterns = Vec<Option<Arc<Vec<f32>>>>;

/// The library's JIT options for these input patterns and threads.
fn options(patterns: Patterns, threads: usize) -> BuildOptions {
    BuildOptions {
        input_patterns: patterns,
        threads,
        ..BuildOptions::default()
    }
}

/// Builds `g` with the library: compiled at once when its input shapes are all known (so a
/// graph the JIT cannot take fails here), else on the first run with each new set of shapes.
fn build(g: &Graph, patterns: Patterns, threads: usize) -> Result<Box<dyn State>, Error> {
    let runnable = Model::from_graph(g.clone())
        .and_then(|m| m.into_runnable(&options(patterns, threads)))
        .map_err(|e| Error::new(format!("the JIT engine: {e}")))?;
    runnable
        .new_state()
        .map_err(|e| Error::new(format!("the JIT engine: {e}")))
}

impl Engine for Jit {
    fn load(&self, g: &Graph) -> Result<Box<dyn Executable>, Error> {
        self.load_threads(g, 1)
    }
    fn load_threads(&self, g: &Graph, threads: usize) -> Result<Box<dyn Executable>, Error> {
        let state = build(g, Vec::new(), threads)?;
        Ok(Box::new(Loaded {
            graph: g.clone(),
            threads,
            state,
            masks: Vec::new(),
        }))
    }
    fn name(&self) -> &'static str {
        "jit"
    }
}

/// The kernel program the JIT engine runs for a graph with static shapes, given the masks of
/// its last inputs (the parameters; empty: none, see [`Executable::set_masks`]). For dumps
/// (`hlstm_ir::kernel::print`) and tests.
pub fn kernel_program(g: &Graph, masks: &Masks) -> Result<Program, Error> {
    hlstm_driver::kernel_program(g, &options(patterns(g, masks), 1))
        .map_err(|e| Error::new(format!("the JIT engine: {e}")))
}

/// The lowering's patterns, by graph input, of masks of the graph's last inputs.
fn patterns(g: &Graph, masks: &Masks) -> Patterns {
    let first = g.inputs.len().saturating_sub(masks.len());
    let mut p = vec![None; first];
    p.extend(masks.iter().map(|m| {
        m.as_ref()
            .map(|m| Arc::new(m.iter().map(|&on| f32::from(on)).collect()))
    }));
    p
}

impl Executable for Loaded {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        let mut out = Vec::new();
        self.run_into(inputs, &mut out)?;
        Ok(out)
    }

    fn run_into(&mut self, inputs: &[Tensor], out: &mut Vec<Tensor>) -> Result<(), Error> {
        self.state
            .run_into(inputs, out)
            .map_err(|e| Error::new(format!("running the graph: {e}")))
    }

    fn set_masks(&mut self, masks: &Masks) {
        if *masks == self.masks {
            return;
        }
        // The graph built once already; a failure here would have shown at load.
        if let Ok(state) = build(&self.graph, patterns(&self.graph, masks), self.threads) {
            self.state = state;
            self.masks = masks.clone();
        }
    }
}
