//! `hlstmc passes`: the default pipeline and every pass, one line each.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

/// List the passes: the default pipeline in order, then every pass with what it does.
///
/// Examples:
///   hlstmc passes
///   hlstmc opt examples/hlstm_sp97/model.onnx --passes simplify,dce --stats
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct PassesArgs {}

pub fn main(_: PassesArgs) -> Result<ExitCode> {
    outln!(
        "default pipeline: {}",
        hlstm_passes::DEFAULT_PIPELINE.join(",")
    );
    outln!();
    for (name, what) in hlstm_passes::registry::describe() {
        let mark = if hlstm_passes::DEFAULT_PIPELINE.contains(&name) {
            "*"
        } else {
            " "
        };
        outln!("{mark} {name:<18} {what}");
    }
    outln!("\n(* = in the default pipeline)");
    Ok(ExitCode::SUCCESS)
}
