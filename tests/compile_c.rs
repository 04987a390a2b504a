//! `hlstmc compile`: the generated library called from C (tests/c/run_model.c), linked both
//! statically and dynamically, against the fixtures' reference outputs, for whole sequences and
//! (where the model streams) one step at a time; its exported symbols, its dynamic dependencies,
//! its error codes, and no allocation in a call (the driver counts malloc). Skipped (with a
//! message) where `cc` is absent.

mod common;

use common::fake_cuda::fake_driver;
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

/// `NAME=D0,D1,...` for each input of a test-data folder.
fn test_data_shapes(data: &Path) -> Result<Vec<String>, String> {
    let mut shapes = Vec::new();
    for k in 0.. {
        let p = data.join(format!("input_{k}.pb"));
        if !p.exists() {
            break;
        }
        let (name, t) = read_pb(&p)?;
        let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
        shapes.push(format!("{name}={}", dims.join(",")));
    }
    Ok(shapes)
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
    compare_within(outs, wants, what, F32_TOLERANCE)
}

/// (rtol, atol) of f32 results: f32 and float64 models (docs/precision.md).
const F32_TOLERANCE: (f32, f32) = (1e-3, 1e-4);

/// Raw f32 output files against the references, within atol + rtol |want| for `(rtol, atol)`.
fn compare_within(
    outs: &[PathBuf],
    wants: &[Vec<f32>],
    what: &str,
    (rtol, atol): (f32, f32),
) -> Result<(), String> {
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
            // A NaN matches only a NaN.
            let close = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
            if !close {
                return Err(format!(
                    "{what} output {k}[{i}]: got {g}, want {w} (tolerance {atol} + {rtol} |want|)"
                ));
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
        .arg(root().join("tests/c/run_model.c"))
        .args(extra)
        .args(["-lm", "-o"])
        .arg(dir.join(exe))
        .output()
        .expect("cc runs");
    assert!(o.status.success(), "cc failed:\n{}", text(&o));
}

/// `hlstmc compile MODEL -o DIR --name hm FLAGS...`, which must succeed.
fn compile_into(model: &Path, dir: &Path, flags: &[&str]) {
    let (m, d) = (model.display().to_string(), dir.display().to_string());
    let mut args = vec!["compile", m.as_str(), "-o", d.as_str(), "--name", "hm"];
    args.extend(flags);
    let o = hlstmc(&args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
}

/// [`compile_into`], then the C driver linked to `DIR/libhlstmc_hm.a` and `libs`, as `DIR/exe`.
fn compile_and_link(model: &Path, dir: &Path, flags: &[&str], libs: &[&str], exe: &str) {
    compile_into(model, dir, flags);
    let lib = dir.join("libhlstmc_hm.a").display().to_string();
    cc(dir, "hm", &[&[lib.as_str()], libs].concat(), exe);
}

fn check_fixture(fixture: &str, flags: &[&str]) -> bool {
    check_library(fixture, flags, None)
}

/// Compiles `fixture` with `flags`, links the C driver to the library statically and
/// dynamically, and checks its exports, dependencies, error codes and outputs (whole sequences,
/// and streamed where the model streams). With `gpu` (a folder holding a `libcuda.so.1`, for
/// `LD_LIBRARY_PATH`), the library is the PTX target's. Returns whether the model streams.
fn check_library(fixture: &str, flags: &[&str], gpu: Option<&Path>) -> bool {
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
    let mut expected = vec![
        "hm.o",
        "libhlstmc_hm.so",
        "libhlstmc_hm.so.3",
        "libhlstmc_hm.a",
        "hm.h",
        "hlstmc_hm.pc",
        "hlstmc_hmConfig.cmake",
    ];
    if gpu.is_some() {
        expected.extend(["hm.ptx", "hm.launch.json"]);
    }
    for f in expected {
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
        for (file, dynamic) in [("hm.o", false), ("libhlstmc_hm.so", true)] {
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
            .arg(dir.join("libhlstmc_hm.so"))
            .output()
            .expect("readelf runs");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains("(NEEDED)") {
                // The GPU library also opens the driver with dlopen (libdl before glibc 2.34)
                // and keeps its error message in thread-local storage (the loader, ld-linux):
                // all of them parts of glibc.
                assert!(
                    l.contains("libc.so")
                        || l.contains("libm.so")
                        || (gpu.is_some() && (l.contains("libdl.so") || l.contains("ld-linux"))),
                    "libhlstmc_hm.so needs more than libc/libm: {l}"
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
    // The GPU library opens the driver with dlopen; a library with threads runs a pool.
    let dl: &[&str] = match (gpu.is_some(), flags.contains(&"--threads")) {
        (true, _) => &["-ldl"],
        (false, true) => &["-pthread"],
        (false, false) => &[],
    };
    cc(
        dir,
        name,
        &[
            &[dir.join("libhlstmc_hm.a").display().to_string().as_str()],
            dl,
        ]
        .concat(),
        "run_static",
    );
    cc(
        dir,
        name,
        &[
            &[
                "-L",
                &dir.display().to_string(),
                "-lhlstmc_hm",
                &format!("-Wl,-rpath,{}", dir.display()),
            ],
            dl,
        ]
        .concat(),
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
            d.contains("libhlstmc_hm.so"),
            "run_shared does not load libhlstmc_hm.so:\n{d}"
        );
    }
    let streams = std::fs::read_to_string(dir.join("hm.h"))
        .unwrap()
        .contains("NAME_step: supported".replace("NAME", "hm").as_str());
    for exe in ["run_static", "run_shared"] {
        let run = |args: &[&std::ffi::OsStr]| {
            let mut c = Command::new(dir.join(exe));
            c.args(args);
            if let Some(lib) = gpu {
                c.env("LD_LIBRARY_PATH", lib);
            }
            c.output().unwrap()
        };
        let o = run(&["--error-test".as_ref()]);
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
            let args: Vec<&std::ffi::OsStr> = mode
                .iter()
                .map(|m| m.as_ref())
                .chain(ins.iter().chain(&outs).map(|p| p.as_os_str()))
                .collect();
            let o = run(&args);
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

/// A library whose calls run on a pool of 3 threads (a C runtime linked into NAME.o): the same
/// outputs, whole and streamed, the error codes (`NAME_context_init` is unsupported), no
/// allocation in a call, only NAME_ symbols.
#[test]
fn threads_in_the_library() {
    let streamed = check_fixture("hlstm_scan_H64_X32_T8_sp97", &["--threads", "3"]);
    assert!(streamed || !have("cc"));
    check_fixture("lstm_std_X16_H24_T5_batch3", &["--threads", "2"]);
    check_fixture(
        "../extra/onnx_lstm_seqlens_short_bidir_peep",
        &["--threads", "2"],
    );
    // Not for the GPU.
    let m = root().join("tests/fixtures/models/lstm_std_H64_X32_T8/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let o = hlstmc(&[
        "compile",
        &m.display().to_string(),
        "--target",
        "ptx",
        "--threads",
        "2",
        "-o",
        &tmp.path().display().to_string(),
    ]);
    assert!(!o.status.success() && text(&o).contains("--threads is for --target x86_64"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
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
    // The kernel IR parses back, with the constants written beside it by hash.
    let store = hlstm_ir::text::WeightStore::load(&tmp.path().join("hm.kir.weights")).unwrap();
    let p = hlstm_ir::kernel::parse_with_weights(&read("hm.kir"), &store).unwrap();
    assert_eq!(hlstm_ir::kernel::print(&p), read("hm.kir"));
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

/// Compiles one model to libhlstmc_hm.a, links the C driver, runs a whole sequence (and a stream when
/// the model streams) on its test data, and compares with the reference outputs. With `gpu` (a
/// folder holding a `libcuda.so.1`), the library is the PTX target's.
fn through_c(dir: &Path, work: &Path, gpu: Option<&Path>) -> Result<(), String> {
    through_c_within(dir, work, gpu, F32_TOLERANCE)
}

/// [`through_c`], comparing the outputs within `(rtol, atol)`.
fn through_c_within(
    dir: &Path,
    work: &Path,
    gpu: Option<&Path>,
    tolerance: (f32, f32),
) -> Result<(), String> {
    let out = work.join(dir.file_name().unwrap());
    std::fs::create_dir_all(&out).unwrap();
    let model = dir.join("model.onnx").display().to_string();
    let out_dir = out.display().to_string();
    let mut args = vec![
        "compile", &model, "-o", &out_dir, "--name", "hm", "--emit", "a,header",
    ];
    if gpu.is_some() {
        args.extend(["--target", "ptx"]);
    }
    let mut o = hlstmc(&args);
    if !o.status.success() && text(&o).contains("has open dims") {
        // A symbolic batch (the Keras exports): compiled for the test data's shapes.
        let shapes = test_data_shapes(&dir.join("test_data_set_0"))?;
        let mut with: Vec<&str> = args.clone();
        for s in &shapes {
            with.extend(["--shape", s.as_str()]);
        }
        o = hlstmc(&with);
    }
    if !o.status.success() {
        return Err(format!("compile: {}", text(&o)));
    }
    let o = Command::new("cc")
        .args(["-std=c11", "-O1", "-DMODEL=hm", "-I"])
        .arg(&out)
        .arg(root().join("tests/c/run_model.c"))
        .arg(out.join("libhlstmc_hm.a"))
        .args(if gpu.is_some() { &["-ldl"][..] } else { &[] })
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
        if let Some(lib) = gpu {
            c.env("LD_LIBRARY_PATH", lib);
        }
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
        compare_within(&outs, &wants, &format!("{mode:?}"), tolerance)?;
    }
    Ok(())
}

/// Every fixture model and every recurrent ONNX node test (their weights are run-time inputs).
fn recurrent_models() -> Vec<PathBuf> {
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
    all
}

/// Every model of [`recurrent_models`] through [`through_c`]; returns how many ran.
fn all_through_c(gpu: Option<&Path>) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut ran = 0;
    for d in &recurrent_models() {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        match through_c(d, tmp.path(), gpu) {
            Ok(()) => ran += 1,
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ran
}

/// Every fixture model and every recurrent ONNX node test through the library called from C,
/// whole and streamed, with the error checks of the driver.
#[test]
fn every_fixture_and_recurrent_node_test_through_c() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    let ran = all_through_c(None);
    println!("{ran} models through the C library");
}

/// The same through the PTX target's host library, its kernels run by the stand-in driver.
#[test]
fn every_fixture_and_recurrent_node_test_through_the_gpu_library() {
    let Some(lib) = stand_in_driver() else { return };
    let ran = all_through_c(Some(lib.path()));
    assert!(ran >= 50, "{ran}");
    println!("{ran} models through the GPU library on the stand-in driver");
}

/// The optimizer's pass-dump flags work on `compile` too.
#[test]
fn pass_dumps_work_on_compile() {
    let m = root().join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    for target in [["x86_64", "kir"], ["ptx", "ptx"]] {
        let tmp = tempfile::tempdir().unwrap();
        let dumps = tmp.path().join("dumps");
        let o = hlstmc(&[
            "compile",
            &m.display().to_string(),
            "-o",
            &tmp.path().display().to_string(),
            "--target",
            target[0],
            "--emit",
            target[1],
            "--print-after",
            "saturate",
            "--dump-dir",
            &dumps.display().to_string(),
            "--time-passes",
        ]);
        assert!(o.status.success(), "{target:?}: {}", text(&o));
        let t = text(&o);
        assert!(t.contains("saturate"), "{target:?}: {t}");
        let n = std::fs::read_dir(&dumps).unwrap().count();
        assert!(n >= 5, "{target:?}: {n} dumps");
    }
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
        &[&dir.join("libhlstmc_hm.a").display().to_string()],
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

// ---- The PTX target's host library (docs/ptx.md), on the stand-in driver ----

/// The stand-in driver's folder, or None (with a message) where a real driver is present or
/// `cc` is absent.
fn stand_in_driver() -> Option<tempfile::TempDir> {
    if hlstm_backends::cuda::driver_present() {
        eprintln!(
            "a real CUDA driver is present: bench/gpu/run.sh checks the GPU library; skipped"
        );
        return None;
    }
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed for the GPU library");
        return None;
    }
    Some(fake_driver())
}

#[test]
fn ptx_library_hlstm_scan_sp97_streams() {
    let Some(lib) = stand_in_driver() else { return };
    let streamed = check_library(
        "hlstm_scan_H64_X32_T8_sp97",
        &["--target", "ptx"],
        Some(lib.path()),
    );
    assert!(streamed, "a forward H-LSTM streams");
}

#[test]
fn ptx_library_lstm_std_batch3() {
    let Some(lib) = stand_in_driver() else { return };
    check_library(
        "lstm_std_X16_H24_T5_batch3",
        &["--target", "ptx"],
        Some(lib.path()),
    );
    // PTX for a newer GPU than the device (the stand-in is sm_80) is refused when the context
    // is opened, with the reason.
    let m = root().join("tests/fixtures/models/lstm_std_X16_H24_T5_batch3/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    compile_and_link(
        &m,
        dir,
        &["--target", "ptx", "--sm", "90", "--emit", "a,header"],
        &["-ldl"],
        "run_static",
    );
    let o = Command::new(dir.join("run_static"))
        .arg("--error-test")
        .env("LD_LIBRARY_PATH", lib.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the PTX targets sm_90; GPU 0 has compute capability 8.0"),
        "{}",
        text(&o)
    );
}

#[test]
fn ptx_library_bidirectional_does_not_stream() {
    let Some(lib) = stand_in_driver() else { return };
    let streamed = check_library(
        "../extra/torch_lstm_2layer_bidir_B2",
        &["--target", "ptx"],
        Some(lib.path()),
    );
    assert!(!streamed);
}

/// A driver library that loads but lacks the entry points the host library needs.
const DRIVER_WITHOUT_ENTRIES: &str = "int cuInit(unsigned flags) { (void)flags; return 0; }\n";

/// Without a driver, or with one that lacks an entry point, creating a context fails with
/// NAME_ERR_DRIVER and a message, and the C driver exits 1 saying why: no crash.
#[test]
fn ptx_library_without_a_driver_says_so() {
    if hlstm_backends::cuda::driver_present() {
        eprintln!("a real CUDA driver is present: skipped");
        return;
    }
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run)");
        return;
    }
    let m = root().join("tests/fixtures/models/lstm_std_H64_X32_T8");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    compile_and_link(
        &m.join("model.onnx"),
        dir,
        &["--target", "ptx", "--emit", "a,header"],
        &["-ldl"],
        "run_static",
    );
    let empty = dir.join("no-driver");
    std::fs::create_dir(&empty).unwrap();
    let broken = dir.join("broken-driver");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("cuda.c"), DRIVER_WITHOUT_ENTRIES).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(broken.join("libcuda.so.1"))
        .arg(broken.join("cuda.c"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let ins = raw_inputs(&m.join("test_data_set_0"), dir).unwrap();
    for (lib, want) in [
        (
            &empty,
            "no CUDA driver found (libcuda.so.1): the hm library needs an NVIDIA GPU and driver",
        ),
        (
            &broken,
            "the CUDA driver (libcuda.so.1) lacks cuGetErrorName",
        ),
    ] {
        for args in [vec!["--error-test".to_string()], {
            let mut v: Vec<String> = ins.iter().map(|p| p.display().to_string()).collect();
            v.extend((0..2).map(|k| dir.join(format!("out{k}")).display().to_string()));
            v
        }] {
            let o = Command::new(dir.join("run_static"))
                .args(&args)
                .env("LD_LIBRARY_PATH", lib)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    assert!(!dir.join("out0").exists(), "an output was written");
}

/// `--emit` with the PTX target: `ptx` alone writes the PTX and its launch description; `c`
/// the host library's source; clif and asm are refused, and `c` on x86_64.
#[test]
fn ptx_emit_lists() {
    let m = root().join("tests/fixtures/models/lstm_std_H64_X32_T8/model.onnx");
    let m = m.display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let files = |sub: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path().join(sub))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let o = hlstmc(&[
        "compile",
        &m,
        "--target",
        "ptx",
        "--emit",
        "ptx",
        "--name",
        "g",
        "-o",
        &format!("{d}/a"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files("a"), ["g.launch.json", "g.ptx"]);
    let o = hlstmc(&[
        "compile",
        &m,
        "--target",
        "ptx",
        "--emit",
        "c,header",
        "--name",
        "g",
        "-o",
        &format!("{d}/b"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files("b"), ["g.h", "g.launch.json", "g.ptx", "g_host.c"]);
    let c = std::fs::read_to_string(tmp.path().join("b/g_host.c")).unwrap();
    assert!(c.contains("EXPORT int g_run(") && c.contains("cuLaunchCooperativeKernel"));
    assert!(c.contains(".entry g("), "the PTX is embedded");
    let h = std::fs::read_to_string(tmp.path().join("b/g.h")).unwrap();
    assert!(h.contains("#define g_TARGET_PTX 1") && h.contains("#define g_ERR_DRIVER 7"));
    assert!(
        h.contains("int g_context_open(void **ctx, int device, size_t max_steps, size_t batch);")
    );
    for bad in [
        vec!["--target", "ptx", "--emit", "clif"],
        vec!["--emit", "c"],
    ] {
        let mut args = vec!["compile", m.as_str(), "-o"];
        let out = format!("{d}/c");
        args.push(&out);
        args.extend(bad.iter().copied());
        let o = hlstmc(&args);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(files("c").is_empty(), "{bad:?} wrote {:?}", files("c"));
    }
}

/// bench/gpu/clib_check.sh (the C library step of bench/gpu/run.sh) on the stand-in driver:
/// two fixtures pass; a copy of one with another model's reference outputs is a mismatch.
/// Needs Python with numpy, as on the GPU machine; says so and skips without it.
#[test]
fn the_gpu_clib_check_script_on_the_stand_in_driver() {
    let Some(lib) = stand_in_driver() else { return };
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: no Python with numpy ({py}), which bench/gpu/clib_check.sh needs");
        return;
    }
    let models = root().join("tests/fixtures/models");
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the sp97 H-LSTM with the sp90 model's reference outputs (same shapes).
    let wrong = tmp.path().join("wrong_reference");
    std::fs::create_dir_all(wrong.join("test_data_set_0")).unwrap();
    std::fs::copy(
        models.join("hlstm_scan_H64_X32_T8_sp97/model.onnx"),
        wrong.join("model.onnx"),
    )
    .unwrap();
    for f in std::fs::read_dir(models.join("hlstm_scan_H64_X32_T8_sp90/test_data_set_0")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), wrong.join("test_data_set_0").join(f.file_name())).unwrap();
    }
    let out = tmp.path().join("out");
    let o = Command::new("bash")
        .arg(root().join("bench/gpu/clib_check.sh"))
        .arg(env!("CARGO_BIN_EXE_hlstmc"))
        .arg(&out)
        .arg(models.join("hlstm_scan_H64_X32_T8_sp97"))
        .arg(models.join("lstm_std_X16_H24_T5_batch3"))
        .arg(&wrong)
        .env("LD_LIBRARY_PATH", lib.path())
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("clib: 2 pass, 1 fail"), "{t}");
    assert!(t.contains("wrong_reference: mismatch"), "{t}");
    let lines = std::fs::read_to_string(out.join("clib.jsonl")).unwrap();
    assert_eq!(
        lines,
        "{\"name\": \"hlstm_scan_H64_X32_T8_sp97\", \"status\": \"pass\"}\n\
         {\"name\": \"lstm_std_X16_H24_T5_batch3\", \"status\": \"pass\"}\n\
         {\"name\": \"wrong_reference\", \"status\": \"mismatch\"}\n"
    );
}

/// Runs the C driver built in `dir` (as `run`, against a library compiled with `--max-batch
/// max`) on the first `n` digits test images for each `n` of `batches`, whole and streamed, and
/// compares with the reference logits; checks its error codes and that a batch past `max` is
/// refused. With `gpu`, the stand-in driver's folder goes on `LD_LIBRARY_PATH`.
fn check_batches(dir: &Path, max: usize, batches: &[usize], gpu: Option<&Path>) {
    let data = root().join("examples/digits-hlstm/test_data_set_0");
    let x = f32s(&read_pb(&data.join("input_0.pb")).unwrap().1);
    let want = f32s(&read_pb(&data.join("output_0.pb")).unwrap().1);
    assert_eq!((x.len(), want.len()), (8 * 359 * 8, 359 * 10));
    let run = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new(dir.join("run"));
        c.args(args);
        if let Some(lib) = gpu {
            c.env("LD_LIBRARY_PATH", lib);
        }
        c.output().unwrap()
    };
    let h = std::fs::read_to_string(dir.join("hm.h")).unwrap();
    assert!(
        h.contains(&format!("Batch: any from 1 to {max} per call")),
        "{h}"
    );
    let o = run(&["--error-test".as_ref()]);
    assert!(o.status.success(), "{}", text(&o));
    for &n in batches {
        // The first `n` images: X[t, :n, :] for each of the 8 steps, and their 10 logits.
        let xs: Vec<f32> = (0..8)
            .flat_map(|t| x[t * 359 * 8..t * 359 * 8 + n * 8].to_vec())
            .collect();
        let ws = want[..n * 10].to_vec();
        let input = dir.join(format!("x{n}.f32"));
        let raw: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input, raw).unwrap();
        let n_s = n.to_string();
        for mode in [&[][..], &["--stream"][..]] {
            let out = dir.join(format!("y{n}.f32"));
            let mut args: Vec<&std::ffi::OsStr> = vec!["--batch".as_ref(), n_s.as_ref()];
            args.extend(mode.iter().map(|m| std::ffi::OsStr::new(*m)));
            args.extend([input.as_os_str(), out.as_os_str()]);
            let o = run(&args);
            assert!(o.status.success(), "batch {n} {mode:?}: {}", text(&o));
            compare(
                std::slice::from_ref(&out),
                std::slice::from_ref(&ws),
                &format!("max {max}, batch {n} {mode:?}"),
            )
            .unwrap();
        }
    }
    // A batch past the compiled one is refused.
    let past = (max + 1).to_string();
    let (x_, y_) = (dir.join("x.f32"), dir.join("y.f32"));
    let o = run(&[
        "--batch".as_ref(),
        past.as_ref(),
        x_.as_os_str(),
        y_.as_os_str(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not take a batch"), "{}", text(&o));
}

/// `compile --max-batch B`: the shipped digits model (`X [8, N, 8]`, batch open) compiled for a
/// batch of 400 classifies the 359 test images, and the first 7 of them as a batch of 7, whole
/// and streamed, as the reference does; compiled for exactly 359 it runs them without
/// staging; on 2 threads for 64, a batch of 7. A model whose export fixed the batch is refused
/// with the reason.
#[test]
fn batch_chosen_per_call() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    let model = root().join("examples/digits-hlstm.onnx");
    let tmp = tempfile::tempdir().unwrap();
    for (max, batches, threads) in [
        (400usize, &[359usize, 7][..], "1"),
        (359, &[359][..], "1"),
        (64, &[7][..], "2"),
    ] {
        let dir = tmp.path().join(format!("b{max}"));
        let max_s = max.to_string();
        compile_and_link(
            &model,
            &dir,
            &[
                "--threads",
                threads,
                "--max-batch",
                &max_s,
                "--emit",
                "a,header",
            ],
            &["-pthread"],
            "run",
        );
        check_batches(&dir, max, batches, None);
    }
    let fixed = root().join("tests/fixtures/models/lstm_std_X16_H24_T5_batch3/model.onnx");
    let o = hlstmc(&[
        "compile",
        &fixed.display().to_string(),
        "--max-batch",
        "4",
        "-o",
        &tmp.path().join("fixed").display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the model's batch is fixed by its export (batch 3)"),
        "{}",
        text(&o)
    );
    assert!(!tmp.path().join("fixed").exists());
}

/// The same for the GPU library on the stand-in driver: compiled for 16, batches of 16 and 5.
#[test]
fn batch_chosen_per_call_on_the_gpu_library() {
    let Some(lib) = stand_in_driver() else { return };
    let model = root().join("examples/digits-hlstm.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    compile_and_link(
        &model,
        dir,
        &["--target", "ptx", "--max-batch", "16", "--emit", "a,header"],
        &["-ldl"],
        "run",
    );
    check_batches(dir, 16, &[16, 5], Some(lib.path()));
}

/// The first `n` rows along `axis` of a row-major tensor of `dims`.
fn take_rows(data: &[f32], dims: &[usize], axis: usize, n: usize) -> Vec<f32> {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    (0..outer)
        .flat_map(|o| data[o * dims[axis] * inner..][..n * inner].to_vec())
        .collect()
}

/// Exports with a symbolic batch (issue 15): Keras layers that tf2onnx writes as an ONNX `Loop`
/// (GRU forward, backward and final state only, SimpleRNN, LSTM and GRU behind `Masking`;
/// `x [batch, 6, 5]`), torch's dynamo
/// exporter (`x [6, batch, 5]`, zero states and output reshape computed from the batch) and
/// paddle2onnx (`x [batch, 6, 5]`). Each compiles at the fixture's batch against ONNX Runtime's reference, and with
/// `--max-batch 4` gives at every batch from 1 to 4 the reference interpreter's outputs for
/// the same rows.
#[test]
fn symbolic_batch_exports_compile_at_every_batch() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    for (fixture, dims, axis) in [
        ("keras_gru_T6", [4, 6, 5], 0),
        ("keras_gru_backwards_T6", [4, 6, 5], 0),
        ("keras_gru_state_T6", [4, 6, 5], 0),
        ("keras_simplernn_T6", [4, 6, 5], 0),
        ("keras_lstm_masked_T6", [4, 6, 5], 0),
        ("keras_gru_masked_T6", [4, 6, 5], 0),
        ("torch_dynamo_lstm_dynbatch", [6, 4, 5], 1),
        ("torch_dynamo_gru_dynbatch", [6, 4, 5], 1),
        ("paddle_lstm_dynbatch", [4, 6, 5], 0),
        ("paddle_gru_dynbatch", [4, 6, 5], 0),
    ] {
        let mut at2 = dims;
        at2[axis] = 2;
        let shape = format!("x={}", at2.map(|d| d.to_string()).join(","));
        check_fixture(&format!("../extra/{fixture}"), &["--shape", &shape]);
        let model = root()
            .join("tests/fixtures/extra")
            .join(fixture)
            .join("model.onnx");
        // The oracle: the reference interpreter on 4 rows (rows are independent).
        let x: Vec<f32> = (0..4 * 6 * 5)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let oracle = hlstmc::Model::load(&model)
            .unwrap()
            .with_input_shapes(&[("x".to_string(), dims.to_vec())])
            .unwrap()
            .into_runnable(&hlstmc::BuildOptions::engine(hlstmc::Engine::Interp))
            .unwrap();
        let y = &oracle
            .run(&[hlstm_ir::Tensor::from_f32(&dims, x.clone()).unwrap()])
            .unwrap()[0];
        let (want, y_dims) = (f32s(y), y.shape().to_vec());
        let y_axis = y_dims
            .iter()
            .position(|&d| d == 4)
            .expect("a batch axis of 4");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        compile_and_link(
            &model,
            dir,
            &["--max-batch", "4", "--emit", "a,header"],
            &[],
            "run",
        );
        for n in 1..=4usize {
            let input = dir.join(format!("x{n}.f32"));
            let raw: Vec<u8> = take_rows(&x, &dims, axis, n)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            std::fs::write(&input, raw).unwrap();
            let out = dir.join(format!("y{n}.f32"));
            let n_s = n.to_string();
            let o = Command::new(dir.join("run"))
                .args(["--batch", &n_s])
                .arg(&input)
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{fixture} batch {n}: {}", text(&o));
            compare(
                std::slice::from_ref(&out),
                &[take_rows(&want, &y_dims, y_axis, n)],
                &format!("{fixture} --max-batch 4, batch {n}"),
            )
            .unwrap();
        }
    }
}

/// The float16, bfloat16 and float64 models of tests/fixtures/precision through the library
/// called from C (whole, streamed, error codes), against their references at the tolerance of
/// their precision (docs/precision.md). The ABI is f32 and does not round to the declared
/// type: the inputs are the test data's values (of the declared type already, widened exactly
/// to f32), and the outputs are the f32 results, within half a unit of the declared type of
/// the reference's rounded values; the per-type tolerances hold several units. The header says
/// beside each such tensor that it is f32 in the ABI.
#[test]
fn precision_fixtures_through_c_at_their_tolerances() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    let models = fixture_dirs("precision", |_| true);
    assert!(models.len() >= 10, "{} precision fixtures", models.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in &models {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let model = hlstmc::Model::load(d.join("model.onnx")).expect("the fixture imports");
        let stored = model.stored_types().clone();
        let declared: std::collections::BTreeSet<hlstmc::StoredType> = stored
            .inputs
            .values()
            .chain(stored.outputs.values())
            .copied()
            .collect();
        assert!(
            !declared.is_empty(),
            "{name}: no float16, bfloat16 or float64 input or output"
        );
        seen.extend(declared.iter().copied());
        let (rtol, atol) = stored.narrowest_io().tolerances();
        if let Err(e) = through_c_within(d, tmp.path(), None, (rtol as f32, atol as f32)) {
            failures.push(format!(
                "{name} ({declared:?}, rtol {rtol}, atol {atol}): {e}"
            ));
            continue;
        }
        let header = std::fs::read_to_string(tmp.path().join(&name).join("hm.h")).unwrap();
        for t in &declared {
            let note = format!("({t} in the model; float here, not rounded to {t})");
            if !header.contains(&note) {
                failures.push(format!("{name}: hm.h does not say '{note}'"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            hlstmc::StoredType::F16,
            hlstmc::StoredType::BF16,
            hlstmc::StoredType::F64
        ],
        "every reduced or wider precision is checked"
    );
}
