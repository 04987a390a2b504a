//! The engines on the graph IR: the reference interpreter (`hlstm_ir::interp`, exact: matmuls
//! accumulate in f64) and its fast variant (`fast.rs`: f32 matrix products). Whole sequences
//! only.

use super::fast;
use crate::runtime::{Runnable, State, TensorInfo, check_inputs};
use crate::{Engine, Error, Model, Result};
use hlstm_ir::{Graph, Tensor};
use petgraph::stable_graph::NodeIndex;
use std::sync::Arc;

struct Shared {
    graph: Graph,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    /// The fast variant's node order; None for the reference interpreter.
    fast: Option<Vec<NodeIndex>>,
}

pub(crate) struct InterpRunnable(Arc<Shared>);

impl InterpRunnable {
    /// The reference interpreter, or with `fast` its f32 variant.
    pub(crate) fn new(model: Model, fast: bool) -> Result<Self> {
        let (inputs, outputs) = (model.inputs(), model.outputs());
        let graph = model.into_graph();
        let fast = match fast {
            true => Some(fast::order(&graph).map_err(Error::Run)?),
            false => None,
        };
        Ok(InterpRunnable(Arc::new(Shared {
            graph,
            inputs,
            outputs,
            fast,
        })))
    }
}

impl Runnable for InterpRunnable {
    fn engine(&self) -> Engine {
        match self.0.fast {
            Some(_) => Engine::FastInterp,
            None => Engine::Interp,
        }
    }
    fn inputs(&self) -> &[TensorInfo] {
        &self.0.inputs
    }
    fn outputs(&self) -> &[TensorInfo] {
        &self.0.outputs
    }
    fn streamable(&self) -> bool {
        false
    }
    fn new_state(&self) -> Result<Box<dyn State>> {
        Ok(Box::new(InterpState(Arc::clone(&self.0))))
    }
}

struct InterpState(Arc<Shared>);

impl State for InterpState {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let sh = &self.0;
        check_inputs(&sh.inputs, inputs)?;
        match &sh.fast {
            Some(order) => fast::run_graph(&sh.graph, order, inputs.to_vec()).map_err(Error::Run),
            None => Ok(hlstm_ir::interp::run(&sh.graph, inputs)?),
        }
    }
    fn step(&mut self, _: &[Tensor]) -> Result<Vec<Tensor>> {
        Err(Error::Unsupported(
            "the interpreters run whole sequences only; use the jit or kernel-interp engine to \
             run step by step"
                .into(),
        ))
    }
    fn reset(&mut self) {}
}
