//! `hlstmc bench`: the JSON report, the flags and their errors on small models (no timing
//! thresholds).

mod common;

use common::{hlstmc, linear_model, save, stderr, stdout};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn sp97() -> String {
    fixture("hlstm_scan_H64_X32_T8_sp97/model.onnx")
        .display()
        .to_string()
}

/// Runs `hlstmc bench ARGS --json`; the JSON object on the last line of stdout.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = hlstmc(&all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let out = stdout(&o);
    let last = out.trim().lines().last().expect("some output");
    serde_json::from_str(last).expect("one JSON object on the last line")
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number: {v}"))
}

/// min <= median <= p90 <= max, all positive.
fn check_order(v: &serde_json::Value) {
    let (min, median, p90, max) = (
        num(v, "min_us"),
        num(v, "median_us"),
        num(v, "p90_us"),
        num(v, "max_us"),
    );
    assert!(min > 0.0, "{v}");
    assert!(min <= median && median <= p90 && p90 <= max, "{v}");
}

#[test]
fn bench_json_reports_positive_times() {
    let model = sp97();
    for engine in ["jit", "kernel-interp", "interp"] {
        let v = bench_json(&[&model, "--engine", engine, "--rounds", "2", "--iters", "3"]);
        assert_eq!(v["engine"], engine);
        assert_eq!(v["mode"], "rounds");
        assert_eq!(v["rounds"], 2);
        assert_eq!(v["runs"], 2);
        assert_eq!(v["iters"], 3);
        check_order(&v);
        assert!(num(&v, "compile_ms") >= 0.0);
    }
}

#[test]
fn bench_runs_report_per_sequence_per_step_and_gflops() {
    let model = sp97();
    let v = bench_json(&[&model, "--warmup", "2", "--runs", "7"]);
    assert_eq!(v["engine"], "jit");
    assert_eq!(v["mode"], "runs");
    assert_eq!(v["runs"], 7);
    assert_eq!(v["iters"], 1);
    assert_eq!(v["warmup"], 2);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["inputs"], "random");
    check_order(&v);
    // The fixture's recurrence runs T = 8 steps of batch 1.
    assert_eq!(v["steps"], 8);
    assert_eq!(v["batch"], 1);
    for (per_step, per_seq) in [
        ("median_us_per_step", "median_us"),
        ("min_us_per_step", "min_us"),
        ("p90_us_per_step", "p90_us"),
    ] {
        let want = num(&v, per_seq) / 8.0;
        assert!(
            (num(&v, per_step) - want).abs() <= 1e-9 * want.max(1.0),
            "{v}"
        );
    }
    // The multiply-adds are those `inspect --optimized` counts, for the whole sequence.
    let o = hlstmc(&["inspect", "--optimized", "--json", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let per_step = st["macs_per_step_nonzero"].as_u64().unwrap();
    assert!(per_step > 0);
    let macs = v["macs_nonzero_per_call"].as_u64().unwrap();
    assert!(macs.abs_diff(per_step * 8) <= 8, "{macs} vs 8 x {per_step}");
    let gflops = num(&v, "gflops");
    let want = 2.0 * macs as f64 / (num(&v, "median_us") * 1e-6) / 1e9;
    assert!((gflops - want).abs() <= 1e-6 * want, "{gflops} vs {want}");
    for key in ["compile_ms", "import_ms", "optimize_ms"] {
        assert!(num(&v, key) >= 0.0, "{key}: {v}");
    }
}

#[test]
fn bench_default_times_at_least_ten_runs() {
    let v = bench_json(&[&sp97()]);
    assert_eq!(v["mode"], "runs");
    assert_eq!(v["warmup"], 3);
    assert!(v["runs"].as_u64().unwrap() >= 10, "{v}");
    check_order(&v);
}

#[test]
fn bench_text_names_per_step_and_gflops() {
    let o = hlstmc(&["bench", &sp97(), "--runs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "per sequence: median",
        "per step (T=8)",
        "GFLOP/s",
        "compile:",
    ] {
        assert!(out.contains(want), "'{want}' missing in:\n{out}");
    }
}

#[test]
fn bench_takes_test_data_inputs() {
    let dir = fixture("hlstm_scan_H64_X32_T8_sp97/test_data_set_0");
    let v = bench_json(&[
        &sp97(),
        "--runs",
        "2",
        "--test-data",
        &dir.display().to_string(),
    ]);
    assert_eq!(v["inputs"], "test-data");
    assert_eq!(v["runs"], 2);
    let o = hlstmc(&["bench", &sp97(), "--test-data", "/nonexistent/dir"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("input_0.pb"), "{}", stderr(&o));
}

#[test]
fn bench_per_step_is_na_without_a_sequence() {
    // Y = X W + B on X [2, 3]: no recurrence and no [T, B, F] input.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linear.onnx");
    save(&linear_model(), &path);
    let path = path.display().to_string();
    let v = bench_json(&[&path, "--engine", "interp", "--runs", "3"]);
    assert!(v["steps"].is_null(), "{v}");
    assert!(v["median_us_per_step"].is_null(), "{v}");
    // 2 x 4 outputs x 3 inputs, at the density of W (11 of its 12 weights are nonzero).
    assert_eq!(v["macs_nonzero_per_call"], 22, "{v}");
    let o = hlstmc(&["bench", &path, "--engine", "interp", "--runs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("per step: n/a"), "{}", stdout(&o));
}

#[test]
fn bench_threads() {
    let v = bench_json(&[&sp97(), "--threads", "1", "--runs", "2"]);
    assert_eq!(v["threads"], 1);
    let v = bench_json(&[&sp97(), "--threads", "2", "--runs", "2"]);
    assert_eq!(v["threads"], 2);
    assert!(v["median_us"].as_f64().unwrap() > 0.0);
    for bad in ["0", "65"] {
        let o = hlstmc(&["bench", &sp97(), "--threads", bad]);
        assert!(!o.status.success(), "--threads {bad}");
    }
}

#[test]
fn bench_runs_conflict_with_rounds() {
    for extra in [["--rounds", "2"], ["--iters", "2"]] {
        let o = hlstmc(&["bench", &sp97(), "--runs", "3", extra[0], extra[1]]);
        assert!(!o.status.success(), "{extra:?}");
        assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    }
}

/// A model exported with an open batch benches on its test data, whose inputs fix the batch;
/// without test data the error says so.
#[test]
fn bench_open_batch_with_test_data() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root
        .join("examples/digits-hlstm.onnx")
        .display()
        .to_string();
    let data = root
        .join("examples/digits-hlstm/test_data_set_0")
        .display()
        .to_string();
    let v = bench_json(&[&model, "--test-data", &data, "--runs", "2"]);
    assert_eq!(v["batch"], 359, "{v}");
    let o = hlstmc(&["bench", &model, "--runs", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--test-data"), "{}", stderr(&o));
}
