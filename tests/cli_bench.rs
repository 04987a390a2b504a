//! `hlstmc bench`: the JSON report on a small fixture (no timing thresholds).

mod common;

use common::{hlstmc, stdout};
use std::path::Path;

#[test]
fn bench_json_reports_positive_times() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let model = model.display().to_string();
    for engine in ["jit", "kernel-interp", "interp"] {
        let o = hlstmc(&[
            "bench", &model, "--engine", engine, "--json", "--rounds", "2", "--iters", "3",
        ]);
        assert!(
            o.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
        assert_eq!(v["engine"], engine);
        assert_eq!(v["rounds"], 2);
        assert_eq!(v["iters"], 3);
        let median = v["median_us"].as_f64().expect("median_us is a number");
        assert!(median > 0.0, "{v}");
        assert!(v["min_us"].as_f64().unwrap() <= median);
        assert!(v["max_us"].as_f64().unwrap() >= median);
        assert!(v["compile_ms"].as_f64().unwrap() >= 0.0);
    }
}
