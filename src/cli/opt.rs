//! `hlstmc opt`: optimize a model and print the resulting graph IR, or the kernel IR it lowers
//! to.

use super::engine::{SparseStrategy, build_options};
use super::optimize::OptArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Optimize a model and print the optimized IR, or the code it lowers to.
///
/// Prints the optimized graph IR (.hir), or the kernel IR it lowers to (.kir, with `--emit kir`),
/// or the code the JIT makes of it (`--emit clif`, `--emit asm`), or PTX (`--emit ptx`).
///
/// Runs the default pipeline (or `--passes`), with the pass-debugging flags: --print-after-all,
/// --print-before=PASS, --print-after=PASS, --dump-dir DIR, --time-passes, --stats,
/// --verify-each. With `-o FILE` the IR goes to FILE and, for .hir, large weights to
/// FILE.weights, so that the text parses back.
///
/// Examples:
///   hlstmc opt examples/hlstm_sp97/model.onnx
///   hlstmc opt examples/hlstm_sp97/model.onnx -o out/opt.hir     # and out/opt.hir.weights
///   hlstmc opt examples/hlstm_sp97/model.onnx --stats --time-passes --dump-dir out/dumps
///   hlstmc opt examples/hlstm_sp97/model.onnx --emit kir --sparse-strategy sparse-csr
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct OptCmdArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Write the IR to FILE (and its weights to FILE.weights) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// What to print: the optimized graph IR, or the kernel IR it lowers to.
    #[arg(long, value_enum, default_value = "hir")]
    pub emit: Emit,
    /// With --emit kir: generate every constant weight this way instead of choosing per matrix.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub sparse_strategy: Option<SparseStrategy>,
    /// With --emit kir: print each thread's program of the program split across N threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    #[command(flatten)]
    pub opt: OptArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Emit {
    /// The optimized graph IR (.hir).
    Hir,
    /// The kernel IR (.kir): buffers, constants, strided views, the time loop.
    Kir,
    /// The Cranelift IR (CLIF) the JIT generates for this machine.
    Clif,
    /// The machine instructions the JIT generates for this machine, after register
    /// allocation (Cranelift's listing).
    Asm,
    /// PTX for NVIDIA GPUs (sm_80; `hlstmc compile --target ptx --sm N` for others).
    Ptx,
}

pub fn main(a: OptCmdArgs) -> Result<ExitCode> {
    let model = super::load_model(&a.model)?.optimize(&a.opt.options()?)?;
    match a.emit {
        Emit::Hir => super::print_ir::emit(model.graph(), a.output.as_deref()),
        Emit::Kir | Emit::Clif | Emit::Asm | Emit::Ptx => {
            let opts = build_options(
                hlstmc::Engine::Jit,
                a.sparse_strategy,
                Default::default(),
                1,
            );
            let mut lower = hlstmc::lower_options(&opts);
            if let Emit::Ptx = a.emit {
                lower.selector = Some(&hlstmc::backends::ptx::select::SELECTOR);
            }
            let mut p = model.lower(&lower)?;
            p.name = a
                .model
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            // One program's kernel IR to a file: with its large constants beside it, so that
            // the text parses back (`hlstm_ir::kernel::parse_with_weights`).
            if let (Emit::Kir, 1, Some(path)) = (a.emit, a.threads, &a.output) {
                let (text, store) = hlstmc::ir::kernel::print_with_weights(&p);
                super::print_ir::write_with_weights(path, &text, &store)?;
                return Ok(ExitCode::SUCCESS);
            }
            let text = match a.emit {
                Emit::Ptx => {
                    let opts = hlstmc::backends::ptx::PtxOptions::default();
                    hlstmc::backends::ptx::compile(&p, &opts)
                        .map_err(|e| anyhow::anyhow!("cannot generate PTX: {e}"))?
                        .ptx
                }
                Emit::Clif => {
                    let opts = hlstmc::backends::cpu::CpuOptions::default();
                    hlstmc::backends::cpu::JitProgram::compile(&p, &opts)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .clif()
                }
                Emit::Asm => {
                    let opts = hlstmc::backends::cpu::CpuOptions::default();
                    hlstmc::backends::cpu::JitProgram::compile_opts(&p, &opts, true)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .asm()
                        .unwrap_or_default()
                        .to_string()
                }
                _ if a.threads > 1 => hlstmc::passes::lower::threads::split(&p, a.threads as usize)
                    .iter()
                    .enumerate()
                    .map(|(t, q)| {
                        format!(
                            "# thread {t} of {}\n{}",
                            a.threads,
                            hlstmc::ir::kernel::print(q)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => hlstmc::ir::kernel::print(&p),
            };
            match &a.output {
                None => out!("{text}"),
                Some(path) => {
                    super::io::create_parent(path)?;
                    hlstmc::write_atomic(path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
