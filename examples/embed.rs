//! Embeds hlstmc in a Rust program: load an ONNX model, optimize it, JIT-compile it, run it on
//! ONNX test data and compare with the reference outputs.
//!
//!     cargo run --release --example embed -- MODEL.onnx TEST_DATA_DIR
//!
//! Reads TEST_DATA_DIR/input_K.pb (K in the model's input order) and output_K.pb, prints the
//! largest error of each output and PASS or FAIL, and exits non-zero on FAIL or on any error.

use hlstmc::frontends::onnx::tensor::read_pb;
use hlstmc::{BuildOptions, Model, OptimizeOptions, Tensor};
use std::path::Path;
use std::process::ExitCode;

/// The comparison `hlstmc run --test-data` makes: |got - want| <= atol + rtol * |want|.
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, dir] = args.as_slice() else {
        eprintln!("usage: embed MODEL.onnx TEST_DATA_DIR");
        return ExitCode::from(2);
    };
    match check(Path::new(model), Path::new(dir)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<Tensor, Box<dyn std::error::Error>> {
    Ok(read_pb(path)?.1)
}

fn check(model: &Path, dir: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let model = Model::load(model)?;
    let inputs = (0..model.inputs().len())
        .map(|k| read(&dir.join(format!("input_{k}.pb"))))
        .collect::<Result<Vec<_>, _>>()?;
    // Open dims (a symbolic batch or sequence length) take the inputs' sizes.
    let runnable = model
        .specialize_to(&inputs)?
        .optimize(&OptimizeOptions::default())?
        .into_runnable(&BuildOptions::default())?;
    let outputs = runnable.run(&inputs)?;
    let mut pass = true;
    for (k, (info, got)) in runnable.outputs().iter().zip(&outputs).enumerate() {
        let want = read(&dir.join(format!("output_{k}.pb")))?;
        let (got, want) = (got.cast(hlstmc::DType::F32), want.cast(hlstmc::DType::F32));
        let (Some(g), Some(w)) = (got.as_f32(), want.as_f32()) else {
            unreachable!("cast to f32")
        };
        if g.shape() != w.shape() {
            println!(
                "{}: shape {:?}, expected {:?}",
                info.name,
                g.shape(),
                w.shape()
            );
            pass = false;
            continue;
        }
        let mut max_err = 0.0f64;
        let mut bad = 0;
        for (&x, &y) in g.iter().zip(w.iter()) {
            let (x, y) = (x as f64, y as f64);
            let d = if x == y { 0.0 } else { (x - y).abs() };
            // NaN against a number, or a non-finite reference not matched exactly, fails.
            let d = if d.is_nan() { f64::INFINITY } else { d };
            max_err = max_err.max(d);
            if !(d <= ATOL + RTOL * y.abs()) {
                bad += 1;
            }
        }
        println!(
            "{}: max abs err {max_err:.3e}, {bad} of {} out of tolerance",
            info.name,
            g.len()
        );
        pass &= bad == 0;
    }
    println!("{}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}
