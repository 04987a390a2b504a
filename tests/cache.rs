//! The compiled-code cache (`--cache-dir`, docs/cache.md; issue 18): a second run uses it and
//! compiles nothing; a changed model, option or version misses; a damaged or truncated entry
//! is detected and rebuilt; two processes filling one cache at once both succeed. No timing
//! thresholds: what a run did is read from `bench --json` (`cache`, `phases`).

mod common;

use common::{hlstmc, stderr, stdout};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
        .join("model.onnx")
        .display()
        .to_string()
}

fn cache_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hlstmc_cache_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `hlstmc bench MODEL --cache-dir DIR EXTRA --json`: the JSON object and stderr.
fn bench(model: &str, dir: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let d = dir.display().to_string();
    let mut args = vec![
        "bench",
        model,
        "--runs",
        "2",
        "--warmup",
        "0",
        "--json",
        "--cache-dir",
        &d,
    ];
    args.extend_from_slice(extra);
    let o = hlstmc(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let out = stdout(&o);
    let v = serde_json::from_str(out.trim().lines().last().unwrap()).expect("JSON");
    (v, stderr(&o))
}

fn phases(v: &serde_json::Value) -> Vec<String> {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hlsc"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_second_run_uses_the_cache_and_compiles_nothing() {
    let dir = cache_dir("second");
    let m = fixture("hlstm_scan_H64_X32_T8_sp97");
    let (first, _) = bench(&m, &dir, &[]);
    assert_eq!(first["cache"], "miss", "{first}");
    assert!(
        phases(&first).iter().any(|p| p == "compile/codegen"),
        "{first}"
    );
    let (second, _) = bench(&m, &dir, &[]);
    assert_eq!(second["cache"], "hit", "{second}");
    let p = phases(&second);
    // Nothing imported, optimized, lowered or generated: the entry was loaded.
    assert!(p.iter().any(|p| p == "cache/load"), "{p:?}");
    for absent in [
        "import/parse protobuf",
        "optimize",
        "compile/lower",
        "compile/codegen",
    ] {
        assert!(!p.iter().any(|x| x == absent), "{absent} in {p:?}");
    }
    assert_eq!(second["optimize_ms"], 0.0);
    // The same work counted, the same entry.
    assert_eq!(
        first["macs_nonzero_per_call"],
        second["macs_nonzero_per_call"]
    );
    assert_eq!(first["steps"], second["steps"]);
    assert_eq!(first["cache_file"], second["cache_file"]);
    assert_eq!(entries(&dir).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cached_code_computes_what_a_fresh_build_does() {
    let dir = cache_dir("outputs");
    let m = fixture("lstm_std_H64_X32_T8_sp97");
    let data = Path::new(&m).parent().unwrap().join("test_data_set_0");
    let td = data.display().to_string();
    for want in ["miss", "hit"] {
        let (v, _) = bench(&m, &dir, &["--test-data", &td]);
        assert_eq!(v["cache"], want, "{v}");
    }
    // The library API: the cached runnable's outputs against the test data's.
    let cache = hlstmc::cache::Cache::new(&dir);
    let opt = hlstmc::OptimizeOptions::default();
    let build = hlstmc::BuildOptions::default();
    // (Its options are the library's defaults, not the CLI's: an entry of its own.)
    let load = || {
        let Ok(c) = cache.load_or_build(Path::new(&m), &opt, &build, &|_| serde_json::Value::Null)
        else {
            panic!("the model is cacheable")
        };
        c
    };
    assert_eq!(load().outcome, hlstmc::cache::Outcome::Miss);
    let c = load();
    assert_eq!(c.outcome, hlstmc::cache::Outcome::Hit);
    let names: Vec<String> = c.runnable.inputs().iter().map(|i| i.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = hlstmc::test_data::TestData::load(&data, &names, c.runnable.outputs().len()).unwrap();
    let got = c.runnable.run(&t.inputs).unwrap();
    for (g, w) in got.iter().zip(&t.outputs) {
        let (g, w) = (g.as_f32().unwrap(), w.as_ref().unwrap().as_f32().unwrap());
        assert_eq!(g.shape(), w.shape());
        for (a, b) in g.iter().zip(w.iter()) {
            assert!((a - b).abs() <= 1e-4 + 1e-3 * b.abs(), "{a} vs {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_model_option_or_version_misses() {
    let dir = cache_dir("keys");
    let m = fixture("hlstm_scan_H64_X32_T8_sp97");
    assert_eq!(bench(&m, &dir, &[]).0["cache"], "miss");
    assert_eq!(bench(&m, &dir, &[]).0["cache"], "hit");
    // Another model: a copy of the file with one byte of a weight changed.
    let bytes = std::fs::read(&m).unwrap();
    let copy = dir.join("changed.onnx");
    let mut changed = bytes.clone();
    let k = changed.len() / 2; // inside the weights, most of the file
    changed[k] ^= 0x01;
    std::fs::write(&copy, &changed).unwrap();
    let (v, _) = bench(&copy.display().to_string(), &dir, &[]);
    assert_eq!(v["cache"], "miss", "a changed model: {v}");
    // The same bytes under another name hit: the key is the content, not the path.
    let same = dir.join("same.onnx");
    std::fs::write(&same, &bytes).unwrap();
    assert_eq!(
        bench(&same.display().to_string(), &dir, &[]).0["cache"],
        "hit"
    );
    // Other options.
    for opt in [
        &["--sparse-strategy", "dense"][..],
        &["-O0"],
        &["--threads", "2"],
        &["--cpu", "x86-64-v2"],
    ] {
        let (v, _) = bench(&m, &dir, opt);
        assert_eq!(v["cache"], "miss", "{opt:?}: {v}");
        let (v, _) = bench(&m, &dir, opt);
        assert_eq!(v["cache"], "hit", "{opt:?} again: {v}");
    }
    // Another version of hlstmc.
    let opt = hlstmc::OptimizeOptions::default();
    let build = hlstmc::BuildOptions::default();
    let none = |_: &hlstmc::Model| serde_json::Value::Null;
    let now = hlstmc::cache::Cache::new(&dir);
    for want in [hlstmc::cache::Outcome::Miss, hlstmc::cache::Outcome::Hit] {
        let Ok(c) = now.load_or_build(Path::new(&m), &opt, &build, &none) else {
            panic!("cacheable")
        };
        assert_eq!(c.outcome, want);
    }
    let next = hlstmc::cache::Cache::with_version(&dir, "999.0.0");
    let Ok(c) = next.load_or_build(Path::new(&m), &opt, &build, &none) else {
        panic!("cacheable")
    };
    assert_eq!(c.outcome, hlstmc::cache::Outcome::Miss);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_or_truncated_entry_is_rebuilt_with_a_warning() {
    let dir = cache_dir("damaged");
    let m = fixture("hlstm_scan_H64_X32_T8_sp90");
    assert_eq!(bench(&m, &dir, &[]).0["cache"], "miss");
    let entry = entries(&dir).pop().expect("an entry");
    let whole = std::fs::read(&entry).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte in the code", {
            let mut b = whole.clone();
            let k = b.len() - 100;
            b[k] ^= 0x40;
            b
        }),
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("another file", b"not a cache entry at all".to_vec()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&entry, &bytes).unwrap();
        let (v, err) = bench(&m, &dir, &[]);
        assert_eq!(v["cache"], "rebuilt", "{what}: {v}");
        assert!(
            err.contains("warning: cache entry") && err.contains("rebuilt"),
            "{what}: {err}"
        );
        // Rebuilt and replaced: whole again, and used.
        assert_eq!(std::fs::read(&entry).unwrap(), whole, "{what}");
        assert_eq!(bench(&m, &dir, &[]).0["cache"], "hit", "{what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_processes_filling_one_cache_both_succeed() {
    let dir = cache_dir("concurrent");
    let m = fixture("hlstm_scan_H64_X32_T8_sp90");
    let d = dir.display().to_string();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&dir);
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
                .args([
                    "bench",
                    &m,
                    "--runs",
                    "2",
                    "--warmup",
                    "0",
                    "--json",
                    "--cache-dir",
                    &d,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("hlstmc starts")
        };
        let (a, b) = (spawn(), spawn());
        for c in [a, b] {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let v: serde_json::Value =
                serde_json::from_str(stdout(&o).trim().lines().last().unwrap()).unwrap();
            // Each built it, or found the other's whole entry; never a damaged one.
            assert!(v["cache"] == "miss" || v["cache"] == "hit", "{v}");
        }
        // One whole entry, no temporary file left.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(bench(&m, &dir, &[]).0["cache"], "hit");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hlstmc run MODEL --cache-dir DIR --time-passes ARGS`: stdout, and the names of the setup
/// phases its report lists (from stderr).
fn run_cached(model: &str, dir: &Path, args: &[&str]) -> (String, Vec<String>, String) {
    let d = dir.display().to_string();
    let mut all = vec!["run", model, "--cache-dir", &d, "--time-passes"];
    all.extend_from_slice(args);
    let o = hlstmc(&all);
    assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    let err = stderr(&o);
    // The setup report's rows: "   time   pct%  name", nested by indentation; the path of each.
    let report = err
        .split("Setup time report")
        .nth(1)
        .unwrap_or_else(|| panic!("no setup report in {err}"));
    let mut path: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for line in report.lines() {
        let Some((_, rest)) = line.split_once("%  ") else {
            continue;
        };
        let depth = (rest.len() - rest.trim_start().len()) / 2;
        path.truncate(depth);
        path.push(rest.trim().to_string());
        names.push(path.join("/"));
    }
    (stdout(&o), names, err)
}

fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn run_with_a_cache_dir_skips_the_build_on_a_second_run_and_gives_the_same_outputs() {
    let dir = cache_dir("run");
    let m = fixture("lstm_std_H64_X32_T8_sp97");
    let data = Path::new(&m).parent().unwrap().join("test_data_set_0");
    let input = format!("X={}", data.join("input_0.pb").display());
    let outs: Vec<PathBuf> = (0..3)
        .map(|k| {
            std::env::temp_dir().join(format!("hlstmc_cache_run_out_{}_{k}", std::process::id()))
        })
        .collect();
    for o in &outs {
        let _ = std::fs::remove_dir_all(o);
    }
    let out = |k: usize| outs[k].display().to_string();
    let (_, first, _) = run_cached(&m, &dir, &["-i", &input, "-o", &out(0)]);
    for built in [
        "import/parse protobuf",
        "optimize",
        "compile/codegen",
        "cache/write entry",
    ] {
        assert!(first.iter().any(|p| p == built), "{built} not in {first:?}");
    }
    assert_eq!(entries(&dir).len(), 1);
    let (_, second, _) = run_cached(&m, &dir, &["-i", &input, "-o", &out(1)]);
    assert!(second.iter().any(|p| p == "cache/load"), "{second:?}");
    for absent in [
        "import/parse protobuf",
        "optimize",
        "compile/lower",
        "compile/codegen",
    ] {
        assert!(
            !second.iter().any(|p| p.starts_with(absent)),
            "{absent} in {second:?}"
        );
    }
    // Without the cache: the same files, bit for bit.
    let o = hlstmc(&["run", &m, "-i", &input, "-o", &out(2)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = read_dir_files(&outs[2]);
    assert_eq!(
        fresh.len(),
        2,
        "{:?}",
        fresh.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(read_dir_files(&outs[0]), fresh);
    assert_eq!(read_dir_files(&outs[1]), fresh);
    // --test-data on a hit: the inputs and outputs are found by the cached entry's names.
    let td = data.display().to_string();
    let (stdout, third, _) = run_cached(&m, &dir, &["--test-data", &td]);
    assert!(third.iter().any(|p| p == "cache/load"), "{third:?}");
    assert!(!third.iter().any(|p| p == "optimize"), "{third:?}");
    assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");
    assert_eq!(entries(&dir).len(), 1);
    // A damaged entry is rebuilt with a warning, and the run still passes.
    let e = &entries(&dir)[0];
    let bytes = std::fs::read(e).unwrap();
    std::fs::write(e, &bytes[..bytes.len() / 2]).unwrap();
    let (stdout, again, err) = run_cached(&m, &dir, &["--test-data", &td]);
    assert!(err.contains("rebuilt"), "{err}");
    assert!(again.iter().any(|p| p == "compile/codegen"), "{again:?}");
    assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");
    for o in &outs {
        let _ = std::fs::remove_dir_all(o);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_cache_dir_refuses_other_engines() {
    let dir = cache_dir("run_engine");
    let m = fixture("lstm_std_H64_X32_T8_sp97");
    let d = dir.display().to_string();
    let o = hlstmc(&["run", &m, "--cache-dir", &d, "--engine", "interp"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--cache-dir holds JIT code"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
