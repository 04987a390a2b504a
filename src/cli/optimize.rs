//! Optimization flags shared by `opt`, `run`, `inspect`, `compile` and `bench`, and the call
//! into the pass manager. The pass-debugging flags are listed under their own heading
//! ("Optimizer debugging") in each command's help, so that a command's own flags come first;
//! `-O` stays with them.

use anyhow::{Result, anyhow};
use clap::Args;
use hlstmc::OptimizeOptions;
use hlstmc::passes::Instrumentation;
use std::path::PathBuf;

/// The heading the pass-debugging flags are listed under in `--help` (docs/cli.md has a section
/// of the same name).
pub const HEADING: &str = "Optimizer debugging";

/// The highest `-O` level the library's pipeline distinguishes today (`OptimizeOptions::level`
/// takes 0..=1); higher levels are accepted, as compilers accept -O2 and -O3, and run it.
const LIBRARY_MAX_LEVEL: u8 = 1;

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = HEADING)]
pub struct OptArgs {
    /// Optimization level: -O0 runs no pass; -O1 (the default) runs the default pipeline;
    /// -O2 and -O3 are reserved for more aggressive pipelines; today the same as -O1.
    #[arg(
        short = 'O',
        value_name = "LEVEL",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=3),
        help_heading = None::<&str>
    )]
    pub opt_level: u8,
    /// Run these passes, in this order, instead of the default pipeline (see `hlstmc passes`).
    #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
    pub passes: Option<Vec<String>>,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    pub print_after_all: bool,
    /// Print the IR before the named passes.
    #[arg(long, value_delimiter = ',', value_name = "PASS")]
    pub print_before: Vec<String>,
    /// Print the IR after the named passes.
    #[arg(long, value_delimiter = ',', value_name = "PASS")]
    pub print_after: Vec<String>,
    /// Write the IR after each pass to DIR/NN-<pass>.hir, with what each pass adds.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Print a table of the time each pass took (to stderr).
    #[arg(long)]
    pub time_passes: bool,
    /// Print per-pass statistics: nodes, weights, nonzeros and multiply-adds before and after.
    #[arg(long)]
    pub stats: bool,
    /// With --dump-dir: also write each saturation run's e-graph as Graphviz (.dot, and .svg
    /// where the `dot` program is installed).
    #[arg(long, requires = "dump_dir")]
    pub dump_egraph: bool,
    /// Equality saturation: stop after this many iterations.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub saturate_iterations: usize,
    /// Equality saturation: stop once an e-graph has this many e-nodes (checked between
    /// iterations, so a run may overshoot).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub saturate_nodes: usize,
    /// Equality saturation: stop after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub saturate_seconds: f64,
    /// After each pass, run the verifier and compare the interpreter's outputs on random inputs
    /// before and after; name the pass that changed the numbers.
    #[arg(long)]
    pub verify_each: bool,
}

impl OptArgs {
    /// The library's optimization options for these flags.
    pub fn options(&self) -> Result<OptimizeOptions> {
        let time = std::time::Duration::try_from_secs_f64(self.saturate_seconds)
            .map_err(|_| anyhow!("--saturate-seconds must be a finite number of seconds >= 0"))?;
        let mut o = OptimizeOptions {
            // -O2 and -O3 run the -O1 pipeline until there is a more aggressive one.
            level: self.opt_level.min(LIBRARY_MAX_LEVEL),
            passes: self.passes.clone(),
            ..OptimizeOptions::default()
        };
        o.instrumentation = Instrumentation {
            print_before: self.print_before.clone(),
            print_after: self.print_after.clone(),
            print_after_all: self.print_after_all,
            dump_dir: self.dump_dir.clone(),
            time_passes: self.time_passes,
            stats: self.stats,
            verify_each: self.verify_each,
            dump_egraph: self.dump_egraph,
            saturate_limits: Some(hlstmc::passes::saturate::Limits {
                iterations: self.saturate_iterations,
                nodes: self.saturate_nodes,
                time,
            }),
            ..o.instrumentation
        };
        Ok(o)
    }
}
