//! The pass pipeline through the CLI: `hlstmc passes`, `hlstmc opt` and its instrumentation
//! flags (--dump-dir, --print-after-all, --print-before, --time-passes, --stats, --passes, -O0,
//! --verify-each), `run --test-data` with and without the pipeline, and
//! `verify_each::same_numbers` itself.

mod common;

use common::{hlstmc, stderr, stdout};
use hlstm_ir::text::{WeightStore, parse, parse_with_weights, side_file_path};
use hlstm_passes::DEFAULT_PIPELINE;
use hlstm_passes::verify_each::same_numbers;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn model(name: &str) -> String {
    fixture(name).join("model.onnx").display().to_string()
}

/// A small model with a recurrence (a Scan-form H-LSTM, 97% pruned).
const SCAN: &str = "hlstm_scan_H64_X32_T8_sp97";
/// One ONNX LSTM op, batch 3.
const LSTM: &str = "lstm_std_X16_H24_T5_batch3";

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "hlstmc failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// A model the default pipeline changes (the fixtures arrive already clean from the importer):
/// Y = relu(concat(reshape(X, [2, 3]))) with X [2, 3]; the reshape keeps the shape and the
/// concat has one operand, so simplify removes both and dce the shape constant.
fn noop_model(dir: &Path) -> String {
    let mut shape = onnx_protobuf::TensorProto::new();
    shape.name = "shape".into();
    shape.dims = vec![2];
    shape.data_type = 7;
    shape.raw_data = [2i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut concat = common::node("Concat", "cat", &["R"], &["C"]);
    concat.attribute.push(common::int_attr("axis", 0));
    let m = common::model(
        17,
        vec![common::value_info("X", 1, &[2, 3])],
        vec![common::value_info("Y", 1, &[2, 3])],
        vec![shape],
        vec![
            common::node("Reshape", "reshape", &["X", "shape"], &["R"]),
            concat,
            common::node("Relu", "relu", &["C"], &["Y"]),
        ],
    );
    let path = dir.join("noop.onnx");
    common::save(&m, &path);
    path.display().to_string()
}

/// The `.hir` files of a dump folder, sorted.
fn dump_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("the dump folder exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hir"))
        .collect();
    v.sort();
    v
}

/// The dump file names a pipeline should produce: 00-input.hir, then NN-<pass>.hir.
fn expected_dumps(passes: &[&str]) -> Vec<String> {
    let mut v = vec!["00-input.hir".to_string()];
    v.extend(
        passes
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:02}-{p}.hir", i + 1)),
    );
    v
}

/// The `// *** IR Dump ... ***` header lines in a stderr text.
fn dump_headers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("// *** IR Dump"))
        .map(str::to_string)
        .collect()
}

#[test]
fn passes_lists_the_default_pipeline_and_every_pass() {
    let o = hlstmc(&["passes"]);
    ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("default pipeline: {}", DEFAULT_PIPELINE.join(","))),
        "{out}"
    );
    for (name, what) in hlstm_passes::registry::describe() {
        let line = out
            .lines()
            .find(|l| {
                l.get(2..)
                    .is_some_and(|r| r.split_whitespace().next() == Some(name))
            })
            .unwrap_or_else(|| panic!("no line for pass '{name}':\n{out}"));
        assert!(line.contains(what), "{line}");
        let mark = if DEFAULT_PIPELINE.contains(&name) {
            '*'
        } else {
            ' '
        };
        assert!(
            line.starts_with(mark),
            "'{line}' should start with '{mark}'"
        );
    }
    for name in ["fold-constants", "simplify", "dce"] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
}

#[test]
fn opt_prints_ir_and_writes_a_file_that_parses_back_with_its_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    // To stdout: the text form, large constants by hash.
    let o = hlstmc(&["opt", &model(SCAN)]);
    ok(&o);
    let printed = stdout(&o);
    assert!(printed.starts_with("graph ("), "{printed}");
    assert!(printed.contains("recurrence{"), "{printed}");
    assert!(
        stderr(&o).is_empty(),
        "no instrumentation, no stderr: {}",
        stderr(&o)
    );

    // With -o: FILE and FILE.weights, which parse back to a graph that verifies.
    let file = dir.path().join("opt.hir");
    let o = hlstmc(&["opt", &model(SCAN), "-o", &file.display().to_string()]);
    ok(&o);
    assert!(
        stdout(&o).is_empty(),
        "-o writes nothing to stdout: {}",
        stdout(&o)
    );
    let weights = side_file_path(&file);
    assert_eq!(weights, dir.path().join("opt.hir.weights"));
    assert!(weights.exists(), "{} is missing", weights.display());
    let text = std::fs::read_to_string(&file).expect("reads opt.hir");
    assert_eq!(text, printed, "-o writes the text opt prints");
    let store = WeightStore::load(&weights).expect("loads the weights");
    let optimized = parse_with_weights(&text, &store).expect("the IR parses back");
    hlstm_ir::verify::verify(&optimized).expect("the optimized IR verifies");

    // The same for -O0, which must agree with print-ir; the optimized graph computes the same.
    let file0 = dir.path().join("o0.hir");
    ok(&hlstmc(&[
        "opt",
        &model(SCAN),
        "-O0",
        "-o",
        &file0.display().to_string(),
    ]));
    let text0 = std::fs::read_to_string(&file0).expect("reads o0.hir");
    let o = hlstmc(&["print-ir", &model(SCAN)]);
    ok(&o);
    assert_eq!(text0, stdout(&o), "opt -O0 prints the imported graph");
    let store0 = WeightStore::load(&side_file_path(&file0)).expect("loads the -O0 weights");
    let imported = parse_with_weights(&text0, &store0).expect("the -O0 IR parses back");
    same_numbers(&imported, &optimized, 1e-4, 1e-5).expect("the optimized graph computes the same");
}

/// The (before, after) node counts of a pass in a --stats table.
fn stats_nodes(err: &str, pass: &str) -> (usize, usize) {
    let line = err
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pass))
        .unwrap_or_else(|| panic!("no statistics line for {pass}:\n{err}"));
    let nodes = line.split_whitespace().nth(1).expect("nodes");
    let (before, after) = nodes.split_once("->").expect("before->after");
    (
        before.parse().expect("a count"),
        after.parse().expect("a count"),
    )
}

#[test]
fn default_pipeline_removes_no_ops_and_keeps_the_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = noop_model(dir.path());
    let o = hlstmc(&["opt", &m, "-O0"]);
    ok(&o);
    let before = stdout(&o);
    assert!(
        before.contains("reshape{") && before.contains("concat{"),
        "{before}"
    );
    let o = hlstmc(&["opt", &m, "--stats", "--verify-each"]);
    ok(&o);
    let after = stdout(&o);
    assert!(
        !after.contains("reshape") && !after.contains("concat") && !after.contains("const"),
        "{after}"
    );
    assert!(after.contains("relu(%X)"), "{after}");
    // Small constants only: the text parses without a weight store.
    let (g0, g1) = (
        parse(&before).expect("parses"),
        parse(&after).expect("parses"),
    );
    hlstm_ir::verify::verify(&g1).expect("verifies");
    same_numbers(&g0, &g1, 0.0, 0.0).expect("the same numbers");
    let err = stderr(&o);
    // X, the shape constant, the reshape, the concat and the relu: only X and the relu remain.
    let first = stats_nodes(&err, DEFAULT_PIPELINE[0]).0;
    let last = stats_nodes(&err, DEFAULT_PIPELINE[DEFAULT_PIPELINE.len() - 1]).1;
    assert_eq!((first, last), (5, 2), "{err}");

    // run gives the same outputs with and without the pipeline.
    let x = dir.path().join("x.npy");
    common::write_npy_f32(&x, &[2, 3], &[-1.0, 2.0, -3.0, 4.0, 0.5, -0.5]);
    let input = format!("X={}", x.display());
    let o = hlstmc(&["run", &m, "-i", &input]);
    ok(&o);
    let o0 = hlstmc(&["run", &m, "-i", &input, "-O0"]);
    ok(&o0);
    assert_eq!(stdout(&o), stdout(&o0));
    assert!(
        stdout(&o).contains("[0.000000, 2.000000, 0.000000, 4.000000, 0.500000, 0.000000]"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn dump_dir_writes_the_input_and_one_file_per_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dumps = dir.path().join("dumps");
    let o = hlstmc(&[
        "opt",
        &model(SCAN),
        "--dump-dir",
        &dumps.display().to_string(),
    ]);
    ok(&o);
    assert_eq!(dump_files(&dumps), expected_dumps(DEFAULT_PIPELINE));
    // The input dump is the imported graph, the last one is what opt prints.
    let read = |n: &str| std::fs::read_to_string(dumps.join(n)).expect("reads a dump");
    let imported = hlstmc(&["print-ir", &model(SCAN)]);
    ok(&imported);
    assert_eq!(read("00-input.hir"), stdout(&imported));
    let last = expected_dumps(DEFAULT_PIPELINE).pop().expect("a pass");
    assert_eq!(read(&last), stdout(&o));
}

#[test]
fn passes_flag_runs_exactly_those_passes_in_that_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dumps = dir.path().join("d");
    let o = hlstmc(&[
        "opt",
        &model(SCAN),
        "--passes",
        "dce,simplify",
        "--dump-dir",
        &dumps.display().to_string(),
        "--print-after-all",
    ]);
    ok(&o);
    assert_eq!(
        dump_files(&dumps),
        ["00-input.hir", "01-dce.hir", "02-simplify.hir"]
    );
    assert_eq!(
        dump_headers(&stderr(&o)),
        [
            "// *** IR Dump After dce ***",
            "// *** IR Dump After simplify ***"
        ]
    );
    // One pass, given twice: runs twice.
    let dumps2 = dir.path().join("d2");
    ok(&hlstmc(&[
        "opt",
        &model(SCAN),
        "--passes=dce,dce",
        "--dump-dir",
        &dumps2.display().to_string(),
    ]));
    assert_eq!(
        dump_files(&dumps2),
        ["00-input.hir", "01-dce.hir", "02-dce.hir"]
    );
}

#[test]
fn print_after_all_prints_one_header_per_pass() {
    let o = hlstmc(&["opt", &model(SCAN), "--print-after-all"]);
    ok(&o);
    let err = stderr(&o);
    let want: Vec<String> = DEFAULT_PIPELINE
        .iter()
        .map(|p| format!("// *** IR Dump After {p} ***"))
        .collect();
    assert_eq!(dump_headers(&err), want, "{err}");
    // Each header is followed by a graph; the last dump is what opt prints.
    let last = err
        .rsplit_once(want.last().expect("a pass").as_str())
        .expect("the last header")
        .1;
    assert_eq!(last.trim(), stdout(&o).trim());
}

#[test]
fn print_before_and_after_one_pass_print_only_that_header() {
    let o = hlstmc(&["opt", &model(SCAN), "--print-before=dce"]);
    ok(&o);
    assert_eq!(
        dump_headers(&stderr(&o)),
        ["// *** IR Dump Before dce ***"],
        "{}",
        stderr(&o)
    );
    let o = hlstmc(&["opt", &model(SCAN), "--print-after=simplify"]);
    ok(&o);
    assert_eq!(
        dump_headers(&stderr(&o)),
        ["// *** IR Dump After simplify ***"]
    );
    // A pass that is not in the pipeline prints nothing.
    let o = hlstmc(&[
        "opt",
        &model(SCAN),
        "--passes",
        "dce",
        "--print-before=simplify",
    ]);
    ok(&o);
    assert!(dump_headers(&stderr(&o)).is_empty(), "{}", stderr(&o));
}

#[test]
fn time_passes_prints_the_timing_table() {
    let o = hlstmc(&["opt", &model(SCAN), "--time-passes"]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("Pass execution timing report"), "{err}");
    assert!(err.contains("Total:"), "{err}");
    for p in DEFAULT_PIPELINE {
        assert!(
            err.lines()
                .any(|l| l.contains('%') && l.split_whitespace().last() == Some(p)),
            "no timing row for {p}:\n{err}"
        );
    }
    assert!(
        stdout(&o).starts_with("graph ("),
        "the IR still goes to stdout"
    );
}

#[test]
fn stats_prints_before_and_after_per_pass() {
    let o = hlstmc(&["opt", &model(SCAN), "--stats"]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("Pass statistics (before -> after):"), "{err}");
    for p in DEFAULT_PIPELINE {
        let line = err
            .lines()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("no statistics line for {p}:\n{err}"));
        // nodes, weights, nonzeros, multiply-adds: four before->after pairs.
        assert_eq!(line.matches("->").count(), 4, "{line}");
    }
}

#[test]
fn unknown_pass_names_are_clear_errors() {
    let o = hlstmc(&["opt", &model(SCAN), "--passes", "dce,no-such-pass"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("unknown pass 'no-such-pass'"), "{err}");
    for p in hlstm_passes::pass_names() {
        assert!(
            err.contains(p),
            "the error lists the passes ({p} missing): {err}"
        );
    }
    assert!(stdout(&o).is_empty(), "no IR on failure: {}", stdout(&o));

    let o = hlstmc(&["opt", &model(SCAN), "--print-before=nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown pass 'nope'"), "{}", stderr(&o));

    // run and inspect take the same flags and fail the same way.
    let o = hlstmc(&["run", &model(SCAN), "--passes", "bogus", "--test-data", "x"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown pass 'bogus'"),
        "{}",
        stderr(&o)
    );
    let o = hlstmc(&["inspect", &model(SCAN), "--optimized", "--passes", "bogus"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown pass 'bogus'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn o0_runs_no_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dumps = dir.path().join("d");
    let o = hlstmc(&[
        "opt",
        &model(SCAN),
        "-O0",
        "--dump-dir",
        &dumps.display().to_string(),
        "--print-after-all",
        "--stats",
    ]);
    ok(&o);
    assert_eq!(dump_files(&dumps), ["00-input.hir"]);
    assert!(dump_headers(&stderr(&o)).is_empty(), "{}", stderr(&o));
    let imported = hlstmc(&["print-ir", &model(SCAN)]);
    assert_eq!(stdout(&o), stdout(&imported));
}

#[test]
fn verify_each_passes_on_fixtures() {
    for name in [SCAN, LSTM] {
        let o = hlstmc(&["opt", &model(name), "--verify-each"]);
        ok(&o);
        assert!(stdout(&o).starts_with("graph ("), "{name}: {}", stdout(&o));
        let o = hlstmc(&[
            "run",
            &model(name),
            "--verify-each",
            "--test-data",
            &fixture(name).join("test_data_set_0").display().to_string(),
        ]);
        ok(&o);
    }
}

#[test]
fn run_test_data_with_and_without_the_pipeline() {
    for name in [
        SCAN,
        LSTM,
        "hlstm_unroll_H64_X32_T8_sp90",
        "torch_hlstm_pergate_H64_X32_T8_sp97",
        "hlstm3_scan_X16_H32_W48_T7_dead",
    ] {
        let data = fixture(name).join("test_data_set_0").display().to_string();
        let m = model(name);
        for level in [None, Some("-O0")] {
            let mut args = vec!["run", m.as_str(), "--test-data", data.as_str()];
            args.extend(level);
            let o = hlstmc(&args);
            ok(&o);
            let out = stdout(&o);
            assert!(out.contains(": ok"), "{name} {level:?}: {out}");
            assert!(!out.contains("MISMATCH"), "{name} {level:?}: {out}");
        }
    }
}

#[test]
fn inspect_optimized_applies_the_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = noop_model(dir.path());
    let json = |extra: &[&str]| {
        let mut args = vec!["inspect", "--json", m.as_str()];
        args.extend(extra);
        let o = hlstmc(&args);
        ok(&o);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        v
    };
    let imported = json(&[]);
    let optimized = json(&["--optimized"]);
    let o0 = json(&["--optimized", "-O0"]);
    assert_eq!(imported, o0, "-O0 leaves the graph as imported");
    assert_ne!(
        imported["ops"], optimized["ops"],
        "the pipeline changes the ops"
    );
    assert_eq!(imported["outputs"], optimized["outputs"]);
}

const SMALL: &str = "graph (%x: f32[2,3]) -> (y = %y, z = %z) {
  %w = const f32[3,2] [1.0, 0.5, -1.0, 2.0, 0.25, 0.0]
  %y = matmul(%x, %w) : f32[2,2]
  %z = tanh(%x) : f32[2,3]
}
";

#[test]
fn same_numbers_catches_a_changed_constant() {
    let g = parse(SMALL).expect("parses");
    same_numbers(&g, &g.clone(), 0.0, 0.0).expect("a graph agrees with itself");
    let changed = parse(&SMALL.replace("2.0, 0.25", "2.0, 0.5")).expect("parses");
    let e = same_numbers(&g, &changed, 1e-3, 1e-4).expect_err("a changed weight is caught");
    assert!(e.contains("output 'y'"), "{e}");
    // A changed shape is named too, and a candidate that cannot run is an error.
    let reshaped = parse(&SMALL.replace("%z = tanh(%x) : f32[2,3]", "%z = tanh(%y) : f32[2,2]"))
        .expect("parses");
    let e = same_numbers(&g, &reshaped, 1e-3, 1e-4).expect_err("a changed shape is caught");
    assert!(e.contains("output 'z'"), "{e}");
    let broken =
        parse(&SMALL.replace("%w = const f32[3,2]", "%w = const f32[2,3]")).expect("parses");
    let e = same_numbers(&g, &broken, 1e-3, 1e-4).expect_err("a graph that fails to run");
    assert!(e.contains("fails to run"), "{e}");
}

#[test]
fn dump_egraph_writes_each_saturation_run_as_graphviz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8").to_string();
    let o = hlstmc(&[
        "opt",
        &model("lstm_std_X16_H24_T5_batch3"),
        "--dump-dir",
        &d,
        "--dump-egraph",
    ]);
    ok(&o);
    let files = all_files(dir.path());
    let dots: Vec<&String> = files
        .iter()
        .filter(|f| f.ends_with(".egraph.dot"))
        .collect();
    // One run for the graph and one for the LSTM's body.
    assert!(dots.len() >= 2, "e-graph dumps: {files:?}");
    for f in &dots {
        let text = std::fs::read_to_string(dir.path().join(f)).expect("readable");
        assert!(text.contains("digraph"), "{f} is not Graphviz text");
        assert!(f.contains("-saturate."), "{f} is not named after its pass");
    }
    let has_dot = std::process::Command::new("dot").arg("-V").output().is_ok();
    if has_dot {
        for f in &dots {
            let svg = f.replace(".dot", ".svg");
            assert!(
                files.contains(&svg),
                "{svg} missing although `dot` is installed"
            );
        }
    } else {
        assert!(
            stderr(&o).contains("not installed"),
            "the missing `dot` is not reported:\n{}",
            stderr(&o)
        );
        println!("`dot` is not installed here: only the .dot files were checked");
    }
    // Without the flag, no e-graph is written.
    let plain = tempfile::tempdir().expect("tempdir");
    let p = plain.path().to_str().expect("utf-8").to_string();
    ok(&hlstmc(&[
        "opt",
        &model("lstm_std_X16_H24_T5_batch3"),
        "--dump-dir",
        &p,
    ]));
    assert!(!all_files(plain.path()).iter().any(|f| f.contains("egraph")));
}

fn all_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("the dump folder exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
