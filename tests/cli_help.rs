//! The help text reads like a compiler's (issue 17): every example line of every `--help` runs
//! from the repository root, one example per line; the optimizer-debug flags are grouped under
//! one heading after each command's own flags; -O0 to -O3 are accepted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hlstmc_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the hlstmc binary runs")
}

fn help(args: &[&str]) -> String {
    let o = hlstmc_in(Path::new(env!("CARGO_MANIFEST_DIR")), args);
    assert!(o.status.success(), "hlstmc {args:?} failed");
    String::from_utf8(o.stdout).expect("utf-8 help")
}

/// The subcommands `hlstmc --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let top = help(&["--help"]);
    let list: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description continues on a line indented further.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(list.len() >= 8, "too few subcommands found in:\n{top}");
    list
}

/// The example lines of a help text: indented lines that start with `hlstmc `, with a trailing
/// shell comment (` # ...`) removed.
fn examples(help: &str) -> Vec<String> {
    help.lines()
        .filter(|l| l.starts_with(' '))
        .map(str::trim)
        .filter(|l| l.starts_with("hlstmc "))
        .map(|l| match l.find(" #") {
            Some(k) => l[..k].trim_end().to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// Why an example cannot run here, if it cannot: a tool it needs is absent.
fn cannot_run(args: &[&str]) -> Option<String> {
    // `eval`'s examples use the shipped text model (issue 20); they run once it is committed.
    if args.first() == Some(&"eval") {
        let model = args.get(1).copied().unwrap_or_default();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        return (!root.join(model).is_file()).then(|| format!("needs {model} (not shipped yet)"));
    }
    if args.first() != Some(&"compile") {
        return None;
    }
    // The default --emit makes a shared (cc) and a static library (ar); --target ptx compiles
    // its host library with cc.
    let emit = args
        .iter()
        .position(|a| *a == "--emit")
        .map(|k| args[k + 1])
        .unwrap_or("obj,so,a");
    let ptx = args.windows(2).any(|w| w == ["--target", "ptx"]);
    let mut tools = Vec::new();
    if emit.split(',').any(|e| e == "so") || (ptx && emit.split(',').any(|e| e == "obj")) {
        tools.push("cc");
    }
    if emit.split(',').any(|e| e == "a") {
        tools.push("ar");
    }
    let absent: Vec<&str> = tools
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    (!absent.is_empty()).then(|| format!("needs {} (not installed)", absent.join(" and ")))
}

/// Commands whose examples this test does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[(
    "train",
    "training the digits model takes about 35 s (238 epochs), and the run line after it needs \
     that model; tests/example_configs.rs trains every example config for a few steps",
)];

/// Every `hlstmc ...` line of every help text runs, from a folder laid out as the repository
/// root (a link `examples` to the repository's), so that what the examples write lands in a
/// temporary folder.
#[test]
fn every_help_example_runs_from_the_repository_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(root.join("examples"), dir.path().join("examples"))
        .expect("link examples");
    let mut commands: Vec<Option<String>> = vec![None];
    commands.extend(subcommands().into_iter().map(Some));
    let (mut ran, mut failures) = (0, Vec::new());
    for cmd in &commands {
        let text = match cmd {
            None => help(&["--help"]),
            Some(c) => help(&[c, "--help"]),
        };
        let name = cmd.as_deref().unwrap_or("(top level)");
        let lines = examples(&text);
        if text.contains("Examples") || text.contains("Example:") {
            assert!(
                !lines.is_empty(),
                "{name}: an example block without `hlstmc ` lines:\n{text}"
            );
        }
        if let Some((_, why)) = NOT_RUN.iter().find(|(c, _)| Some(*c) == cmd.as_deref()) {
            for l in &lines {
                println!("skipped: {l}\n  ({why})");
            }
            continue;
        }
        for line in lines {
            let args: Vec<&str> = line.split_whitespace().skip(1).collect();
            if let Some(why) = cannot_run(&args) {
                println!("skipped: {line}\n  ({why})");
                continue;
            }
            let o = hlstmc_in(dir.path(), &args);
            ran += 1;
            if o.status.success() {
                println!("ok: {line}");
            } else {
                failures.push(format!(
                    "{name}: `{line}` failed ({}):\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 20, "only {ran} examples ran");
}

/// One example per line: a help text never has two commands run together on a line.
#[test]
fn help_examples_are_one_per_line() {
    let mut texts = vec![("(top level)".to_string(), help(&["--help"]))];
    for c in subcommands() {
        let text = help(&[&c, "--help"]);
        texts.push((c, text));
    }
    for (c, text) in texts {
        for l in text.lines() {
            assert!(
                l.matches("hlstmc ").count() <= 1,
                "{c} --help: examples run together on one line:\n{l}"
            );
        }
    }
}

/// The lines of a help text's section `heading:` (up to the next heading).
fn section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != format!("{heading}:"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

fn flags_in(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let t = l.trim_start();
            let t = t.strip_prefix("-O ").map(|_| "-O").unwrap_or(t);
            if t == "-O" {
                return Some("-O".to_string());
            }
            let t = t.split(", ").last()?;
            t.starts_with("--")
                .then(|| t.split([' ', '=']).next().unwrap_or(t).to_string())
        })
        .collect()
}

/// The optimizer-debug flags are listed under "Optimizer debugging", after a command's own
/// flags; -O stays with them, in "Options".
#[test]
fn optimizer_flags_have_their_own_heading() {
    let debug = [
        "--passes",
        "--print-after-all",
        "--print-before",
        "--print-after",
        "--dump-dir",
        "--time-passes",
        "--stats",
        "--dump-egraph",
        "--saturate-iterations",
        "--saturate-nodes",
        "--saturate-seconds",
        "--verify-each",
    ];
    for c in ["run", "opt", "inspect", "compile", "bench"] {
        let text = help(&[c, "--help"]);
        let options = flags_in(&section(&text, "Options"));
        let grouped = flags_in(&section(&text, "Optimizer debugging"));
        assert!(
            options.iter().any(|f| f == "-O"),
            "{c}: -O not in Options:\n{text}"
        );
        for f in debug {
            assert!(
                grouped.iter().any(|g| g == f),
                "{c}: {f} not under the heading:\n{text}"
            );
            assert!(
                !options.iter().any(|g| g == f),
                "{c}: {f} in Options:\n{text}"
            );
        }
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{c}: no '{s}'"));
        assert!(
            at("Options:") < at("Optimizer debugging:"),
            "{c}: own flags first"
        );
    }
}

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hlstm_sp97/model.onnx")
}

/// -O0 to -O3 are accepted (-O2 and -O3 run the -O1 pipeline today); -O4 is refused.
#[test]
fn optimization_levels_zero_to_three() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = model();
    let data = root.join("examples/hlstm_sp97/test_data_set_0");
    let opt = |level: &str| {
        let o = hlstmc_in(root, &["opt", level, m.to_str().expect("utf-8")]);
        assert!(
            o.status.success(),
            "opt {level} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf-8")
    };
    let o1 = opt("-O1");
    assert_ne!(opt("-O0"), o1, "-O0 runs no pass");
    assert_eq!(opt("-O2"), o1, "-O2 is -O1 today");
    assert_eq!(opt("-O3"), o1, "-O3 is -O1 today");
    let o = hlstmc_in(
        root,
        &[
            "run",
            "-O3",
            m.to_str().expect("utf-8"),
            "--test-data",
            data.to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = hlstmc_in(root, &["opt", "-O4", m.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("0..=3"));
}
