//! `hlstmc opt`: optimize a model and print the resulting graph IR.

use super::optimize::{OptArgs, optimize};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Optimize a model and print the optimized graph IR (.hir).
///
/// Runs the default pipeline (or `--passes`), with the pass-debugging flags: --print-after-all,
/// --print-before=PASS, --print-after=PASS, --dump-dir DIR, --time-passes, --stats,
/// --verify-each. With `-o FILE` the IR goes to FILE and large weights to FILE.weights, so that
/// the text parses back.
///
/// Examples:
///   hlstmc opt model.onnx
///   hlstmc opt model.onnx --stats --time-passes --dump-dir dumps/
#[derive(Args)]
pub struct OptCmdArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Write the IR to FILE (and its weights to FILE.weights) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub opt: OptArgs,
}

pub fn main(a: OptCmdArgs) -> Result<ExitCode> {
    let mut g = super::load_model(&a.model)?;
    optimize(&mut g, &a.opt)?;
    super::print_ir::emit(&g, a.output.as_deref())
}
