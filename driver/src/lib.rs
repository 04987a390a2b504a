//! hlstmc's pipeline as a library: load an ONNX model, fix its open shapes inside the IR,
//! optimize it, and build it for an engine that runs it, all through [`Model`] and one runtime
//! trait, [`Runnable`]. The CLI, the trainer and the Python package call this crate; none of
//! them assembles the stages itself.
//!
//! ```no_run
//! use hlstm_driver::{BuildOptions, Model, OptimizeOptions};
//! # fn main() -> hlstm_driver::Result<()> {
//! let model = Model::load("model.onnx")?.optimize(&OptimizeOptions::default())?;
//! let runnable = model.into_runnable(&BuildOptions::default())?;
//! # let inputs = vec![];
//! let outputs = runnable.run(&inputs)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod cache;
mod engines;
mod error;
mod files;
pub mod inspect;
pub mod library;
mod model;
mod optimize;
mod precision;
mod runtime;
mod target;
pub mod test_data;

pub use engines::{compile_jit, kernel_program, lower_options};
pub use error::{Error, Result};
pub use files::write_atomic;
pub use hlstm_backends::cpu::{JitContext, JitProgram};
pub use model::Model;
pub use optimize::OptimizeOptions;
pub use runtime::{Runnable, State, TensorInfo, check_inputs};
pub use target::{BuildOptions, CpuIsa, Engine, Strategy};

pub use hlstm_ir::limits::{self, Limits};
pub use hlstm_ir::{DType, Dim, StoredType, StoredTypes, Tensor, TensorType};
