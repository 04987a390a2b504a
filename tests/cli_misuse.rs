//! Flags that used to be ignored or misreported (issue 16, item 12): each is now an error, or
//! does what it says.

mod common;

use common::{hlstmc, model, node, repo_path, save, stderr, value_info};
use std::path::Path;

const MODEL: &str = "examples/hlstm_sp97/model.onnx";
const DATA: &str = "examples/hlstm_sp97/test_data_set_0";

#[test]
fn ignored_flags_are_errors() {
    let (m, d) = (repo_path(MODEL), repo_path(DATA));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["bench", &m, "--engine", "interp", "--threads", "8"],
            "--threads 8 is for --engine jit",
        ),
        (
            vec![
                "run",
                &m,
                "--engine",
                "kernel-interp",
                "--threads",
                "2",
                "--test-data",
                &d,
            ],
            "--threads 2 is for --engine jit",
        ),
        (vec!["opt", &m, "--dump-egraph"], "--dump-dir"),
        (
            vec!["run", &m, "--test-data", &d, "-o", "out/"],
            "cannot be used with",
        ),
        (
            vec!["bench", &m, "--rounds", "2305843009213693952"],
            "is not in 1..=100000",
        ),
        (vec!["bench", &m, "--runs", "0"], "is not in 1..=1000000"),
    ];
    for (args, want) in cases {
        let o = hlstmc(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
}

/// An input whose name holds '=' is given as `-i X=Y=file`: the split falls after a name the
/// model has.
#[test]
fn an_input_named_with_an_equals_sign_can_be_given() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.onnx");
    let dims: &[i64] = &[2, 3];
    save(
        &model(
            17,
            vec![value_info("X=Y", 1, dims)],
            vec![value_info("Z", 1, dims)],
            vec![],
            vec![node("Relu", "r", &["X=Y"], &["Z"])],
        ),
        &m,
    );
    let x = tmp.path().join("x.npy");
    common::write_npy_f32(&x, &[2, 3], &[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    let o = hlstmc(&[
        "run",
        &m.display().to_string(),
        "-i",
        &format!("X=Y={}", x.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Z: f32[2,3] [0.000000, 2.000000"), "{out}");
}

/// Small inputs that declare huge sizes are refused before anything is allocated (issue 16,
/// item 5): a 13-byte .npy whose header length says 4 GiB, and bench's random inputs for a
/// model declaring X of [2^40, 1, 3]. Run under a 1 GiB address-space limit, so that an
/// allocation attempt would abort instead of passing by luck.
#[test]
fn declared_sizes_are_checked_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("bad.npy");
    std::fs::write(&npy, b"\x93NUMPY\x02\x00\xf0\xff\xff\xffx").unwrap();
    let huge = tmp.path().join("huge.onnx");
    let dims: &[i64] = &[1 << 40, 1, 3];
    save(
        &model(
            17,
            vec![value_info("X", 1, dims)],
            vec![value_info("Y", 1, dims)],
            vec![],
            vec![node("Relu", "r", &["X"], &["Y"])],
        ),
        &huge,
    );
    let bin = env!("CARGO_BIN_EXE_hlstmc");
    let cases = [
        (
            format!("{bin} run {} -i X={}", repo_path(MODEL), npy.display()),
            "a .npy header of 4294967280 bytes",
        ),
        (format!("{bin} bench {}", huge.display()), "over the limit"),
    ];
    for (cmd, want) in cases {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v 1000000; exec {cmd}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{cmd}: {}", stderr(&o));
    }
}

/// `train -o /dev/null` used to write /dev/null.log.jsonl and the rest beside it; a model path
/// that exists and is not a regular file is refused before training.
#[test]
fn train_refuses_a_model_path_that_is_not_a_file() {
    let o = hlstmc(&[
        "train",
        &repo_path("examples/digits-hlstm.toml"),
        "-o",
        "/dev/null",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    assert!(!Path::new("/dev/null.log.jsonl").exists());
}

/// Ctrl-C during `hlstmc train` stops it after a batch with exit status 130 and writes nothing:
/// the previous model and its log stay as they were, and the interrupted run's log is beside
/// them as MODEL.log.jsonl.partial (issue 16, item 3).
#[test]
fn ctrl_c_during_training_keeps_the_previous_files() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_path("examples/data/digits/digits.csv.gz"),
        tmp.path().join("digits.csv.gz"),
    )
    .unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(
        &cfg,
        "[data]\nformat = \"csv\"\npath = \"digits.csv.gz\"\nsteps = 8\nfeatures = 8\n\
         scale = 0.0625\nsplit = { modulus = 5, test = [4], validation = [3] }\n\
         [model]\ncell = \"lstm\"\nhidden = 8\n[train]\nengine = \"fast\"\nepochs = 100000\n",
    )
    .unwrap();
    let out = tmp.path().join("m.onnx");
    let log = tmp.path().join("m.log.jsonl");
    std::fs::write(&out, "the previous model").unwrap();
    std::fs::write(&log, "the previous log\n").unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args([
            "train",
            &cfg.display().to_string(),
            "-o",
            &out.display().to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's record, so the handler is in place and training runs.
    let partial = tmp.path().join("m.log.jsonl.partial");
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&partial).map_or(true, |m| m.len() == 0) {
        assert!(t0.elapsed().as_secs() < 60, "no epoch finished in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "the previous model");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "the previous log\n");
    assert!(
        std::fs::read_to_string(&partial)
            .unwrap()
            .contains("\"kind\":\"epoch\"")
    );
}

/// Artifacts that could not be used are refused with exit 1 and nothing written (issue 16,
/// items 8 and 10): a library for a batch of 0, a library whose header's place holds a folder
/// (the old libraries stay), a trained model for `export.batch = 0`.
#[test]
fn unusable_artifacts_are_refused_and_nothing_is_half_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lib");
    let digits = repo_path("examples/digits-hlstm.onnx");
    let d = out.display().to_string();
    let o = hlstmc(&[
        "compile", &digits, "-o", &d, "--shape", "X=8,0,8", "--name", "hm",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a dim of 0"), "{}", stderr(&o));
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());

    std::fs::create_dir_all(out.join("hm.h")).unwrap();
    std::fs::write(out.join("libhlstmc_hm.a"), "the old library").unwrap();
    let m = repo_path(MODEL);
    let o = hlstmc(&["compile", &m, "-o", &d, "--name", "hm"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hm.h"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("libhlstmc_hm.a")).unwrap(),
        "the old library"
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.contains("partial")), "{left:?}");

    let cfg = tmp.path().join("c.toml");
    std::fs::copy(
        repo_path("examples/data/digits/digits.csv.gz"),
        tmp.path().join("digits.csv.gz"),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "[data]\nformat = \"csv\"\npath = \"digits.csv.gz\"\nsteps = 8\nfeatures = 8\n\
         split = { modulus = 5, test = [4], validation = [3] }\n\
         [model]\ncell = \"lstm\"\nhidden = 4\n[train]\nengine = \"fast\"\nepochs = 1\n\
         [export]\nbatch = 0\n",
    )
    .unwrap();
    let model_path = tmp.path().join("m.onnx");
    let o = hlstmc(&[
        "train",
        &cfg.display().to_string(),
        "-o",
        &model_path.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("export.batch must be at least 1"),
        "{}",
        stderr(&o)
    );
    assert!(!model_path.exists());

    // A link planted at the trainer's temporary name is not followed.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[export]\nbatch = 0\n", "");
    std::fs::write(&cfg, text).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, tmp.path().join(".m.onnx.tmp")).unwrap();
    let o = hlstmc(&[
        "train",
        "-q",
        &cfg.display().to_string(),
        "-o",
        &model_path.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(model_path.is_file());
}

/// A compile killed midway (Ctrl-C) left its temporary folder (120 MB for a large model); the
/// next compile of the same name into the folder removes such folders of processes that are
/// gone (issue 16, item 8).
#[test]
fn a_killed_compile_leaves_nothing_for_long() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lib");
    // PIDs stay below 2^22 on Linux: this one belongs to no process.
    let stale = out.join(".hlstmc-hm-4194399.partial");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("hm.o"), vec![0u8; 1024]).unwrap();
    let d = out.display().to_string();
    let o = hlstmc(&[
        "compile",
        &repo_path(MODEL),
        "-o",
        &d,
        "--name",
        "hm",
        "--emit",
        "obj,header",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "the stale folder is still there");
    assert!(out.join("hm.o").is_file());
}

/// Errors say optional values in words and symbolic dims by name, never in Rust's debugging
/// text (`Some(1)`, `Sym("T")`, issue 16 item 12).
#[test]
fn errors_show_no_rust_debug_text() {
    use hlstmc::Dim;
    // An LSTM of 2 units on X [T, N, 3] with T and N open: N is the batch.
    let sym = |s: &str| Dim::Sym(s.into());
    let vi = |name: &str, dims: &[Dim]| {
        hlstmc::frontends::onnx::export::value_info_proto(name, 1, Some(dims))
    };
    let mut lstm = node("LSTM", "lstm", &["X", "W", "R"], &["Y"]);
    lstm.attribute.push(common::int_attr("hidden_size", 2));
    let m = model(
        17,
        vec![vi("X", &[sym("T"), sym("N"), Dim::Known(3)])],
        vec![vi("Y", &[sym("T"), Dim::Known(1), sym("N"), Dim::Known(2)])],
        vec![
            common::f32_tensor("W", &[1, 8, 3], &[0.1; 24]),
            common::f32_tensor("R", &[1, 8, 2], &[0.1; 16]),
        ],
        vec![lstm],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.onnx");
    save(&m, &path);
    let p = path.display().to_string();
    let out = dir.path().join("lib").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["compile", &p, "-o", &out, "--max-batch", "4"],
            "input 'X' has the open dim T besides the batch",
        ),
        (
            vec![
                "compile",
                &p,
                "-o",
                &out,
                "--max-batch",
                "4",
                "--shape",
                "X=5,2,3",
            ],
            "given as 2, but --max-batch is 4",
        ),
        (
            vec![
                "compile",
                &p,
                "-o",
                &out,
                "--max-batch",
                "4",
                "--shape",
                "X=5",
            ],
            "which the 1 dims given lack",
        ),
    ];
    for (args, want) in cases {
        let o = hlstmc(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        for debug in ["Some(", "None", "Sym(", "Known("] {
            assert!(!err.contains(debug), "{args:?}: {err}");
        }
    }
}
