//! `hlstmc run --engine cuda` and `hlstmc bench --engine cuda` (docs/ptx.md). Without the CUDA
//! driver library (this project's machines and CI) both must say so and exit non-zero, without
//! a panic, before any other work. Where a driver and a GPU are present, the run must pass the
//! fixture's reference outputs (bench/gpu/run.sh runs every fixture).

mod common;

use common::fake_cuda::fake_driver;
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
    let clib = out
        .lines()
        .find(|l| l.contains("bench/gpu/clib_check.sh"))
        .unwrap_or_else(|| panic!("no C library check:\n{out}"));
    let n: usize = clib
        .rsplit('(')
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(n >= 30, "{clib}");
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

/// A stand-in `libcuda.so.1` that loads but has no usable GPU: `cuInit` fails with
/// CUDA_ERROR_NO_DEVICE, or (FAKE_CUDA_DEVICES=0) succeeds and reports no device.
const FAKE_DRIVER: &str = r#"
#include <stdlib.h>
int cuInit(unsigned flags) { (void)flags; return getenv("FAKE_CUDA_DEVICES") ? 0 : 100; }
int cuDeviceGetCount(int *n) { *n = 0; return 0; }
int cuGetErrorName(int e, const char **s) { *s = e == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN"; return 0; }
int cuGetErrorString(int e, const char **s) { *s = e == 100 ? "no CUDA-capable device is detected" : "unknown error"; return 0; }
"#;

/// Where a driver library loads but no GPU is usable, `--engine cuda` is a clear error naming
/// the driver call, not a panic (needs cc; says so and skips without it, except under CI).
#[test]
fn with_a_driver_but_no_device_engine_cuda_is_a_clear_error() {
    if hlstm_backends::cuda::driver_present() {
        eprintln!("a real CUDA driver is present: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fake_cuda.c");
    std::fs::write(&src, FAKE_DRIVER).unwrap();
    let lib = dir.path().join("libcuda.so.1");
    match Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        r => {
            assert!(std::env::var("CI").is_err(), "cc is needed: {r:?}");
            eprintln!("no cc: skipped");
            return;
        }
    }
    std::fs::copy(&lib, dir.path().join("libcuda.so")).unwrap();
    let d = fixture();
    let model = d.join("model.onnx");
    let data = d.join("test_data_set_0");
    for (devices, want) in [
        (
            None,
            "error: CUDA driver: cuInit: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)",
        ),
        (
            Some("0"),
            "error: no CUDA device 0: the driver reports 0 device(s)",
        ),
    ] {
        for args in [
            vec![
                "run",
                "--engine",
                "cuda",
                model.to_str().unwrap(),
                "--test-data",
                data.to_str().unwrap(),
            ],
            vec![
                "bench",
                "--engine",
                "cuda",
                "--json",
                model.to_str().unwrap(),
            ],
        ] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_hlstmc"));
            c.args(&args).env("LD_LIBRARY_PATH", dir.path());
            if let Some(n) = devices {
                c.env("FAKE_CUDA_DEVICES", n);
            }
            let o = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
            assert_eq!(stderr.trim(), want, "{args:?}");
        }
    }
}

/// Every fixture model through `hlstmc run --engine cuda --test-data`, with the driver's calls
/// answered by the stand-in driver and the kernel run by the PTX interpreter: the runner (driver
/// check, context, module, buffers, argument marshalling, cooperative launch, copies) end to end
/// through cudarc and dlopen.
#[test]
fn every_fixture_through_the_runner_on_the_stand_in_driver() {
    if hlstm_backends::cuda::driver_present() {
        eprintln!("a real CUDA driver is present: bench/gpu/run.sh checks the fixtures; skipped");
        return;
    }
    let lib = fake_driver();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs = Vec::new();
    for sub in ["models", "extra"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.join("model.onnx").exists() {
                dirs.push(p);
            }
        }
    }
    dirs.sort();
    assert!(dirs.len() >= 30, "{}", dirs.len());
    let mut failures = Vec::new();
    for d in &dirs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let o = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
            .args(["run", "--engine", "cuda"])
            .arg(d.join("model.onnx"))
            .arg("--test-data")
            .arg(d.join("test_data_set_0"))
            .env("LD_LIBRARY_PATH", lib.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let passed = o.status.success() && stdout.lines().last() == Some("PASS");
        if !passed {
            failures.push(format!("{name}: {stdout}{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A grid that cannot be resident at once is refused before launching (the grid barrier
    // would never open): an H64 model needs 2 blocks, the stand-in device holds 1.
    let d = fixture();
    let o = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(["run", "--engine", "cuda"])
        .arg(d.join("model.onnx"))
        .arg("--test-data")
        .arg(d.join("test_data_set_0"))
        .env("LD_LIBRARY_PATH", lib.path())
        .env("FAKE_CUDA_SMS", "1")
        .env("FAKE_CUDA_BLOCKS_PER_SM", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the grid of 2 blocks of 128 threads cannot be resident at once"),
        "{stderr}"
    );
}

/// The runner's API on the stand-in driver, in a child process of this test binary (the driver
/// is found through LD_LIBRARY_PATH, read when a process starts): shorter sequences equal the
/// kernel interpreter's, and streaming one step at a time (`resume`, the workspace kept in the
/// context) equals the whole sequence.
#[test]
fn the_runner_streams_and_runs_shorter_sequences_on_the_stand_in_driver() {
    if hlstm_backends::cuda::driver_present() {
        eprintln!("a real CUDA driver is present: skipped");
        return;
    }
    let lib = fake_driver();
    let o = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "runner_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LD_LIBRARY_PATH", lib.path())
        .env("HLSTMC_FAKE_CUDA_CHILD", "1")
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 passed"), "{out}");
    assert!(out.contains("runner child: 2 models streamed"), "{out}");
}

#[test]
#[ignore = "run by the_runner_streams_and_runs_shorter_sequences_on_the_stand_in_driver"]
fn runner_child() {
    use hlstm_backends::cuda::{CudaProgram, Gpu};
    use hlstm_backends::ptx::{PtxOptions, compile};
    use hlstm_frontends::onnx::{import_file, tensor::read_pb};
    use hlstm_ir::kernel::interp::Machine;
    use hlstm_passes::{DEFAULT_PIPELINE, PassManager};
    if std::env::var("HLSTMC_FAKE_CUDA_CHILD").is_err() {
        return;
    }
    let close = |g: &[f32], w: &[f32]| {
        g.len() == w.len()
            && g.iter()
                .zip(w)
                .all(|(a, b)| (a - b).abs() <= 1e-4 + 1e-3 * b.abs())
    };
    let mut streamed = 0;
    for d in [
        "models/hlstm_scan_H64_X32_T8_sp97",
        "models/lstm_std_H64_X32_T8",
    ] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(d);
        let mut g = import_file(&dir.join("model.onnx")).unwrap();
        let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).unwrap();
        pm.run(&mut g, &mut std::io::sink()).unwrap();
        let mut p = hlstm_passes::lower::lower(&g, &Default::default()).unwrap();
        p.name = "model".into();
        let inputs: Vec<Vec<f32>> = (0..)
            .map(|k| dir.join(format!("test_data_set_0/input_{k}.pb")))
            .take_while(|f| f.exists())
            .map(|f| {
                read_pb(&f)
                    .unwrap()
                    .1
                    .as_f32()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect();
        let gpu = Gpu::open(0).unwrap();
        let m = compile(
            &p,
            &PtxOptions {
                sm: gpu.sm_target().unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut prog = CudaProgram::load(gpu, &m).unwrap();
        let max = prog.launch().max_steps;
        assert!(
            prog.launch().dynamic_steps && prog.launch().streamable,
            "{d}"
        );
        let prefix = |steps: usize| -> Vec<Vec<f32>> {
            p.inputs
                .iter()
                .zip(&inputs)
                .map(|(b, x)| x[..p.len_for_steps(*b, steps)].to_vec())
                .collect()
        };
        for steps in [1, max / 2, max - 1, max] {
            let ins = prefix(steps);
            let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
            let want = Machine::new(&p)
                .unwrap()
                .run(&p, &refs, Some(steps), false)
                .unwrap();
            let got = prog.run(&refs, steps, false).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(close(g, w), "{d}, {steps} steps");
            }
        }
        // Wrong calls are errors.
        let ins = prefix(max);
        let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
        assert!(prog.run(&refs, max + 1, false).is_err());
        assert!(prog.run(&refs[..0], max, false).is_err());
        let whole = prog.run(&refs, max, false).unwrap();
        for t in 0..max {
            let ins: Vec<Vec<f32>> = p
                .inputs
                .iter()
                .zip(&inputs)
                .map(|(b, x)| match p.buffers[b.0].step_len {
                    Some(r) => x[t * r..(t + 1) * r].to_vec(),
                    None => x.clone(),
                })
                .collect();
            let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
            let got = prog.run(&refs, 1, t > 0).unwrap();
            for (k, (g, w)) in got.iter().zip(&whole).enumerate() {
                let want = match p.buffers[p.outputs[k].0].step_len {
                    Some(r) => &w[t * r..(t + 1) * r],
                    None if t + 1 == max => &w[..],
                    None => continue,
                };
                assert!(close(g, want), "{d}: streamed step {t}, output {k}");
            }
        }
        streamed += 1;
    }
    println!("runner child: {streamed} models streamed");
}
