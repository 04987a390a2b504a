//! ONNX test data (`input_K.pb`, `output_K.pb`) and the comparison `hlstmc run --test-data`,
//! `examples/embed.rs` and the tests make: |got - want| <= atol + rtol * |want|.

use crate::{Error, Result};
use hlstm_ir::{DType, StoredType, StoredTypes, Tensor};
use std::path::{Path, PathBuf};

/// A test-data folder: its inputs in order, and the reference output of each model output
/// where the folder has one.
#[derive(Clone, Debug)]
pub struct TestData {
    /// `input_0.pb`, `input_1.pb`, ... up to the first one absent.
    pub inputs: Vec<Tensor>,
    /// `output_K.pb` for K in `0..outputs`, None where absent.
    pub outputs: Vec<Option<Tensor>>,
    /// The float type each reference output is stored in (f32 where absent or not a float):
    /// float16, bfloat16 and float64 references are read as f32 (docs/precision.md).
    pub output_types: Vec<StoredType>,
}

fn read(path: &Path) -> Result<(Tensor, StoredType)> {
    hlstm_frontends::onnx::tensor::read_pb_stored(path)
        .map(|(_, t, s)| (t, s))
        .map_err(Error::Run)
}

/// The default (rtol, atol) for comparing `output` of a model with `stored` types against a
/// reference: those of the least precise of the output's declared type and the model's
/// inputs' ([`StoredType::tolerances`]), f32's for an all-f32 model.
pub fn tolerances(stored: &StoredTypes, output: &str) -> (f64, f64) {
    stored
        .narrowest_io()
        .narrowest(stored.output(output))
        .tolerances()
}

impl TestData {
    /// Reads the inputs of `dir`, which must be `inputs` of them (the model's count), and the
    /// reference of each of `outputs` outputs.
    pub fn load(dir: &Path, input_names: &[&str], outputs: usize) -> Result<TestData> {
        let file = |kind: &str, k: usize| -> PathBuf { dir.join(format!("{kind}_{k}.pb")) };
        let mut inputs = Vec::new();
        while file("input", inputs.len()).exists() {
            inputs.push(read(&file("input", inputs.len()))?.0);
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
        let read_outputs: Vec<Option<(Tensor, StoredType)>> = (0..outputs)
            .map(|k| {
                let p = file("output", k);
                p.exists().then(|| read(&p)).transpose()
            })
            .collect::<Result<_>>()?;
        let output_types = read_outputs
            .iter()
            .map(|o| o.as_ref().map(|(_, s)| *s).unwrap_or_default())
            .collect();
        let outputs = read_outputs
            .into_iter()
            .map(|o| o.map(|(t, _)| t))
            .collect();
        Ok(TestData {
            inputs,
            outputs,
            output_types,
        })
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
/// |got - want| > atol + rtol * |want|, or where either side is not finite and they differ
/// (a NaN matches only a NaN, an infinity only the same infinity), so that a NaN or infinite
/// reference can never pass finite outputs. A shape or type that differs is an error naming
/// both, and so is a tolerance that is negative or not a number.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<Comparison, String> {
    for (name, t) in [("rtol", rtol), ("atol", atol)] {
        if !(t >= 0.0) {
            return Err(format!("{name} is {t}: a tolerance must be a number >= 0"));
        }
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {}, expected {}",
            hlstm_ir::dims_text(got.shape()),
            hlstm_ir::dims_text(want.shape())
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
    for (&x, &y) in g.iter().zip(&w) {
        let (d, bad) = if x == y || (x.is_nan() && y.is_nan()) {
            (0.0, false)
        } else if x.is_finite() && y.is_finite() {
            let d = (x - y).abs();
            (d, d > atol + rtol * y.abs())
        } else {
            // A non-finite value on either side that the other does not equal: no tolerance
            // covers it.
            (f64::INFINITY, true)
        };
        c.max_abs = c.max_abs.max(d);
        if y != 0.0 && y.is_finite() {
            c.max_rel = c.max_rel.max(d / y.abs());
        }
        c.bad += usize::from(bad);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_f32(&[v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn non_finite_references_never_pass_finite_outputs() {
        let got = t(&[1.0, 2.0]);
        for want in [
            [f32::NAN, f32::NAN],
            [f32::INFINITY, f32::INFINITY],
            [1.0, f32::NAN],
            [f32::NEG_INFINITY, 2.0],
        ] {
            let c = compare(&got, &t(&want), 1e-3, 1e-4).unwrap();
            assert!(c.bad >= 1, "{want:?} passed: {c:?}");
            assert_eq!(c.max_abs, f64::INFINITY);
        }
    }

    #[test]
    fn equal_non_finite_values_match() {
        let v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0];
        let c = compare(&t(&v), &t(&v), 1e-3, 1e-4).unwrap();
        assert_eq!((c.bad, c.max_abs), (0, 0.0));
        let c = compare(&t(&[f32::INFINITY]), &t(&[f32::NEG_INFINITY]), 1e-3, 1e-4).unwrap();
        assert_eq!(c.bad, 1);
    }

    #[test]
    fn nan_or_negative_tolerances_are_errors() {
        let (a, b) = (t(&[1.0]), t(&[2.0]));
        for (rtol, atol) in [(f64::NAN, 0.0), (0.0, f64::NAN), (-1.0, 0.0), (0.0, -1e-9)] {
            let e = compare(&a, &b, rtol, atol).unwrap_err();
            assert!(e.contains("tolerance"), "{e}");
        }
        // A finite difference still fails against finite tolerances.
        assert_eq!(compare(&a, &b, 1e-3, 1e-4).unwrap().bad, 1);
        assert_eq!(compare(&a, &b, 0.0, f64::INFINITY).unwrap().bad, 0);
        // No tolerance covers a NaN against a number.
        let nan = t(&[f32::NAN]);
        assert_eq!(compare(&a, &nan, 0.0, f64::INFINITY).unwrap().bad, 1);
        assert_eq!(compare(&nan, &a, f64::INFINITY, 0.0).unwrap().bad, 1);
    }
}
