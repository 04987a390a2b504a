//! Bad input gets an error naming the problem (and the node and op where there is one), a
//! non-zero exit, no panic and no partial output.

mod common;
use common::*;

fn fails_with(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stdout:\n{}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks '{n}':\n{err}");
    }
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/lstm_std_H64_X32_T8/model.onnx"
    ))
    .expect("fixture");
    let p = dir.path().join("cut.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["cut.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn not_onnx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("notes.onnx");
    std::fs::write(&p, "this is a text file, not a protobuf\n").expect("write");
    fails_with(
        &hlstmc(&["run", path_str(&p)]),
        &["notes.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn missing_file() {
    fails_with(
        &hlstmc(&["inspect", "/nonexistent/model.onnx"]),
        &["/nonexistent/model.onnx"],
    );
}

/// A file that cannot be read is named once, and the system's reason said once, by every
/// command that reads a model or an input (it was `error: x.onnx: cannot read x.onnx: No such
/// file or directory (os error 2): No such file or directory (os error 2)`).
#[test]
fn a_missing_file_is_named_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("x.onnx");
    let m = path_str(&missing);
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hlstm_sp97/model.onnx"
    );
    let npy = dir.path().join("x.npy");
    let input = format!("X={}", path_str(&npy));
    let npz = dir.path().join("in.npz");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", m], m),
        (vec!["inspect", m], m),
        (vec!["opt", m], m),
        (vec!["print-ir", m], m),
        (vec!["bench", m], m),
        (vec!["compile", m, "-o", path_str(dir.path())], m),
        (vec!["run", model, "-i", &input], path_str(&npy)),
        (vec!["run", model, "-i", path_str(&npz)], path_str(&npz)),
    ];
    for (args, file) in cases {
        let o = hlstmc(&args);
        fails_with(&o, &[file, "No such file or directory"]);
        let err = stderr(&o);
        assert_eq!(
            err.matches(file).count(),
            1,
            "{args:?}: the file named twice:\n{err}"
        );
        assert_eq!(
            err.matches("No such file").count(),
            1,
            "{args:?}: the reason given twice:\n{err}"
        );
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn unknown_ops_are_all_listed_with_their_first_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(
        17,
        vec![value_info("X", 1, &[2, 3])],
        vec![value_info("Z", 1, &[2, 3])],
        vec![],
        vec![
            node("FancyOp", "first_fancy", &["X"], &["A"]),
            node("FancyOp", "second_fancy", &["A"], &["B"]),
            node("OtherOp", "other", &["B"], &["Z"]),
        ],
    );
    let p = dir.path().join("m.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &[
            "unsupported op types",
            "FancyOp (first used by node 'first_fancy')",
            "OtherOp (first used by node 'other')",
        ],
    );
    assert!(!stderr(&hlstmc(&["inspect", path_str(&p)])).contains("second_fancy"));
}

#[test]
fn missing_initializer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = linear_model();
    m.graph
        .as_mut()
        .expect("graph")
        .initializer
        .retain(|t| t.name != "W");
    let p = dir.path().join("m.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["node 'mm' (MatMul)", "input 'W' is not defined"],
    );
}

#[test]
fn shape_mismatch_in_model_names_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = linear_model();
    let g = m.graph.as_mut().expect("graph");
    g.initializer[0] = f32_tensor("W", &[5, 4], &[0.0; 20]);
    let p = dir.path().join("m.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["node 'mm' (MatMul)", "inner dimensions differ"],
    );
}

#[test]
fn wrong_input_name_lists_the_real_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.onnx");
    save(&linear_model(), &p);
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[2, 3], &[0.0; 6]);
    let arg = format!("Q={}", x.display());
    fails_with(
        &hlstmc(&["run", path_str(&p), "-i", &arg]),
        &["no input named 'Q'", "inputs are: X"],
    );
}

#[test]
fn missing_input_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.onnx");
    save(&linear_model(), &p);
    fails_with(&hlstmc(&["run", path_str(&p)]), &["missing inputs: X"]);
}

#[test]
fn wrong_input_shape_and_no_partial_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.onnx");
    save(&linear_model(), &p);
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[3, 2], &[0.0; 6]);
    let out = dir.path().join("out");
    let arg = format!("X={}", x.display());
    fails_with(
        &hlstmc(&["run", path_str(&p), "-i", &arg, "-o", path_str(&out)]),
        &["input 'X' expects f32[2,3]", "got f32[3,2]"],
    );
    assert!(
        !out.join("Y.npy").exists(),
        "no output may be written on error"
    );
}

#[test]
fn run_writes_outputs_as_npy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.onnx");
    save(&linear_model(), &p);
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
    let out = dir.path().join("out");
    let arg = format!("X={}", x.display());
    let o = hlstmc(&["run", path_str(&p), "-i", &arg, "-o", path_str(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = std::fs::File::open(out.join("Y.npy")).expect("Y.npy written");
    let y: Vec<f32> = npyz::NpyFile::new(f).expect("npy").into_vec().expect("f32");
    // Row 0 = W[0] + B; row 1 = W[1] + 2 W[2] + B, with W[i][j] = (4i + j) / 2 - 3.
    let w = |i: usize, j: usize| (4 * i + j) as f32 * 0.5 - 3.0;
    let b = [1.0, 2.0, 3.0, 4.0];
    let want: Vec<f32> = (0..2)
        .flat_map(|r| {
            (0..4).map(move |j| {
                if r == 0 {
                    w(0, j) + b[j]
                } else {
                    w(1, j) + 2.0 * w(2, j) + b[j]
                }
            })
        })
        .collect();
    assert_eq!(y, want);
}

fn external_model(
    dir: &std::path::Path,
    location: &str,
    offset: Option<u64>,
    length: Option<u64>,
) -> std::path::PathBuf {
    let mut m = linear_model();
    let g = m.graph.as_mut().expect("graph");
    let w = &mut g.initializer[0];
    w.raw_data.clear();
    w.data_location = protobuf::EnumOrUnknown::from_i32(1);
    w.external_data = external(location, offset, length);
    let p = dir.join("m.onnx");
    save(&m, &p);
    p
}

#[test]
fn external_data_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 * 0.5 - 3.0).to_le_bytes())
        .collect();
    let mut blob = vec![0u8; 16];
    blob.extend(&w);
    std::fs::write(dir.path().join("weights.bin"), &blob).expect("write");
    let p = external_model(dir.path(), "weights.bin", Some(16), Some(48));
    let o = hlstmc(&["inspect", path_str(&p), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"params_nonzero\""));
}

#[test]
fn external_data_outside_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = dir.path().join("model");
    std::fs::create_dir(&inner).expect("mkdir");
    std::fs::write(dir.path().join("secret.bin"), [0u8; 48]).expect("write");
    let p = external_model(&inner, "../secret.bin", None, None);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["initializer 'W'", "leaves the model's folder"],
    );
    let p = external_model(&inner, "/etc/passwd", None, None);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["leaves the model's folder"],
    );
}

#[test]
fn external_data_beyond_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.bin"), [0u8; 40]).expect("write");
    let p = external_model(dir.path(), "w.bin", Some(0), Some(48));
    fails_with(&hlstmc(&["inspect", path_str(&p)]), &["beyond the end"]);
    let p = external_model(dir.path(), "w.bin", Some(u64::MAX - 4), Some(48));
    fails_with(&hlstmc(&["inspect", path_str(&p)]), &["beyond the end"]);
}

#[test]
fn absurd_constant_of_shape_fails_before_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut shape = TensorProtoBuilder::i64("S", &[3], &[1 << 20, 1 << 20, 1 << 20]);
    shape.name = "S".into();
    let m = model(
        17,
        vec![value_info("X", 1, &[1])],
        vec![value_info("Z", 1, &[])],
        vec![shape],
        vec![node("ConstantOfShape", "huge", &["S"], &["Z"])],
    );
    let p = dir.path().join("m.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["node 'huge' (ConstantOfShape)", "over the limit"],
    );
}

struct TensorProtoBuilder;
impl TensorProtoBuilder {
    fn i64(name: &str, dims: &[i64], data: &[i64]) -> onnx_protobuf::TensorProto {
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = 7;
        t.int64_data = data.to_vec();
        t
    }
}

#[test]
fn unsupported_opset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = linear_model();
    m.opset_import[0].version = 3;
    let p = dir.path().join("m.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["opset 3 is not supported"],
    );
}

/// A full standard output (`> /dev/full`) is an error with a message and exit status 1, not a
/// panic (issue 16, item 6).
#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: /dev/full is not there");
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root
        .join("examples/hlstm_sp97/model.onnx")
        .display()
        .to_string();
    let data = root
        .join("examples/hlstm_sp97/test_data_set_0")
        .display()
        .to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["passes"],
        vec!["inspect", &model, "--json"],
        vec!["print-ir", &model],
        vec!["opt", &model],
        vec!["run", &model, "--test-data", &data],
        vec!["bench", &model, "--runs", "2", "--warmup", "0"],
    ];
    for args in cases {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
            .args(&args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// External data is found for a bare relative model path (`hlstmc inspect m.onnx` from the
/// model's folder) as for `./m.onnx` (issue 16, item 9).
#[test]
fn external_data_beside_a_bare_model_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 * 0.5 - 3.0).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("weights.bin"), &w).expect("write");
    external_model(dir.path(), "weights.bin", None, None);
    for path in ["m.onnx", "./m.onnx"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
            .args(["inspect", path, "--json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{path}: {}", stderr(&o));
    }
}

/// Models that ONNX Runtime and onnx.checker reject are refused with the reason, where hlstmc
/// used to pick one reading silently (issue 16, item 9): two initializers of one name (ORT
/// takes the first, hlstmc took the last), a value assigned by two nodes.
#[test]
fn invalid_models_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = linear_model();
    let g = m.graph.as_mut().expect("graph");
    let again = g.initializer[0].clone();
    g.initializer.push(again);
    let p = dir.path().join("dup_init.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["two initializers are named 'W'"],
    );

    let mut m = linear_model();
    let g = m.graph.as_mut().expect("graph");
    let first = g.node[0].clone();
    let mut second = first.clone();
    second.name = "again".into();
    g.node.push(second);
    let p = dir.path().join("dup_out.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["node 'again'", "is already defined"],
    );

    // A graph input listed twice (onnx.checker's SSA rule; ONNX Runtime refuses it too).
    let mut m = linear_model();
    let g = m.graph.as_mut().expect("graph");
    let again = g.input[0].clone();
    g.input.push(again);
    let p = dir.path().join("dup_input.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &[
            "graph input 'X' is listed twice",
            "single static assignment",
        ],
    );
}

/// A Scan direction other than 0 or 1 used to be read as reverse (issue 16, item 9).
#[test]
fn a_scan_direction_out_of_range_is_refused() {
    use protobuf::Message;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes =
        std::fs::read(root.join("tests/fixtures/models/hlstm_scan_H64_X32_T8/model.onnx")).unwrap();
    let mut m = onnx_protobuf::ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = m.graph.as_mut().expect("graph");
    let scan = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "Scan")
        .expect("a Scan");
    scan.attribute.retain(|a| a.name != "scan_input_directions");
    let mut dirs = onnx_protobuf::AttributeProto::new();
    dirs.name = "scan_input_directions".into();
    dirs.ints = vec![7];
    dirs.type_ = protobuf::EnumOrUnknown::from_i32(7);
    scan.attribute.push(dirs);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("scan7.onnx");
    save(&m, &p);
    fails_with(
        &hlstmc(&["inspect", path_str(&p)]),
        &["Scan", "scan_input_directions holds 7"],
    );
}
