//! What `run -o` writes is all or nothing and cannot be redirected (issue 16, items 7 and 8):
//! temporary files get random names and are created exclusively, so a link planted at the old
//! predictable name is not followed; outputs whose names make one file name are refused before
//! anything is written; a failure leaves neither new outputs nor temporary files.

mod common;

use common::{hlstmc, model, node, save, stderr, value_info};
use std::path::Path;

const MODEL: &str = "tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97";

fn fixture() -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL);
    (
        root.join("model.onnx").display().to_string(),
        format!("X={}", root.join("test_data_set_0/input_0.pb").display()),
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_planted_link_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    // The names the old code wrote through.
    for name in [".Y.npy.partial", ".Y_h.npy.partial"] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let (model, input) = fixture();
    let o = hlstmc(&[
        "run",
        &model,
        "-i",
        &input,
        "-o",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let npz = tmp.path().join("o.npz");
    std::os::unix::fs::symlink(&victim, tmp.path().join("o.npz.partial")).unwrap();
    let o = hlstmc(&[
        "run",
        &model,
        "-i",
        &input,
        "-o",
        &npz.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[test]
fn a_failed_output_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A folder where the second output's file goes: the rename fails.
    std::fs::create_dir(out.join("Y_h.npy")).unwrap();
    std::fs::write(out.join("keep.txt"), "").unwrap();
    let (model, input) = fixture();
    let o = hlstmc(&[
        "run",
        &model,
        "-i",
        &input,
        "-o",
        &out.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Y_h.npy"), "{}", stderr(&o));
    let left = names(&out);
    assert_eq!(
        left,
        ["Y_h.npy", "keep.txt"],
        "no output, no temporary file: {left:?}"
    );
}

#[test]
fn outputs_that_share_a_file_name_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.onnx");
    let dims: &[i64] = &[2, 3];
    save(
        &model(
            17,
            vec![value_info("X", 1, dims)],
            vec![value_info("a/b", 1, dims), value_info("a_b", 1, dims)],
            vec![],
            vec![
                node("Relu", "r", &["X"], &["a/b"]),
                node("Neg", "n", &["X"], &["a_b"]),
            ],
        ),
        &m,
    );
    let x = tmp.path().join("x.npy");
    common::write_npy_f32(&x, &[2, 3], &[0.5; 6]);
    let out = tmp.path().join("out");
    let o = hlstmc(&[
        "run",
        &m.display().to_string(),
        "-i",
        &format!("X={}", x.display()),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("outputs 'a/b' and 'a_b' would both be written to"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists() || names(&out).is_empty(), "{:?}", names(&out));
    // One archive keeps both names.
    let npz = tmp.path().join("o.npz");
    let o = hlstmc(&[
        "run",
        &m.display().to_string(),
        "-i",
        &format!("X={}", x.display()),
        "-o",
        &npz.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Ctrl-C while `compile` is writing (issue 16, item 8): the temporary folder (100+ MB for a
/// large model) is removed at once and the command ends with 130; the output folder holds all
/// of the library or none of it. The signal is sent as soon as the temporary folder appears.
#[test]
fn ctrl_c_during_compile_leaves_no_temporary_folder() {
    let (m, _) = fixture();
    let mut caught = 0;
    for _attempt in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lib");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
            .args(["compile", &m, "--name", "m", "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let partial = |out: &Path| {
            std::fs::read_dir(out).ok().is_some_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            })
        };
        let seen = loop {
            if partial(&out) {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        if !seen {
            continue;
        }
        // SAFETY: kill() on the child's pid, which has not been waited for, so is not reused.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        if o.status.success() {
            // The compile finished before the signal arrived: not this test's case.
            continue;
        }
        assert_eq!(o.status.code(), Some(130), "{err}");
        assert!(err.contains("interrupted"), "{err}");
        let left = names(&out);
        assert!(!left.iter().any(|n| n.ends_with(".partial")), "{left:?}");
        let header = left.iter().any(|n| n == "m.h");
        assert!(
            header == left.iter().any(|n| n.starts_with("libhlstmc_m")),
            "a library half written: {left:?}"
        );
        caught += 1;
    }
    assert!(
        caught > 0,
        "no compile was caught while writing in 8 tries: the signal never landed"
    );
}
