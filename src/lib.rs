//! hlstmc: a compiler for LSTMs and pruned hidden-layer LSTMs (H-LSTM), as a library.
//!
//! One pipeline: [`Model::load`] imports an ONNX file (once), [`Model::with_input_shapes`]
//! fixes open dims inside the IR, [`Model::optimize`] runs the optimizer, and
//! [`Model::into_runnable`] builds it for an [`Engine`] (the reference interpreter, the kernel
//! interpreter, the Cranelift JIT, the CUDA runner). Every engine implements [`Runnable`]: a
//! built model shared by threads, each running it in a [`State`] of its own.
//!
//! ```
//! use hlstmc::{BuildOptions, Model, OptimizeOptions, Tensor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("examples/hlstm_sp97/model.onnx")?
//!     .optimize(&OptimizeOptions::default())?;
//! let runnable = model.into_runnable(&BuildOptions::default())?; // the JIT, one thread
//! let x = &runnable.inputs()[0];
//! let dims = x.ty.concrete().expect("static input");
//! let input = Tensor::from_f32(&dims, vec![0.5; dims.iter().product()]).expect("fits");
//! let outputs = runnable.run(&[input])?;
//! println!("{}: {:?}", runnable.outputs()[0].name, outputs[0].shape());
//! # Ok(()) }
//! ```
//!
//! The crates below it are re-exported for what the pipeline does not cover: [`ir`] (the graph
//! and kernel IRs, the reference interpreter), [`frontends`] (ONNX import and export),
//! [`passes`] (the optimizer and the lowering), [`backends`] (code generation) and
//! [`trainer`] (grow-and-prune training).
#![warn(missing_docs)]

pub use hlstm_driver::*;

pub use hlstm_backends as backends;
pub use hlstm_frontends as frontends;
pub use hlstm_ir as ir;
pub use hlstm_passes as passes;
pub use hlstm_trainer as trainer;

/// The README's Rust examples, run as doc-tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
