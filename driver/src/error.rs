//! The library's error: one enum whose variants say which stage failed, and the node and op
//! where there is one, so that a program can react to the kind and a person can find the spot.

use hlstm_frontends::onnx::ImportError;
use std::path::PathBuf;

/// Everything the pipeline and the engines can fail with. `Display` gives the text the CLI
/// prints after `error: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "read", "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The model could not be imported: malformed bytes, unsupported op types, a node that
    /// does not import (these name the node and op).
    #[error(transparent)]
    Import(#[from] ImportError),
    /// An option is invalid (an unknown pass name, a bad limit, a thread count out of range).
    #[error("{0}")]
    Options(String),
    /// A shape given to fix the model's open dims does not fit it.
    #[error("{0}")]
    Shape(String),
    /// An input given to a run does not fit the model: a wrong name, type or shape
    /// (`problem` reads on from the name: `expects f32[2,3], got f32[3,3]`).
    #[error("input '{name}' {problem}")]
    Input {
        /// The input's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The inputs given do not fit the model as a whole: a wrong count, a missing input.
    #[error("{0}")]
    Inputs(String),
    /// A pass failed, or broke the graph (the message names the pass).
    #[error("{0}")]
    Optimize(String),
    /// The optimized graph does not lower to the kernel IR (the message names the node).
    #[error("cannot lower to the kernel IR: {0}")]
    Lower(String),
    /// A node failed in an interpreter, or the graph is not valid.
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op kind.
        op: String,
        /// The problem.
        msg: String,
    },
    /// A target could not generate or load code for the program.
    #[error("{target}: {msg}")]
    Codegen {
        /// The target: "jit", "PTX", "cuda".
        target: &'static str,
        /// The problem.
        msg: String,
    },
    /// This engine or target cannot do what was asked of it (a step of a model that cannot
    /// stream, an integer input the kernel engines do not take, no CUDA driver).
    #[error("{0}")]
    Unsupported(String),
    /// A run failed for another reason.
    #[error("{0}")]
    Run(String),
}

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<hlstm_ir::interp::InterpError> for Error {
    fn from(e: hlstm_ir::interp::InterpError) -> Error {
        if e.node.is_empty() {
            Error::Run(e.msg)
        } else {
            Error::Node {
                node: e.node,
                op: e.op,
                msg: e.msg,
            }
        }
    }
}

impl Error {
    /// An input error for input `name`.
    pub fn input(name: &str, problem: impl Into<String>) -> Error {
        Error::Input {
            name: name.to_string(),
            problem: problem.into(),
        }
    }
}
