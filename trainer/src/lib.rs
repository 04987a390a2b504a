//! hlstm-trainer: training on the graph IR. Reverse-mode autodiff as a graph-to-graph transform
//! (backpropagation through time through `recurrence`), and builders of the models the
//! grow-and-prune trainer trains: H-LSTMs and stacked LSTMs with classifier and next-token heads.
//! See docs/trainer.md.

pub mod autodiff;
pub mod builder;
mod error;
pub mod models;
pub mod rng;

pub use autodiff::{Options, SaveMode, grad_output_name, training_graph};
pub use builder::Builder;
pub use error::Error;
