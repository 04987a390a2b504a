//! The starter programs of examples/ (examples/c/starter.c, examples/rust/run_model.rs), built
//! against a library compiled with an arbitrary `--name`, read a .npy input and print outputs
//! equal to `hlstmc run`'s on the same input. Tools that are absent are named in the output
//! (and fail the test under CI, which has them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = "tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97";
/// Any name works; this one is neither `model` nor the fixture's stem.
const NAME: &str = "starter_net";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    let present = Command::new(tool).arg("--version").output().is_ok();
    if !present {
        let msg = format!("skipped: `{tool}` cannot be run, so its starter is not tested");
        assert!(std::env::var("CI").is_err(), "{msg}");
        eprintln!("{msg}");
    }
    present
}

fn hlstmc(args: &[&str]) -> String {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_hlstmc")).args(args),
        &format!("hlstmc {args:?}"),
    )
}

/// The fixture's input as x.npy, the library as DIR/libhlstmc_NAME.a, and what `hlstmc run`
/// gives on x.npy (every output, flat, in order).
fn setup(dir: &Path) -> (PathBuf, Vec<Vec<f32>>) {
    let (_, x) = hlstm_frontends::onnx::tensor::read_pb(
        &root().join(FIXTURE).join("test_data_set_0/input_0.pb"),
    )
    .unwrap();
    let x: Vec<f32> = x.as_f32().unwrap().iter().copied().collect();
    let npy = dir.join("x.npy");
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[8, 1, 32])
            .writer(std::io::BufWriter::new(
                std::fs::File::create(&npy).unwrap(),
            ))
            .begin_nd()
            .unwrap();
        w.extend(x.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    let model = root()
        .join(FIXTURE)
        .join("model.onnx")
        .display()
        .to_string();
    let d = dir.display().to_string();
    hlstmc(&[
        "compile", &model, "-o", &d, "--name", NAME, "--emit", "a,header",
    ]);
    let out = dir.join("out");
    hlstmc(&[
        "run",
        &model,
        "-i",
        &format!("X={}", npy.display()),
        "-o",
        &out.display().to_string(),
    ]);
    let want = ["Y", "Y_h"]
        .iter()
        .map(|n| {
            let f = std::fs::File::open(out.join(format!("{n}.npy"))).unwrap();
            npyz::NpyFile::new(f).unwrap().into_vec::<f32>().unwrap()
        })
        .collect();
    (npy, want)
}

/// Parses `output K: v v v ...` lines and compares them with `want`.
fn check(printed: &str, want: &[Vec<f32>], what: &str) {
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), want.len(), "{what}: {printed}");
    for (k, (line, w)) in lines.iter().zip(want).enumerate() {
        let values = line
            .strip_prefix(&format!("output {k}:"))
            .unwrap_or_else(|| panic!("{what}: {line}"));
        let got: Vec<f32> = values
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(got.len(), w.len(), "{what}: output {k}");
        for (g, w) in got.iter().zip(w) {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{what}: output {k}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn c_starter_prints_what_run_computes() {
    if !have("cc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (npy, want) = setup(dir);
    let exe = dir.join("starter");
    run_ok(
        Command::new("cc")
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
            .arg(format!("-DMODEL={NAME}"))
            .arg("-I")
            .arg(dir)
            .arg(root().join("examples/c/starter.c"))
            .arg(dir.join(format!("libhlstmc_{NAME}.a")))
            .args(["-lm", "-o"])
            .arg(&exe),
        "cc starter.c",
    );
    check(
        &run_ok(Command::new(&exe).arg(&npy), "starter"),
        &want,
        "C starter",
    );
    // A file that is not float32 .npy is refused with a message.
    let o = Command::new(&exe)
        .arg(root().join(FIXTURE).join("model.onnx"))
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("usage"),
        "{}",
        text(&o)
    );
}

#[test]
fn rust_example_prints_what_run_computes() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !have(&rustc) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (npy, want) = setup(dir);
    let exe = dir.join("run_model");
    run_ok(
        Command::new(&rustc)
            .env("HLSTMC_NAME", NAME)
            .args(["--edition", "2021", "-O"])
            .arg(root().join("examples/rust/run_model.rs"))
            .arg("-L")
            .arg(dir)
            .args(["-l", &format!("static=hlstmc_{NAME}"), "-o"])
            .arg(&exe),
        "rustc run_model.rs",
    );
    for mode in [None, Some("--stream")] {
        let printed = run_ok(Command::new(&exe).args(mode).arg(&npy), "run_model");
        check(&printed, &want, &format!("Rust example {mode:?}"));
    }
}
