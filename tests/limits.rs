//! Resource limits as one policy (issue 16, item 5; docs/limits.md): what is read from outside
//! is bounded before it is allocated, each error names the limit and the flag that raises it,
//! and `--limit` raises it.

mod common;

use common::{hlstmc, repo_path, stderr, stdout};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const MODEL: &str = "examples/hlstm_sp97/model.onnx";
const DATA: &str = "examples/hlstm_sp97/test_data_set_0";

fn fails_with(args: &[&str], want: &[&str]) {
    let o = hlstmc(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: wanted '{w}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// `/dev/zero` used to be read until memory ran out (8.4 GB); its first byte is no protobuf
/// field, so it is refused after the first 64 KiB.
#[test]
fn an_endless_device_is_refused_at_once() {
    if !Path::new("/dev/zero").exists() {
        println!("note: no /dev/zero on this machine; the test is not run");
        return;
    }
    fails_with(
        &["inspect", "/dev/zero"],
        &["/dev/zero", "not a valid ONNX model", "0x00"],
    );
}

/// A model read from a pipe (no size known in advance) is read up to the limit, and works.
#[test]
fn a_model_from_a_pipe_is_read_within_the_limit() {
    let bytes = std::fs::read(repo_path(MODEL)).unwrap();
    let run = |limit: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
            .args(["inspect", "/dev/stdin", "--limit", limit])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader may stop early (over the limit), closing the pipe: a write error is fine.
        let _ = child.stdin.take().unwrap().write_all(&bytes);
        child.wait_with_output().unwrap()
    };
    let ok = run("bytes=1G");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("inputs"), "{}", stdout(&ok));
    let small = run(&format!("bytes={}", bytes.len() - 1));
    assert_eq!(small.status.code(), Some(1));
    let err = stderr(&small);
    assert!(
        err.contains("over the limit") && err.contains("--limit bytes="),
        "{err}"
    );
}

/// Each limit is checked, named, and raised by the flag, before or after the command's name.
#[test]
fn every_limit_names_itself_and_the_flag_raises_it() {
    let (m, d) = (repo_path(MODEL), repo_path(DATA));
    let size = std::fs::metadata(&m).unwrap().len().to_string();
    fails_with(
        &["inspect", &m, "--limit", "bytes=1000"],
        &[&size, "over the limit of 1000 bytes", "--limit bytes=N"],
    );
    fails_with(
        &["--limit", "elements=100", "run", &m, "--test-data", &d],
        &[
            "initializer 'W1'",
            "24576 elements",
            "over the limit of 100",
        ],
    );
    // Raised well above the defaults, the same command passes.
    let o = hlstmc(&[
        "run",
        &m,
        "--test-data",
        &d,
        "--limit",
        "elements=2^32",
        "--limit",
        "bytes=8G",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A .npy input is bounded by the same element limit as the model's weights (the model
    // Y = X·W + B has 16 weights; the input 2 x 3 is given as 40 x 30).
    let dir = tempfile::tempdir().unwrap();
    let linear = dir.path().join("linear.onnx");
    common::save(&common::linear_model(), &linear);
    let x = dir.path().join("x.npy");
    common::write_npy_f32(&x, &[40, 30], &[0.5; 1200]);
    let (linear, xi) = (linear.display().to_string(), format!("X={}", x.display()));
    fails_with(
        &["run", &linear, "-i", &xi, "--limit", "elements=500"],
        &["x.npy", "1200 elements", "over the limit of 500"],
    );
    fails_with(
        &["inspect", &m, "--limit", "memory=1G"],
        &["unknown limit 'memory'", "elements, bytes, nesting"],
    );
    fails_with(
        &["inspect", &m, "--limit", "nesting=100000"],
        &["at most 1024"],
    );
    fails_with(&["inspect", &m, "--limit", "bytes=lots"], &["not a count"]);
}

/// A gzip bomb as training data: 64 MiB of zeros in 64 KiB of gzip used to be decompressed
/// whole (an 8 MB bomb reached 15 GB); decompression stops at the `bytes` limit.
#[test]
fn a_gzip_bomb_stops_at_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let cfg = dir.path().join("bomb.toml");
    std::fs::write(
        &cfg,
        r#"
[data]
format = "csv"
path = "bomb.csv.gz"
steps = 8
features = 8
split = { modulus = 5, test = [4], validation = [3] }
[model]
cell = "lstm"
hidden = 4
[train]
epochs = 1
"#,
    )
    .unwrap();
    let out = dir.path().join("m.onnx");
    let (cfg, out) = (cfg.display().to_string(), out.display().to_string());
    fails_with(
        &["train", &cfg, "-o", &out, "--limit", "bytes=16M"],
        &[
            "bomb.csv.gz decompressed",
            "over the limit of 16777216 bytes",
            "--limit bytes=N",
        ],
    );
    assert!(!Path::new(&out).exists());
}
