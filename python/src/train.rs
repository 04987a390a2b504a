//! `hlstmc.train`: grow-and-prune training as `hlstmc train` runs it
//! (`hlstm_trainer::train_to_files`), from a TOML file or a dict, on the config's data files or
//! on numpy arrays.

use crate::errors::{invalid, io_error};
use hlstmc::trainer::config::Config;
use hlstmc::trainer::data::SeqSet;
use hlstmc::trainer::train::{Observer, Record};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::{Path, PathBuf};

/// Shows progress the way the caller asked, with the GIL taken only for the call: lines on
/// `sys.stderr` (one per epoch, grow, prune), or each record as a dict to a callable.
struct PyObserver {
    progress: Progress,
    /// The first error a callback raised; training goes on, and the error is raised after.
    err: Option<PyErr>,
}

enum Progress {
    Quiet,
    Lines,
    Callback(Py<PyAny>),
}

impl Observer for PyObserver {
    /// Ctrl-C (or another signal Python handles) stops training after the batch it lands in:
    /// the KeyboardInterrupt is raised and nothing is written.
    fn interrupted(&mut self) -> bool {
        if self.err.is_some() {
            return true;
        }
        if let Err(e) = Python::attach(|py| py.check_signals()) {
            self.err = Some(e);
            return true;
        }
        false
    }

    fn record(&mut self, r: &Record) {
        if self.err.is_some() || matches!(self.progress, Progress::Quiet) {
            return;
        }
        let shown = Python::attach(|py| -> PyResult<()> {
            match &self.progress {
                Progress::Quiet => Ok(()),
                Progress::Lines => match r.line() {
                    Some(line) => {
                        let err = py.import("sys")?.getattr("stderr")?;
                        err.call_method1("write", (line + "\n",))?;
                        Ok(())
                    }
                    None => Ok(()),
                },
                Progress::Callback(f) => {
                    f.call1(py, (record_dict(py, r)?,))?;
                    Ok(())
                }
            }
        });
        if let Err(e) = shown {
            self.err = Some(e);
        }
    }
}

/// A record as the dict of its line in MODEL.log.jsonl (through the same text, so that an f32
/// such as the learning rate reads 0.01 in both, not 0.009999999776).
fn record_dict(py: Python<'_>, r: &Record) -> PyResult<Py<PyAny>> {
    crate::convert::json_to_py(py, r)
}

/// The config as TOML text and the folder its relative paths start from.
fn config_text(
    py: Python<'_>,
    config: &Bound<'_, PyAny>,
    arrays: bool,
) -> PyResult<(String, PathBuf)> {
    // A file's text is kept as given (it is copied beside the model) unless data=(X, y) adds
    // to its [data].
    let mut original = None;
    let (mut value, base): (toml::Table, PathBuf) = if config.is_instance_of::<PyDict>() {
        let json: String = py
            .import("json")?
            .call_method1("dumps", (config,))?
            .extract()?;
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| invalid(format!("config: {e}")))?;
        let table = toml::Table::try_from(v)
            .map_err(|e| invalid(format!("config: {e} (None has no TOML form)")))?;
        (table, PathBuf::from("."))
    } else if config.is_instance_of::<PyString>() || config.hasattr("__fspath__")? {
        let path: PathBuf = config.extract()?;
        let text = hlstmc::limits::read_text(&path)
            .map_err(|e| io_error(e.kind(), format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        original = Some(text);
        (table, base)
    } else {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "config is a TOML file's path or a dict, not {}",
            config.get_type().name()?
        )));
    };
    if arrays {
        original = None;
        // data=(X, y): the config's [data] may be left out (a 10-way split: 8 train, 1
        // validation, 1 test) or give only the split and scale.
        let data = value
            .entry("data")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = data {
            t.entry("format").or_insert_with(|| "arrays".into());
            if !t.contains_key("split") {
                let mut split = toml::Table::new();
                split.insert("modulus".into(), 10.into());
                split.insert("test".into(), toml::Value::Array(vec![0.into()]));
                split.insert("validation".into(), toml::Value::Array(vec![1.into()]));
                t.insert("split".into(), toml::Value::Table(split));
            }
        }
    }
    let text = match original {
        Some(text) => text,
        None => toml::to_string(&value).map_err(|e| invalid(format!("config: {e}")))?,
    };
    Ok((text, base))
}

/// `(X, y)` as the trainer's sequence set: X float [samples, steps, features], y integer
/// [samples].
fn arrays<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<SeqSet> {
    let (x, y): (Bound<'py, PyAny>, Bound<'py, PyAny>) = data
        .extract()
        .map_err(|_| invalid("data is a pair (X, y) of arrays"))?;
    let np = py.import("numpy")?;
    let as_array = |v: &Bound<'py, PyAny>, dtype: &str| -> PyResult<Bound<'py, PyAny>> {
        let kw = PyDict::new(py);
        kw.set_item("dtype", dtype)?;
        np.getattr("ascontiguousarray")?.call((v,), Some(&kw))
    };
    let kind = |v: &Bound<'py, PyAny>| -> PyResult<char> {
        Ok(np
            .call_method1("asarray", (v,))?
            .getattr("dtype")?
            .getattr("kind")?
            .extract::<String>()?
            .chars()
            .next()
            .unwrap_or('?'))
    };
    if kind(&x)? != 'f' && !matches!(kind(&x)?, 'i' | 'u') {
        return Err(invalid(
            "data: X must be a numeric array [samples, steps, features]",
        ));
    }
    if !matches!(kind(&y)?, 'i' | 'u') {
        return Err(invalid(
            "data: y must be an integer array of class labels [samples]",
        ));
    }
    let x = as_array(&x, "float32")?;
    let x = x.cast::<PyArrayDyn<f32>>()?.readonly();
    let y = as_array(&y, "int64")?;
    let y = y.cast::<PyArrayDyn<i64>>()?.readonly();
    let (xs, ys) = (x.shape().to_vec(), y.shape().to_vec());
    if xs.len() != 3 || ys.len() != 1 || xs[0] != ys[0] {
        return Err(invalid(format!(
            "data: X must be [samples, steps, features] and y [samples], got {} and {}",
            hlstmc::ir::dims_text(&xs),
            hlstmc::ir::dims_text(&ys)
        )));
    }
    let xv: Vec<f32> = x.as_slice()?.to_vec();
    let yv: Vec<i64> = y.as_slice()?.to_vec();
    SeqSet::new(xs[1], xs[2], xv, yv).map_err(|e| invalid(format!("data: {e}")))
}

/// Trains with grow and prune, as `hlstmc train` does, and writes the model to `out_path`
/// (ONNX) with its log, plots, config and summary beside it. Returns the training history:
/// one dict per epoch, grow, prune and test event (the records of MODEL.log.jsonl).
///
/// `config` is a TOML file or a dict of the same keys (docs/trainer.md). `data=(X, y)` trains
/// on arrays (X float [samples, steps, features], y integer labels [samples]) instead of the
/// config's data files; the config's `[data]` then gives at most `split` and `scale` (default
/// split: modulus 10, test [0], validation [1]). `seed` overrides the config's. `progress`:
/// True prints a line per epoch, grow and prune to `sys.stderr`; False prints nothing; a
/// callable is called with each record as it comes. The GIL is released while training.
#[pyfunction]
#[pyo3(signature = (config, out_path, data=None, *, seed=None, progress=None))]
pub fn train(
    py: Python<'_>,
    config: &Bound<'_, PyAny>,
    out_path: PathBuf,
    data: Option<&Bound<'_, PyAny>>,
    seed: Option<u64>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let progress = match progress {
        None => Progress::Lines,
        Some(p) if p.is_callable() => Progress::Callback(p.clone().unbind()),
        Some(p) => match p.extract::<bool>() {
            Ok(true) => Progress::Lines,
            Ok(false) => Progress::Quiet,
            Err(_) => return Err(invalid("progress is True, False or a callable")),
        },
    };
    let arrays = data.map(|d| arrays(py, d)).transpose()?;
    let (text, base) = config_text(py, config, arrays.is_some())?;
    let mut cfg = Config::parse(&text, &base).map_err(|e| invalid(format!("config: {e}")))?;
    if let Some(s) = seed {
        cfg.seed = s;
    }
    let mut obs = PyObserver {
        progress,
        err: None,
    };
    let done =
        py.detach(|| hlstmc::trainer::train_to_files(&cfg, &text, arrays, &out_path, &mut obs));
    if let Some(e) = obs.err {
        return Err(e);
    }
    let done = done.map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("cannot write") || msg.starts_with("cannot create") {
            pyo3::exceptions::PyOSError::new_err(msg)
        } else {
            invalid(msg)
        }
    })?;
    if matches!(obs.progress, Progress::Lines) {
        let err = py.import("sys")?.getattr("stderr")?;
        err.call_method1("write", (done.summary_line() + "\n",))?;
    }
    done.summary
        .log
        .iter()
        .map(|r| record_dict(py, r))
        .collect()
}
