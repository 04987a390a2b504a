//! ONNX test data (`input_K.pb`, `output_K.pb`) and the comparison `hlstmc run --test-data`,
//! `examples/embed.rs` and the tests make: |got - want| <= atol + rtol * |want|.

use crate::{Error, Result};
use hlstm_ir::{DType, Tensor};
use std::path::{Path, PathBuf};

/// A test-data folder: its inputs in order, and the reference output of each model output
/// where the folder has one.
#[derive(Clone, Debug)]
pub struct TestData {
    /// `input_0.pb`, `input_1.pb`, ... up to the first one absent.
    pub inputs: Vec<Tensor>,
    /// `output_K.pb` for K in `0..outputs`, None where absent.
    pub outputs: Vec<Option<Tensor>>,
}

fn read(path: &Path) -> Result<Tensor> {
    hlstm_frontends::onnx::tensor::read_pb(path)
        .map(|(_, t)| t)
        .map_err(Error::Run)
}

impl TestData {
    /// Reads the inputs of `dir`, which must be `inputs` of them (the model's count), and the
    /// reference of each of `outputs` outputs.
    pub fn load(dir: &Path, input_names: &[&str], outputs: usize) -> Result<TestData> {
        let file = |kind: &str, k: usize| -> PathBuf { dir.join(format!("{kind}_{k}.pb")) };
        let mut inputs = Vec::new();
        while file("input", inputs.len()).exists() {
            inputs.push(read(&file("input", inputs.len()))?);
        }
        if let Some(name) = input_names.get(inputs.len()) {
            return Err(Error::Inputs(format!(
                "no {} for model input '{name}' (the model takes {} inputs: {})",
                file("input", inputs.len()).display(),
                input_names.len(),
                input_names.join(", ")
            )));
        }
        if inputs.len() > input_names.len() {
            return Err(Error::Inputs(format!(
                "{} holds {} inputs, the model takes {} ({})",
                dir.display(),
                inputs.len(),
                input_names.len(),
                input_names.join(", ")
            )));
        }
        let outputs = (0..outputs)
            .map(|k| {
                let p = file("output", k);
                p.exists().then(|| read(&p)).transpose()
            })
            .collect::<Result<_>>()?;
        Ok(TestData { inputs, outputs })
    }
}

/// How an output compares with its reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The largest absolute difference (infinite where one side is NaN).
    pub max_abs: f64,
    /// The largest difference relative to a nonzero reference element.
    pub max_rel: f64,
    /// Elements out of tolerance.
    pub bad: usize,
    /// Elements compared.
    pub count: usize,
}

/// Compares `got` with `want` element by element: out of tolerance where
/// |got - want| > atol + rtol * |want|. A shape or type that differs is an error naming both.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<Comparison, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("type {}, expected {}", got.dtype(), want.dtype()));
    }
    let as_f64 = |t: &Tensor| -> Vec<f64> {
        let t = t.cast(DType::F32);
        t.as_f32()
            .into_iter()
            .flat_map(|a| a.iter().map(|&v| v as f64))
            .collect()
    };
    let (g, w) = (as_f64(got), as_f64(want));
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        bad: 0,
        count: g.len(),
    };
    for (x, y) in g.iter().zip(&w) {
        let d = if x == y { 0.0 } else { (x - y).abs() };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        c.max_abs = c.max_abs.max(d);
        if *y != 0.0 {
            c.max_rel = c.max_rel.max(d / y.abs());
        }
        if d > atol + rtol * y.abs() {
            c.bad += 1;
        }
    }
    Ok(c)
}
