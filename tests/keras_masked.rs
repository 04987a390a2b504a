//! Keras layers behind `Masking(mask_value=0.0)`, exported by tf2onnx as a `Loop` with the mask
//! computed outside it (`Equal`, `Not`, `Cast`, `ReduceSum`, `Greater`) and the states selected
//! inside it (issue 15). The fixtures (tools/gen_keras_fixtures.py) hold rows whose trailing
//! steps, and one middle step, are all 0.0. Checked here: every engine against ONNX Runtime's
//! outputs; Keras' semantics (a masked step repeats the previous output, a masked first step
//! gives zeros); the C library of `hlstmc compile --max-batch 4` at every batch from 1 to 4 on
//! rows with masked steps; `hlstmc run --test-data`; the ONNX export of the imported graph.

mod common;

use common::{hlstmc, read_test_data_f32, stderr, stdout};
use hlstm_ir::Tensor;
use hlstmc::{BuildOptions, Engine, Model};
use std::path::{Path, PathBuf};
use std::process::Command;

const MASKED: [&str; 3] = [
    "keras_lstm_masked_T6",
    "keras_lstm_masked_last_T6",
    "keras_gru_masked_T6",
];
const T: usize = 6;
const F: usize = 5;
const H: usize = 8;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/extra")
        .join(name)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32").iter().copied().collect()
}

fn run(name: &str, engine: Engine, x: &[f32], batch: usize) -> Vec<f32> {
    let m = Model::load(fixture(name).join("model.onnx"))
        .unwrap()
        .with_input_shapes(&[("x".to_string(), vec![batch, T, F])])
        .unwrap()
        .into_runnable(&BuildOptions::engine(engine))
        .unwrap_or_else(|e| panic!("{name} {engine:?}: {e}"));
    let x = Tensor::from_f32(&[batch, T, F], x.to_vec()).unwrap();
    let y = m
        .run(&[x])
        .unwrap_or_else(|e| panic!("{name} {engine:?}: {e}"));
    assert_eq!(y.len(), 1);
    f32s(&y[0])
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

fn step(y: &[f32], batch: usize, row: usize, t: usize) -> &[f32] {
    let _ = batch;
    &y[(row * T + t) * H..][..H]
}

#[test]
fn masked_fixtures_match_onnx_runtime_in_every_engine() {
    for name in MASKED {
        let dir = fixture(name);
        let x = read_test_data_f32(&dir, "input").remove(0);
        let want = read_test_data_f32(&dir, "output").remove(0);
        // The test data has masked steps: row 0 its last two, row 1 step 2 and step 5.
        for (row, t) in [(0, 4), (0, 5), (1, 2), (1, 5)] {
            assert!(x[(row * T + t) * F..][..F].iter().all(|v| *v == 0.0));
        }
        for engine in [
            Engine::Interp,
            Engine::FastInterp,
            Engine::KernelInterp,
            Engine::Jit,
        ] {
            let got = run(name, engine, &x, 2);
            close(&got, &want, &format!("{name} {engine:?}"));
            if name.contains("last") {
                continue;
            }
            // Keras: a masked step's output is the previous step's, bit for bit.
            for (row, t) in [(0, 4), (0, 5), (1, 2), (1, 5)] {
                assert_eq!(
                    step(&got, 2, row, t),
                    step(&got, 2, row, t - 1),
                    "{name} {engine:?} row {row} step {t}"
                );
            }
            assert_ne!(step(&got, 2, 1, 3), step(&got, 2, 1, 2), "{name}");
        }
    }
}

/// Four rows: trailing padding, a padded middle step, a padded first step (zeros out, the
/// state stays the initial one), none.
fn masked_rows() -> Vec<f32> {
    let mut x: Vec<f32> = (0..4 * T * F)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    let mut pad = |row: usize, t: usize| x[(row * T + t) * F..][..F].fill(0.0);
    pad(0, 4);
    pad(0, 5);
    pad(1, 3);
    pad(2, 0);
    x
}

#[test]
fn a_masked_first_step_outputs_zeros_and_keeps_the_initial_state() {
    let x = masked_rows();
    for name in ["keras_lstm_masked_T6", "keras_gru_masked_T6"] {
        let y = run(name, Engine::Jit, &x, 4);
        assert!(step(&y, 4, 2, 0).iter().all(|v| *v == 0.0), "{name}");
        assert!(step(&y, 4, 2, 1).iter().any(|v| *v != 0.0), "{name}");
        close(&y, &run(name, Engine::Interp, &x, 4), name);
        // The state stays the initial (zero) one: row 2 from step 1 on is what the layer gives
        // the same steps as a sequence of its own (padded at the end instead, where Keras
        // repeats the last output).
        let mut shifted = vec![0.0; T * F];
        shifted[..(T - 1) * F].copy_from_slice(&x[(2 * T + 1) * F..(3 * T) * F]);
        let alone = run(name, Engine::Interp, &shifted, 1);
        for t in 1..T {
            close(step(&y, 4, 2, t), step(&alone, 1, 0, t - 1), name);
        }
    }
}

#[test]
fn hlstmc_run_with_test_data_passes() {
    for name in MASKED {
        let dir = fixture(name);
        let m = dir.join("model.onnx").display().to_string();
        let d = dir.join("test_data_set_0").display().to_string();
        let o = hlstmc(&["run", &m, "--test-data", &d]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).contains("PASS"), "{name}: {}", stdout(&o));
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// The library of `hlstmc compile --max-batch 4`, called from C at every batch from 1 to 4 on
/// rows with masked steps, against the reference interpreter.
#[test]
fn compiled_library_at_every_batch_with_masked_rows() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (`cc` cannot be run), needed to build the C driver");
        return;
    }
    let x = masked_rows();
    for name in MASKED {
        let want = run(name, Engine::Interp, &x, 4);
        let out_row = want.len() / 4;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let m = fixture(name).join("model.onnx").display().to_string();
        let d = dir.display().to_string();
        let o = hlstmc(&[
            "compile",
            &m,
            "-o",
            &d,
            "--name",
            "hm",
            "--max-batch",
            "4",
            "--emit",
            "a,header",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let o = Command::new("cc")
            .args([
                "-std=c11",
                "-O1",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-DMODEL=hm",
                "-I",
            ])
            .arg(dir)
            .arg(root.join("tests/c/run_model.c"))
            .arg(dir.join("libhlstmc_hm.a"))
            .args(["-lm", "-o"])
            .arg(dir.join("run"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for n in 1..=4usize {
            let input = dir.join(format!("x{n}.f32"));
            let raw: Vec<u8> = x[..n * T * F]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            std::fs::write(&input, raw).unwrap();
            let out = dir.join(format!("y{n}.f32"));
            let o = Command::new(dir.join("run"))
                .args(["--batch", &n.to_string()])
                .arg(&input)
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{name} batch {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let got: Vec<f32> = std::fs::read(&out)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            close(
                &got,
                &want[..n * out_row],
                &format!("{name} C library, batch {n}"),
            );
        }
    }
}

/// The imported graph, with its comparison, logic and reduce_sum ops, written back as ONNX and
/// read again, runs the same.
#[test]
fn the_imported_graph_exports_to_onnx_and_back() {
    let name = "keras_lstm_masked_T6";
    let dir = fixture(name);
    let g = hlstmc::frontends::onnx::import_file(&dir.join("model.onnx")).unwrap();
    let kinds: Vec<&str> = {
        let mut k = Vec::new();
        g.walk(&mut |gr, n, _| k.push(gr.nodes[n].op.kind()));
        k
    };
    for want in ["equal", "not", "reduce_sum", "greater"] {
        assert!(kinds.contains(&want), "{want} in {kinds:?}");
    }
    let proto = hlstmc::frontends::onnx::export::export(&g, "test").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("back.onnx");
    std::fs::write(&p, protobuf::Message::write_to_bytes(&proto).unwrap()).unwrap();
    let back = hlstmc::frontends::onnx::import_file(&p).unwrap();
    let x = read_test_data_f32(&dir, "input").remove(0);
    let want = read_test_data_f32(&dir, "output").remove(0);
    let bind = |g: &hlstm_ir::Graph| {
        let mut g = g.clone();
        hlstm_ir::bind_input_shapes(&mut g, &[("x".to_string(), vec![2, T, F])]).unwrap();
        let y =
            hlstm_ir::interp::run(&g, &[Tensor::from_f32(&[2, T, F], x.clone()).unwrap()]).unwrap();
        f32s(&y[0])
    };
    close(&bind(&back), &want, "re-imported");
    close(&bind(&g), &want, "imported");
}
