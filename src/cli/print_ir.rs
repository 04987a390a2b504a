//! `hlstmc print-ir`: the imported graph IR as text.

use super::io::{persist, temp_beside};
use anyhow::{Context, Result};
use clap::Args;
use hlstm_ir::Graph;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Print the imported graph IR as `.hir` text (docs/hir.md), before any optimization.
///
/// Constants of more than 16 elements are printed by content hash. With `-o FILE` the text goes
/// to FILE and the data of those constants to FILE.weights, so that the IR parses back whole.
///
/// Examples:
///   hlstmc print-ir examples/hlstm_sp97/model.onnx
///   hlstmc print-ir examples/hlstm_sp97/model.onnx -o out/model.hir     # and out/model.hir.weights
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct PrintIrArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Write the IR to FILE (and its weights to FILE.weights) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn main(a: PrintIrArgs) -> Result<ExitCode> {
    let model = super::load_model(&a.model)?;
    emit(model.graph(), a.output.as_deref())
}

/// Prints IR to stdout, or writes it and its weight side file (both whole, or neither).
pub fn emit(g: &Graph, output: Option<&Path>) -> Result<ExitCode> {
    match output {
        None => out!("{}", hlstm_ir::text::print(g)),
        Some(path) => {
            let (text, store) = hlstm_ir::text::print_with_weights(g);
            write_with_weights(path, &text, &store)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes IR text to `path` and the weights it names by hash to `path.weights` (both whole, or
/// neither), so that the text parses back (`.hir` and `.kir` alike).
pub fn write_with_weights(
    path: &Path,
    text: &str,
    store: &hlstm_ir::text::WeightStore,
) -> Result<()> {
    let weights = hlstm_ir::text::side_file_path(path);
    super::io::create_parent(path)?;
    // Both made under random names first (exclusively created), then renamed.
    let (tmp_text, tmp_weights) = (temp_beside(path)?, temp_beside(&weights)?);
    std::fs::write(tmp_text.path(), text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    store
        .save(tmp_weights.path())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", weights.display()))?;
    persist(tmp_text, path)?;
    persist(tmp_weights, &weights)?;
    eprintln!("wrote {} and {}", path.display(), weights.display());
    Ok(())
}
