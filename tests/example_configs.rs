//! Every training config under `examples/` runs from a copy of the `examples/` folder placed
//! anywhere (issue 17, "Self-contained examples"): its data ships in `examples/data` and its
//! paths are relative to the config's folder, so neither the repository around the folder nor
//! the current directory matters.
//!
//! Each config (found by walking `examples/`, so a new one is covered without editing this
//! file) is parsed from a copy of the whole folder in a temporary directory, its data file must
//! lie inside that copy, and it trains for a few steps through `train_to_files`. What makes the
//! published runs slow is shrunk, since the point is that the config parses, finds its data and
//! trains, not its result: one epoch (`train.epochs = 1`); grow and prune, when the config has
//! it, cut to at most one growth round of one epoch, one pruning round with one retraining epoch
//! and at most one final epoch (every phase still runs); text, the first 20,000 characters of
//! the file (`data.max_chars`: about 5 batches of 32 windows of 100) and state and hidden-layer
//! width at most 64 (at 256 the text configs alone take about 50 s in a debug build on two
//! cores; shrunk, this whole file takes about 9 s). Everything else (data format and split, cell, layers, embedding,
//! optimizer, schedule, engine, dropout, exclusions) is the config's own.

use hlstm_trainer::config::{Config, Data};
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Copies the folder `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The `*.toml` files under `dir`, recursively, sorted.
fn configs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(configs(&p));
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A copy of `examples/` at `<tmp>/elsewhere/ex`: another name, outside the repository.
fn copy_examples(tmp: &Path) -> PathBuf {
    let copy = tmp.join("elsewhere/ex");
    copy_dir(&examples(), &copy);
    copy
}

/// The data files a parsed config reads.
fn data_files(cfg: &Config) -> Vec<PathBuf> {
    match &cfg.data {
        Data::Csv { path, .. } | Data::Text { path, .. } => vec![path.clone()],
        Data::Npy { x, y, .. } => vec![x.clone(), y.clone()],
        Data::Arrays { .. } => vec![],
    }
}

/// The smoke-run version of `cfg` (see the module comment).
fn shrink(cfg: &mut Config) {
    cfg.train.epochs = 1;
    if let Some(gp) = &mut cfg.gp {
        gp.grow_rounds = gp.grow_rounds.min(1);
        gp.grow_epochs = 1;
        gp.retrain_epochs = 1;
        gp.max_prune_rounds = gp.max_prune_rounds.min(1);
        gp.final_epochs = gp.final_epochs.min(1);
    }
    if let Data::Text { max_chars, .. } = &mut cfg.data {
        *max_chars = Some(20_000);
        let m = &mut cfg.model;
        m.hidden = m.hidden.min(64);
        m.hidden_width = m.hidden_width.map(|w| w.min(64));
    }
    cfg.check().unwrap();
}

#[test]
fn every_example_config_trains_from_a_copy_of_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = copy_examples(tmp.path());
    let found = configs(&copy);
    let originals = configs(&examples());
    assert_eq!(found.len(), originals.len());
    assert!(found.len() >= 8, "{found:?}");
    for path in &found {
        let rel = path.strip_prefix(&copy).unwrap();
        let name = rel.display().to_string();
        let start = std::time::Instant::now();
        let text = std::fs::read_to_string(path).unwrap();
        let mut cfg =
            Config::parse(&text, path.parent().unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let files = data_files(&cfg);
        assert!(!files.is_empty(), "{name}: no data file");
        for f in &files {
            // Inside the copy (not an absolute path back into the repository) and there.
            let f = f
                .canonicalize()
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", f.display()));
            assert!(
                f.starts_with(copy.canonicalize().unwrap()),
                "{name}: {} is outside examples/",
                f.display()
            );
        }
        shrink(&mut cfg);
        let out = tmp.path().join("out").join(rel).with_extension("onnx");
        let res = hlstm_trainer::train_to_files(&cfg, &text, None, &out, &mut ())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let onnx = std::fs::metadata(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(onnx.len() > 0, "{name}: empty model");
        let log = std::fs::read_to_string(out.with_extension("log.jsonl")).unwrap();
        let records: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {l}: {e}")))
            .collect();
        assert!(!records.is_empty(), "{name}: empty log");
        assert!(!res.summary.log.is_empty(), "{name}: no records");
        eprintln!(
            "{name}: {} log records, {:.1} s",
            records.len(),
            start.elapsed().as_secs_f64()
        );
    }
}

/// `text` with the `[section]` table left out (up to the next table header).
fn without_table(text: &str, section: &str) -> String {
    let mut skip = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            skip = line.trim() == format!("[{section}]");
        }
        if !skip {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// `hlstmc train` on a copy of the digits config, run from another current directory with the
/// config named by a path relative to it: the shrunk config (one epoch, no grow and prune) is
/// written beside the copied one, so that its relative data path resolves the same way.
#[test]
fn hlstmc_train_runs_a_copied_example_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = copy_examples(tmp.path());
    let text = std::fs::read_to_string(copy.join("digits-hlstm.toml")).unwrap();
    let text = without_table(&text, "gp").replace("\nepochs = 30\n", "\nepochs = 1\n");
    assert!(
        text.contains("\nepochs = 1\n") && !text.contains("[gp]"),
        "{text}"
    );
    std::fs::write(copy.join("digits-smoke.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .current_dir(tmp.path())
        .args([
            "train",
            "-q",
            "elsewhere/ex/digits-smoke.toml",
            "-o",
            "out/m.onnx",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = tmp.path().join("out/m.onnx");
    assert!(std::fs::metadata(&model).unwrap().len() > 0);
    let log = std::fs::read_to_string(tmp.path().join("out/m.log.jsonl")).unwrap();
    assert!(log.lines().count() > 0);
}
