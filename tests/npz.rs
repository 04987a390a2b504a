//! `hlstmc run` with .npz files: inputs by name from one archive (stored or deflated members,
//! as `np.savez` and `np.savez_compressed` write them), all outputs into one, and the errors of
//! repeated, unknown and missing inputs.

mod common;

use common::{hlstmc, stderr};
use std::io::Write;
use std::path::Path;

const MODEL: &str = "tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97";

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The arrays of a .npz as (name, shape, f32 values), read with zip and npyz directly.
fn read_npz(path: &Path) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|k| {
            let entry = zip.by_index(k).unwrap();
            let name = entry.name().unwrap().trim_end_matches(".npy").to_string();
            let npy = npyz::NpyFile::new(entry).unwrap();
            let shape = npy.shape().to_vec();
            (name, shape, npy.into_vec::<f32>().unwrap())
        })
        .collect()
}

/// A .npz with these f32 arrays, members deflated or stored.
fn write_npz(path: &Path, arrays: &[(&str, &[u64], &[f32])], deflate: bool) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, shape, data) in arrays {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        let mut buf = Vec::new();
        {
            use npyz::WriterBuilder;
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(shape)
                .writer(&mut buf)
                .begin_nd()
                .unwrap();
            w.extend(data.iter().copied()).unwrap();
            w.finish().unwrap();
        }
        zip.write_all(&buf).unwrap();
    }
    zip.finish().unwrap();
}

fn input() -> (Vec<u64>, Vec<f32>) {
    let x = common::read_test_data_f32(&root().join(MODEL), "input");
    (vec![8, 1, 32], x[0].clone())
}

#[test]
fn npz_in_and_out_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join(MODEL).join("model.onnx").display().to_string();
    let pb = root()
        .join(MODEL)
        .join("test_data_set_0/input_0.pb")
        .display()
        .to_string();
    let dir = tmp.path().join("npy");
    let a = tmp.path().join("nested/a.npz");
    for out in [&dir, &a] {
        let o = hlstmc(&[
            "run",
            &model,
            "-i",
            &format!("X={pb}"),
            "-o",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let outs = read_npz(&a);
    let names: Vec<&str> = outs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["Y", "Y_h"]);
    let refs = common::read_test_data_f32(&root().join(MODEL), "output");
    for ((name, shape, data), want) in outs.iter().zip(&refs) {
        // The .npz holds what the .npy files hold, and both the reference's values.
        let npy = npyz::NpyFile::new(std::fs::File::open(dir.join(format!("{name}.npy"))).unwrap())
            .unwrap();
        assert_eq!(npy.shape(), &shape[..]);
        assert_eq!(&npy.into_vec::<f32>().unwrap(), data);
        for (g, w) in data.iter().zip(want) {
            assert!((g - w).abs() <= 1e-4 + 1e-3 * w.abs(), "{name}: {g} vs {w}");
        }
    }
    // Inputs from a .npz, stored and deflated: the same outputs.
    let (shape, x) = input();
    for deflate in [false, true] {
        let inputs = tmp.path().join(format!("in{deflate}.npz"));
        write_npz(&inputs, &[("X", &shape, &x)], deflate);
        let b = tmp.path().join(format!("b{deflate}.npz"));
        let o = hlstmc(&[
            "run",
            &model,
            "-i",
            &inputs.display().to_string(),
            "-o",
            &b.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(read_npz(&b), outs, "deflated members: {deflate}");
    }
    assert!(
        std::fs::read_dir(tmp.path().join("nested"))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")),
        "no partial file is left"
    );
}

#[test]
fn repeated_unknown_and_missing_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join(MODEL).join("model.onnx").display().to_string();
    let pb = root()
        .join(MODEL)
        .join("test_data_set_0/input_0.pb")
        .display()
        .to_string();
    let (shape, x) = input();
    let good = tmp.path().join("good.npz");
    write_npz(&good, &[("X", &shape, &x)], false);
    let extra = tmp.path().join("extra.npz");
    write_npz(&extra, &[("X", &shape, &x), ("Z", &[1], &[0.0])], false);
    let empty = tmp.path().join("empty.npz");
    write_npz(&empty, &[], false);
    let good_s = good.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("X={pb}"), format!("X={pb}")],
            "input 'X' is given twice",
        ),
        (
            vec![good_s.clone(), format!("X={pb}")],
            "input 'X' is given twice",
        ),
        (
            vec![extra.display().to_string()],
            "the model has no input named 'Z'; its inputs are: X",
        ),
        (vec![empty.display().to_string()], "missing inputs: X"),
        (vec!["x.txt".into()], "-i expects NAME=FILE or FILE.npz"),
        (
            vec![pb.clone().replace("input_0.pb", "nope.npz")],
            "cannot open",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["run".to_string(), model.clone()];
        for a in &args {
            full.push("-i".into());
            full.push(a.clone());
        }
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let o = hlstmc(&refs);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // Not a zip at all.
    let bad = tmp.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let o = hlstmc(&["run", &model, "-i", &bad.display().to_string()]);
    assert!(stderr(&o).contains("not a .npz file"), "{}", stderr(&o));
}
