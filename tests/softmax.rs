//! Softmax and log-softmax of run-time values (a classifier's probabilities, the trainer's
//! loss): lowered to `softmax` statements, compiled by the JIT on one thread and split across
//! threads (by rows, never along the reduced dim), against the graph interpreter. The PTX of
//! the same statements is checked in tests/ptx.rs.

use hlstm_backends::cpu::{CpuOptions, JitProgram};
use hlstm_ir::Tensor;
use hlstm_ir::kernel::Stmt;
use hlstm_ir::text::parse;
use hlstm_passes::verify_each::random_inputs;

const GRAPH: &str = r#"graph (%x: f32[6,8], %w: f32[8,40]) -> (p = %p, lp = %lp, q = %q) {
  %y = matmul(%x, %w) : f32[6,40]
  %p = softmax{axis=1}(%y) : f32[6,40]
  %lp = log_softmax{axis=-1}(%y) : f32[6,40]
  %q = softmax{axis=0}(%y) : f32[6,40]
}"#;

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32").iter().copied().collect()
}

#[test]
fn softmax_runs_in_the_jit_on_one_and_several_threads() {
    let g = parse(GRAPH).expect("parses");
    let inputs = random_inputs(&g, 3);
    let want = hlstm_ir::interp::run(&g, &inputs).expect("interprets");
    let p = hlstm_passes::lower::lower(&g, &Default::default()).expect("lowers");
    let ins: Vec<Vec<f32>> = inputs.iter().map(f32s).collect();
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    for threads in [1, 2, 3] {
        let parts = hlstm_passes::lower::threads::split(&p, threads);
        if threads > 1 {
            // Every thread gets a share of the row-wise softmax over 6 rows.
            for q in &parts {
                assert!(
                    q.body.iter().any(|s| matches!(s, Stmt::Softmax { .. })),
                    "{threads} threads:\n{}",
                    hlstm_ir::kernel::print(q)
                );
            }
        }
        let parts = if threads > 1 { parts } else { Vec::new() };
        let j =
            JitProgram::compile_parts(&p, &parts, &CpuOptions::default(), false).expect("compiles");
        let mut outs: Vec<Vec<f32>> = want.iter().map(|t| vec![f32::NAN; t.len()]).collect();
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        j.run(&refs, &mut views).expect("runs");
        for (k, (got, w)) in outs.iter().zip(&want).enumerate() {
            for (i, (a, b)) in got.iter().zip(f32s(w)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 + 2e-6 * b.abs(),
                    "{threads} threads, output {k}[{i}]: {a}, interpreter {b}"
                );
            }
        }
    }
}
