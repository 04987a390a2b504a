//! The trainer's error: a message, and the node and op it concerns when there is one, so that
//! a failure in a graph of hundreds of nodes can be found.

use hlstm_ir::Node;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The node's name; empty for errors that concern no single node.
    pub node: String,
    /// The node's op kind (`Op::kind`).
    pub op: String,
    pub msg: String,
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error {
            node: String::new(),
            op: String::new(),
            msg: msg.into(),
        }
    }

    pub fn at(node: &Node, msg: impl Into<String>) -> Error {
        Error {
            node: node.name.clone(),
            op: node.op.kind().to_string(),
            msg: msg.into(),
        }
    }

    /// Prefixes the message with where it happened (an enclosing recurrence, say).
    pub fn context(mut self, ctx: &str) -> Error {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "node '{}' ({}): {}", self.node, self.op, self.msg)
        }
    }
}

impl std::error::Error for Error {}
