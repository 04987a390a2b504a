//! The library API (`hlstmc::Model`, `Runnable`, `State`): the pipeline a Rust program uses,
//! checked against the fixtures' reference outputs and the reference interpreter.

mod common;

use hlstmc::frontends::onnx::tensor::read_pb;
use hlstmc::{BuildOptions, Engine, Error, Model, OptimizeOptions, Runnable, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

/// input_K.pb or output_K.pb of a test-data folder, in order.
fn test_data(dir: &Path, prefix: &str) -> Vec<Tensor> {
    (0..)
        .map(|k| dir.join(format!("{prefix}_{k}.pb")))
        .take_while(|p| p.exists())
        .map(|p| read_pb(&p).expect("a tensor").1)
        .collect()
}

/// Asserts |got - want| <= atol + rtol |want| element by element (what `run --test-data` checks).
fn assert_close(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what}: output {k} shape");
        let (g, w) = (g.cast(hlstmc::DType::F32), w.cast(hlstmc::DType::F32));
        let (g, w) = (g.as_f32().unwrap(), w.as_f32().unwrap());
        for (i, (x, y)) in g.iter().zip(w.iter()).enumerate() {
            let ok = (x - y).abs() as f64 <= 1e-4 + 1e-3 * y.abs() as f64;
            assert!(ok, "{what}: output {k}[{i}] is {x}, expected {y}");
        }
    }
}

/// The pipeline `hlstmc run` and `examples/embed.rs` use: load, fix open dims to the inputs',
/// optimize, build.
fn build(
    model: &Path,
    inputs: &[Tensor],
    opts: &BuildOptions,
) -> hlstmc::Result<Arc<dyn Runnable>> {
    Model::load(model)?
        .specialize_to(inputs)?
        .optimize(&OptimizeOptions::default())?
        .into_runnable(opts)
}

#[test]
fn every_fixture_model_runs_through_the_library_on_every_engine() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "the fixtures are there");
    for dir in dirs {
        let data = dir.join("test_data_set_0");
        let (inputs, want) = (test_data(&data, "input"), test_data(&data, "output"));
        let engines = [
            Engine::Interp,
            Engine::FastInterp,
            Engine::KernelInterp,
            Engine::Jit,
        ];
        for engine in engines {
            let what = format!("{} on {}", dir.display(), engine.name());
            let r = build(
                &dir.join("model.onnx"),
                &inputs,
                &BuildOptions::engine(engine),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.engine(), engine);
            let got = r.run(&inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_close(&got, &want, &what);
        }
    }
}

#[test]
fn the_onnx_file_is_parsed_once_by_the_whole_pipeline() {
    // The digits model's batch is open (X [8, N, 8]): fixing it happens inside the IR.
    let data = root().join("examples/digits-hlstm/test_data_set_0");
    let inputs = test_data(&data, "input");
    let r = build(
        &root().join("examples/digits-hlstm.onnx"),
        &inputs,
        &BuildOptions::default(),
    )
    .unwrap();
    assert_close(
        &r.run(&inputs).unwrap(),
        &test_data(&data, "output"),
        "digits",
    );
    // Other tests of this binary decode models at the same time, so the count is read in a
    // process that runs only this pipeline: `hlstmc run` reports it when asked.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(["run", "--engine", "jit"])
        .arg(root().join("examples/digits-hlstm.onnx"))
        .arg("--test-data")
        .arg(&data)
        .env("HLSTMC_REPORT_DECODES", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("models decoded: 1\n"), "{err}");
}

#[test]
fn four_threads_share_one_compiled_model_each_with_its_own_state() {
    let dir = fixture("hlstm_scan_H64_X32_T8_sp90");
    let data = dir.join("test_data_set_0");
    let (inputs, want) = (test_data(&data, "input"), test_data(&data, "output"));
    let oracle = build(
        &dir.join("model.onnx"),
        &inputs,
        &BuildOptions::engine(Engine::Interp),
    )
    .unwrap()
    .run(&inputs)
    .unwrap();
    for threads in [1, 2] {
        let opts = BuildOptions {
            threads,
            ..BuildOptions::default()
        };
        let r = build(&dir.join("model.onnx"), &inputs, &opts).unwrap();
        // Different inputs per thread, so that a shared workspace would show.
        let scaled: Vec<Vec<Tensor>> = (0..4)
            .map(|t| {
                inputs
                    .iter()
                    .map(|x| match x.as_f32() {
                        Some(a) => Tensor::F32(a.mapv(|v| v * (1.0 + t as f32 * 0.25))),
                        None => x.clone(),
                    })
                    .collect()
            })
            .collect();
        let oracles: Vec<Vec<Tensor>> = scaled
            .iter()
            .map(|x| {
                build(
                    &dir.join("model.onnx"),
                    x,
                    &BuildOptions::engine(Engine::Interp),
                )
                .unwrap()
                .run(x)
                .unwrap()
            })
            .collect();
        std::thread::scope(|s| {
            for (x, want) in scaled.iter().zip(&oracles) {
                let r = Arc::clone(&r);
                s.spawn(move || {
                    let mut state = r.new_state().unwrap();
                    for _ in 0..20 {
                        let got = state.run(x).unwrap();
                        assert_close(&got, want, "a thread's run");
                    }
                });
            }
        });
        assert_close(&r.run(&inputs).unwrap(), &want, "after the threads");
        assert_close(&r.run(&inputs).unwrap(), &oracle, "against the interpreter");
    }
}

#[test]
fn steps_continue_a_sequence_and_reset_starts_again() {
    let dir = fixture("hlstm_scan_H64_X32_T8_sp90");
    let data = dir.join("test_data_set_0");
    let inputs = test_data(&data, "input");
    for engine in [Engine::Jit, Engine::KernelInterp] {
        let r = build(
            &dir.join("model.onnx"),
            &inputs,
            &BuildOptions::engine(engine),
        )
        .unwrap();
        assert!(
            r.streamable(),
            "a forward Scan with a run-time sequence length streams"
        );
        let whole = r.run(&inputs).unwrap();
        let x = inputs[0].as_f32().unwrap();
        let steps = x.shape()[0];
        let mut state = r.new_state().unwrap();
        for round in 0..2 {
            let mut per_step = Vec::new();
            for t in 0..steps {
                let xt = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(t..t + 1));
                per_step.push(state.step(&[Tensor::F32(xt.to_owned())]).unwrap());
            }
            // Each output with a time axis: its rows, one per step, equal the whole run's.
            for (k, w) in whole.iter().enumerate() {
                let w = w.as_f32().unwrap();
                let last = per_step.last().unwrap()[k].as_f32().unwrap();
                if w.shape()[0] == steps && last.shape()[0] == 1 {
                    for (t, outs) in per_step.iter().enumerate() {
                        let got = outs[k].as_f32().unwrap();
                        let want = w.slice_axis(ndarray::Axis(0), ndarray::Slice::from(t..t + 1));
                        assert_close(
                            &[Tensor::F32(got.clone())],
                            &[Tensor::F32(want.to_owned())],
                            "step",
                        );
                    }
                } else {
                    assert_close(
                        &[Tensor::F32(last.clone())],
                        &[Tensor::F32(w.clone())],
                        "last state",
                    );
                }
            }
            state.reset();
            assert!(round < 2);
        }
    }
}

#[test]
fn an_open_batch_compiles_per_shape_and_matches_the_interpreter() {
    // Built before any shape is known: each batch gets its own specialization.
    let model = Model::load(root().join("examples/digits-hlstm.onnx"))
        .unwrap()
        .optimize(&OptimizeOptions::default())
        .unwrap();
    assert!(!model.has_static_inputs());
    let jit = model
        .clone()
        .into_runnable(&BuildOptions::default())
        .unwrap();
    let interp = model
        .into_runnable(&BuildOptions::engine(Engine::Interp))
        .unwrap();
    assert_eq!(jit.inputs()[0].ty.to_string(), "f32[8,N,8]");
    let data = root().join("examples/digits-hlstm/test_data_set_0");
    let x = test_data(&data, "input").remove(0);
    let x = x.as_f32().unwrap();
    for batch in [1, 5, 3, 5] {
        let xb = Tensor::F32(
            x.slice_axis(ndarray::Axis(1), ndarray::Slice::from(0..batch))
                .to_owned(),
        );
        let got = jit.run(std::slice::from_ref(&xb)).unwrap();
        assert_eq!(got[0].shape(), [batch, 10]);
        assert_close(&got, &interp.run(&[xb]).unwrap(), &format!("batch {batch}"));
    }
}

#[test]
fn fixing_shapes_in_the_ir_checks_them() {
    let digits = || Model::load(root().join("examples/digits-hlstm.onnx")).unwrap();
    let m = digits()
        .with_input_shapes(&[("X".to_string(), vec![8, 5, 8])])
        .unwrap();
    assert_eq!(m.outputs()[0].ty.concrete(), Some(vec![5, 10]));
    for (shapes, want) in [
        (vec![("X".to_string(), vec![9, 5, 8])], "has 8 in dim 0"),
        (vec![("X".to_string(), vec![8, 5])], "rank"),
        (vec![("Y".to_string(), vec![8, 5, 8])], "no input named 'Y'"),
    ] {
        let e = digits().with_input_shapes(&shapes).unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn errors_are_typed_and_name_the_problem() {
    // A file that is not there.
    let e = Model::load("/nonexistent/model.onnx").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    // Bytes that are not ONNX.
    let e = Model::from_bytes(b"not a model", None).unwrap_err();
    assert!(matches!(e, Error::Import(_)), "{e:?}");
    // An unknown pass.
    let opts = OptimizeOptions {
        passes: Some(vec!["no-such-pass".into()]),
        ..OptimizeOptions::default()
    };
    let m = Model::load(fixture("lstm_std_H64_X32_T8").join("model.onnx")).unwrap();
    let e = m.clone().optimize(&opts).unwrap_err();
    assert!(matches!(e, Error::Options(_)), "{e:?}");
    assert!(e.to_string().contains("no-such-pass"), "{e}");
    // Wrong inputs, on every engine.
    for engine in [
        Engine::Interp,
        Engine::FastInterp,
        Engine::KernelInterp,
        Engine::Jit,
    ] {
        let r = m
            .clone()
            .into_runnable(&BuildOptions::engine(engine))
            .unwrap();
        let name = r.inputs()[0].name.clone();
        let e = r.run(&[]).unwrap_err();
        assert!(matches!(e, Error::Inputs(_)), "{engine:?}: {e:?}");
        let bad = Tensor::from_f32(&[2, 2], vec![0.0; 4]).unwrap();
        let mut inputs: Vec<Tensor> = r
            .inputs()
            .iter()
            .map(|i| {
                let d = i.ty.concrete().unwrap();
                Tensor::from_f32(&d, vec![0.0; d.iter().product()])
                    .unwrap()
                    .cast(i.ty.dtype)
            })
            .collect();
        inputs[0] = bad;
        let e = r.run(&inputs).unwrap_err();
        match &e {
            Error::Input { name: n, problem } => {
                assert_eq!(*n, name);
                assert!(problem.contains("[2,2]"), "{problem}");
            }
            _ => panic!("{engine:?}: {e:?}"),
        }
    }
    // Threads out of range.
    let e = m
        .into_runnable(&BuildOptions {
            threads: 0,
            ..BuildOptions::default()
        })
        .unwrap_err();
    assert!(matches!(e, Error::Options(_)), "{e:?}");
}

#[test]
fn run_into_reuses_the_output_tensors_it_is_given() {
    let dir = fixture("lstm_std_H64_X32_T8_sp90");
    let data = dir.join("test_data_set_0");
    let (inputs, want) = (test_data(&data, "input"), test_data(&data, "output"));
    let r = build(&dir.join("model.onnx"), &inputs, &BuildOptions::default()).unwrap();
    let mut state = r.new_state().unwrap();
    let mut out = Vec::new();
    state.run_into(&inputs, &mut out).unwrap();
    assert_close(&out, &want, "first call");
    let before: Vec<*const f32> = out.iter().map(|t| t.as_f32().unwrap().as_ptr()).collect();
    // Poison the buffers: the second call must overwrite every element.
    for t in &mut out {
        if let Tensor::F32(a) = t {
            a.fill(f32::NAN);
        }
    }
    state.run_into(&inputs, &mut out).unwrap();
    let after: Vec<*const f32> = out.iter().map(|t| t.as_f32().unwrap().as_ptr()).collect();
    assert_eq!(before, after, "the same buffers");
    assert_close(&out, &want, "second call");
}

/// The default engine of `run` and the Python session: the JIT, or the reference interpreter
/// with the lowering error where the model does not lower (an i64 output here).
#[test]
fn into_runnable_or_interp_falls_back_with_the_reason() {
    use common::{model, node, value_info};
    use protobuf::Message;
    let mut cast = node("Cast", "cast", &["X"], &["Y"]);
    cast.attribute.push(common::int_attr("to", 7));
    let m = model(
        17,
        vec![value_info("X", 1, &[2, 3])],
        vec![value_info("Y", 7, &[2, 3])],
        vec![],
        vec![cast],
    );
    let bytes = m.write_to_bytes().unwrap();
    let opts = hlstmc::BuildOptions::default();
    let (r, why) = hlstmc::Model::from_bytes(&bytes, None)
        .unwrap()
        .into_runnable_or_interp(&opts)
        .unwrap();
    assert_eq!(r.engine(), hlstmc::Engine::Interp);
    let why = why.expect("a reason for the fallback").to_string();
    assert!(why.contains("cannot lower to the kernel IR"), "{why}");
    let x = hlstmc::Tensor::from_f32(&[2, 3], vec![2.7; 6]).unwrap();
    assert_eq!(r.run(&[x]).unwrap()[0].to_i64_vec().unwrap(), vec![2; 6]);
    // A model that lowers stays on the JIT, with no reason.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let (r, why) = hlstmc::Model::load(fixture)
        .unwrap()
        .into_runnable_or_interp(&opts)
        .unwrap();
    assert_eq!(r.engine(), hlstmc::Engine::Jit);
    assert!(why.is_none());
}
