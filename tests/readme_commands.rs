//! Every command of the README's shell blocks runs as written, from a folder that holds only
//! the repository's `examples/` (as a fresh clone has it), in order, so that the library
//! compiled by one line is there for the C and Rust lines after it. Left out, each with its
//! reason printed: the install and test commands (`cargo`, `pip`, `python3`: CI runs them
//! itself) and `hlstmc train` on the full digits schedule (minutes; tests/example_configs.rs
//! trains every example config, shortened, from a copy of examples/).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's shell lines, without comments and blank lines.
fn commands() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = line == "```sh";
            continue;
        }
        if !inside {
            continue;
        }
        let code = line.split("  #").next().unwrap().trim();
        if !code.is_empty() && !code.starts_with('#') {
            out.push(code.to_string());
        }
    }
    out
}

#[test]
fn readme_commands_run_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("examples"), tmp.path().join("examples")).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hlstmc"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cmds = commands();
    assert!(
        cmds.iter().filter(|c| c.starts_with("hlstmc ")).count() >= 10,
        "{cmds:?}"
    );
    let mut ran = 0;
    for cmd in &cmds {
        let first = cmd.split_whitespace().next().unwrap();
        let reason = match first {
            "cargo" | "pip" | "python3" => Some("an install or test command, which CI runs itself"),
            _ if cmd.starts_with("hlstmc train") => Some(
                "the full digits schedule takes minutes; tests/example_configs.rs trains it shortened",
            ),
            _ => None,
        };
        if let Some(r) = reason {
            eprintln!("not run: `{cmd}`: {r}");
            continue;
        }
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(tmp.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "`{cmd}` failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} commands ran");
}
