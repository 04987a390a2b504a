//! Rows innermost (`hlstm_passes::lower::rows_inner`): pruned H-LSTMs at batches from 1 to 17,
//! lowered for the CPU (which stores the sparse products' operands and results with the rows
//! innermost from 4 rows) and without the layout change:
//!
//! - from 4 rows the layout changes (the in-loop products read and write transposed buffers
//!   in place), under 4 it does not;
//! - the kernel interpreter gives the same bits for both programs (the pass moves elements,
//!   not arithmetic);
//! - the JIT, on one and two threads and with each sparse strategy, agrees with the
//!   interpreter, and with the row-major program's JIT; from 8 rows, where the wide sparse
//!   kernel takes the products (and on one thread their epilogues), one and two threads give
//!   the same bits.

use hlstm_backends::cpu::{CpuOptions, JitProgram};
use hlstm_bench::{Form, HlstmSpec, ScanWeights, generate, model_bytes, random_input};
use hlstm_ir::kernel::select::Thresholds;
use hlstm_ir::kernel::{Program, Stmt, Strategy, Weight, interp, visit};
use hlstm_passes::lower::{LowerOptions, lower};
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};

const ROW_MAJOR: Thresholds = Thresholds {
    rows_innermost: None,
    ..hlstm_backends::cpu::select::SELECTOR
};

fn spec(seed: u64, batch: usize) -> HlstmSpec {
    let mut s = HlstmSpec::dense(12, 20, 3, batch, &[24]);
    s.density = 0.15;
    s.seed = seed;
    s
}

fn graph(spec: &HlstmSpec) -> hlstm_ir::Graph {
    let m = generate(spec);
    let bytes = model_bytes(&m, spec.steps, spec.batch, Form::Scan(ScanWeights::Outer));
    let mut g = hlstm_frontends::onnx::import_bytes(&bytes, None).expect("imports");
    let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).expect("pipeline");
    pm.run(&mut g, &mut std::io::sink()).expect("optimizes");
    g
}

fn lowered(g: &hlstm_ir::Graph, rows_inner: bool, strategy: Option<Strategy>) -> Program {
    let selector: &'static Thresholds = if rows_inner {
        &hlstm_backends::cpu::select::SELECTOR
    } else {
        &ROW_MAJOR
    };
    let opts = LowerOptions {
        selector: Some(selector),
        strategy,
        ..Default::default()
    };
    let p = lower(g, &opts).expect("lowers");
    hlstm_ir::kernel::verify(&p).expect("verifies");
    p
}

/// In-loop sparse products whose left operand is read in place, rows innermost (strides
/// [1, M]).
fn products_in_place(p: &Program) -> usize {
    let mut n = 0;
    visit::walk(&p.body, &mut |s, _| {
        if let Stmt::MatMul {
            a,
            w: Weight::Const(_, Strategy::SparseCsr | Strategy::SparseUnrolled),
            out,
            ..
        } = s
        {
            n += (a.strides == [1, out.dims[0] as isize]) as usize;
        }
    });
    n
}

fn jit(p: &Program, threads: usize, inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    let parts = if threads > 1 {
        hlstm_passes::lower::threads::split(p, threads)
    } else {
        Vec::new()
    };
    let j = JitProgram::compile_parts(p, &parts, &CpuOptions::default(), false).expect("compiles");
    let mut outs: Vec<Vec<f32>> = p
        .outputs
        .iter()
        .map(|b| vec![f32::NAN; p.buffers[b.0].len()])
        .collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    j.run(inputs, &mut views).expect("runs");
    outs
}

fn close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: output {k} length");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                "{what}: output {k}[{i}] = {a}, interpreter {b}"
            );
        }
    }
}

/// Whether the host runs the wide kernels (AVX2 with FMA at least).
fn wide_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[test]
fn rows_innermost_changes_the_layout_from_four_rows_and_keeps_every_result() {
    for (seed, batch) in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 16), (7, 17)] {
        let spec = spec(seed, batch);
        let g = graph(&spec);
        let x = random_input(seed, spec.steps, batch, spec.inputs);
        let inputs: Vec<&[f32]> = vec![&x];
        for strategy in [
            None,
            Some(Strategy::SparseUnrolled),
            Some(Strategy::SparseCsr),
        ] {
            let what = format!("batch {batch}, strategy {strategy:?}");
            let inner = lowered(&g, true, strategy);
            let outer = lowered(&g, false, strategy);
            assert_eq!(products_in_place(&outer), 0, "{what}");
            if batch >= 4 {
                assert!(
                    products_in_place(&inner) > 0,
                    "{what}: no product reads its operand in place\n{}",
                    hlstm_ir::kernel::print(&inner)
                );
            } else {
                assert!(
                    inner == outer,
                    "{what}: under 4 rows nothing changes\n{}",
                    hlstm_ir::kernel::print(&inner)
                );
            }
            let want = interp::run(&outer, &inputs).expect("interprets");
            let got = interp::run(&inner, &inputs).expect("interprets");
            assert_eq!(got, want, "{what}: the interpreter's bits differ");
            let on = |threads| jit(&inner, threads, &inputs);
            let (one, two) = (on(1), on(2));
            close(&one, &want, &format!("{what}, 1 thread"));
            close(&two, &want, &format!("{what}, 2 threads"));
            // From 8 rows the products go to the wide sparse kernel where the host has one: one
            // thread fuses the elementwise statements after them into the kernel
            // (`epilogue`), two threads do not, and the bits are the same.
            if batch >= 8 && wide_kernels() {
                let bits = |o: &[Vec<f32>]| -> Vec<Vec<u32>> {
                    o.iter()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect())
                        .collect()
                };
                assert_eq!(bits(&one), bits(&two), "{what}: 1 and 2 threads differ");
            }
            close(
                &jit(&outer, 1, &inputs),
                &want,
                &format!("{what}, row-major JIT"),
            );
        }
    }
}
