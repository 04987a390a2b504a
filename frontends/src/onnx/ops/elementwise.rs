//! Elementwise ops, activations, Clip, Where, Cast, Softmax.

use super::{need, opt, out_names};
use crate::onnx::ctx::{Ctx, attr, attr_f, attr_i, attr_ints};
use crate::onnx::tensor::{dtype_of, stored_of};
use hlstm_ir::{Act, BinOp, Op, Tensor, Value};
use onnx_protobuf::NodeProto;

pub fn binary(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let op = match node.op_type.as_str() {
        "Add" => BinOp::Add,
        "Sub" => BinOp::Sub,
        "Mul" => BinOp::Mul,
        _ => BinOp::Div,
    };
    // Opsets before 7 had a `broadcast` attribute; from 7 on numpy broadcasting is implicit.
    ctx.add(
        label,
        Op::Binary(op),
        &[Some(need(ops, 0, "A")?), Some(need(ops, 1, "B")?)],
        &out_names(node),
    )
}

pub fn unary(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let act = match node.op_type.as_str() {
        "Neg" => Act::Neg,
        "Exp" => Act::Exp,
        "Sigmoid" => Act::Sigmoid,
        "Tanh" => Act::Tanh,
        "Relu" => Act::Relu,
        "LeakyRelu" => Act::LeakyRelu {
            alpha: attr_f(node, "alpha", 0.01),
        },
        "HardSigmoid" => Act::HardSigmoid {
            alpha: attr_f(node, "alpha", 0.2),
            beta: attr_f(node, "beta", 0.5),
        },
        "Elu" => Act::Elu {
            alpha: attr_f(node, "alpha", 1.0),
        },
        "ThresholdedRelu" => Act::ThresholdedRelu {
            alpha: attr_f(node, "alpha", 1.0),
        },
        "Softsign" => Act::Softsign,
        _ => Act::Softplus,
    };
    ctx.add(
        label,
        Op::Unary(act),
        &[Some(need(ops, 0, "X")?)],
        &out_names(node),
    )
}

pub fn clip(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "input")?;
    let (min, max) = if ctx.opset < 11 {
        // min and max were attributes before opset 11.
        let lo = attr(node, "min").map(|a| a.f).unwrap_or(f32::MIN);
        let hi = attr(node, "max").map(|a| a.f).unwrap_or(f32::MAX);
        let lo = ctx.constant(&format!("{label}/min"), Tensor::scalar_f32(lo));
        let hi = ctx.constant(&format!("{label}/max"), Tensor::scalar_f32(hi));
        (Some(lo), Some(hi))
    } else {
        (opt(ops, 1), opt(ops, 2))
    };
    ctx.add(label, Op::Clip, &[Some(x), min, max], &out_names(node))
}

/// Identity is an alias: no node is added.
pub fn identity(
    _: &mut Ctx,
    _: &NodeProto,
    _: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    Ok(vec![need(ops, 0, "input")?])
}

pub fn where_(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let args = [
        Some(need(ops, 0, "condition")?),
        Some(need(ops, 1, "X")?),
        Some(need(ops, 2, "Y")?),
    ];
    ctx.add(label, Op::Where, &args, &out_names(node))
}

pub fn cast(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let code = attr_i(node, "to", 1) as i32;
    let to = dtype_of(code)?;
    let x = need(ops, 0, "input")?;
    // float16 and bfloat16 are computed in f32: a constant cast to them is rounded here, as
    // ONNX Runtime would; a computed value is not (docs/precision.md says why).
    let narrow = stored_of(code);
    if narrow.size_bytes() == 2
        && let Some(t) = ctx.const_value(x)
    {
        let rounded = narrow.round(t.cast(hlstm_ir::DType::F32));
        let name = node.output.first().filter(|n| !n.is_empty()).cloned();
        let name = name.unwrap_or_else(|| format!("{label}:out"));
        return Ok(vec![ctx.constant(&name, rounded)]);
    }
    if ctx.ty(x).dtype == to {
        return Ok(vec![x]);
    }
    ctx.add(label, Op::Cast { to }, &[Some(x)], &out_names(node))
}

pub fn softmax(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let log = node.op_type == "LogSoftmax";
    let x = need(ops, 0, "input")?;
    let make = |axis| {
        if log {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        }
    };
    if ctx.opset >= 13 {
        return ctx.add(
            label,
            make(attr_i(node, "axis", -1)),
            &[Some(x)],
            &out_names(node),
        );
    }
    // Before opset 13 the input is coerced to 2-D at `axis` (default 1) and normalized per row.
    let rank = ctx
        .ty(x)
        .rank()
        .ok_or("softmax before opset 13 needs an input of known rank")? as i64;
    let axis = attr_i(node, "axis", 1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis == rank - 1 {
        return ctx.add(label, make(-1), &[Some(x)], &out_names(node));
    }
    let shape = ctx.add1(
        &format!("{label}/shape"),
        Op::Shape {
            start: 0,
            end: None,
        },
        &[Some(x)],
    )?;
    let flat = ctx.add1(
        &format!("{label}/flatten"),
        Op::Flatten { axis },
        &[Some(x)],
    )?;
    let y = ctx.add1(&format!("{label}/2d"), make(1), &[Some(flat)])?;
    ctx.add(
        label,
        Op::Reshape { allowzero: false },
        &[Some(y), Some(shape)],
        &out_names(node),
    )
}

/// ReduceSum: axes are an input from opset 13 on, an attribute before.
pub fn reduce_sum(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let axes = if ctx.opset >= 13 {
        opt(ops, 1)
    } else {
        attr_ints(node, "axes").map(|a| ctx.int_const(&format!("{label}/axes"), &a))
    };
    let op = Op::ReduceSum {
        keepdims: attr_i(node, "keepdims", 1) != 0,
        noop_with_empty_axes: attr_i(node, "noop_with_empty_axes", 0) != 0,
    };
    ctx.add(label, op, &[Some(x), axes], &out_names(node))
}
