//! docs/cli.md agrees with `--help` (issue 17): for every subcommand, each long flag its help
//! lists is named in the command's section of docs/cli.md (the optimizer-debug flags, listed
//! under their own heading in the help, in the shared "Optimizer debugging flags" section, which
//! the command's section points to), and every `--flag` the doc names exists in the help of the
//! command it is said of.
//!
//! A flag in the doc belongs to the command of its section, unless the code span it is written
//! in names another command first (`inspect --optimized`, `hlstmc compile --threads N`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const DEBUG_HEADING: &str = "Optimizer debugging";
const DEBUG_SECTION: &str = "Optimizer debugging flags";
/// Flags every command takes (`--limit`) are listed under this heading and described once,
/// in the Conventions section.
const GLOBAL_HEADING: &str = "Limits";
const GLOBAL_SECTION: &str = "Conventions";

fn help(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs");
    assert!(o.status.success(), "hlstmc {args:?} failed");
    String::from_utf8(o.stdout).expect("utf-8 help")
}

/// The subcommands `hlstmc --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let top = help(&["--help"]);
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The `--name` words in a piece of text, with where they start.
fn long_flags(text: &str) -> Vec<(usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    while let Some(at) = text[k..].find("--").map(|a| a + k) {
        let start = at + 2;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'-');
        if before_ok && end > start && b[start].is_ascii_lowercase() {
            out.push((at, text[at..end].trim_end_matches('-').to_string()));
        }
        k = end.max(at + 2);
    }
    out
}

/// A command's long flags from its help, by heading: its own ("Options", with visible
/// aliases) and the optimizer-debug ones; --help and --version left out.
fn help_flags(cmd: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = help(&[cmd, "--help"]);
    let (mut own, mut debug) = (BTreeSet::new(), BTreeSet::new());
    let mut heading = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            heading = line.trim_end_matches(':').to_string();
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        let is_flag = (1..=6).contains(&indent) && trimmed.starts_with('-');
        let is_alias = trimmed.starts_with("[alias: ") || trimmed.starts_with("[aliases: ");
        if !(is_flag || is_alias) {
            continue;
        }
        // A flag line: `-o, --output <DIR>`; its flags stop at the value name.
        let head = trimmed.split(" <").next().unwrap_or(trimmed);
        for (_, f) in long_flags(if is_flag { head } else { trimmed }) {
            if f == "--help" || f == "--version" {
                continue;
            }
            if heading == GLOBAL_HEADING {
                continue;
            } else if heading == DEBUG_HEADING {
                debug.insert(f);
            } else {
                own.insert(f);
            }
        }
    }
    (own, debug)
}

/// The flags `hlstmc inspect --help` lists under the global heading.
fn global_flags() -> BTreeSet<String> {
    let text = help(&["inspect", "--help"]);
    let mut heading = "";
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            heading = line.trim_end_matches(':');
        } else if heading == GLOBAL_HEADING && line.trim_start().starts_with('-') {
            let head = line.trim().split(" <").next().unwrap_or("");
            out.extend(long_flags(head).into_iter().map(|(_, f)| f));
        }
    }
    out
}

/// docs/cli.md's `## ` sections by heading, each with its text (its `### ` parts included).
fn doc_sections() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let text = std::fs::read_to_string(&path).expect("docs/cli.md");
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            sections.push((h.to_string(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections
}

/// The command a section is about: its heading starts with `hlstmc CMD`.
fn section_command(heading: &str, commands: &[String]) -> Option<String> {
    let rest = heading.trim_start_matches('`').strip_prefix("hlstmc ")?;
    let word = rest.split([' ', '`']).next()?;
    commands.iter().find(|c| *c == word).cloned()
}

/// Programs other than hlstmc whose flags the doc may show (`pkg-config --libs`).
const OTHER_TOOLS: &[&str] = &[
    "pkg-config",
    "cc",
    "cmake",
    "ar",
    "python",
    "python3",
    "pip",
];

/// Each `--flag` of a piece of doc text with the command it is said of: the last command
/// named before it in its code span, or `default`. Flags of other tools are left out.
fn attributed(
    text: &str,
    default: Option<&str>,
    commands: &[String],
) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        for (at, flag) in long_flags(line) {
            // Every command takes these.
            if flag == "--help" || flag == "--version" {
                continue;
            }
            let before = &line[..at];
            // The code span the flag is in starts after the last backtick before it.
            let span = before.rsplit('`').next().unwrap_or(before);
            let words: Vec<&str> = span
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            if words.iter().any(|w| OTHER_TOOLS.contains(w)) {
                continue;
            }
            let named = words
                .iter()
                .rev()
                .find(|w| commands.iter().any(|c| c == *w))
                .map(|w| w.to_string());
            out.push((named.or(default.map(str::to_string)), flag));
        }
    }
    out
}

#[test]
fn docs_cli_md_names_every_flag_of_every_help_and_no_other() {
    let commands = subcommands();
    assert!(commands.len() >= 8, "subcommands: {commands:?}");
    let flags: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = commands
        .iter()
        .map(|c| (c.clone(), help_flags(c)))
        .collect();
    let sections = doc_sections();
    let mut problems = Vec::new();

    // The shared section lists the optimizer-debug flags, and only those.
    let all_debug: BTreeSet<String> = flags.values().flat_map(|(_, d)| d.clone()).collect();
    assert!(
        !all_debug.is_empty(),
        "no command lists an '{DEBUG_HEADING}' heading"
    );
    let shared = sections
        .iter()
        .find(|(h, _)| h.trim() == DEBUG_SECTION)
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("docs/cli.md has no '## {DEBUG_SECTION}' section"));
    let shared_flags: BTreeSet<String> = attributed(&shared, None, &commands)
        .into_iter()
        .filter(|(c, _)| c.is_none())
        .map(|(_, f)| f)
        .collect();
    for f in all_debug.difference(&shared_flags) {
        problems.push(format!("'## {DEBUG_SECTION}' does not describe {f}"));
    }
    for f in shared_flags.difference(&all_debug) {
        problems.push(format!(
            "'## {DEBUG_SECTION}' names {f}, which no help lists under '{DEBUG_HEADING}'"
        ));
    }

    // The global flags are described in the Conventions section.
    let global = global_flags();
    assert!(
        global.contains("--limit"),
        "no '{GLOBAL_HEADING}' heading with --limit: {global:?}"
    );
    let conventions = sections
        .iter()
        .find(|(h, _)| h.trim() == GLOBAL_SECTION)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    for f in &global {
        if !conventions.contains(&format!("`{f}")) {
            problems.push(format!("'## {GLOBAL_SECTION}' does not describe {f}"));
        }
    }

    for cmd in &commands {
        let (own, debug) = &flags[cmd];
        let Some((heading, text)) = sections
            .iter()
            .find(|(h, _)| section_command(h, &commands).as_deref() == Some(cmd.as_str()))
        else {
            problems.push(format!(
                "docs/cli.md has no section '## `hlstmc {cmd} ...`'"
            ));
            continue;
        };
        let said: BTreeSet<String> =
            attributed(&format!("{heading}\n{text}"), Some(cmd), &commands)
                .into_iter()
                .filter(|(c, _)| c.as_deref() == Some(cmd.as_str()))
                .map(|(_, f)| f)
                .collect();
        for f in own.difference(&said) {
            problems.push(format!(
                "`hlstmc {cmd} --help` lists {f}; its section in docs/cli.md does not"
            ));
        }
        if !debug.is_empty() && !text.contains(DEBUG_SECTION) {
            problems.push(format!(
                "`hlstmc {cmd}` takes the optimizer-debug flags; its section does not point to '{DEBUG_SECTION}'"
            ));
        }
    }

    // Every flag the doc says of a command exists in that command's help; a flag outside the
    // command sections exists in some command's help.
    for (heading, text) in &sections {
        let default = section_command(heading, &commands);
        for (cmd, f) in attributed(&format!("{heading}\n{text}"), default.as_deref(), &commands) {
            match cmd {
                Some(c) => {
                    let (own, debug) = &flags[&c];
                    if !own.contains(&f) && !debug.contains(&f) && !global.contains(&f) {
                        problems.push(format!(
                            "docs/cli.md ('## {heading}') names {f} for `hlstmc {c}`, whose --help lacks it"
                        ));
                    }
                }
                None => {
                    if !global.contains(&f)
                        && !flags
                            .values()
                            .any(|(o, d)| o.contains(&f) || d.contains(&f))
                    {
                        problems.push(format!(
                            "docs/cli.md ('## {heading}') names {f}, which no command takes"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/cli.md and --help disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// The parts of the test above, on known text.
#[test]
fn flags_are_found_and_attributed() {
    let cmds: Vec<String> = ["run", "inspect", "compile", "bench"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        long_flags("-o, --output <DIR>  [alias: --output-dir] --print-before=P x--y ---z --"),
        vec![
            (4, "--output".into()),
            (28, "--output-dir".into()),
            (42, "--print-before".into())
        ]
    );
    let got = attributed(
        "`--rtol` and `inspect --optimized`; `hlstmc compile --target ptx --sm 90`; `run`/`bench --engine cuda`; `pkg-config --libs x`",
        Some("run"),
        &cmds,
    );
    let want: Vec<(Option<String>, String)> = vec![
        (Some("run".into()), "--rtol".into()),
        (Some("inspect".into()), "--optimized".into()),
        (Some("compile".into()), "--target".into()),
        (Some("compile".into()), "--sm".into()),
        (Some("bench".into()), "--engine".into()),
    ];
    assert_eq!(got, want);
}
