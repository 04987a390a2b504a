//! hlstmc: the command-line driver. It parses arguments, calls the library (`hlstmc`, whose
//! pipeline lives in driver/) and prints.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`hlstmc opt ... | head`) instead of failing on the write.
    #[cfg(unix)]
    // SAFETY: restoring the default action of SIGPIPE at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::error_message(&e));
            ExitCode::FAILURE
        }
    };
    // For tests: how many times a model was decoded (the pipeline reads a file once).
    if std::env::var_os("HLSTMC_REPORT_DECODES").is_some() {
        eprintln!(
            "models decoded: {}",
            hlstmc::frontends::onnx::models_decoded()
        );
    }
    code
}
