//! Flags that used to be ignored or misreported (issue 16, item 12): each is now an error, or
//! does what it says.

mod common;

use common::{hlstmc, model, node, save, stderr, value_info};
use std::path::Path;

const MODEL: &str = "examples/hlstm_sp97/model.onnx";
const DATA: &str = "examples/hlstm_sp97/test_data_set_0";

fn root(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
fn ignored_flags_are_errors() {
    let (m, d) = (root(MODEL), root(DATA));
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
            format!("{bin} run {} -i X={}", root(MODEL), npy.display()),
            "a .npy header of 4294967280 bytes",
        ),
        (
            format!("{bin} bench {}", huge.display()),
            "more than the limit",
        ),
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
        &root("examples/digits-hlstm.toml"),
        "-o",
        "/dev/null",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    assert!(!Path::new("/dev/null.log.jsonl").exists());
}
