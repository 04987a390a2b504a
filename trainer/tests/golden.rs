//! Golden text tests of autodiff, in the style of passes/tests/golden.rs.
//!
//! Each `tests/golden/NAME.hir` file is
//!
//! ```text
//! // autodiff: loss wrt W, b            <- the loss output and the parameters (graph inputs)
//! // save: recompute                     <- optional: the recurrence save mode (intermediates)
//! // any other comment lines
//! graph (...) -> (...) { ... }           <- the forward graph, in .hir
//! // expect:
//! graph (...) -> (...) { ... }           <- `hlstm_ir::text::print` of the training graph
//! ```
//!
//! The harness parses and verifies the forward graph, builds the training graph, and compares
//! its text with the expected text (trailing whitespace trimmed). It also runs the gradient
//! check of tests/common on random f32 inputs. `tests/golden/models/*.hir` hold the training
//! graphs of tiny models built by `hlstm_trainer::models` (see `MODELS` below).
//!
//! To regenerate the expected text after an intended change, run
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p hlstm-trainer --test golden
//! ```
//!
//! and review the diff before committing it.

mod common;

use hlstm_ir::text::{parse, print};
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, ModelConfig};
use hlstm_trainer::{Options, SaveMode, training_graph};
use std::path::{Path, PathBuf};

const SEPARATOR: &str = "// expect:";
const AUTODIFF: &str = "// autodiff:";
const SAVE: &str = "// save:";

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub)
}

fn hir_files(d: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
        .expect("the golden folder exists")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hir"))
        .collect();
    files.sort();
    files
}

fn normalize(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

/// The first differing line, with its number, for the failure message.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    format!(
        "line {}:\n  expected: {}\n  actual:   {}",
        i + 1,
        w.get(i).unwrap_or(&"<end>"),
        g.get(i).unwrap_or(&"<end>")
    )
}

/// Compares `actual` with the text after the separator of `path`, or rewrites it.
fn compare_or_update(path: &Path, head: &str, expected: &str, actual: &str) -> Result<(), String> {
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(path, format!("{head}{}\n", actual.trim_end()))
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    if normalize(expected) != normalize(actual) {
        return Err(format!(
            "{}: the training graph differs from the expected text at {}\n(rerun with \
             UPDATE_GOLDEN=1 to accept the new text)",
            path.display(),
            first_difference(&normalize(expected), &normalize(actual))
        ));
    }
    Ok(())
}

fn check_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (head, expected) = text
        .split_once(&format!("{SEPARATOR}\n"))
        .ok_or(format!("no '{SEPARATOR}' line"))?;
    let head = format!("{head}{SEPARATOR}\n");
    let mut spec = None;
    let mut save = SaveMode::Intermediates;
    for line in head.lines() {
        if let Some(rest) = line.trim().strip_prefix(AUTODIFF) {
            let (loss, params) = rest.split_once(" wrt ").ok_or("expected 'LOSS wrt P, Q'")?;
            let params: Vec<String> = params.split(',').map(|p| p.trim().to_string()).collect();
            spec = Some((loss.trim().to_string(), params));
        }
        if let Some(rest) = line.trim().strip_prefix(SAVE) {
            save = match rest.trim() {
                "intermediates" => SaveMode::Intermediates,
                "recompute" => SaveMode::Recompute,
                other => return Err(format!("unknown save mode '{other}'")),
            };
        }
    }
    let (loss, params) = spec.ok_or(format!("no '{AUTODIFF}' line"))?;
    let fwd = parse(&head).map_err(|e| format!("the forward graph: {e}"))?;
    hlstm_ir::verify::verify(&fwd)?;
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let opts = Options { save };
    let tg = training_graph(&fwd, &loss, &params, &opts).map_err(|e| e.to_string())?;
    compare_or_update(path, &head, expected, &print(&tg))?;
    common::gradcheck(
        &fwd,
        &loss,
        &params,
        &hlstm_ir::interp::random_inputs(&fwd, 7),
        opts,
    );
    Ok(())
}

#[test]
fn golden_files() {
    let files = hir_files(&dir(""));
    assert!(!files.is_empty(), "no golden files");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|p| check_file(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The tiny models whose training graphs are kept as text: name and configuration.
fn models() -> Vec<(&'static str, ModelConfig, Dims)> {
    let hlstm = ModelConfig {
        cell: CellKind::Hlstm {
            hidden_layers: 1,
            hidden_width: 3,
        },
        input: InputKind::Features { size: 2 },
        head: Head::Classifier { classes: 2 },
        layers: 1,
        hidden: 2,
        dropout: true,
    };
    let lm = ModelConfig {
        cell: CellKind::Lstm,
        input: InputKind::Tokens { vocab: 4, embed: 2 },
        head: Head::NextToken { vocab: 4 },
        layers: 1,
        hidden: 2,
        dropout: false,
    };
    vec![
        ("hlstm_classifier", hlstm, Dims::known(3, 2)),
        ("lstm_next_token", lm, Dims::known(3, 2)),
    ]
}

#[test]
fn golden_models() {
    let mut failures = Vec::new();
    for (name, cfg, dims) in models() {
        let path = dir("models").join(format!("{name}.hir"));
        let model = models::build(&cfg, &dims, true).unwrap();
        let tg = model.training_graph(&Options::default()).unwrap();
        let head = format!(
            "// The training graph of hlstm_trainer::models::build({cfg:?}, T={}, N={}).\n\
             // Regenerate with UPDATE_GOLDEN=1 (tests/golden.rs).\n{SEPARATOR}\n",
            dims.steps, dims.batch
        );
        let expected = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| {
                t.split_once(&format!("{SEPARATOR}\n"))
                    .map(|(_, e)| e.to_string())
            })
            .unwrap_or_default();
        if let Err(e) = compare_or_update(&path, &head, &expected, &print(&tg)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
