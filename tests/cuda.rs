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
