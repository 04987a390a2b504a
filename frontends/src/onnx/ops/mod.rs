//! The op registry: ONNX op type -> importer. One file per op family.

pub mod contrib;
mod elementwise;
mod linalg;
mod loops;
pub mod rnn;
mod scan;
mod shape;

use super::ctx::Ctx;
use hlstm_ir::Value;
use onnx_protobuf::NodeProto;

/// Imports one node: gets the node, its label (for generated names) and its operands by slot
/// (`None` for an empty optional input); returns one value per ONNX output.
pub type ImportFn = fn(&mut Ctx, &NodeProto, &str, &[Option<Value>]) -> Result<Vec<Value>, String>;

/// The importer of `op_type` in `domain` ("" and "ai.onnx" are the default domain).
pub fn lookup_in(domain: &str, op_type: &str) -> Option<ImportFn> {
    match domain {
        "" | "ai.onnx" => lookup(op_type),
        contrib::MS_DOMAIN => contrib::lookup(op_type),
        _ => None,
    }
}

/// The importer of a default-domain op.
pub fn lookup(op_type: &str) -> Option<ImportFn> {
    Some(match op_type {
        "Add" | "Sub" | "Mul" | "Div" => elementwise::binary,
        "Neg" | "Exp" | "Sigmoid" | "Tanh" | "Relu" | "LeakyRelu" | "HardSigmoid" | "Elu"
        | "Softsign" | "Softplus" | "ThresholdedRelu" => elementwise::unary,
        "Selu" => contrib::selu_op,
        "Clip" => elementwise::clip,
        "Identity" => elementwise::identity,
        "Where" => elementwise::where_,
        "Cast" => elementwise::cast,
        "ReduceSum" => elementwise::reduce_sum,
        "Softmax" | "LogSoftmax" => elementwise::softmax,
        "MatMul" => linalg::matmul,
        "Gemm" => linalg::gemm,
        "Concat" => shape::concat,
        "Split" => shape::split,
        "Slice" => shape::slice,
        "Gather" => shape::gather,
        "Unsqueeze" => shape::unsqueeze,
        "Squeeze" => shape::squeeze,
        "Flatten" => shape::flatten,
        "Reshape" => shape::reshape,
        "Transpose" => shape::transpose,
        "Expand" => shape::expand,
        "Shape" => shape::shape,
        "Constant" => shape::constant,
        "ConstantOfShape" => shape::constant_of_shape,
        "LSTM" => rnn::lstm,
        "GRU" => rnn::gru,
        "RNN" => rnn::rnn,
        "Scan" => scan::scan,
        "Loop" => loops::loop_,
        "ReverseSequence" => loops::reverse_sequence,
        "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Equal" | "And" | "Or" | "Xor"
        | "Not" => loops::logic,
        _ => return None,
    })
}

/// The ONNX output names of a node, for naming results.
pub fn out_names(node: &NodeProto) -> Vec<&str> {
    node.output.iter().map(String::as_str).collect()
}

pub fn need(ops: &[Option<Value>], i: usize, what: &str) -> Result<Value, String> {
    ops.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} ({what}) is missing"))
}

pub fn opt(ops: &[Option<Value>], i: usize) -> Option<Value> {
    ops.get(i).copied().flatten()
}
