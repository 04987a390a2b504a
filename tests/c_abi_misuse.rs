//! A C caller that breaks the rules of the C ABI (docs/c-abi.md, "Ownership and misuse"):
//! `tests/c/misuse.c` against a library of one thread, one of two threads and the GPU one (on
//! the stand-in driver), each misuse in its own process: a double `NAME_context_free`, a free of
//! caller memory or of memory that holds no context, misaligned memory for `NAME_context_init`,
//! one context used by two threads at once, and a context used in a `fork()`ed child. Each must
//! give its error code (or, where documented, the right answer), never an abort, a hang or a
//! silently different result. Skipped (with a message) where `cc` is absent, except under CI.

mod common;

use common::fake_cuda::fake_driver;
use common::{hlstmc, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = "tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx";
const MODES: &[&str] = &["double-free", "foreign", "align", "busy", "fork"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `cc` runs; if not, says so, and fails under CI (which installs it).
fn have_cc() -> bool {
    if Command::new("cc").arg("--version").output().is_ok() {
        return true;
    }
    let msg = "skipped: `cc` is not installed, so the C ABI's misuse checks are not run";
    assert!(std::env::var("CI").is_err(), "{msg} (CI installs it)");
    eprintln!("{msg}");
    false
}

/// Compiles the fixture with `flags` into `dir` (library `hm`) and links tests/c/misuse.c to
/// its static library; returns the program.
fn build(dir: &Path, flags: &[&str], libs: &[&str]) -> PathBuf {
    let (m, d) = (root().join(FIXTURE), dir.display().to_string());
    let m = m.display().to_string();
    let mut args = vec![
        "compile", &m, "-o", &d, "--name", "hm", "--emit", "a,header",
    ];
    args.extend(flags);
    let o = hlstmc(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let exe = dir.join("misuse");
    let o = Command::new("cc")
        .args([
            "-std=c11",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DMODEL=hm",
            "-I",
        ])
        .arg(dir)
        .arg(root().join("tests/c/misuse.c"))
        .arg(dir.join("libhlstmc_hm.a"))
        .args(libs)
        .args(["-lm", "-pthread", "-o"])
        .arg(&exe)
        .output()
        .expect("cc runs");
    assert!(o.status.success(), "cc: {}{}", stdout(&o), stderr(&o));
    exe
}

/// Runs `exe MODE` (with `LD_LIBRARY_PATH=lib`), killing it after two minutes: a hang is a
/// failure, as is any exit but 0 with "ok MODE".
fn check_mode(exe: &Path, mode: &str, lib: Option<&Path>) -> Result<(), String> {
    let mut c = Command::new(exe);
    c.arg(mode).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(l) = lib {
        c.env("LD_LIBRARY_PATH", l);
    }
    let mut child = c.spawn().map_err(|e| format!("{mode}: {e}"))?;
    let until = Instant::now() + Duration::from_secs(120);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let o = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!("{mode}: hung (killed after 120 s)\n{}", stderr(&o)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() && stdout(&o).trim() == format!("ok {mode}") {
        Ok(())
    } else {
        Err(format!(
            "{mode}: {} (want exit 0 and \"ok {mode}\")\n{}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        ))
    }
}

/// Every mode against one library; all failures reported together.
fn check_all(exe: &Path, lib: Option<&Path>) {
    let failures: Vec<String> = MODES
        .iter()
        .filter_map(|m| check_mode(exe, m, lib).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn misuse_of_a_single_thread_library() {
    if !have_cc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = build(tmp.path(), &[], &[]);
    check_all(&exe, None);
}

#[test]
fn misuse_of_a_library_with_threads() {
    if !have_cc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = build(tmp.path(), &["--threads", "2"], &[]);
    check_all(&exe, None);
}

#[test]
fn misuse_of_the_gpu_library_on_the_stand_in_driver() {
    if !have_cc() {
        return;
    }
    let driver = fake_driver();
    let tmp = tempfile::tempdir().unwrap();
    let exe = build(tmp.path(), &["--target", "ptx"], &["-ldl"]);
    check_all(&exe, Some(driver.path()));
}

/// The header declares what misuse.c relies on: `NAME_context_free` returns a code, and the
/// codes added for misuse follow the old ones with their numbers (never renumbered).
#[test]
fn the_header_declares_the_misuse_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, d) = (root().join(FIXTURE), tmp.path().display().to_string());
    let m = m.display().to_string();
    for flags in [
        &["--emit", "header"][..],
        &["--emit", "header", "--target", "ptx"],
    ] {
        let mut args = vec!["compile", &m, "-o", &d, "--name", "hm"];
        args.extend(flags);
        let o = hlstmc(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let h = std::fs::read_to_string(tmp.path().join("hm.h")).unwrap();
        assert!(h.contains("\nint hm_context_free(void *ctx);\n"), "{h}");
        for (code, n) in [
            ("OK", 0),
            ("ERR_CONTEXT", 6),
            ("ERR_UNSUPPORTED", 8),
            ("ERR_ALIGN", 9),
            ("ERR_BUSY", 10),
            ("ERR_NOT_OWNED", 11),
            ("ERR_FORKED", 12),
        ] {
            assert!(
                h.contains(&format!("#define hm_{code} {n} ")),
                "{code}: {h}"
            );
        }
    }
}
