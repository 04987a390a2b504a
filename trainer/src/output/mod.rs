//! Training to files: the whole of `hlstmc train` but its argument parsing and progress
//! display, shared by the CLI and the Python package. `train_to_files` builds the session, runs
//! the schedule, and writes beside MODEL.onnx its log, config copy, plots and summary
//! (docs/trainer.md, "What `hlstmc train` writes").
//!
//! The log is written record by record as training goes (flushed, so it can be followed), and
//! created only once the session is built: a bad config leaves an old log alone. Every other
//! file is written whole to a temporary file in the same folder and renamed over the old one,
//! so a failure never leaves a truncated model, config, summary or plot.

mod plots;

use crate::Error;
use crate::config::Config;
use crate::data::SeqSet;
use crate::exec;
use crate::export;
use crate::train::{self, Observer, Record, Session, Summary};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `train_to_files` did.
#[derive(Clone, Debug)]
pub struct TrainOutput {
    /// The run's result: its log records, test metric, density and nonzero counts.
    pub summary: Summary,
    /// Seconds from the start of the call to the end of training (session and schedule; the
    /// files written after it are not counted).
    pub seconds: f64,
    /// What MODEL.summary.json holds: `test_loss`, `test_accuracy`, `test_bpc`, `density`,
    /// `nonzero_weights`, `nonzero_params`, `epochs`, `seconds`, `seconds_per_epoch`, `engine`.
    pub summary_json: serde_json::Value,
    /// The files written, in order: the log, the model, the config copy, the curves, the masks,
    /// the summary.
    pub files: Vec<PathBuf>,
}

/// The path beside `model` with `suffix` replacing its extension (`m.onnx` -> `m.log.jsonl`).
pub fn beside(model: &Path, suffix: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.{suffix}"))
}

/// [`hlstm_driver::write_atomic`], with the trainer's error naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    hlstm_driver::write_atomic(path, bytes)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

/// Writes each record to the JSONL log as it comes, then passes every call on.
struct Tee<'a> {
    log: BufWriter<File>,
    err: Option<std::io::Error>,
    inner: &'a mut dyn Observer,
}

impl Observer for Tee<'_> {
    fn start(&mut self, planned: usize, density: f64) {
        self.inner.start(planned, density);
    }
    fn epoch(&mut self, phase: &str, round: usize, epoch: usize, epochs: usize) {
        self.inner.epoch(phase, round, epoch, epochs);
    }
    fn batch(&mut self, done: usize, total: usize, loss: f64) {
        self.inner.batch(done, total, loss);
    }
    fn record(&mut self, r: &Record) {
        if self.err.is_none()
            && let Err(e) = serde_json::to_writer(&mut self.log, r)
                .map_err(std::io::Error::from)
                .and_then(|_| self.log.write_all(b"\n"))
                // Whole records as they come: a long run's log can be followed (tail -f).
                .and_then(|_| self.log.flush())
        {
            self.err = Some(e);
        }
        self.inner.record(r);
    }
    fn interrupted(&mut self) -> bool {
        self.inner.interrupted()
    }
}

impl TrainOutput {
    /// One line: the test metric, nonzero weights, density, epochs and time.
    pub fn summary_line(&self) -> String {
        let (sum, secs) = (&self.summary, self.seconds);
        let metric = match sum.test.bpc {
            Some(b) => format!("test bits per character {b:.4}"),
            None => format!("test accuracy {:.2}%", 100.0 * sum.test.accuracy),
        };
        format!(
            "{metric}; {} nonzero weights in weight matrices ({} parameters), density {:.1}%; {} epochs in {secs:.1} s ({:.2} s/epoch)",
            sum.nonzero_weights,
            sum.nonzero_params,
            100.0 * sum.density,
            sum.epochs,
            secs / sum.epochs.max(1) as f64,
        )
    }
}

/// Trains `cfg` and writes the model to `out` (ONNX) with, beside it, `MODEL.log.jsonl`,
/// `MODEL.config.toml` (`config_text`, the config as given), `MODEL.curves.svg`,
/// `MODEL.mask.<layer>.<gate>.svg` and `MODEL.summary.json`. `out`'s folder is created when
/// missing. `arrays` are the samples of `data.format = "arrays"` (and an error with any other
/// format; that format without them is one too). `obs` sees every epoch, batch and record.
/// Errors name the file they concern.
pub fn train_to_files(
    cfg: &Config,
    config_text: &str,
    arrays: Option<SeqSet>,
    out: &Path,
    obs: &mut dyn Observer,
) -> Result<TrainOutput, Error> {
    if out.exists() && !out.is_file() {
        return Err(Error::new(format!(
            "{}: not a regular file; the model's path names a file, and its log, plots and \
             config are written beside it",
            out.display()
        )));
    }
    if out.file_name().is_none() {
        return Err(Error::new(format!(
            "{}: the model's path must name a file",
            out.display()
        )));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let start = Instant::now();
    let engine = exec::engine(cfg.train.engine);
    let mut s = Session::with_arrays(cfg, engine, arrays)?;
    let log_path = beside(out, "log.jsonl");
    let cannot = |p: &Path, e: &dyn std::fmt::Display| {
        Error::new(format!("cannot write {}: {e}", p.display()))
    };
    // The log is written as the run goes to MODEL.log.jsonl.partial (follow it with tail -f)
    // and renamed over MODEL.log.jsonl only when the run has succeeded: a failed or
    // interrupted run leaves the previous log as it was, and its own beside it. Created
    // exclusively, so a link planted at that name is not followed.
    let live = beside(out, "log.jsonl.partial");
    let _ = std::fs::remove_file(&live);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&live)
        .map_err(|e| cannot(&live, &e))?;
    let mut tee = Tee {
        log: BufWriter::new(file),
        err: None,
        inner: obs,
    };
    let sum = train::run(&mut s, &mut tee).map_err(|e| {
        Error::new(format!(
            "training: {e} (the previous files are untouched; this run's log is {})",
            live.display()
        ))
    })?;
    tee.log.flush().map_err(|e| cannot(&live, &e))?;
    if let Some(e) = tee.err {
        return Err(cannot(&live, &e));
    }
    let secs = start.elapsed().as_secs_f64();
    let mut files = Vec::new();

    let mut write = |path: PathBuf, bytes: &[u8]| {
        write_atomic(&path, bytes)?;
        files.push(path);
        Ok::<_, Error>(())
    };
    write(out.to_path_buf(), &export::onnx_bytes(&s)?)?;
    write(beside(out, "config.toml"), config_text.as_bytes())?;
    let curves = beside(out, "curves.svg");
    let svg = plots::curves(&sum.log).map_err(|e| e.context(&curves.display().to_string()))?;
    write(curves, svg.as_bytes())?;
    for (key, svg) in plots::masks(&s) {
        write(beside(out, &format!("mask.{key}.svg")), svg.as_bytes())?;
    }
    let summary = serde_json::json!({
        "test_loss": sum.test.loss,
        "test_accuracy": sum.test.accuracy,
        "test_bpc": sum.test.bpc,
        "density": sum.density,
        "nonzero_weights": sum.nonzero_weights,
        "nonzero_params": sum.nonzero_params,
        "epochs": sum.epochs,
        "seconds": secs,
        "seconds_per_epoch": secs / sum.epochs.max(1) as f64,
        "engine": engine.name(),
    });
    let text = serde_json::to_string_pretty(&summary).expect("a JSON value prints") + "\n";
    write(beside(out, "summary.json"), text.as_bytes())?;
    std::fs::rename(&live, &log_path).map_err(|e| cannot(&log_path, &e))?;
    files.insert(0, log_path);
    Ok(TrainOutput {
        summary: sum,
        seconds: secs,
        summary_json: summary,
        files,
    })
}
