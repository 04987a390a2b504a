//! --verify-each: runs the interpreter on the same random inputs before and after a pass and
//! compares the outputs with the tolerance rule of `run --test-data`.

use hlstm_ir::{DType, Graph};

pub use hlstm_ir::interp::random_inputs;

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
                "output '{name}' is {}{}, expected {}{}",
                g.dtype(),
                hlstm_ir::dims_text(g.shape()),
                w.dtype(),
                hlstm_ir::dims_text(w.shape())
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
