//! `hlstmc train`: trains a model from a TOML config with the grow-and-prune schedule and writes
//! it as ONNX, with its log, plots and a copy of the config beside it (docs/trainer.md). The work
//! is `hlstm_trainer::train_to_files`, shared with the Python package; this shows progress.

use anyhow::{Context, Result, anyhow};
use clap::Args;
use hlstm_trainer::config::Config;
use hlstm_trainer::train::{Observer, Record};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Train an LSTM or H-LSTM with grow and prune, and write it as ONNX.
///
/// Beside MODEL.onnx it writes MODEL.log.jsonl (one record per epoch and per grow, prune and
/// test event), MODEL.summary.json (test metric, nonzero weights, time), MODEL.config.toml (the
/// config as given), MODEL.curves.svg (loss, accuracy and density over the schedule) and
/// MODEL.mask.<layer>.<gate>.svg (each gate's final mask, black = kept). docs/trainer.md lists
/// every config key.
///
/// Examples:
///   hlstmc train examples/digits-hlstm.toml -o out/digits.onnx
///   hlstmc run out/digits.onnx -i X=x.npy
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    /// The training config (TOML).
    pub config: PathBuf,
    /// The ONNX model to write; the log, plots and config copy go beside it.
    #[arg(short = 'o', long = "output", value_name = "MODEL.onnx")]
    pub out: PathBuf,
    /// Override the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

struct Progress {
    bar: ProgressBar,
    quiet: bool,
    /// stderr is a terminal: a bar; otherwise (CI, a pipe) plain lines.
    tty: bool,
    density: f64,
    accuracy: f64,
}

impl Observer for Progress {
    fn epoch(&mut self, phase: &str, round: usize, epoch: usize, epochs: usize) {
        self.bar.set_position(0);
        self.bar
            .set_prefix(format!("{phase} {round} · epoch {}/{epochs}", epoch + 1));
    }
    fn batch(&mut self, done: usize, total: usize, loss: f64) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.bar.set_message(format!(
            "loss {loss:.4}  val acc {:.2}%  density {:.1}%",
            100.0 * self.accuracy,
            100.0 * self.density
        ));
    }
    /// `train_to_files` writes the record to the log; this shows it.
    fn record(&mut self, r: &Record) {
        match r {
            Record::Epoch {
                val_accuracy,
                density,
                ..
            } => (self.accuracy, self.density) = (*val_accuracy, *density),
            Record::Prune { density, .. } => self.density = *density,
            _ => {}
        }
        let Some(line) = r.line() else { return };
        if self.quiet {
        } else if !self.tty {
            // Not a terminal (CI, a pipe): plain lines instead of the bar.
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

pub fn main(a: TrainArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read {}", a.config.display()))?;
    let base = a.config.parent().unwrap_or(Path::new("."));
    let mut cfg = Config::parse(&text, base).map_err(|e| anyhow!("{}: {e}", a.config.display()))?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let tty = std::io::stderr().is_terminal();
    let bar = if a.quiet || !tty {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut p = Progress {
        bar,
        quiet: a.quiet,
        tty,
        density: 1.0,
        accuracy: 0.0,
    };
    // Builds the session, trains, and writes the model and everything beside it.
    let done = hlstm_trainer::train_to_files(&cfg, &text, None, &a.out, &mut p);
    // Cleared on failure too: a bad config must not leave an empty bar above its error.
    p.bar.finish_and_clear();
    let done = done.map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "{}\nwrote {} and its log, plots and config beside it",
        done.summary_line(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
