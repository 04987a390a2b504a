//! `hlstmc inspect`: what a model holds and what it costs.

use anyhow::Result;
use clap::Args;
use hlstm_ir::stats::graph_stats;
use hlstm_ir::{Graph, TensorType};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show a model's inputs, outputs, ops, weights and cost.
///
/// Lists inputs and outputs with shapes; op counts (recurrence bodies included, and separately
/// the ops inside them); each weight with its shape, nonzeros and density; parameters dense and
/// nonzero; and multiply-adds per time step and batch row, dense and nonzero. `--json` prints
/// one JSON object (keys documented in docs/cli.md).
///
/// Example: hlstmc inspect examples/hlstm_sp97/model.onnx --json
#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Inspect the graph after the optimization pipeline rather than as imported.
    #[arg(long)]
    pub optimized: bool,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

fn ios(g: &Graph, inputs: bool) -> Vec<(String, TensorType)> {
    if inputs {
        g.inputs
            .iter()
            .map(|n| (g.nodes[*n].name.clone(), g.nodes[*n].results[0].ty.clone()))
            .collect()
    } else {
        g.outputs
            .iter()
            .map(|(name, v)| (name.clone(), g.value_type(*v).clone()))
            .collect()
    }
}

fn io_json(list: &[(String, TensorType)]) -> serde_json::Value {
    list.iter()
        .map(|(name, ty)| {
            let shape: Vec<serde_json::Value> = ty
                .shape
                .iter()
                .flatten()
                .map(|d| match d.known() {
                    Some(n) => json!(n),
                    None => json!(d.to_string()),
                })
                .collect();
            json!({"name": name, "dtype": ty.dtype.name(), "shape": shape})
        })
        .collect()
}

pub fn main(a: InspectArgs) -> Result<ExitCode> {
    let mut model = super::load_model(&a.model)?;
    if a.optimized {
        model = model.optimize(&a.opt.options()?)?;
    }
    let g = model.graph();
    let st = graph_stats(g);
    let (inputs, outputs) = (ios(g, true), ios(g, false));
    if a.json {
        let weights: Vec<_> = st
            .weights
            .iter()
            .map(|w| json!({"name": w.name, "shape": w.shape, "nonzero": w.sparsity.nonzeros, "density": w.sparsity.density()}))
            .collect();
        let obj = json!({
            "model": a.model.display().to_string(),
            "inputs": io_json(&inputs),
            "outputs": io_json(&outputs),
            "ops": st.ops,
            "loop_body_ops": st.loop_body_ops,
            "weights": weights,
            "params_dense": st.params_dense,
            "params_nonzero": st.params_nonzero,
            "steps": st.steps,
            "batch": st.batch,
            "macs_per_step_dense": st.macs_per_step_dense.round() as u64,
            "macs_per_step_nonzero": st.macs_per_step_nonzero.round() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model: {}", a.model.display());
    println!("inputs:");
    for (n, t) in &inputs {
        println!("  {n}: {t}");
    }
    println!("outputs:");
    for (n, t) in &outputs {
        println!("  {n}: {t}");
    }
    println!("ops:");
    for (k, c) in &st.ops {
        let inside = st.loop_body_ops.get(k).copied().unwrap_or(0);
        println!("  {k:<18} {c:>6}   ({inside} inside recurrence bodies)");
    }
    println!("weights:");
    for w in &st.weights {
        println!(
            "  {:<40} {:<14} {:>8} nonzero  density {:.3}",
            w.name,
            format!("{:?}", w.shape),
            w.sparsity.nonzeros,
            w.sparsity.density()
        );
    }
    println!(
        "parameters: {} dense, {} nonzero",
        st.params_dense, st.params_nonzero
    );
    println!(
        "multiply-adds per step and batch row (T={}, B={}): {} dense, {} nonzero",
        st.steps,
        st.batch,
        st.macs_per_step_dense.round(),
        st.macs_per_step_nonzero.round()
    );
    Ok(ExitCode::SUCCESS)
}
