//! The reference interpreter (`hlstm_ir::interp`) as an engine: whole sequences only.

use crate::runtime::{Runnable, State, TensorInfo, check_inputs};
use crate::{Engine, Error, Model, Result};
use hlstm_ir::{Graph, Tensor};
use std::sync::Arc;

struct Shared {
    graph: Graph,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

pub(crate) struct InterpRunnable(Arc<Shared>);

impl InterpRunnable {
    pub(crate) fn new(model: Model) -> Self {
        let (inputs, outputs) = (model.inputs(), model.outputs());
        InterpRunnable(Arc::new(Shared {
            graph: model.into_graph(),
            inputs,
            outputs,
        }))
    }
}

impl Runnable for InterpRunnable {
    fn engine(&self) -> Engine {
        Engine::Interp
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
        check_inputs(&self.0.inputs, inputs)?;
        Ok(hlstm_ir::interp::run(&self.0.graph, inputs)?)
    }
    fn step(&mut self, _: &[Tensor]) -> Result<Vec<Tensor>> {
        Err(Error::Unsupported(
            "the reference interpreter runs whole sequences only; use the jit or kernel-interp \
             engine to run step by step"
                .into(),
        ))
    }
    fn reset(&mut self) {}
}
