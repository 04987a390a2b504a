//! hlstmc: the command-line driver. It parses arguments and calls the crates; the work lives in
//! ir/, frontends/, passes/ and backends/.

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
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
