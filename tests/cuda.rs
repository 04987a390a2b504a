//! `hlstmc run --engine cuda` and `hlstmc bench --engine cuda` (docs/ptx.md). Without the CUDA
//! driver library (this project's machines and CI) both must say so and exit non-zero, without
//! a panic, before any other work. Where a driver and a GPU are present, the run must pass the
//! fixture's reference outputs (bench/gpu/run.sh runs every fixture).

use std::path::PathBuf;
use std::process::Command;

fn hlstmc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs")
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97")
}

const MESSAGE: &str =
    "no CUDA driver found (libcuda.so.1): --engine cuda needs an NVIDIA GPU and driver";

#[test]
fn run_and_bench_with_engine_cuda_without_a_driver_say_so_and_fail() {
    let dir = fixture();
    let model = dir.join("model.onnx");
    let data = dir.join("test_data_set_0");
    let run = [
        "run",
        "--engine",
        "cuda",
        model.to_str().unwrap(),
        "--test-data",
        data.to_str().unwrap(),
    ];
    let bench = [
        "bench",
        "--engine",
        "cuda",
        "--runs",
        "3",
        "--json",
        model.to_str().unwrap(),
    ];
    let present = hlstm_backends::cuda::driver_present();
    for args in [&run[..], &bench[..]] {
        let o = hlstmc(args);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if !present {
            assert!(!o.status.success(), "{args:?} succeeded without a driver");
            assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
            assert_eq!(stderr.trim(), format!("error: {MESSAGE}"), "{args:?}");
            assert!(stdout.is_empty(), "{args:?}: {stdout}");
        } else if o.status.success() {
            // A GPU: the run checks the reference outputs, the bench reports the device.
            if args[0] == "run" {
                assert!(stdout.contains("PASS"), "{stdout}");
            } else {
                assert!(stdout.contains("\"engine\":\"cuda\""), "{stdout}");
            }
        } else {
            // A driver without a usable GPU: a clear error, no panic.
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
            eprintln!("{args:?}: driver present, no usable GPU: {stderr}");
        }
    }
}

/// bench/gpu/run.sh parses, and its dry run (no GPU) finds the hlstmc binary, every fixture and
/// the benchmark models, and prints each command it would run.
#[test]
fn the_gpu_script_dry_run_lists_every_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("bench/gpu/run.sh");
    let o = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let models = tempfile::tempdir().unwrap();
    for m in [
        "hlstm_X32_H64_T8_dense.onnx",
        "lstm_X32_H64_T8_sp97.onnx",
        "other.onnx",
    ] {
        std::fs::write(models.path().join(m), b"").unwrap();
    }
    let o = Command::new("bash")
        .arg(&script)
        .args(["--dry-run", "--runs", "7", "--models"])
        .env("JIT_RUNS", "7")
        .arg(models.path())
        .arg(env!("CARGO_BIN_EXE_hlstmc"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("models:") && out.contains("(2)"), "{out}");
    let runs = out
        .lines()
        .filter(|l| l.contains(" run --engine cuda ") && l.contains("--test-data"))
        .count();
    assert!(runs >= 50, "{runs} fixture runs:\n{out}");
    for m in ["hlstm_X32_H64_T8_dense", "lstm_X32_H64_T8_sp97"] {
        for e in ["bench --engine cuda --json", "bench --engine jit --json"] {
            assert!(
                out.lines()
                    .any(|l| l.contains(e) && l.contains("--runs 7") && l.contains(m)),
                "{e} {m}:\n{out}"
            );
        }
        assert!(
            out.contains(&format!(
                "gpu_bench.py torch {}",
                models.path().join(format!("{m}.onnx")).display()
            )),
            "{out}"
        );
    }
    assert!(!out.contains("other.onnx"), "{out}");
    assert!(out.trim_end().ends_with("dry run: ok"), "{out}");
    // Without a binary it stops at once with exit status 2.
    let o = Command::new("bash")
        .arg(&script)
        .args(["--dry-run", "/nonexistent/hlstmc"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no hlstmc binary"));
}
