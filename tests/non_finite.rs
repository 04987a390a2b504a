//! NaN and infinity in every engine (issue 16, item 2; docs/passes.md, "Non-finite values"):
//! a NaN weight or input reaches the outputs alike in the reference interpreter, the kernel
//! interpreter and the JIT, through Relu too; a zero (pruned) weight is an absent connection
//! once the optimizer has run, so what reaches an output only through zero weights does not.

use hlstmc::test_data::compare;
use hlstmc::{BuildOptions, Engine, Model, OptimizeOptions, Tensor};

/// relu(X @ W + b): W's first column holds a NaN, its second an infinity times a zero weight.
const GRAPH: &str = r#"
graph (%X: f32[1,3]) -> (Y = %y) {
  %W = const f32[3,2] [NaN, 0.0, 1.0, 1.0, 0.5, 2.0]
  %m = matmul(%X, %W) "matmul" : f32[1,2]
  %y = relu(%m) "relu" : f32[1,2]
}
"#;

fn run(engine: Engine, optimize: bool, x: &[f32]) -> Vec<f32> {
    let g = hlstmc::ir::text::parse(GRAPH).unwrap();
    let mut model = Model::from_graph(g).unwrap();
    if optimize {
        model = model.optimize(&OptimizeOptions::default()).unwrap();
    }
    let r = model.into_runnable(&BuildOptions::engine(engine)).unwrap();
    let out = r
        .run(&[Tensor::from_f32(&[1, 3], x.to_vec()).unwrap()])
        .unwrap();
    out[0].as_f32().unwrap().iter().copied().collect()
}

#[test]
fn nan_reaches_the_outputs_in_every_engine() {
    let x = [1.0, 2.0, 3.0];
    let reference = run(Engine::Interp, false, &x);
    assert!(
        reference[0].is_nan(),
        "Relu must not turn NaN into 0: {reference:?}"
    );
    assert_eq!(reference[1], 8.0);
    let want = Tensor::from_f32(&[1, 2], reference.clone()).unwrap();
    for engine in [
        Engine::Interp,
        Engine::FastInterp,
        Engine::KernelInterp,
        Engine::Jit,
    ] {
        for optimize in [false, true] {
            let got = run(engine, optimize, &x);
            let got_t = Tensor::from_f32(&[1, 2], got.clone()).unwrap();
            let c = compare(&got_t, &want, 1e-6, 1e-6).unwrap();
            assert_eq!(
                c.bad, 0,
                "{engine:?} optimize={optimize}: {got:?} vs {reference:?}"
            );
        }
    }
}

/// An infinite input meeting a zero weight (W[0][1]): the reference computes 0 x inf = NaN, as
/// ONNX Runtime does, and so does a dense kernel; a sparse kernel has no such multiply (a zero
/// weight is an absent connection) and gives the finite sum. This is the documented freedom;
/// through a nonzero weight (column 0's NaN) every kernel propagates.
#[test]
fn an_infinite_input_through_a_zero_weight_is_the_documented_difference() {
    let x = [f32::INFINITY, 1.0, 1.0];
    let exact = run(Engine::Interp, false, &x);
    assert!(exact[0].is_nan() && exact[1].is_nan(), "{exact:?}");
    let with = |strategy| {
        let g = hlstmc::ir::text::parse(GRAPH).unwrap();
        let opts = BuildOptions {
            strategy: Some(strategy),
            ..BuildOptions::engine(Engine::Jit)
        };
        let r = Model::from_graph(g).unwrap().into_runnable(&opts).unwrap();
        let out = r
            .run(&[Tensor::from_f32(&[1, 3], x.to_vec()).unwrap()])
            .unwrap();
        out[0]
            .as_f32()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    let dense = with(hlstmc::Strategy::Dense);
    assert!(dense[0].is_nan() && dense[1].is_nan(), "dense: {dense:?}");
    for sparse in [
        hlstmc::Strategy::SparseUnrolled,
        hlstmc::Strategy::SparseCsr,
    ] {
        let got = with(sparse);
        assert!(got[0].is_nan(), "{sparse:?}: {got:?}");
        assert_eq!(got[1], 3.0, "{sparse:?}: the zero weight is skipped");
    }
}
