//! --verify-each: runs the interpreter on the same random inputs before and after a pass and
//! compares the outputs with the tolerance rule of `run --test-data`.

use hlstm_ir::{DType, Dim, Graph, Tensor};

/// A deterministic pseudo-random f32 stream in [-1, 1) (xorshift; no dependency needed for this).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Inputs for a graph: f32 uniform in [-1, 1); integers 0 (a valid index, and a valid length);
/// bools true. Symbolic or unknown dims take 2.
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut s = Stream(seed.max(1));
    g.inputs
        .iter()
        .map(|&i| {
            let ty = &g.nodes[i].results[0].ty;
            let dims: Vec<usize> = ty
                .shape
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|d| if let Dim::Known(n) = d { *n } else { 2 })
                .collect();
            let n: usize = dims.iter().product();
            match ty.dtype {
                DType::F32 => {
                    Tensor::from_f32(&dims, (0..n).map(|_| s.next()).collect()).expect("sized")
                }
                DType::Bool => {
                    Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&dims), true))
                }
                d => Tensor::zeros(d, &dims),
            }
        })
        .collect()
}

/// Runs both graphs on the same random inputs; Ok when they agree (or the reference cannot run
/// on random inputs at all, which is reported as a skip by returning Ok).
pub fn same_numbers(
    reference: &Graph,
    candidate: &Graph,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    let inputs = random_inputs(reference, 0x9e37_79b9_7f4a_7c15);
    let Ok(want) = hlstm_ir::interp::run(reference, &inputs) else {
        return Ok(());
    };
    let got = hlstm_ir::interp::run(candidate, &inputs)
        .map_err(|e| format!("the optimized graph fails to run: {e}"))?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for ((name, _), (g, w)) in reference.outputs.iter().zip(got.iter().zip(&want)) {
        if g.shape() != w.shape() || g.dtype() != w.dtype() {
            return Err(format!(
                "output '{name}' is {}{:?}, expected {}{:?}",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let (gf, wf) = (g.cast(DType::F32), w.cast(DType::F32));
        let (Some(ga), Some(wa)) = (gf.as_f32(), wf.as_f32()) else {
            continue;
        };
        for (i, (x, y)) in ga.iter().zip(wa.iter()).enumerate() {
            let d = (*x as f64 - *y as f64).abs();
            if d.is_nan() && !(x.is_nan() && y.is_nan()) || d > atol + rtol * (*y as f64).abs() {
                return Err(format!("output '{name}' element {i}: {x}, expected {y}"));
            }
        }
    }
    Ok(())
}
