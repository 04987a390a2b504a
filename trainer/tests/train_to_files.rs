//! `train_to_files`, the library form of `hlstmc train`: training on arrays passed by the
//! caller, the files it writes, its errors, and what a failure leaves alone.

use hlstm_trainer::config::Config;
use hlstm_trainer::data::SeqSet;
use hlstm_trainer::exec::Interp;
use hlstm_trainer::train::{Observer, Record, Session, Task};
use hlstm_trainer::train_to_files;
use std::path::Path;

const ARRAYS: &str = r#"
seed = 1
[data]
format = "arrays"
split = { modulus = 5, test = [4], validation = [3] }
[model]
cell = "lstm"
hidden = 4
[train]
engine = "fast"
epochs = 1
batch = 8
"#;

fn config(text: &str) -> Config {
    Config::parse(text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

/// `n` pseudo-random sequences of 3 steps of 2 features, labels 0, 1, 2.
fn samples(n: usize) -> SeqSet {
    let mut z = 12345u64;
    let x = (0..n * 3 * 2)
        .map(|_| {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    SeqSet::new(3, 2, x, (0..n as i64).map(|k| k % 3).collect()).unwrap()
}

#[derive(Default)]
struct Count {
    epochs: usize,
    batches: usize,
    records: usize,
}

impl Observer for Count {
    fn epoch(&mut self, _: &str, _: usize, _: usize, _: usize) {
        self.epochs += 1;
    }
    fn batch(&mut self, _: usize, _: usize, _: f64) {
        self.batches += 1;
    }
    fn record(&mut self, _: &Record) {
        self.records += 1;
    }
}

#[test]
fn trains_from_arrays_and_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/m.onnx");
    let mut seen = Count::default();
    let done = train_to_files(&config(ARRAYS), ARRAYS, Some(samples(40)), &out, &mut seen).unwrap();
    let names: Vec<String> = done
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in [
        "m.log.jsonl",
        "m.onnx",
        "m.config.toml",
        "m.curves.svg",
        "m.mask.l0.i.svg",
        "m.mask.head.svg",
        "m.summary.json",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not in {names:?}");
        assert!(out.with_file_name(f).is_file(), "{f} missing");
    }
    assert!(done.files.iter().all(|p| p.is_file()));
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The model imports back: X [3, N, 2] in, logits for the three classes out.
    let g = hlstm_frontends::onnx::import_file(&out).unwrap();
    assert_eq!(g.inputs.len(), 1);
    let x = hlstm_ir::Tensor::from_f32(&[3, 5, 2], vec![0.25; 30]).unwrap();
    let y = hlstm_ir::interp::run(&g, &[x]).unwrap();
    assert_eq!(y[0].shape(), &[5, 3]);

    // One JSON record a line, the same as the summary's log; the observer saw them all.
    let log = std::fs::read_to_string(out.with_file_name("m.log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), done.summary.log.len());
    assert_eq!(lines.last().unwrap()["kind"], "test");
    assert_eq!(seen.records, lines.len());
    // 24 training samples in batches of 8.
    assert_eq!((seen.epochs, seen.batches), (1, 3));

    assert_eq!(
        std::fs::read_to_string(out.with_file_name("m.config.toml")).unwrap(),
        ARRAYS
    );
    let text = std::fs::read_to_string(out.with_file_name("m.summary.json")).unwrap();
    assert_eq!(
        text,
        serde_json::to_string_pretty(&done.summary_json).unwrap() + "\n"
    );
    let sum = &done.summary_json;
    for k in [
        "test_loss",
        "test_accuracy",
        "test_bpc",
        "density",
        "nonzero_weights",
        "nonzero_params",
        "epochs",
        "seconds",
        "seconds_per_epoch",
        "engine",
    ] {
        assert!(sum.get(k).is_some(), "no {k} in {sum}");
    }
    assert_eq!(sum["engine"], "fast");
    assert_eq!(sum["epochs"], 1);
    assert!(done.seconds > 0.0);
}

#[test]
fn arrays_are_split_and_scaled_like_files() {
    let cfg = config(&ARRAYS.replace("format = \"arrays\"", "format = \"arrays\"\nscale = 2"));
    let set = samples(10);
    let Task::Classify {
        train,
        validation,
        test,
        classes,
    } = Task::load_with(&cfg, Some(set.clone())).unwrap()
    else {
        panic!("a classifier");
    };
    assert_eq!(
        (train.len(), validation.len(), test.len(), classes),
        (6, 2, 2, 3)
    );
    // Sample 3 goes to validation (3 % 5 == 3), times the scale.
    let want: Vec<f32> = set.x[3 * 6..4 * 6].iter().map(|v| v * 2.0).collect();
    assert_eq!(validation.x[..6], want[..]);
    // Too few samples for the split is the csv and npy error.
    let err = Task::load_with(&cfg, Some(samples(3)))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("each needs at least one"), "{err}");
}

#[test]
fn arrays_format_without_arrays_is_an_error() {
    let cfg = config(ARRAYS);
    let err = Session::new(&cfg, &Interp).err().unwrap().to_string();
    assert_eq!(
        err,
        "data.format = \"arrays\" takes its samples from the library call (hlstmc.train(config, \
         out, data=(X, y)) in Python); a config file for the command line names csv, npy or text"
    );
    // Through train_to_files: an old log beside the model is left alone (the log is created
    // only once the session is built).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    std::fs::write(out.with_file_name("m.log.jsonl"), "old log\n").unwrap();
    let err2 = train_to_files(&cfg, ARRAYS, None, &out, &mut ())
        .err()
        .unwrap();
    assert_eq!(err2.to_string(), err);
    assert_eq!(
        std::fs::read_to_string(out.with_file_name("m.log.jsonl")).unwrap(),
        "old log\n"
    );
    assert!(!out.exists());
}

#[test]
fn arrays_with_a_file_format_is_an_error() {
    let text = r#"
[data]
format = "csv"
path = "nowhere.csv"
steps = 3
features = 2
split = { modulus = 5, test = [4], validation = [3] }
[model]
cell = "lstm"
hidden = 4
"#;
    let err = Session::with_arrays(&config(text), &Interp, Some(samples(40)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("samples were passed")
            && err.contains("data.format is \"csv\"")
            && err.contains("data.format = \"arrays\""),
        "{err}"
    );
}

#[test]
fn a_failed_write_leaves_the_previous_files_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    std::fs::write(&out, "the previous model").unwrap();
    // The model's temporary file cannot be created (a folder is in its place), as when the
    // disk is full: the write fails, naming the model, and the previous model is intact.
    std::fs::create_dir(dir.path().join(".m.onnx.tmp")).unwrap();
    let err = train_to_files(&config(ARRAYS), ARRAYS, Some(samples(40)), &out, &mut ())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot write {}: ", out.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "the previous model");

    // A model whose folder cannot be created (its parent is a regular file) fails naming it.
    let file = dir.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let err = train_to_files(
        &config(ARRAYS),
        ARRAYS,
        Some(samples(40)),
        &file.join("m.onnx"),
        &mut (),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with(&format!("cannot create {}: ", file.display())),
        "{err}"
    );
}
