//! The setup-time breakdown (issue 18): `phases` in `hlstmc bench --json`, and the "Setup time
//! report" of `compile --time-passes` and `bench --time-passes`. Names and structure only: no
//! timing thresholds.

mod common;

use common::{hlstmc, stderr, stdout};
use std::path::{Path, PathBuf};

fn sp97() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx")
        .display()
        .to_string()
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hlstmc_setup_time_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bench_json_lists_the_phases_of_import_optimize_and_compile() {
    let m = sp97();
    let o = hlstmc(&["bench", &m, "--runs", "2", "--warmup", "0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let v: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).expect("JSON");
    let phases = v["phases"].as_array().expect("phases is a list");
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "import/read file",
        "import/parse protobuf",
        "import/graph/initializers",
        "optimize/saturate",
        "compile/lower",
        "compile/codegen",
        "compile/codegen/cranelift",
    ] {
        assert!(names.contains(&want), "no phase {want}: {names:?}");
    }
    // Every phase is a stage's, and a parent is listed before its sub-phases.
    for (i, n) in names.iter().enumerate() {
        assert!(
            ["import/", "optimize/", "compile/"]
                .iter()
                .any(|s| n.starts_with(s)),
            "{n}"
        );
        if let Some((parent, _)) = n.rsplit_once('/')
            && let Some(j) = names.iter().position(|m| *m == parent)
        {
            assert!(j < i, "{parent} after {n}");
        }
    }
    for p in phases {
        assert!(p["ms"].as_f64().unwrap() >= 0.0, "{p}");
    }
    // The passes' times are within the optimize stage's.
    let passes: f64 = phases
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("optimize/"))
        .map(|p| p["ms"].as_f64().unwrap())
        .sum();
    assert!(passes <= v["optimize_ms"].as_f64().unwrap() + 1e-6, "{v}");
    // The engine keeps no CLIF text: it is not printed, so not made.
    assert!(!names.contains(&"compile/codegen/CLIF text"), "{names:?}");
}

#[test]
fn compile_time_passes_prints_the_setup_report() {
    let m = sp97();
    let dir = out_dir("compile");
    let d = dir.display().to_string();
    let o = hlstmc(&[
        "compile",
        &m,
        "-o",
        &d,
        "--emit",
        "obj,header",
        "--time-passes",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let report = err
        .split("Setup time report")
        .nth(1)
        .unwrap_or_else(|| panic!("no setup report: {err}"));
    for want in [
        "  import\n",
        "    parse protobuf\n",
        "  optimize\n",
        "    saturate\n",
        "  compile\n",
        "    lower\n",
        "    codegen\n",
        "      cranelift\n",
    ] {
        assert!(report.contains(want), "no '{want}' in {report}");
    }
    // Without the flag there is no report.
    let o = hlstmc(&["compile", &m, "-o", &d, "--emit", "obj,header"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("Setup time report"));
    let _ = std::fs::remove_dir_all(&dir);
}
