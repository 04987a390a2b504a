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
use std::time::Instant;

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
///   hlstmc run out/digits.onnx --test-data examples/digits-hlstm/test_data_set_0
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
    started: Instant,
    /// The schedule's epochs as planned (an undone pruning round ends it sooner).
    planned: usize,
    /// Epochs finished.
    done: usize,
}

/// Set by the first Ctrl-C: training stops after the batch it lands in, and nothing is
/// written (the previous model and log stay). A second Ctrl-C ends the process at once.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; the default action makes a second Ctrl-C final.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Units of the bar per epoch: it moves batch by batch across the whole schedule.
const PER_EPOCH: u64 = 1000;

/// Whole seconds as `1:02:03` or `2:03`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

impl Progress {
    /// Elapsed time and, from the mean epoch so far, the time left for the planned epochs.
    fn times(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = self.planned.saturating_sub(self.done);
        let eta = elapsed / self.done.max(1) as f64 * left as f64;
        format!("[{} elapsed, about {} left]", clock(elapsed), clock(eta))
    }
}

impl Observer for Progress {
    fn interrupted(&mut self) -> bool {
        INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn start(&mut self, planned: usize, density: f64) {
        (self.planned, self.density) = (planned.max(1), density);
        self.bar.set_length(self.planned as u64 * PER_EPOCH);
    }
    fn epoch(&mut self, phase: &str, round: usize, epoch: usize, epochs: usize) {
        let at = match phase {
            "grow" => format!("growth round {round}, epoch {}/{epochs}", epoch + 1),
            "prune" => format!("pruning round {round}, retraining {}/{epochs}", epoch + 1),
            "final" => format!("final training {}/{epochs}", epoch + 1),
            _ => format!("training {}/{epochs}", epoch + 1),
        };
        self.planned = self.planned.max(self.done + 1);
        self.bar.set_length(self.planned as u64 * PER_EPOCH);
        self.bar
            .set_prefix(format!("epoch {}/{} · {at}", self.done + 1, self.planned));
    }
    fn batch(&mut self, done: usize, total: usize, loss: f64) {
        let within = PER_EPOCH * done as u64 / total.max(1) as u64;
        self.bar.set_position(self.done as u64 * PER_EPOCH + within);
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
            } => {
                (self.accuracy, self.density) = (*val_accuracy, *density);
                self.done += 1;
            }
            Record::Prune { density, .. } => self.density = *density,
            _ => {}
        }
        let Some(mut line) = r.line() else { return };
        if let Record::Epoch { .. } = r {
            line = format!("{line}  {}", self.times());
        }
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
    let text = hlstm_ir::limits::read_text(&a.config)
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
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {msg}  [{elapsed} elapsed, about {eta} left]",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut p = Progress {
        bar,
        quiet: a.quiet,
        tty,
        density: 1.0,
        accuracy: 0.0,
        started: Instant::now(),
        planned: 1,
        done: 0,
    };
    // SAFETY: installing a handler that only stores to an atomic and restores the default.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    // Builds the session, trains, and writes the model and everything beside it.
    let done = hlstm_trainer::train_to_files(&cfg, &text, None, &a.out, &mut p);
    // Cleared on failure too: a bad config must not leave an empty bar above its error.
    p.bar.finish_and_clear();
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!(
            "error: interrupted; {} and the files beside it are as they were",
            a.out.display()
        );
        return Ok(ExitCode::from(130));
    }
    let done = done.map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "{}\nwrote {} and its log, plots and config beside it",
        done.summary_line(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
