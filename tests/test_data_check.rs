//! `hlstmc run --test-data` must never say PASS on outputs it did not check or that are wrong
//! (issue 16, item 1): a NaN or infinite reference against finite outputs, a tolerance that is
//! NaN or negative, a folder without references.

mod common;

use common::{f32_tensor, hlstmc, linear_model, save, stderr, stdout};
use protobuf::Message;
use std::path::Path;

/// A folder with the linear model's input (zeros, so Y = B = [1, 2, 3, 4] per row) and, when
/// given, a reference for Y.
fn folder(dir: &Path, reference: Option<&[f32]>) -> std::path::PathBuf {
    let m = dir.join("m.onnx");
    save(&linear_model(), &m);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let x = f32_tensor("X", &[2, 3], &[0.0; 6]);
    std::fs::write(data.join("input_0.pb"), x.write_to_bytes().unwrap()).unwrap();
    if let Some(y) = reference {
        let y = f32_tensor("Y", &[2, 4], y);
        std::fs::write(data.join("output_0.pb"), y.write_to_bytes().unwrap()).unwrap();
    }
    m
}

fn check(dir: &Path, m: &Path, extra: &[&str]) -> std::process::Output {
    let data = dir.join("data").display().to_string();
    let mut args = vec!["run", m.to_str().unwrap(), "--test-data", &data];
    args.extend_from_slice(extra);
    hlstmc(&args)
}

const RIGHT: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];

#[test]
fn the_right_reference_passes() {
    let dir = tempfile::tempdir().unwrap();
    let m = folder(dir.path(), Some(&RIGHT));
    let o = check(dir.path(), &m, &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).ends_with("PASS\n"), "{}", stdout(&o));
}

#[test]
fn non_finite_references_fail_against_finite_outputs() {
    let one_nan = [1.0, 2.0, f32::NAN, 4.0, 1.0, 2.0, 3.0, 4.0];
    for reference in [[f32::NAN; 8], [f32::INFINITY; 8], one_nan] {
        let dir = tempfile::tempdir().unwrap();
        let m = folder(dir.path(), Some(&reference));
        let o = check(dir.path(), &m, &[]);
        assert!(!o.status.success(), "{reference:?} passed:\n{}", stdout(&o));
        assert!(stdout(&o).contains("MISMATCH") && stdout(&o).ends_with("FAIL\n"));
    }
}

#[test]
fn nan_or_negative_tolerances_are_errors() {
    let off_by_one: Vec<f32> = RIGHT.iter().map(|v| v + 1.0).collect();
    for flags in [
        ["--rtol", "nan"],
        ["--atol", "nan"],
        ["--atol=-1", "--rtol=0"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = folder(dir.path(), Some(&off_by_one));
        let o = check(dir.path(), &m, &flags);
        assert!(!o.status.success(), "{flags:?} passed:\n{}", stdout(&o));
        assert!(stderr(&o).contains("tolerance"), "{}", stderr(&o));
        assert!(!stdout(&o).contains("PASS"), "{}", stdout(&o));
    }
}

#[test]
fn a_folder_without_references_fails() {
    let dir = tempfile::tempdir().unwrap();
    let m = folder(dir.path(), None);
    let o = check(dir.path(), &m, &[]);
    assert!(!o.status.success(), "passed:\n{}", stdout(&o));
    assert!(stdout(&o).contains("no reference") && stdout(&o).ends_with("FAIL\n"));
}
