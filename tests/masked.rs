//! Masked run-time weights (`LowerOptions::input_patterns`, what the trainer's JIT engine gives
//! with `train.sparse_kernels`): a weight input with a known zero pattern lowers to
//! `Weight::Masked`, read directly and through a transposed copy, and the JIT on one and
//! several threads agrees with the graph interpreter.

use hlstm_backends::cpu::{CpuOptions, JitProgram};
use hlstm_ir::Tensor;
use hlstm_ir::kernel::{Stmt, Weight};
use hlstm_ir::text::parse;
use hlstm_passes::lower::LowerOptions;
use hlstm_passes::verify_each::random_inputs;
use std::sync::Arc;

const GRAPH: &str = r#"graph (%x: f32[6,24], %w: f32[24,40]) -> (y = %y, z = %z) {
  %y = matmul(%x, %w) : f32[6,40]
  %wt = transpose{perm=[1, 0]}(%w) : f32[40,24]
  %z = matmul(%y, %wt) : f32[6,24]
}"#;

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32").iter().copied().collect()
}

fn masked_weights(body: &[Stmt]) -> usize {
    let mut n = 0;
    hlstm_ir::kernel::visit::walk(body, &mut |s, _| {
        n += matches!(
            s,
            Stmt::MatMul {
                w: Weight::Masked(..),
                ..
            }
        ) as usize
    });
    n
}

#[test]
fn masked_weights_run_in_the_jit_on_one_and_several_threads() {
    let g = parse(GRAPH).expect("parses");
    let mut inputs = random_inputs(&g, 5);
    // A pattern about 15% dense whose columns differ in count; the weight zero outside it.
    let pattern: Vec<f32> = (0..24 * 40)
        .map(|i| f32::from((i * 7 + i / 40) % 13 < 2 + (i % 40) / 20))
        .collect();
    let w: Vec<f32> = f32s(&inputs[1])
        .iter()
        .zip(&pattern)
        .map(|(w, m)| w * m)
        .collect();
    inputs[1] = Tensor::from_f32(&[24, 40], w).expect("shape");
    let want = hlstm_ir::interp::run(&g, &inputs).expect("interprets");
    let opts = LowerOptions {
        input_patterns: vec![None, Some(Arc::new(pattern))],
        selector: Some(&hlstm_backends::cpu::select::SELECTOR),
        ..Default::default()
    };
    let p = hlstm_passes::lower::lower(&g, &opts).expect("lowers");
    assert_eq!(
        masked_weights(&p.body),
        2,
        "{}",
        hlstm_ir::kernel::print(&p)
    );
    // Without the pattern, the same graph reads the weight dense.
    let dense = hlstm_passes::lower::lower(&g, &Default::default()).expect("lowers");
    assert_eq!(masked_weights(&dense.body), 0);
    let ins: Vec<Vec<f32>> = inputs.iter().map(f32s).collect();
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    for threads in [1, 2, 3] {
        let parts = if threads > 1 {
            hlstm_passes::lower::threads::split(&p, threads)
        } else {
            Vec::new()
        };
        let j =
            JitProgram::compile_parts(&p, &parts, &CpuOptions::default(), false).expect("compiles");
        let mut outs: Vec<Vec<f32>> = want.iter().map(|t| vec![f32::NAN; t.len()]).collect();
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        j.run(&refs, &mut views).expect("runs");
        for (k, (got, w)) in outs.iter().zip(&want).enumerate() {
            for (i, (a, b)) in got.iter().zip(f32s(w)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{threads} threads, output {k}[{i}]: {a}, interpreter {b}"
                );
            }
        }
    }
}
