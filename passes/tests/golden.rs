//! Golden text tests of the passes, in the style of Cranelift's filetests.
//!
//! Each `tests/golden/NAME.hir` file is
//!
//! ```text
//! // passes: fold-constants, simplify        <- the pipeline (`default` = DEFAULT_PIPELINE)
//! // any other comment lines
//! graph (...) -> (...) { ... }               <- the input graph, in .hir
//! // expect:
//! graph (...) -> (...) { ... }               <- `hlstm_ir::text::print` of the result
//! ```
//!
//! The harness parses the input, verifies it, runs the passes with `PassManager` (default
//! `Instrumentation`), verifies and prints the result and compares it with the expected text,
//! exactly once trailing whitespace is trimmed from every line and from the end. It also runs
//! the reference interpreter on the input and the output graph with the same deterministic random
//! inputs (`hlstm_passes::verify_each::random_inputs`) and requires the same outputs within 1e-5.
//!
//! To regenerate the expected text after an intended change, run
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p hlstm-passes --test golden
//! ```
//!
//! which rewrites everything after the `// expect:` line of each file instead of failing (the
//! verifier and numeric checks still run and still fail). Review the diff before committing it.

use hlstm_ir::text::{parse, print};
use hlstm_ir::{Graph, Tensor};
use hlstm_passes::verify_each::random_inputs;
use hlstm_passes::{DEFAULT_PIPELINE, Instrumentation, PassManager};
use std::path::{Path, PathBuf};

/// The line that separates the input from the expected output.
const SEPARATOR: &str = "// expect:";
/// The comment line that names the pipeline.
const PASSES: &str = "// passes:";
/// Seeds of the random inputs for the numeric check.
const SEEDS: [u64; 3] = [1, 0x9e37_79b9_7f4a_7c15, 12345];
/// Largest absolute difference allowed between the outputs before and after the passes.
const TOLERANCE: f32 = 1e-5;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hir"))
        .collect();
    files.sort();
    files
}

/// A golden file split into its parts.
struct Golden {
    passes: Vec<String>,
    /// Everything up to and including the separator line.
    head: String,
    input: String,
    expected: String,
}

fn split(text: &str) -> Result<Golden, String> {
    let mut head = String::new();
    let mut input = String::new();
    let mut passes = None;
    let mut lines = text.split_inclusive('\n');
    let mut found = false;
    for line in lines.by_ref() {
        head.push_str(line);
        let t = line.trim();
        if t == SEPARATOR {
            found = true;
            break;
        }
        if let Some(rest) = t.strip_prefix(PASSES) {
            if passes.is_some() {
                return Err(format!("more than one '{PASSES}' line"));
            }
            let names: Vec<String> = rest
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            passes = Some(if names == ["default"] {
                DEFAULT_PIPELINE.iter().map(|s| s.to_string()).collect()
            } else {
                names
            });
        }
        input.push_str(line);
    }
    if !found {
        return Err(format!("no '{SEPARATOR}' line"));
    }
    let passes = passes.ok_or_else(|| format!("no '{PASSES}' line before '{SEPARATOR}'"))?;
    if passes.is_empty() {
        return Err(format!("the '{PASSES}' line names no pass"));
    }
    Ok(Golden {
        passes,
        head,
        input,
        expected: lines.collect(),
    })
}

/// Trailing whitespace trimmed from every line and from the end.
fn normalize(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

/// A line diff (longest common subsequence): ` ` both, `-` expected only, `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

/// The largest difference between two output lists, or why they cannot be compared.
fn compare(name: &str, want: &[Tensor], got: &[Tensor]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!(
            "{} outputs after the passes, {} before",
            got.len(),
            want.len()
        ));
    }
    for (k, (w, g)) in want.iter().zip(got).enumerate() {
        if w.dtype() != g.dtype() || w.shape() != g.shape() {
            return Err(format!(
                "{name} output {k}: {}{:?} after the passes, {}{:?} before",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let (wf, gf) = (w.cast(hlstm_ir::DType::F32), g.cast(hlstm_ir::DType::F32));
        let (wa, ga) = (
            wf.as_f32().expect("cast to f32"),
            gf.as_f32().expect("cast to f32"),
        );
        for (i, (x, y)) in wa.iter().zip(ga.iter()).enumerate() {
            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= TOLERANCE;
            if !same {
                return Err(format!(
                    "{name} output {k} element {i}: {y} after the passes, {x} before"
                ));
            }
        }
    }
    Ok(())
}

/// Runs the interpreter on both graphs with the same random inputs.
fn check_numbers(before: &Graph, after: &Graph) -> Result<(), String> {
    for seed in SEEDS {
        let inputs = random_inputs(before, seed);
        let want = hlstm_ir::interp::run(before, &inputs)
            .map_err(|e| format!("the input graph fails to run (seed {seed}): {e}"))?;
        let got = hlstm_ir::interp::run(after, &inputs)
            .map_err(|e| format!("the output graph fails to run (seed {seed}): {e}"))?;
        compare(&format!("seed {seed}:"), &want, &got)?;
    }
    Ok(())
}

/// Checks one golden file; with `update`, rewrites its expected part instead of comparing.
fn check_file(path: &Path, update: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let golden = split(&text)?;
    let input = parse(&golden.input).map_err(|e| format!("the input does not parse: {e}"))?;
    hlstm_ir::verify::verify(&input).map_err(|e| format!("the input graph is ill-formed: {e}"))?;
    let names: Vec<&str> = golden.passes.iter().map(String::as_str).collect();
    let pm = PassManager::new(&names, Instrumentation::default())?;
    let mut output = input.clone();
    let mut log = Vec::new();
    pm.run(&mut output, &mut log)?;
    assert!(log.is_empty(), "default instrumentation writes nothing");
    hlstm_ir::verify::verify(&output)
        .map_err(|e| format!("the graph after the passes is ill-formed: {e}"))?;
    check_numbers(&input, &output)?;
    let actual = print(&output);
    // The expected text is a graph too: it must parse back to what the passes produced.
    let reparsed =
        parse(&actual).map_err(|e| format!("the printed result does not parse back: {e}"))?;
    if reparsed != output {
        return Err("the printed result parses back to a different graph".into());
    }
    if update {
        if normalize(&golden.expected) != normalize(&actual) {
            let new = format!("{}{}", golden.head, actual);
            std::fs::write(path, new).map_err(|e| format!("cannot write: {e}"))?;
            eprintln!("updated {}", path.display());
        }
        return Ok(());
    }
    if normalize(&golden.expected) != normalize(&actual) {
        return Err(format!(
            "the output differs from the expected text (- expected, + actual; \
             UPDATE_GOLDEN=1 rewrites it):\n{}",
            diff(&normalize(&golden.expected), &normalize(&actual))
        ));
    }
    Ok(())
}

#[test]
fn golden_files_match() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let files = golden_files();
    assert!(
        !files.is_empty(),
        "no golden files in {}",
        golden_dir().display()
    );
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = check_file(f, update) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files fail:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn harness_splits_and_diffs() {
    let g = split("// passes: dce, simplify\n// a comment\ngraph () -> () {\n}\n// expect:\ngraph () -> () {\n}\n")
        .expect("splits");
    assert_eq!(g.passes, ["dce", "simplify"]);
    assert_eq!(
        g.input,
        "// passes: dce, simplify\n// a comment\ngraph () -> () {\n}\n"
    );
    assert_eq!(g.expected, "graph () -> () {\n}\n");
    assert!(g.head.ends_with("// expect:\n"));
    assert_eq!(
        split("// passes: default\n// expect:\n")
            .expect("splits")
            .passes,
        DEFAULT_PIPELINE
    );
    assert!(
        split("graph () -> () {}\n// expect:\n").is_err(),
        "no passes line"
    );
    assert!(
        split("// passes: dce\ngraph () -> () {}\n").is_err(),
        "no separator"
    );
    assert_eq!(normalize("a  \nb\t\n\n\n"), "a\nb");
    assert_eq!(diff("a\nb\nc", "a\nx\nc"), "  a\n- b\n+ x\n  c\n");
}
