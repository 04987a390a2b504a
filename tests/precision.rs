//! float16, bfloat16 and float64 models (docs/precision.md): the fixtures of
//! tests/fixtures/precision (tools/gen_precision_fixtures.py, ONNX Runtime's outputs) through
//! every engine with the tolerances of their precision, `run -o` in the declared types, inspect,
//! the C library's f32 ABI, and the typed-field encodings of the weights.

mod common;

use common::{hlstmc, model, node, stderr, stdout, value_info};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/precision")
}

fn dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/precision")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    v
}

fn run_test_data(dir: &Path, flags: &[&str]) -> (bool, String) {
    let m = dir.join("model.onnx").display().to_string();
    let d = dir.join("test_data_set_0").display().to_string();
    let mut args = vec!["run", m.as_str(), "--test-data", d.as_str()];
    args.extend(flags);
    let o = hlstmc(&args);
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// Every fixture, every type, through the interpreter at -O0, the interpreter, the fast
/// interpreter, the default engine (the JIT) and the JIT on 2 threads, at the default
/// tolerances of its precision.
#[test]
fn every_precision_fixture_through_every_engine() {
    let all = dirs();
    for t in ["f16", "bf16", "f64"] {
        let n = all
            .iter()
            .filter(|d| d.to_string_lossy().contains(&format!("_{t}_")))
            .count();
        assert!(n >= 2, "{n} {t} fixtures");
    }
    let runs: [&[&str]; 5] = [
        &["-O0", "--engine", "interp"],
        &["--engine", "interp"],
        &["--engine", "fast-interp"],
        &[],
        &["--engine", "jit", "--threads", "2"],
    ];
    let mut failures = Vec::new();
    for d in &all {
        for flags in runs {
            let (ok, text) = run_test_data(d, flags);
            if !ok {
                failures.push(format!("{} {flags:?}:\n{text}", d.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The tolerances are those of the precision: a float16 model that passes at its own fails at
/// a tolerance tighter than float16 can hold, so the check is not vacuous.
#[test]
fn float16_outputs_are_rounded_and_checked_at_float16_precision() {
    let d = fixtures().join("hlstm_scan_f16_native");
    let (ok, text) = run_test_data(&d, &[]);
    assert!(ok, "{text}");
    let (ok, text) = run_test_data(&d, &["--rtol", "0", "--atol", "1e-7"]);
    assert!(
        !ok,
        "an f16 model matched ONNX Runtime's native f16 run to 1e-7:\n{text}"
    );
}

/// `run -o` writes each output in its declared type: `<f2` for float16, `<f8` for float64,
/// `<u2` bit patterns for bfloat16; `-i` takes the same types.
#[test]
fn outputs_are_written_in_their_declared_type() {
    for (fixture, descr) in [
        ("lstm_f16_cast", "<f2"),
        ("lstm_f64_cast", "<f8"),
        ("lstm_bf16_cast", "<u2"),
    ] {
        let d = fixtures().join(fixture);
        let tmp = tempfile::tempdir().unwrap();
        let m = d.join("model.onnx").display().to_string();
        let input = format!("X={}", d.join("test_data_set_0/input_0.pb").display());
        let o = hlstmc(&[
            "run",
            &m,
            "-i",
            &input,
            "-o",
            &tmp.path().display().to_string(),
        ]);
        assert!(o.status.success(), "{fixture}: {}", stderr(&o));
        let y = std::fs::read(tmp.path().join("Y_h.npy")).unwrap();
        let header = String::from_utf8_lossy(&y[..y.len().min(128)]).into_owned();
        assert!(header.contains(descr), "{fixture}: {header}");
        // Read back through `-i` as the input of nothing: the file parses as that type.
        let printed = stdout(&hlstmc(&["run", &m, "-i", &input]));
        let t = &fixture[5..fixture.len() - 5];
        assert!(
            printed.contains(&format!("Y_h: {t}[")),
            "{fixture}: {printed}"
        );
    }
}

/// A float16 .npy input (`<f2`) is taken, and gives the outputs the .pb input gives.
#[test]
fn float16_npy_input_matches_the_pb_input() {
    let d = fixtures().join("hlstm_scan_f16_native");
    let tmp = tempfile::tempdir().unwrap();
    let (_, x) = hlstm_frontends::onnx::tensor::read_pb(&d.join("test_data_set_0/input_0.pb"))
        .expect("input");
    let vals: Vec<half::f16> = x
        .as_f32()
        .unwrap()
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let shape: Vec<u64> = x.shape().iter().map(|&s| s as u64).collect();
    let npy = tmp.path().join("x.npy");
    {
        use npyz::WriterBuilder;
        let f = std::fs::File::create(&npy).unwrap();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend(vals).unwrap();
        w.finish().unwrap();
    }
    let m = d.join("model.onnx").display().to_string();
    let a = hlstmc(&["run", &m, "-i", &format!("X={}", npy.display())]);
    let b = hlstmc(&[
        "run",
        &m,
        "-i",
        &format!("X={}", d.join("test_data_set_0/input_0.pb").display()),
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

/// inspect shows each weight's stored type and the declared input and output types.
#[test]
fn inspect_shows_stored_types() {
    let m = fixtures().join("lstm_f16_cast/model.onnx");
    let o = hlstmc(&["inspect", &m.display().to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["inputs"][0]["dtype"], "f16");
    assert_eq!(v["outputs"][0]["dtype"], "f16");
    let weights = v["weights"].as_array().unwrap();
    let w_t = weights
        .iter()
        .find(|w| w["name"].as_str().unwrap().ends_with("W_t"))
        .expect("the LSTM's input weight");
    assert_eq!(w_t["dtype"], "f16", "{weights:?}");
    let text = stdout(&hlstmc(&["inspect", &m.display().to_string()]));
    assert!(text.contains("X: f16[5,3,16]  (computed in f32)"), "{text}");
    // An f32 model's weights are f32.
    let f32m = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/lstm_std_X16_H24_T5_batch3/model.onnx");
    let o = hlstmc(&["inspect", &f32m.display().to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        v["weights"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["dtype"] == "f32")
    );
    assert_eq!(v["inputs"][0]["dtype"], "f32");
}

/// A bfloat16 input given as uint16 bit patterns is refused for an input that is not bfloat16.
#[test]
fn uint16_patterns_only_for_bfloat16_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    {
        use npyz::WriterBuilder;
        let f = std::fs::File::create(&npy).unwrap();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[5, 3, 16])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend(std::iter::repeat_n(0x3f80u16, 240)).unwrap();
        w.finish().unwrap();
    }
    let x = format!("X={}", npy.display());
    let f16 = fixtures()
        .join("lstm_f16_cast/model.onnx")
        .display()
        .to_string();
    let o = hlstmc(&["run", &f16, "-i", &x]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bfloat16 bit patterns"),
        "{}",
        stderr(&o)
    );
    let bf16 = fixtures()
        .join("lstm_bf16_cast/model.onnx")
        .display()
        .to_string();
    let o = hlstmc(&["run", &bf16, "-i", &x]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Y = X · W with W stored as float16 in `int32_data` (16-bit patterns) or as float64 in
/// `double_data`, and a Cast of a constant to float16, which rounds.
#[test]
fn typed_fields_and_constant_casts() {
    use onnx_protobuf::TensorProto;
    let w = [1.0f32, -2.5, 0.333, 4.0, 1e-3, 65504.0];
    let mut f16 = TensorProto::new();
    f16.name = "W".into();
    f16.dims = vec![3, 2];
    f16.data_type = 10;
    f16.int32_data = w
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits() as i32)
        .collect();
    let mut f64t = TensorProto::new();
    f64t.name = "W".into();
    f64t.dims = vec![3, 2];
    f64t.data_type = 11;
    f64t.double_data = w.iter().map(|&v| v as f64).collect();
    let x = [1.0f32, 0.0, 0.0];
    for (t, want0) in [(f16, half::f16::from_f32(1.0).to_f32()), (f64t, 1.0)] {
        let code = t.data_type;
        let m = model(
            17,
            vec![value_info("X", 1, &[1, 3])],
            vec![value_info("Y", 1, &[1, 2])],
            vec![t],
            vec![node("MatMul", "mm", &["X", "W"], &["Y"])],
        );
        use protobuf::Message;
        let bytes = m.write_to_bytes().unwrap();
        let model = hlstmc::Model::from_bytes(&bytes, None).expect("imports");
        let want = if code == 10 { "f16" } else { "f64" };
        assert_eq!(model.stored_types().weight("W").name(), want);
        let r = model
            .into_runnable(&hlstmc::BuildOptions {
                engine: hlstmc::Engine::Interp,
                ..Default::default()
            })
            .unwrap();
        let y = r
            .run(&[hlstmc::Tensor::from_f32(&[1, 3], x.to_vec()).unwrap()])
            .unwrap();
        let y: Vec<f32> = y[0].as_f32().unwrap().iter().copied().collect();
        assert_eq!(y, vec![want0, -2.5]);
    }
    // Cast(to=FLOAT16) of a constant 0.1 rounds to the nearest float16.
    let mut c = common::f32_tensor("C", &[1], &[0.1]);
    c.name = "C".into();
    let mut cast = node("Cast", "cast", &["C"], &["C16"]);
    cast.attribute.push(common::int_attr("to", 10));
    let mut back = node("Cast", "back", &["C16"], &["C32"]);
    back.attribute.push(common::int_attr("to", 1));
    let m = model(
        17,
        vec![value_info("X", 1, &[1])],
        vec![value_info("Y", 1, &[1])],
        vec![c],
        vec![cast, back, node("Add", "add", &["X", "C32"], &["Y"])],
    );
    use protobuf::Message;
    let model = hlstmc::Model::from_bytes(&m.write_to_bytes().unwrap(), None).unwrap();
    let r = model
        .into_runnable(&hlstmc::BuildOptions {
            engine: hlstmc::Engine::Interp,
            ..Default::default()
        })
        .unwrap();
    let y = r
        .run(&[hlstmc::Tensor::from_f32(&[1], vec![0.0]).unwrap()])
        .unwrap();
    assert_eq!(
        y[0].as_f32().unwrap()[[0]],
        half::f16::from_f32(0.1).to_f32()
    );
    assert_ne!(half::f16::from_f32(0.1).to_f32(), 0.1);
}

/// The C library keeps the f32 ABI: the header says which tensors the model declares in another
/// type, and its unrounded f32 outputs match ONNX Runtime's within the type's tolerance.
#[test]
fn the_c_header_notes_the_f32_abi() {
    let d = fixtures().join("hlstm_scan_f16_cast");
    let tmp = tempfile::tempdir().unwrap();
    let o = hlstmc(&[
        "compile",
        &d.join("model.onnx").display().to_string(),
        "-o",
        &tmp.path().display().to_string(),
        "--name",
        "hm",
        "--emit",
        "header",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let h = std::fs::read_to_string(tmp.path().join("hm.h")).unwrap();
    assert!(
        h.contains("X (f16 in the model; float here, not rounded to f16)"),
        "{h}"
    );
}
