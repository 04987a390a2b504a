//! The operations of the graph IR. Their semantics follow the ONNX operator of the same name at
//! its newest opset; the importer normalizes older opsets into these forms. Operands that ONNX
//! passes as tensors (shapes, axes, slice bounds, clip bounds) stay operands, so a model that
//! supplies them at run time works; the importer folds them when they are constant.

use crate::graph::Graph;
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

/// Elementwise activation functions, with the ONNX RNN activation list included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Sigmoid,
    Tanh,
    Relu,
    Exp,
    Neg,
    LeakyRelu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// alpha * x + beta
    Affine {
        alpha: f32,
        beta: f32,
    },
    /// x if x > alpha else 0
    ThresholdedRelu {
        alpha: f32,
    },
    /// alpha * tanh(beta * x)
    ScaledTanh {
        alpha: f32,
        beta: f32,
    },
    Elu {
        alpha: f32,
    },
    Softsign,
    Softplus,
    /// 1 where |x| > 0, else 0 (NaN: 0): the mask of a ReLU's gradient. The graph writes it as
    /// cast(cast(x, bool), f32); lowering turns that pair into this (kernel IR has no bools).
    NotZero,
    /// 1 where x == 0, else 0 (NaN: 0): `equal(a, b)` lowers to this on a - b.
    IsZero,
    /// 1 where x > 0, else 0 (NaN: 0): `greater(a, b)` (and `less(b, a)`) on a - b.
    IsPositive,
    /// 1 where x >= 0, else 0 (NaN: 0): `greater_or_equal(a, b)` (and `less_or_equal(b, a)`).
    IsNonNegative,
}

impl Act {
    pub fn name(&self) -> &'static str {
        match self {
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Relu => "relu",
            Act::Exp => "exp",
            Act::Neg => "neg",
            Act::LeakyRelu { .. } => "leaky_relu",
            Act::HardSigmoid { .. } => "hard_sigmoid",
            Act::Affine { .. } => "affine",
            Act::ThresholdedRelu { .. } => "thresholded_relu",
            Act::ScaledTanh { .. } => "scaled_tanh",
            Act::Elu { .. } => "elu",
            Act::Softsign => "softsign",
            Act::NotZero => "not_zero",
            Act::Softplus => "softplus",
            Act::IsZero => "is_zero",
            Act::IsPositive => "is_positive",
            Act::IsNonNegative => "is_non_negative",
        }
    }

    /// Parameters in a fixed order, for the text form.
    pub fn params(&self) -> Vec<(&'static str, f32)> {
        match *self {
            Act::LeakyRelu { alpha } | Act::ThresholdedRelu { alpha } | Act::Elu { alpha } => {
                vec![("alpha", alpha)]
            }
            Act::HardSigmoid { alpha, beta }
            | Act::Affine { alpha, beta }
            | Act::ScaledTanh { alpha, beta } => vec![("alpha", alpha), ("beta", beta)],
            _ => vec![],
        }
    }

    /// Builds an activation from its IR name and parameters (missing ones take ONNX defaults).
    pub fn from_name(name: &str, alpha: Option<f32>, beta: Option<f32>) -> Option<Act> {
        Some(match name {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            "exp" => Act::Exp,
            "neg" => Act::Neg,
            "leaky_relu" => Act::LeakyRelu {
                alpha: alpha.unwrap_or(0.01),
            },
            "hard_sigmoid" => Act::HardSigmoid {
                alpha: alpha.unwrap_or(0.2),
                beta: beta.unwrap_or(0.5),
            },
            "affine" => Act::Affine {
                alpha: alpha.unwrap_or(1.0),
                beta: beta.unwrap_or(0.0),
            },
            "thresholded_relu" => Act::ThresholdedRelu {
                alpha: alpha.unwrap_or(1.0),
            },
            "scaled_tanh" => Act::ScaledTanh {
                alpha: alpha.unwrap_or(1.0),
                beta: beta.unwrap_or(1.0),
            },
            "elu" => Act::Elu {
                alpha: alpha.unwrap_or(1.0),
            },
            "softsign" => Act::Softsign,
            "not_zero" => Act::NotZero,
            "softplus" => Act::Softplus,
            "is_zero" => Act::IsZero,
            "is_positive" => Act::IsPositive,
            "is_non_negative" => Act::IsNonNegative,
            _ => return None,
        })
    }

    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Act::Sigmoid => {
                // Split on sign so exp never overflows.
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Act::Tanh => x.tanh(),
            // Not `x.max(0.0)`, which turns NaN into 0: the reference must not hide a NaN that
            // ONNX Runtime and the JIT propagate.
            Act::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Act::Exp => x.exp(),
            Act::Neg => -x,
            Act::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::Affine { alpha, beta } => alpha * x + beta,
            Act::ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh { alpha, beta } => alpha * (beta * x).tanh(),
            Act::Elu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::NotZero => {
                if x.abs() > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::IsZero => (x == 0.0) as u8 as f32,
            Act::IsPositive => (x > 0.0) as u8 as f32,
            Act::IsNonNegative => (x >= 0.0) as u8 as f32,
            Act::Softplus => {
                // log(1 + e^x) without overflow for large x.
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
        }
    }
}

/// Elementwise comparisons (numpy broadcasting; both operands of one type; the result is bool).
/// NaN compares false with everything, as in IEEE 754.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

impl CmpOp {
    pub const ALL: [CmpOp; 5] = [
        CmpOp::Equal,
        CmpOp::Less,
        CmpOp::Greater,
        CmpOp::LessOrEqual,
        CmpOp::GreaterOrEqual,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Equal => "equal",
            CmpOp::Less => "less",
            CmpOp::Greater => "greater",
            CmpOp::LessOrEqual => "less_or_equal",
            CmpOp::GreaterOrEqual => "greater_or_equal",
        }
    }
    /// The ONNX op of the same meaning.
    pub fn onnx(self) -> &'static str {
        match self {
            CmpOp::Equal => "Equal",
            CmpOp::Less => "Less",
            CmpOp::Greater => "Greater",
            CmpOp::LessOrEqual => "LessOrEqual",
            CmpOp::GreaterOrEqual => "GreaterOrEqual",
        }
    }
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Equal => a == b,
            CmpOp::Less => a < b,
            CmpOp::Greater => a > b,
            CmpOp::LessOrEqual => a <= b,
            CmpOp::GreaterOrEqual => a >= b,
        }
    }
}

/// Elementwise logic on bools (numpy broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOp {
    And,
    Or,
    Xor,
}

impl LogicOp {
    pub const ALL: [LogicOp; 3] = [LogicOp::And, LogicOp::Or, LogicOp::Xor];
    pub fn name(self) -> &'static str {
        match self {
            LogicOp::And => "and",
            LogicOp::Or => "or",
            LogicOp::Xor => "xor",
        }
    }
    pub fn onnx(self) -> &'static str {
        match self {
            LogicOp::And => "And",
            LogicOp::Or => "Or",
            LogicOp::Xor => "Xor",
        }
    }
    pub fn apply(self, a: bool, b: bool) -> bool {
        match self {
            LogicOp::And => a && b,
            LogicOp::Or => a || b,
            LogicOp::Xor => a != b,
        }
    }
}

/// A named constant (an ONNX initializer or a folded value).
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub name: String,
    /// Shared: the optimizer's e-graph and the kernel program read it without a copy.
    pub value: Arc<Tensor>,
}

/// The `recurrence` op: a time loop over a cell body.
///
/// Operands, in slot order: `num_carried` initial states, `num_scanned` sequences (sliced along
/// axis 0, one slice per step), then invariants (read unchanged every step), then, when
/// `has_seq_lens`, a 1-D integer tensor of per-batch lengths (all equal; steps past the length
/// are not run and their stacked outputs are zero, as in ONNX LSTM).
///
/// The body's inputs are, in order: carried states, one slice of each scanned sequence,
/// invariants. Its outputs: the next carried states, then per-step outputs. The node's results:
/// the final carried states, then each per-step output stacked along a new axis 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrence {
    pub body: Box<Graph>,
    pub num_carried: usize,
    pub num_scanned: usize,
    pub num_invariant: usize,
    pub reverse: bool,
    pub has_seq_lens: bool,
}

impl Recurrence {
    pub fn num_operands(&self) -> usize {
        self.num_carried + self.num_scanned + self.num_invariant + self.has_seq_lens as usize
    }
    pub fn num_step_outputs(&self) -> usize {
        self.body.outputs.len().saturating_sub(self.num_carried)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input (in a body: a carried state, a step slice or an invariant).
    Input,
    Const(Arc<Constant>),
    Identity,
    Unary(Act),
    Binary(BinOp),
    /// [x, min?, max?]
    Clip,
    /// numpy matmul semantics.
    MatMul,
    /// [a, b, c?]: alpha * a' b' + beta * c
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    Softmax {
        axis: i64,
    },
    LogSoftmax {
        axis: i64,
    },
    /// [cond, x, y]
    Where,
    /// [a, b] -> bool
    Compare(CmpOp),
    /// [a, b], both bool -> bool
    Logic(LogicOp),
    /// [x], bool -> bool
    Not,
    /// [data, axes?]: the sum over `axes` (1-D integers; absent or empty: every axis, or none
    /// when `noop_with_empty_axes`), as ONNX ReduceSum (opset 13).
    ReduceSum {
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    Concat {
        axis: i64,
    },
    /// [x, split?]; without sizes, `num_outputs` equal parts (the last smaller, as opset 18).
    Split {
        axis: i64,
        num_outputs: usize,
    },
    /// [data, starts, ends, axes?, steps?]
    Slice,
    /// [data, indices]
    Gather {
        axis: i64,
    },
    /// [data, axes]
    Unsqueeze,
    /// [data, axes?]
    Squeeze,
    Flatten {
        axis: i64,
    },
    /// [data, shape]
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// [data, shape]
    Expand,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// [shape]
    ConstantOfShape {
        value: Tensor,
    },
    Cast {
        to: DType,
    },
    /// Reverses the order along one axis (used for Scan inputs and outputs read backwards).
    Reverse {
        axis: i64,
    },
    Recurrence(Recurrence),
}

impl Op {
    /// The IR's name for the op kind (what `inspect` counts and docs/ops.md lists).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Const(_) => "const",
            Op::Identity => "identity",
            Op::Unary(a) => a.name(),
            Op::Binary(b) => b.name(),
            Op::Clip => "clip",
            Op::MatMul => "matmul",
            Op::Gemm { .. } => "gemm",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Where => "where",
            Op::Compare(c) => c.name(),
            Op::Logic(l) => l.name(),
            Op::Not => "not",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice => "slice",
            Op::Gather { .. } => "gather",
            Op::Unsqueeze => "unsqueeze",
            Op::Squeeze => "squeeze",
            Op::Flatten { .. } => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Expand => "expand",
            Op::Shape { .. } => "shape",
            Op::ConstantOfShape { .. } => "constant_of_shape",
            Op::Cast { .. } => "cast",
            Op::Reverse { .. } => "reverse",
            Op::Recurrence(_) => "recurrence",
        }
    }

    /// (minimum, maximum) number of operand slots.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input | Op::Const(_) => (0, 0),
            Op::Identity | Op::Unary(_) | Op::Softmax { .. } | Op::LogSoftmax { .. } => (1, 1),
            Op::Flatten { .. } | Op::Transpose { .. } | Op::Shape { .. } => (1, 1),
            Op::ConstantOfShape { .. } | Op::Cast { .. } | Op::Reverse { .. } => (1, 1),
            Op::Binary(_) | Op::MatMul | Op::Gather { .. } | Op::Unsqueeze => (2, 2),
            Op::Compare(_) | Op::Logic(_) => (2, 2),
            Op::Not => (1, 1),
            Op::ReduceSum { .. } => (1, 2),
            Op::Reshape { .. } | Op::Expand => (2, 2),
            Op::Clip => (1, 3),
            Op::Gemm { .. } => (2, 3),
            Op::Where => (3, 3),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Split { .. } => (1, 2),
            Op::Slice => (3, 5),
            Op::Squeeze => (1, 2),
            Op::Recurrence(r) => (r.num_operands(), r.num_operands()),
        }
    }

    /// Number of results.
    pub fn num_results(&self) -> usize {
        match self {
            Op::Split { num_outputs, .. } => *num_outputs,
            Op::Recurrence(r) => r.body.outputs.len(),
            _ => 1,
        }
    }

    /// Operand slots that may be left empty.
    pub fn optional_slot(&self, slot: usize) -> bool {
        match self {
            Op::Clip => slot >= 1,
            Op::Gemm { .. } => slot == 2,
            Op::Slice => slot >= 3,
            Op::Split { .. } | Op::Squeeze | Op::ReduceSum { .. } => slot == 1,
            _ => false,
        }
    }
}
