//! What a model holds and costs, as one JSON object: `hlstmc inspect --json` and the Python
//! package's `hlstmc.inspect` print and return the same keys (docs/cli.md lists them).

use crate::Model;
use hlstm_ir::stats::graph_stats;
use serde_json::{Value, json};

/// Inputs, outputs, op counts, weights with their nonzeros, parameters and multiply-adds per
/// step of `model`; `source` is where it came from (the `model` key).
pub fn report(model: &Model, source: &str) -> Value {
    let st = graph_stats(model.graph());
    let io = |list: Vec<crate::TensorInfo>| -> Vec<Value> {
        list.iter()
            .map(
                |t| json!({"name": t.name, "dtype": t.ty.dtype.name(), "shape": shape_json(&t.ty)}),
            )
            .collect()
    };
    let weights: Vec<Value> = st
        .weights
        .iter()
        .map(|w| json!({"name": w.name, "shape": w.shape, "nonzero": w.sparsity.nonzeros, "density": w.sparsity.density()}))
        .collect();
    json!({
        "model": source,
        "inputs": io(model.inputs()),
        "outputs": io(model.outputs()),
        "ops": st.ops,
        "loop_body_ops": st.loop_body_ops,
        "weights": weights,
        "params_dense": st.params_dense,
        "params_nonzero": st.params_nonzero,
        "steps": st.steps,
        "batch": st.batch,
        "macs_per_step_dense": st.macs_per_step_dense.round() as u64,
        "macs_per_step_nonzero": st.macs_per_step_nonzero.round() as u64,
    })
}

/// A shape as JSON: known dims as numbers, symbolic ones by name, unknown ones as "?"; `null`
/// for an unknown rank (not `[]`, which is a scalar).
pub fn shape_json(ty: &hlstm_ir::TensorType) -> Value {
    match &ty.shape {
        None => Value::Null,
        Some(dims) => dims
            .iter()
            .map(|d| match d.known() {
                Some(n) => json!(n),
                None => json!(d.to_string()),
            })
            .collect(),
    }
}
