//! `hlstmc inspect`: what a model holds and what it costs.

use anyhow::Result;
use clap::Args;
use hlstm_ir::stats::graph_stats;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show a model's inputs, outputs, ops, weights and cost.
///
/// Lists inputs and outputs with types and shapes (float16, bfloat16 and float64 ones in their
/// declared type: hlstmc computes in f32); op counts (recurrence bodies included, and separately
/// the ops inside them); each weight with its stored type, shape, nonzeros and density; parameters dense and
/// nonzero; and multiply-adds per time step and batch row, dense and nonzero. `--json` prints
/// one JSON object (keys documented in docs/cli.md).
///
/// Examples:
///   hlstmc inspect examples/hlstm_sp97/model.onnx
///   hlstmc inspect examples/hlstm_sp97/model.onnx --json
///   hlstmc inspect examples/hlstm_sp97/model.onnx --optimized
#[derive(Args)]
#[command(verbatim_doc_comment)]
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

/// Each input or output with its type as given and taken: a float16, bfloat16 or float64
/// one shows its declared type and notes that it is computed in f32.
fn ios(
    list: Vec<hlstmc::TensorInfo>,
    of: &dyn Fn(&str) -> hlstmc::StoredType,
) -> Vec<(String, String)> {
    list.into_iter()
        .map(|t| {
            let text = match of(&t.name) {
                hlstmc::StoredType::F32 => t.ty.to_string(),
                s => {
                    let ty = t.ty.to_string();
                    let dims = ty.strip_prefix(t.ty.dtype.name()).unwrap_or(&ty);
                    format!("{s}{dims}  (computed in f32)")
                }
            };
            (t.name, text)
        })
        .collect()
}

pub fn main(a: InspectArgs) -> Result<ExitCode> {
    let mut model = super::load_model(&a.model)?;
    if a.optimized {
        model = model.optimize(&a.opt.options()?)?;
    }
    if a.json {
        let obj = hlstmc::inspect::report(&model, &a.model.display().to_string());
        outln!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(ExitCode::SUCCESS);
    }
    let st = graph_stats(model.graph());
    let stored = model.stored_types();
    let inputs = ios(model.inputs(), &|n| stored.input(n));
    let outputs = ios(model.outputs(), &|n| stored.output(n));
    let types = hlstmc::inspect::weight_types(model.graph());
    outln!("model: {}", a.model.display());
    outln!("inputs:");
    for (n, t) in &inputs {
        outln!("  {n}: {t}");
    }
    outln!("outputs:");
    for (n, t) in &outputs {
        outln!("  {n}: {t}");
    }
    outln!("ops:");
    for (k, c) in &st.ops {
        let inside = st.loop_body_ops.get(k).copied().unwrap_or(0);
        outln!("  {k:<18} {c:>6}   ({inside} inside recurrence bodies)");
    }
    outln!("weights:");
    for w in &st.weights {
        outln!(
            "  {:<40} {:<4} {:<14} {:>8} nonzero  density {:.3}",
            w.name,
            types.get(&w.name).copied().unwrap_or_default().name(),
            super::io::dims(&w.shape),
            w.sparsity.nonzeros,
            w.sparsity.density()
        );
    }
    outln!(
        "parameters: {} dense, {} nonzero",
        st.params_dense,
        st.params_nonzero
    );
    outln!(
        "multiply-adds per step and batch row (T={}, B={}): {} dense, {} nonzero",
        st.steps,
        st.batch,
        st.macs_per_step_dense.round(),
        st.macs_per_step_nonzero.round()
    );
    Ok(ExitCode::SUCCESS)
}
