//! MatMul and Gemm.

use super::{need, opt, out_names};
use crate::onnx::ctx::{Ctx, attr_f, attr_i};
use hlstm_ir::{Op, Value};
use onnx_protobuf::NodeProto;

pub fn matmul(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    ctx.add(
        label,
        Op::MatMul,
        &[Some(need(ops, 0, "A")?), Some(need(ops, 1, "B")?)],
        &out_names(node),
    )
}

pub fn gemm(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let op = Op::Gemm {
        alpha: attr_f(node, "alpha", 1.0),
        beta: attr_f(node, "beta", 1.0),
        trans_a: attr_i(node, "transA", 0) != 0,
        trans_b: attr_i(node, "transB", 0) != 0,
    };
    ctx.add(
        label,
        op,
        &[
            Some(need(ops, 0, "A")?),
            Some(need(ops, 1, "B")?),
            opt(ops, 2),
        ],
        &out_names(node),
    )
}
