//! Command-line interface: argument definitions and dispatch.

/// `println!` that returns an error instead of panicking when standard output cannot be
/// written (`/dev/full`, a full disk): `hlstmc ... > /dev/full` exits 1 with a message.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))?;
    }};
}

/// `print!` with the same error handling as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))?;
    }};
}

mod bench;
mod compile;
mod engine;
mod eval;
mod inspect;
mod interrupt;
mod io;
mod opt;
mod optimize;
mod passes;
mod print_ir;
mod run;
mod setup_time;
mod train;

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};
use hlstmc::Model;
use std::path::Path;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hlstmc",
    version,
    about = "A compiler for LSTMs and pruned hidden-layer LSTMs (H-LSTM)",
    long_about = "hlstmc reads trained recurrent models from ONNX (LSTM/GRU/RNN ops, Scan bodies, \
                  unrolled PyTorch exports) into its graph IR, optimizes them (removing pruned connections \
                  and dead neurons by equality saturation), and runs them with an exact interpreter \
                  or as native code (Cranelift JIT).\n\n\
                  Examples (from the repository root):\n  \
                  hlstmc inspect examples/hlstm_sp97/model.onnx\n  \
                  hlstmc run examples/hlstm_sp97/model.onnx -i X=examples/hlstm_sp97/test_data_set_0/input_0.pb -o out/\n  \
                  hlstmc run examples/hlstm_sp97/model.onnx --test-data examples/hlstm_sp97/test_data_set_0\n\n\
                  `hlstmc <COMMAND> --help` lists a command's flags; docs/cli.md describes them all."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Raise (or lower) a bound on what is read from outside: elements=N (of one tensor,
    /// default 2^28), bytes=N (of one file, default 1G), nesting=N (of graph bodies, default
    /// 64). Repeatable; docs/limits.md.
    #[arg(
        long = "limit",
        value_name = "KEY=VALUE",
        global = true,
        help_heading = "Limits"
    )]
    pub limits: Vec<String>,
}

#[derive(Subcommand)]
pub enum Command {
    Inspect(inspect::InspectArgs),
    Run(run::RunArgs),
    PrintIr(print_ir::PrintIrArgs),
    Opt(opt::OptCmdArgs),
    Passes(passes::PassesArgs),
    Bench(bench::BenchArgs),
    Compile(compile::CompileArgs),
    Train(train::TrainArgs),
    Eval(eval::EvalArgs),
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let limits =
        hlstmc::Limits::parse(cli.limits.iter().map(String::as_str)).map_err(|e| anyhow!(e))?;
    hlstmc::limits::set(limits);
    match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::PrintIr(a) => print_ir::main(a),
        Command::Opt(a) => opt::main(a),
        Command::Passes(a) => passes::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Compile(a) => compile::main(a),
        Command::Train(a) => train::main(a),
        Command::Eval(a) => eval::main(a),
    }
}

/// Imports a model file (read once); errors name the file, once: the library's own errors
/// for a file it cannot read already do (`cannot read x.onnx: ...`), its import errors do not.
/// The import's warnings go to standard error as `warning: FILE: ...`.
pub fn load_model(path: &Path) -> Result<Model> {
    let model = Model::load(path).map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::from(e)
        } else {
            anyhow::Error::from(e).context(shown)
        }
    })?;
    for w in model.warnings() {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(model)
}

/// An error as one line for `error: ...`: each cause after the first, joined by `: `, unless
/// the text before it already says it (the library's I/O errors include the system's message
/// and also give it as their source; printed twice it read `... (os error 2): No such file
/// ... (os error 2)`).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// Fails at once, before any other work, where the CUDA driver library is absent.
pub fn check_cuda_driver() -> Result<()> {
    if hlstmc::backends::cuda::driver_present() {
        Ok(())
    } else {
        Err(anyhow!("{}", hlstmc::backends::cuda::no_driver_message()))
    }
}
