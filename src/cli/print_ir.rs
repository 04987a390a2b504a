//! `hlstmc print-ir`: the imported graph IR as text.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print the imported graph IR as `.hir` text.
///
/// Large weights are printed by content hash; `--weights FILE` writes their data to a side file
/// so that the text can be parsed back.
///
/// Example: hlstmc print-ir model.onnx > model.hir
#[derive(Args)]
pub struct PrintIrArgs {
    /// The ONNX model.
    pub model: PathBuf,
}

pub fn main(a: PrintIrArgs) -> Result<ExitCode> {
    let g = super::load_model(&a.model)?;
    print!("{}", hlstm_ir::text::print(&g));
    Ok(ExitCode::SUCCESS)
}
