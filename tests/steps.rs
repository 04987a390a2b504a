//! The sequence length at run time, and streaming: on every fixture model whose program takes
//! a run-time length, the JIT runs shorter sequences equal to the kernel interpreter, and for
//! models that run forward in time the outputs laid out by step equal the first rows of the
//! stored reference outputs (a step's output depends only on the steps before it); streaming
//! one step at a time gives the outputs of the whole-sequence call. Models the analysis keeps
//! static must say why, and refuse other lengths.

mod common;

use hlstm_backends::cpu::{CpuOptions, JitProgram};
use hlstm_frontends::onnx::import_file;
use hlstm_ir::kernel::{Program, Stmt, interp::Machine};
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The optimized, lowered program of a fixture, its inputs and its reference outputs.
fn load(dir: &Path) -> (Program, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut g = import_file(&dir.join("model.onnx")).expect("imports");
    let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).expect("pipeline");
    pm.run(&mut g, &mut std::io::sink()).expect("optimizes");
    let p = hlstm_passes::lower::lower(&g, &Default::default()).expect("lowers");
    let read = |prefix: &str| common::read_test_data_f32(dir, prefix);
    (p, read("input"), read("output"))
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 + 1e-3 * w.abs(),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

/// The first `steps` steps of each input (whole for inputs not laid out by step).
fn prefix(
    p: &Program,
    ids: &[hlstm_ir::kernel::BufId],
    data: &[Vec<f32>],
    steps: usize,
) -> Vec<Vec<f32>> {
    ids.iter()
        .zip(data)
        .map(|(b, d)| d[..p.len_for_steps(*b, steps)].to_vec())
        .collect()
}

fn jit_run(
    j: &JitProgram,
    p: &Program,
    ins: &[Vec<f32>],
    steps: usize,
    resume: bool,
) -> Vec<Vec<f32>> {
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = p
        .outputs
        .iter()
        .map(|b| vec![f32::NAN; p.len_for_steps(*b, steps)])
        .collect();
    let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    j.run_steps(&refs, &mut slices, Some(steps), resume)
        .expect("the JIT runs");
    outs
}

fn all_fixtures() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for folder in ["models", "extra"] {
        for e in std::fs::read_dir(fixtures().join(folder)).expect("fixtures") {
            let d = e.expect("entry").path();
            if d.join("model.onnx").exists() {
                dirs.push(d);
            }
        }
    }
    dirs.sort();
    dirs
}

#[test]
fn shorter_sequences_and_streaming_match_the_interpreter_and_the_references() {
    let (mut dynamic, mut fixed) = (Vec::new(), Vec::new());
    for dir in all_fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Models that do not import or lower are covered elsewhere (tests/jit.rs).
        let Ok(mut g) = import_file(&dir.join("model.onnx")) else {
            continue;
        };
        let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).expect("pipeline");
        pm.run(&mut g, &mut std::io::sink()).expect("optimizes");
        if hlstm_passes::lower::lower(&g, &Default::default()).is_err() {
            continue;
        }
        let (p, inputs, want) = load(&dir);
        let j = JitProgram::compile(&p, &CpuOptions::default()).expect("compiles");
        let Some(max) = p.max_steps else {
            // Static: other lengths are refused, with the reason.
            assert!(p.static_steps_reason.is_some(), "{name}");
            let (t, dynamic_ok) = j.max_steps();
            assert!(!dynamic_ok);
            let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
            let mut outs: Vec<Vec<f32>> = want.iter().map(|w| vec![0.0; w.len()]).collect();
            let mut sl: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            let e = j.run_steps(&ins, &mut sl, Some(t + 1), false).unwrap_err();
            assert!(e.contains("exactly"), "{name}: {e}");
            fixed.push(name);
            continue;
        };
        let forward = p.streamable();
        // The same program split across 3 threads: equal to one thread at every length.
        let parts = hlstm_passes::lower::threads::split(&p, 3);
        assert!(
            parts
                .iter()
                .all(|q| q.body.iter().any(|s| matches!(s, Stmt::Barrier))
                    || q.body.iter().any(|s| matches!(s, Stmt::Loop { .. }))),
            "{name}"
        );
        let jt = JitProgram::compile_parts(&p, &parts, &CpuOptions::default(), false)
            .expect("compiles in parts");
        for steps in [1, max] {
            let ins = prefix(&p, &p.inputs, &inputs, steps);
            let one = jit_run(&j, &p, &ins, steps, false);
            let three = jit_run(&jt, &p, &ins, steps, false);
            for (k, (a, b)) in one.iter().zip(&three).enumerate() {
                close(
                    b,
                    a,
                    &format!("{name}, {steps} steps, 3 threads, output {k}"),
                );
            }
        }
        for steps in [1, max.div_ceil(2), max - 1, max] {
            if steps == 0 {
                continue;
            }
            let ins = prefix(&p, &p.inputs, &inputs, steps);
            let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
            let mut m = Machine::new(&p).expect("buffers");
            let oracle = m
                .run(&p, &refs, Some(steps), false)
                .expect("the interpreter runs");
            let got = jit_run(&j, &p, &ins, steps, false);
            for (k, (g, o)) in got.iter().zip(&oracle).enumerate() {
                close(
                    g,
                    o,
                    &format!("{name}, {steps} steps, output {k} vs the interpreter"),
                );
                let b = p.outputs[k];
                if forward && p.buffers[b.0].step_len.is_some() {
                    let w = &want[k][..g.len()];
                    close(
                        g,
                        w,
                        &format!("{name}, {steps} steps, output {k} vs the reference"),
                    );
                }
            }
        }
        if forward {
            // One step at a time: each call's rows are the whole call's rows of that step,
            // and after the last step every output is the whole call's.
            let whole = jit_run(&j, &p, &inputs, max, false);
            let mut m = Machine::new(&p).expect("buffers");
            for t in 0..max {
                let ins: Vec<Vec<f32>> = p
                    .inputs
                    .iter()
                    .zip(&inputs)
                    .map(|(b, d)| match p.buffers[b.0].step_len {
                        Some(n) => d[t * n..(t + 1) * n].to_vec(),
                        None => d.clone(),
                    })
                    .collect();
                let got = jit_run(&j, &p, &ins, 1, t > 0);
                let got3 = jit_run(&jt, &p, &ins, 1, t > 0);
                for (k, (a, b)) in got.iter().zip(&got3).enumerate() {
                    close(b, a, &format!("{name}, step {t}, 3 threads, output {k}"));
                }
                let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
                let oracle = m
                    .run(&p, &refs, Some(1), t > 0)
                    .expect("the interpreter steps");
                for (k, g) in got.iter().enumerate() {
                    close(
                        g,
                        &oracle[k],
                        &format!("{name}, step {t}, output {k} vs the interpreter"),
                    );
                    let b = p.outputs[k];
                    match p.buffers[b.0].step_len {
                        Some(n) => close(
                            g,
                            &whole[k][t * n..(t + 1) * n],
                            &format!("{name}, step {t}, output {k}"),
                        ),
                        None if t + 1 == max => {
                            close(g, &whole[k], &format!("{name}, last step, output {k}"))
                        }
                        None => {}
                    }
                }
            }
        } else {
            let e = j
                .run_steps(
                    &inputs.iter().map(|v| v.as_slice()).collect::<Vec<_>>(),
                    &mut [],
                    Some(1),
                    true,
                )
                .unwrap_err();
            assert!(e.contains("step by step"), "{name}: {e}");
        }
        dynamic.push(name);
    }
    println!("run-time sequence length: {dynamic:?}");
    println!("static sequence length: {fixed:?}");
    // The forms the issue names: an LSTM op, a Scan, a re-rolled unrolled export.
    for want in [
        "lstm_std_H64_X32_T8",
        "hlstm_scan_H64_X32_T8",
        "hlstm_unroll_H64_X32_T8",
    ] {
        assert!(
            dynamic.iter().any(|d| d == want),
            "{want} should take a run-time length"
        );
    }
    assert!(fixed.iter().any(|d| d.contains("batchfirst")));
}
