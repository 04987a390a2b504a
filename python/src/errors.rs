//! The library's errors as Python exceptions, with the text the CLI prints after `error: `.
//!
//! - `hlstmc.InvalidArgument` (a `ValueError`): what the caller passed does not fit: an input's
//!   name, shape or dtype, a shape to fix, an option (an engine name, a thread count).
//! - `hlstmc.ModelError` (a `RuntimeError`): the model cannot be imported, optimized, compiled
//!   or run (a malformed file, an unsupported op, a node that fails).
//! - A file that cannot be read or written: `FileNotFoundError`, `PermissionError` or `OSError`,
//!   as Python's own `open` raises.

use pyo3::exceptions::{
    PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::{PyErr, create_exception};

create_exception!(
    hlstmc,
    InvalidArgument,
    PyValueError,
    "An argument does not fit the model: an input's name, shape or dtype, or an option."
);
create_exception!(
    hlstmc,
    ModelError,
    PyRuntimeError,
    "The model cannot be imported, optimized, compiled or run (a malformed file, an unsupported op)."
);

/// A library error as the Python exception of its kind.
pub fn to_py(e: hlstmc::Error) -> PyErr {
    use hlstmc::Error as E;
    let text = e.to_string();
    match &e {
        E::Input { .. } | E::Inputs(_) | E::Shape(_) | E::Options(_) => {
            InvalidArgument::new_err(text)
        }
        E::Io { source, .. } => io_error(source.kind(), text),
        _ => ModelError::new_err(text),
    }
}

/// An I/O failure as the `OSError` subclass Python would raise for it.
pub fn io_error(kind: std::io::ErrorKind, text: String) -> PyErr {
    match kind {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(text),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(text),
        _ => PyOSError::new_err(text),
    }
}

/// An invalid argument, with this text.
pub fn invalid(text: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(text.into())
}

/// `value` as one of `all` by name, or an error that lists the names.
pub fn choose<T: Copy>(
    what: &str,
    value: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, PyErr> {
    all.iter()
        .copied()
        .find(|&t| name(t) == value)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&t| name(t)).collect();
            invalid(format!(
                "{what} '{value}' is not one of: {}",
                names.join(", ")
            ))
        })
}
