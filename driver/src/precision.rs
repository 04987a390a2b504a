//! The run-time side of float16, bfloat16 and float64 models (docs/precision.md): every engine
//! computes in f32; [`Declared`] wraps a built model so that its inputs are rounded to the
//! types the model declares (an f32 value given for a float16 input becomes the float16 value
//! nearest it, as a conversion at the boundary would make it) and its outputs are rounded to
//! theirs. f64 needs no rounding: its values arrive as f32 already and widen exactly.

use crate::runtime::{Runnable, State, TensorInfo};
use crate::{Engine, Result};
use hlstm_ir::{StoredType, StoredTypes, Tensor};
use std::sync::Arc;

/// What a model with no float16, bfloat16 or float64 input, output or weight records.
pub(crate) static ALL_F32: StoredTypes = StoredTypes {
    inputs: std::collections::BTreeMap::new(),
    outputs: std::collections::BTreeMap::new(),
    weights: std::collections::BTreeMap::new(),
};

/// A built model whose inputs and outputs are rounded to their declared types.
struct Declared {
    inner: Arc<dyn Runnable>,
    stored: StoredTypes,
    /// The declared type of each input and output, in order.
    ins: Vec<StoredType>,
    outs: Vec<StoredType>,
}

/// `runnable` as it must behave for a model whose inputs, outputs and weights had the types in
/// `stored`: unchanged for an all-f32 model.
pub(crate) fn declared(runnable: Arc<dyn Runnable>, stored: &StoredTypes) -> Arc<dyn Runnable> {
    if stored.is_empty() {
        return runnable;
    }
    let of = |infos: &[TensorInfo], f: &dyn Fn(&str) -> StoredType| {
        infos.iter().map(|i| f(&i.name)).collect::<Vec<_>>()
    };
    let ins = of(runnable.inputs(), &|n| stored.input(n));
    let outs = of(runnable.outputs(), &|n| stored.output(n));
    Arc::new(Declared {
        inner: runnable,
        stored: stored.clone(),
        ins,
        outs,
    })
}

/// Rounds each tensor to its type where that type is narrower than f32.
fn round_all(ts: &[Tensor], types: &[StoredType]) -> Option<Vec<Tensor>> {
    if !types.iter().any(|t| t.size_bytes() == 2) {
        return None;
    }
    Some(
        ts.iter()
            .enumerate()
            .map(|(k, t)| types.get(k).copied().unwrap_or_default().round(t.clone()))
            .collect(),
    )
}

fn round_in_place(ts: &mut [Tensor], types: &[StoredType]) {
    for (t, ty) in ts.iter_mut().zip(types) {
        if let (Tensor::F32(a), 2) = (t, ty.size_bytes()) {
            a.mapv_inplace(|v| ty.round_f32(v));
        }
    }
}

impl Runnable for Declared {
    fn engine(&self) -> Engine {
        self.inner.engine()
    }
    fn inputs(&self) -> &[TensorInfo] {
        self.inner.inputs()
    }
    fn outputs(&self) -> &[TensorInfo] {
        self.inner.outputs()
    }
    fn streamable(&self) -> bool {
        self.inner.streamable()
    }
    fn stored_types(&self) -> &StoredTypes {
        &self.stored
    }
    fn new_state(&self) -> Result<Box<dyn State>> {
        Ok(Box::new(DeclaredState {
            inner: self.inner.new_state()?,
            ins: self.ins.clone(),
            outs: self.outs.clone(),
        }))
    }
}

struct DeclaredState {
    inner: Box<dyn State>,
    ins: Vec<StoredType>,
    outs: Vec<StoredType>,
}

impl DeclaredState {
    fn call(
        &mut self,
        inputs: &[Tensor],
        f: impl FnOnce(&mut dyn State, &[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let mut out = match round_all(inputs, &self.ins) {
            Some(rounded) => f(self.inner.as_mut(), &rounded)?,
            None => f(self.inner.as_mut(), inputs)?,
        };
        round_in_place(&mut out, &self.outs);
        Ok(out)
    }
}

impl State for DeclaredState {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.call(inputs, |s, i| s.run(i))
    }
    fn run_into(&mut self, inputs: &[Tensor], outputs: &mut Vec<Tensor>) -> Result<()> {
        match round_all(inputs, &self.ins) {
            Some(rounded) => self.inner.run_into(&rounded, outputs)?,
            None => self.inner.run_into(inputs, outputs)?,
        }
        round_in_place(outputs, &self.outs);
        Ok(())
    }
    fn step(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.call(inputs, |s, i| s.step(i))
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
}
