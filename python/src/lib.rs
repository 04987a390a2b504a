//! `hlstmc._native`: the extension module behind the `hlstmc` Python package. The package's
//! `__init__.py` re-exports it and adds what is plain Python (`from_torch`); the type stubs
//! are `hlstmc/_native.pyi`.
//!
//! Every call goes through the `hlstmc` library crate (`Model`, `Runnable`, `compile_library`,
//! the trainer); nothing here assembles the pipeline itself. Errors become Python exceptions
//! with the CLI's text (`errors.rs`), and no Rust panic reaches the interpreter: pyo3 turns one
//! into `pyo3_runtime.PanicException`, and the library does not panic on bad input.

mod convert;
mod errors;
mod session;
mod tools;
mod train;

use pyo3::prelude::*;

/// hlstmc: a compiler for LSTMs and pruned hidden-layer LSTMs (H-LSTM).
///
/// The native part of the `hlstmc` package; import `hlstmc`, not this module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InvalidArgument", py.get_type::<errors::InvalidArgument>())?;
    m.add("ModelError", py.get_type::<errors::ModelError>())?;
    m.add_class::<session::InferenceSession>()?;
    m.add_class::<session::NodeArg>()?;
    m.add_function(wrap_pyfunction!(tools::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(tools::optimize, m)?)?;
    m.add_function(wrap_pyfunction!(tools::compile, m)?)?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(tools::limits, m)?)?;
    m.add_function(wrap_pyfunction!(tools::set_limits, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
