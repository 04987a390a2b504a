//! What a model holds and costs, as one JSON object: `hlstmc inspect --json` and the Python
//! package's `hlstmc.inspect` print and return the same keys (docs/cli.md lists them).

use crate::Model;
use hlstm_ir::stats::graph_stats;
use hlstm_ir::{Graph, Op, StoredType};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The stored type of every weight of `g` and its recurrence bodies that is not f32, by name.
pub fn weight_types(g: &Graph) -> BTreeMap<String, StoredType> {
    let mut all = BTreeMap::new();
    fn walk(g: &Graph, all: &mut BTreeMap<String, StoredType>) {
        for (k, v) in &g.stored.weights {
            all.entry(k.clone()).or_insert(*v);
        }
        for n in g.nodes.node_weights() {
            if let Op::Recurrence(r) = &n.op {
                walk(&r.body, all);
            }
        }
    }
    walk(g, &mut all);
    all
}

/// The type an input or output is given and taken in: its declared float type (f16, bf16,
/// f64), or the IR's type.
pub fn io_dtype(ty: &hlstm_ir::TensorType, stored: StoredType) -> &'static str {
    match stored {
        StoredType::F32 => ty.dtype.name(),
        s => s.name(),
    }
}

/// Inputs, outputs, op counts, weights with their nonzeros, parameters and multiply-adds per
/// step of `model`; `source` is where it came from (the `model` key).
pub fn report(model: &Model, source: &str) -> Value {
    let st = graph_stats(model.graph());
    let stored = model.stored_types();
    let io = |list: Vec<crate::TensorInfo>, of: &dyn Fn(&str) -> StoredType| -> Vec<Value> {
        list.iter()
            .map(|t| {
                json!({"name": t.name, "dtype": io_dtype(&t.ty, of(&t.name)), "shape": shape_json(&t.ty)})
            })
            .collect()
    };
    let types = weight_types(model.graph());
    let weights: Vec<Value> = st
        .weights
        .iter()
        .map(|w| {
            let dtype = types.get(&w.name).copied().unwrap_or_default().name();
            json!({"name": w.name, "dtype": dtype, "shape": w.shape, "nonzero": w.sparsity.nonzeros, "density": w.sparsity.density()})
        })
        .collect();
    json!({
        "model": source,
        "inputs": io(model.inputs(), &|n| stored.input(n)),
        "outputs": io(model.outputs(), &|n| stored.output(n)),
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
