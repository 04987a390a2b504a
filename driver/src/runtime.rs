//! The runtime trait every engine implements. A [`Runnable`] is a built model, shared by any
//! number of threads (`Send + Sync`); each caller runs it in a [`State`] of its own, which
//! holds the working memory and the recurrent state between streaming calls (ONNX Runtime's
//! session and run, tract's plan and state).

use crate::{Engine, Error, Result};
use hlstm_ir::{Graph, Tensor, TensorType};

/// An input or output of a model: its name, element type and shape (symbolic dims by name).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The name in the model.
    pub name: String,
    /// Element type and shape.
    pub ty: TensorType,
}

impl TensorInfo {
    /// The graph's inputs, in order.
    pub fn inputs_of(g: &Graph) -> Vec<TensorInfo> {
        g.inputs
            .iter()
            .map(|&n| {
                let r = &g.nodes[n].results[0];
                TensorInfo {
                    name: g.nodes[n].name.clone(),
                    ty: r.ty.clone(),
                }
            })
            .collect()
    }

    /// The graph's outputs, in order.
    pub fn outputs_of(g: &Graph) -> Vec<TensorInfo> {
        g.outputs
            .iter()
            .map(|(name, v)| TensorInfo {
                name: name.clone(),
                ty: g.value_type(*v).clone(),
            })
            .collect()
    }
}

/// A model built for an engine.
pub trait Runnable: Send + Sync {
    /// The engine that runs it.
    fn engine(&self) -> Engine;
    /// What a run takes, in order.
    fn inputs(&self) -> &[TensorInfo];
    /// What a run gives back, in order.
    fn outputs(&self) -> &[TensorInfo];
    /// Whether [`State::step`] can continue a sequence (a forward recurrence whose sequence
    /// length is a run-time value).
    fn streamable(&self) -> bool;
    /// The float16, bfloat16 or float64 type each input, output and weight had in the model
    /// (empty for an all-f32 model). Runs take and give f32 tensors, rounded to these types
    /// (docs/precision.md); files and Python arrays are converted to and from them.
    fn stored_types(&self) -> &hlstm_ir::StoredTypes {
        &crate::precision::ALL_F32
    }
    /// A fresh state: the working memory one caller needs.
    fn new_state(&self) -> Result<Box<dyn State>>;
    /// Runs a whole sequence in a fresh state.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.new_state()?.run(inputs)
    }
}

/// One caller's working memory for a [`Runnable`].
pub trait State: Send {
    /// Runs a whole sequence from the initial state; inputs and outputs in the model's order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
    /// [`State::run`] into `outputs`, reusing its tensors where they already have the shapes
    /// of this call's outputs (the kernel engines then allocate nothing for them: a serving
    /// loop's calls cost what the model costs).
    fn run_into(&mut self, inputs: &[Tensor], outputs: &mut Vec<Tensor>) -> Result<()> {
        *outputs = self.run(inputs)?;
        Ok(())
    }
    /// Continues the sequence where the last call left it, on inputs of one or more steps
    /// (the first call after [`State::new`](Runnable::new_state) or [`State::reset`] starts
    /// from the initial state). An error where the model is not
    /// [`streamable`](Runnable::streamable).
    fn step(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
    /// Forgets the sequence: the next [`State::step`] starts from the initial state.
    fn reset(&mut self);
}

/// Checks a run's inputs against the model's: their count, element types and shapes (a
/// symbolic dim takes any size, one symbol the same size everywhere). Errors name the input.
pub fn check_inputs(infos: &[TensorInfo], inputs: &[Tensor]) -> Result<()> {
    if infos.len() != inputs.len() {
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        return Err(Error::Inputs(format!(
            "expected {} inputs ({}), got {}",
            infos.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    // Each symbolic dim, the size the first input that has it gives it, and that input.
    // (symbol, size, input): a few entries at most, and none for a model without symbols.
    let mut bound: Vec<(&str, usize, &str)> = Vec::new();
    for (info, t) in infos.iter().zip(inputs) {
        if !info.ty.accepts(t.dtype(), t.shape()) {
            return Err(Error::input(
                &info.name,
                format!("expects {}, got {}", info.ty, t.ty()),
            ));
        }
        let dims = info.ty.shape.as_deref().unwrap_or_default();
        for (d, &size) in dims.iter().zip(t.shape()) {
            let hlstm_ir::Dim::Sym(sym) = d else { continue };
            let (first, from) = match bound.iter().find(|(s, _, _)| s == sym) {
                Some(&(_, first, from)) => (first, from),
                None => {
                    bound.push((sym, size, &info.name));
                    (size, info.name.as_str())
                }
            };
            if first != size {
                return Err(Error::input(
                    &info.name,
                    format!(
                        "expects {} with {sym} = {first} (from input '{from}'), got {}",
                        info.ty,
                        t.ty()
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl std::fmt::Debug for dyn Runnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runnable")
            .field("engine", &self.engine())
            .field("inputs", &self.inputs())
            .field("outputs", &self.outputs())
            .finish()
    }
}
