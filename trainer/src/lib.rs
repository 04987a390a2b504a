//! hlstm-trainer: training on the graph IR. Reverse-mode autodiff as a graph-to-graph transform
//! (backpropagation through time through `recurrence`), and builders of the models the
//! grow-and-prune trainer trains: H-LSTMs and stacked LSTMs with classifier and next-token heads;
//! optimizers, grow and prune, data loaders and the training loop, and `train_to_files`, the
//! whole of `hlstmc train` as a library call.
//! See docs/trainer.md.

pub mod autodiff;
pub mod builder;
pub mod config;
pub mod data;
mod error;
pub mod exec;
pub mod export;
pub mod gp;
pub mod models;
pub mod optim;
pub mod output;
pub mod rng;
pub mod train;

pub use autodiff::{Options, SaveMode, grad_output_name, training_graph};
pub use builder::Builder;
pub use error::Error;
pub use output::{TrainOutput, train_to_files};
