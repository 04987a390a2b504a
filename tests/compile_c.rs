//! `hlstmc compile`: the generated library called from C (examples/c/run_model.c), linked both
//! statically and dynamically, against the fixtures' reference outputs, for whole sequences and
//! (where the model streams) one step at a time; its exported symbols, its dynamic dependencies,
//! its error codes, and no allocation in a call (the driver counts malloc). Skipped (with a
//! message) where `cc` is absent.

use hlstm_frontends::onnx::tensor::read_pb;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn hlstmc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn f32s(t: &hlstm_ir::Tensor) -> Vec<f32> {
    match t.cast(hlstm_ir::DType::F32) {
        hlstm_ir::Tensor::F32(a) => a.iter().copied().collect(),
        _ => unreachable!("cast to f32"),
    }
}

/// Writes a test-data folder's inputs as raw little-endian f32 files in `dir`.
fn raw_inputs(data: &Path, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut ins = Vec::new();
    for k in 0.. {
        let p = data.join(format!("input_{k}.pb"));
        if !p.exists() {
            break;
        }
        let raw: Vec<u8> = f32s(&read_pb(&p)?.1)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f = dir.join(format!("in_{k}.f32"));
        std::fs::write(&f, raw).map_err(|e| e.to_string())?;
        ins.push(f);
    }
    Ok(ins)
}

/// A test-data folder's reference outputs.
fn reference_outputs(data: &Path) -> Result<Vec<Vec<f32>>, String> {
    let mut wants = Vec::new();
    for k in 0.. {
        let p = data.join(format!("output_{k}.pb"));
        if !p.exists() {
            break;
        }
        wants.push(f32s(&read_pb(&p)?.1));
    }
    Ok(wants)
}

/// Raw f32 output files against the references, within 1e-4 + 1e-3 |want|.
fn compare(outs: &[PathBuf], wants: &[Vec<f32>], what: &str) -> Result<(), String> {
    for (k, (f, want)) in outs.iter().zip(wants).enumerate() {
        let got: Vec<f32> = std::fs::read(f)
            .map_err(|e| format!("{what}: {e}"))?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if got.len() != want.len() {
            return Err(format!(
                "{what} output {k}: {} floats, want {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if (g - w).abs() > 1e-4 + 1e-3 * w.abs() {
                return Err(format!("{what} output {k}[{i}]: got {g}, want {w}"));
            }
        }
    }
    Ok(())
}

fn cc(dir: &Path, name: &str, extra: &[&str], exe: &str) {
    let o = Command::new("cc")
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-DMODEL={name}"))
        .arg("-I")
        .arg(dir)
        .arg(root().join("examples/c/run_model.c"))
        .args(extra)
        .args(["-lm", "-o"])
        .arg(dir.join(exe))
        .output()
        .expect("cc runs");
    assert!(o.status.success(), "cc failed:\n{}", text(&o));
}

fn check_fixture(fixture: &str, flags: &[&str]) -> bool {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return false;
    }
    let name = "hm";
    let model = root().join("tests/fixtures/models").join(fixture);
    let data = model.join("test_data_set_0");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut args = vec![
        "compile".to_string(),
        model.join("model.onnx").display().to_string(),
        "-o".into(),
        dir.display().to_string(),
        "--name".into(),
        name.into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hlstmc(&refs);
    assert!(
        o.status.success(),
        "{fixture}: compile failed:\n{}",
        text(&o)
    );
    for f in ["hm.o", "libhm.so", "libhm.a", "hm.h"] {
        assert!(dir.join(f).is_file(), "{fixture}: {f} missing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Exports: only hm_-prefixed symbols in the object and the shared library.
    if have("nm") {
        for (file, dynamic) in [("hm.o", false), ("libhm.so", true)] {
            let mut c = Command::new("nm");
            c.args(["-g", "--defined-only"]);
            if dynamic {
                c.arg("-D");
            }
            let o = c.arg(dir.join(file)).output().expect("nm runs");
            assert!(o.status.success(), "nm {file}: {}", text(&o));
            let syms: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
                .filter(|s| {
                    !matches!(
                        s.as_str(),
                        "_init" | "_fini" | "_edata" | "_end" | "__bss_start"
                    )
                })
                .collect();
            assert!(
                syms.iter().any(|s| s == "hm_run"),
                "{file}: no hm_run in {syms:?}"
            );
            for s in &syms {
                assert!(s.starts_with("hm_"), "{file} exports {s}, not prefixed hm_");
            }
        }
    } else {
        eprintln!("nm not found: export check skipped");
    }
    // Dynamic dependencies: libc and libm at most.
    if have("readelf") {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(dir.join("libhm.so"))
            .output()
            .expect("readelf runs");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains("(NEEDED)") {
                assert!(
                    l.contains("libc.so") || l.contains("libm.so"),
                    "libhm.so needs more than libc/libm: {l}"
                );
            }
        }
    } else {
        eprintln!("readelf not found: dependency check skipped");
    }

    let ins = raw_inputs(&data, dir).unwrap();
    let wants = reference_outputs(&data).unwrap();
    assert!(
        !ins.is_empty() && !wants.is_empty(),
        "{fixture}: no test data"
    );
    cc(
        dir,
        name,
        &[&dir.join("libhm.a").display().to_string()],
        "run_static",
    );
    cc(
        dir,
        name,
        &[
            "-L",
            &dir.display().to_string(),
            "-lhm",
            &format!("-Wl,-rpath,{}", dir.display()),
        ],
        "run_shared",
    );
    if have("readelf") {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(dir.join("run_shared"))
            .output()
            .expect("readelf runs");
        let d = String::from_utf8_lossy(&o.stdout);
        assert!(
            d.contains("libhm.so"),
            "run_shared does not load libhm.so:\n{d}"
        );
    }
    let streams = std::fs::read_to_string(dir.join("hm.h"))
        .unwrap()
        .contains("NAME_step: supported".replace("NAME", "hm").as_str());
    for exe in ["run_static", "run_shared"] {
        let o = Command::new(dir.join(exe))
            .arg("--error-test")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{fixture} {exe} --error-test:\n{}",
            text(&o)
        );
        let modes: &[&[&str]] = if streams {
            &[&[], &["--stream"]]
        } else {
            &[&[]]
        };
        for mode in modes {
            let outs: Vec<PathBuf> = (0..wants.len())
                .map(|k| dir.join(format!("{exe}_out_{k}.f32")))
                .collect();
            let o = Command::new(dir.join(exe))
                .args(*mode)
                .args(&ins)
                .args(&outs)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{fixture} {exe} {mode:?}:\n{}",
                text(&o)
            );
            compare(&outs, &wants, &format!("{fixture} {exe} {mode:?}")).unwrap();
        }
    }
    streams
}

#[test]
fn hlstm_scan_sp97() {
    let streamed = check_fixture("hlstm_scan_H64_X32_T8_sp97", &[]);
    assert!(streamed || !have("cc"), "a forward H-LSTM streams");
}

#[test]
fn lstm_std_batch3() {
    check_fixture("lstm_std_X16_H24_T5_batch3", &[]);
}

#[test]
fn torch_hlstm_pergate_sp90() {
    check_fixture("torch_hlstm_pergate_H64_X32_T8_sp90", &[]);
}

#[test]
fn hlstm_scan_sp97_v2_csr() {
    check_fixture(
        "hlstm_scan_H64_X32_T8_sp97",
        &["--cpu", "x86-64-v2", "--sparse-strategy", "sparse-csr"],
    );
}

/// A bidirectional model cannot stream: `NAME_step` says so (checked by --error-test), and the
/// whole-sequence call still matches the reference.
#[test]
fn bidirectional_does_not_stream() {
    let fixture = "../extra/torch_lstm_2layer_bidir_B2";
    let streamed = check_fixture(fixture, &[]);
    assert!(!streamed);
}

#[test]
fn emit_lower_levels() {
    let m = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let o = hlstmc(&[
        "compile",
        &m.display().to_string(),
        "-o",
        &tmp.path().display().to_string(),
        "--name",
        "hm",
        "--emit",
        "kir,clif,asm",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let read = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap();
    assert!(read("hm.kir").contains("loop t in 0..steps"));
    assert!(read("hm.clif").contains("function "));
    let asm = read("hm.s");
    assert!(asm.contains("ret") && asm.contains("vfmadd"), "{asm}");
    // Only what was asked for.
    assert!(!tmp.path().join("hm.o").exists());
}

#[test]
fn missing_tool_is_named_and_nothing_is_written() {
    let m = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .env("CC", "/nonexistent/hlstmc-test-cc")
        .args(["compile", &m.display().to_string(), "-o"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("hlstmc-test-cc"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bad_name_is_refused() {
    let m = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let o = hlstmc(&["compile", &m.display().to_string(), "--name", "a-b"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a C identifier"), "{}", text(&o));
}

/// examples/rust/run_model.rs, built with rustc against libmodel.a, on a whole sequence and one
/// step at a time, against the reference outputs.
#[test]
fn rust_example_links_the_library() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !have(&rustc) {
        eprintln!("skipped: `{rustc}` cannot be run, needed to build the Rust example");
        return;
    }
    let fixture = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = hlstmc(&[
        "compile",
        &fixture.join("model.onnx").display().to_string(),
        "-o",
        &dir.display().to_string(),
        "--name",
        "model",
        "--emit",
        "a,header",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(&rustc)
        .args(["--edition", "2021", "-O"])
        .arg(root().join("examples/rust/run_model.rs"))
        .arg("-L")
        .arg(dir)
        .args(["-l", "static=model", "-o"])
        .arg(dir.join("run_model"))
        .output()
        .expect("rustc runs");
    assert!(o.status.success(), "rustc failed:\n{}", text(&o));
    let data = fixture.join("test_data_set_0");
    let ins = raw_inputs(&data, dir).unwrap();
    let wants = reference_outputs(&data).unwrap();
    for mode in [None, Some("--stream")] {
        let outs: Vec<PathBuf> = (0..2).map(|k| dir.join(format!("out_{k}.f32"))).collect();
        let o = Command::new(dir.join("run_model"))
            .args(mode)
            .args(&ins)
            .args(&outs)
            .output()
            .unwrap();
        assert!(o.status.success(), "{mode:?}: {}", text(&o));
        compare(&outs, &wants, &format!("{mode:?}")).unwrap();
    }
}

/// Models whose sequence lengths are a run-time input: not lowered yet (tests/jit.rs checks
/// their error).
const RUNTIME_LENGTHS: &[&str] = &[
    "onnx_lstm_reverse_seqlens",
    "onnx_lstm_seqlens_short_bidir_peep",
    "test_lstm_with_peepholes",
];

fn fixture_dirs(folder: &str, filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures").join(folder))
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| filter(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// Compiles one model to libhm.a, links the C driver, runs a whole sequence (and a stream when
/// the model streams) on its test data, and compares with the reference outputs.
fn through_c(dir: &Path, work: &Path) -> Result<(), String> {
    let out = work.join(dir.file_name().unwrap());
    std::fs::create_dir_all(&out).unwrap();
    let o = hlstmc(&[
        "compile",
        &dir.join("model.onnx").display().to_string(),
        "-o",
        &out.display().to_string(),
        "--name",
        "hm",
        "--emit",
        "a,header",
    ]);
    if !o.status.success() {
        return Err(format!("compile: {}", text(&o)));
    }
    let o = Command::new("cc")
        .args(["-std=c11", "-O1", "-DMODEL=hm", "-I"])
        .arg(&out)
        .arg(root().join("examples/c/run_model.c"))
        .arg(out.join("libhm.a"))
        .args(["-lm", "-o"])
        .arg(out.join("run"))
        .output()
        .expect("cc runs");
    if !o.status.success() {
        return Err(format!("cc: {}", text(&o)));
    }
    let data = dir.join("test_data_set_0");
    let ins = raw_inputs(&data, &out)?;
    let wants = reference_outputs(&data)?;
    let streams = std::fs::read_to_string(out.join("hm.h"))
        .unwrap()
        .contains("hm_step: supported");
    let modes: &[&[&str]] = if streams {
        &[&["--error-test"], &[], &["--stream"]]
    } else {
        &[&["--error-test"], &[]]
    };
    for mode in modes {
        let outs: Vec<PathBuf> = (0..wants.len())
            .map(|k| out.join(format!("out_{k}.f32")))
            .collect();
        let mut c = Command::new(out.join("run"));
        c.args(*mode);
        if mode.is_empty() || mode[0] == "--stream" {
            c.args(&ins).args(&outs);
        }
        let o = c.output().unwrap();
        if !o.status.success() {
            return Err(format!("run {mode:?}: {}", text(&o)));
        }
        if mode.first() == Some(&"--error-test") {
            continue;
        }
        compare(&outs, &wants, &format!("{mode:?}"))?;
    }
    Ok(())
}

/// Every fixture model and every recurrent ONNX node test (their weights are run-time inputs)
/// through the library called from C, whole and streamed, with the error checks of the driver.
#[test]
fn every_fixture_and_recurrent_node_test_through_c() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    let recurrent = |n: &str| {
        [
            "test_lstm",
            "test_gru",
            "test_simple_rnn",
            "test_rnn",
            "test_scan",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    };
    let mut all = fixture_dirs("models", |_| true);
    all.extend(fixture_dirs("extra", |_| true));
    let nodes = fixture_dirs("onnx-node", recurrent);
    assert!(all.len() >= 34 && nodes.len() >= 20);
    all.extend(nodes);
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut ran = 0;
    for d in &all {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        match through_c(d, tmp.path()) {
            Ok(()) => ran += 1,
            Err(e) if RUNTIME_LENGTHS.contains(&name.as_str()) => {
                assert!(e.contains("sequence lengths"), "{name}: {e}");
                println!("{name}: run-time sequence lengths are not lowered yet (checked error)");
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{ran} models through the C library");
}

/// The optimizer's pass-dump flags work on `compile` too.
#[test]
fn pass_dumps_work_on_compile() {
    let m = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let dumps = tmp.path().join("dumps");
    let o = hlstmc(&[
        "compile",
        &m.display().to_string(),
        "-o",
        &tmp.path().display().to_string(),
        "--emit",
        "kir",
        "--print-after",
        "saturate",
        "--dump-dir",
        &dumps.display().to_string(),
        "--time-passes",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("saturate"), "{t}");
    let n = std::fs::read_dir(&dumps).unwrap().count();
    assert!(n >= 5, "{n} dumps");
}

/// A model exported with an open batch (the shipped digits H-LSTM, X [8, N, 8]) compiles with
/// `--shape`, and the library classifies the 359 test images like ONNX Runtime, whole and
/// streamed (its classifier reads the last step); without `--shape` the error names the flag.
#[test]
fn open_dims_are_fixed_with_shape() {
    let model = root().join("examples/digits-hlstm.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = hlstmc(&[
        "compile",
        &model.display().to_string(),
        "-o",
        &dir.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--shape X="), "{}", text(&o));
    if !have("cc") {
        eprintln!("skipped the C part: no C compiler (`cc` cannot be run)");
        return;
    }
    let o = hlstmc(&[
        "compile",
        &model.display().to_string(),
        "-o",
        &dir.display().to_string(),
        "--name",
        "hm",
        "--emit",
        "a,header",
        "--shape",
        "X=8,359,8",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    cc(
        dir,
        "hm",
        &[&dir.join("libhm.a").display().to_string()],
        "run",
    );
    let data = root().join("examples/digits-hlstm/test_data_set_0");
    let ins = raw_inputs(&data, dir).unwrap();
    let wants = reference_outputs(&data).unwrap();
    for mode in [None, Some("--stream")] {
        let outs = vec![dir.join("logits.f32")];
        let o = Command::new(dir.join("run"))
            .args(mode)
            .args(&ins)
            .args(&outs)
            .output()
            .unwrap();
        assert!(o.status.success(), "{mode:?}: {}", text(&o));
        compare(&outs, &wants, &format!("digits {mode:?}")).unwrap();
    }
}
