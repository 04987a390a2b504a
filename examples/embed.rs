//! Embeds hlstmc in a Rust program: load an ONNX model, optimize it, JIT-compile it, run it on
//! ONNX test data and compare with the reference outputs.
//!
//!     cargo run --release --example embed -- MODEL.onnx TEST_DATA_DIR
//!
//! Reads TEST_DATA_DIR/input_K.pb (K in the model's input order) and output_K.pb, prints the
//! largest error of each output and PASS or FAIL, and exits non-zero on FAIL or on any error.

use hlstmc::test_data::{TestData, compare};
use hlstmc::{BuildOptions, Model, OptimizeOptions};
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

fn check(model: &Path, dir: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let model = Model::load(model)?;
    let names: Vec<String> = model.inputs().into_iter().map(|i| i.name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let data = TestData::load(dir, &names, model.outputs().len())?;
    // Open dims (a symbolic batch or sequence length) take the inputs' sizes.
    let runnable = model
        .specialize_to(&data.inputs)?
        .optimize(&OptimizeOptions::default())?
        .into_runnable(&BuildOptions::default())?;
    let outputs = runnable.run(&data.inputs)?;
    let mut pass = true;
    for ((info, got), want) in runnable.outputs().iter().zip(&outputs).zip(&data.outputs) {
        let want = want
            .as_ref()
            .ok_or_else(|| format!("no reference for '{}'", info.name))?;
        match compare(got, want, RTOL, ATOL) {
            Ok(c) => {
                println!(
                    "{}: max abs err {:.3e}, {} of {} out of tolerance",
                    info.name, c.max_abs, c.bad, c.count
                );
                pass &= c.bad == 0;
            }
            Err(e) => {
                println!("{}: {e}", info.name);
                pass = false;
            }
        }
    }
    println!("{}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}
