//! The egg language: tensor ops at the level of the graph IR. Matmul and the binary arithmetic
//! ops have their own variants so rules can match them; every other op is `Op(key, operands)`,
//! where the key indexes a table of the original ops (attributes, node name, result slot).
//! Constants and graph inputs are leaves indexing tables held by the analysis.

use egg::{Id, define_language};
use std::fmt;
use std::str::FromStr;

macro_rules! key_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or_else(|| format!("not a {}: {s}", $prefix))
            }
        }
    };
}

key_type!(ConstKey, "const#");
key_type!(VarKey, "input#");

/// An entry of the op table and which of its results this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    pub op: u32,
    pub slot: u32,
}

impl fmt::Display for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op#{}.{}", self.op, self.slot)
    }
}

impl FromStr for OpKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("op#").ok_or("not an op key")?;
        let (a, b) = rest.split_once('.').ok_or("not an op key")?;
        Ok(OpKey {
            op: a.parse().map_err(|_| "bad op index")?,
            slot: b.parse().map_err(|_| "bad slot")?,
        })
    }
}

/// A concat's axis, carried in the node so that patterns can name it (`concat@1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConcatAxis(pub i64);

impl fmt::Display for ConcatAxis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "concat@{}", self.0)
    }
}

impl FromStr for ConcatAxis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("concat@")
            .and_then(|n| n.parse().ok())
            .map(ConcatAxis)
            .ok_or_else(|| format!("not a concat: {s}"))
    }
}

define_language! {
    pub enum HLang {
        "matmul" = MatMul([Id; 2]),
        "add" = Add([Id; 2]),
        "sub" = Sub([Id; 2]),
        "mul" = Mul([Id; 2]),
        "relu" = Relu(Id),
        "sigmoid" = Sigmoid(Id),
        "tanh" = Tanh(Id),
        // reshape(x, shape) with allowzero = 0.
        "reshape" = Reshape([Id; 2]),
        // An empty optional operand slot.
        "none" = NoOperand,
        // The graph outputs, in order: the root of every extraction.
        "outputs" = Outputs(Box<[Id]>),
        Const(ConstKey),
        Input(VarKey),
        Concat(ConcatAxis, Vec<Id>),
        Op(OpKey, Vec<Id>),
    }
}
