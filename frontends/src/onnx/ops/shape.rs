//! Shape and data-movement ops, with their per-opset forms normalized: attributes of older
//! opsets (Split's split, Slice's starts/ends/axes, Squeeze/Unsqueeze axes) become constant
//! operands, as the newest opsets pass them.

use super::{need, opt, out_names};
use crate::onnx::ctx::{Ctx, attr, attr_i, attr_ints, attr_t};
use crate::onnx::tensor::decode;
use hlstm_ir::{Op, Tensor, Value};
use onnx_protobuf::NodeProto;

/// An operand that older opsets carried as an `ints` attribute.
fn ints_operand(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    name: &str,
    ops: &[Option<Value>],
    slot: usize,
    attr_until: i64,
) -> Option<Value> {
    if ctx.opset < attr_until {
        attr_ints(node, name).map(|v| ctx.int_const(&format!("{label}/{name}"), &v))
    } else {
        opt(ops, slot)
    }
}

pub fn concat(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let axis = attr(node, "axis")
        .ok_or("the axis attribute is required")?
        .i;
    let args: Vec<Option<Value>> = ops
        .iter()
        .map(|o| o.ok_or("an input is empty").map(Some))
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        return Err("needs at least one input".into());
    }
    ctx.add(label, Op::Concat { axis }, &args, &out_names(node))
}

pub fn split(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "input")?;
    // ONNX's Split needs an axis to split along; shape inference indexes the input's dims.
    if ctx.ty(x).rank() == Some(0) {
        return Err("the input is a scalar: Split needs rank 1 or more".into());
    }
    let num_outputs = node.output.len();
    if ctx.opset >= 18
        && let Some(n) = attr(node, "num_outputs")
        && n.i as usize != num_outputs
    {
        return Err(format!(
            "num_outputs is {} but the node has {num_outputs} outputs",
            n.i
        ));
    }
    let sizes = ints_operand(ctx, node, label, "split", ops, 1, 13);
    let op = Op::Split {
        axis: attr_i(node, "axis", 0),
        num_outputs,
    };
    ctx.add(label, op, &[Some(x), sizes], &out_names(node))
}

pub fn slice(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        let s = attr_ints(node, "starts").ok_or("the starts attribute is required")?;
        let e = attr_ints(node, "ends").ok_or("the ends attribute is required")?;
        let starts = ctx.int_const(&format!("{label}/starts"), &s);
        let ends = ctx.int_const(&format!("{label}/ends"), &e);
        let axes = attr_ints(node, "axes").map(|a| ctx.int_const(&format!("{label}/axes"), &a));
        (starts, ends, axes, None)
    } else {
        (
            need(ops, 1, "starts")?,
            need(ops, 2, "ends")?,
            opt(ops, 3),
            opt(ops, 4),
        )
    };
    ctx.add(
        label,
        Op::Slice,
        &[Some(x), Some(starts), Some(ends), axes, steps],
        &out_names(node),
    )
}

pub fn gather(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let data = need(ops, 0, "data")?;
    // ONNX's Gather needs an axis to index; shape inference slices the data's dims around it.
    if ctx.ty(data).rank() == Some(0) {
        return Err("the data is a scalar: Gather needs rank 1 or more".into());
    }
    let op = Op::Gather {
        axis: attr_i(node, "axis", 0),
    };
    ctx.add(
        label,
        op,
        &[Some(data), Some(need(ops, 1, "indices")?)],
        &out_names(node),
    )
}

pub fn unsqueeze(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let axes = ints_operand(ctx, node, label, "axes", ops, 1, 13).ok_or("axes are required")?;
    ctx.add(
        label,
        Op::Unsqueeze,
        &[Some(x), Some(axes)],
        &out_names(node),
    )
}

pub fn squeeze(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let axes = ints_operand(ctx, node, label, "axes", ops, 1, 13);
    ctx.add(label, Op::Squeeze, &[Some(x), axes], &out_names(node))
}

pub fn flatten(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    ctx.add(
        label,
        Op::Flatten {
            axis: attr_i(node, "axis", 1),
        },
        &[Some(need(ops, 0, "input")?)],
        &out_names(node),
    )
}

pub fn reshape(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let shape = if ctx.opset < 5 {
        let s = attr_ints(node, "shape").ok_or("the shape attribute is required")?;
        ctx.int_const(&format!("{label}/shape"), &s)
    } else {
        need(ops, 1, "shape")?
    };
    let op = Op::Reshape {
        allowzero: attr_i(node, "allowzero", 0) != 0,
    };
    ctx.add(label, op, &[Some(x), Some(shape)], &out_names(node))
}

pub fn transpose(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let perm = match attr_ints(node, "perm") {
        Some(p) => Some(
            p.iter()
                .map(|&v| {
                    usize::try_from(v).map_err(|_| format!("bad perm {}", hlstm_ir::dims_text(&p)))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    ctx.add(
        label,
        Op::Transpose { perm },
        &[Some(need(ops, 0, "data")?)],
        &out_names(node),
    )
}

pub fn expand(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    ctx.add(
        label,
        Op::Expand,
        &[Some(need(ops, 0, "input")?), Some(need(ops, 1, "shape")?)],
        &out_names(node),
    )
}

pub fn shape(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "data")?;
    let (start, end) = (attr_i(node, "start", 0), attr(node, "end").map(|a| a.i));
    // Fold a shape that is static, even when the tensor itself is a run-time value.
    if let Some(dims) = ctx.ty(x).concrete() {
        let (lo, hi) = hlstm_ir::interp::kernels::shape_range(dims.len(), start, end);
        let v: Vec<i64> = dims[lo..hi].iter().map(|&d| d as i64).collect();
        let name = node
            .output
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{label}:out"));
        return Ok(vec![ctx.int_const(&name, &v)]);
    }
    ctx.add(
        label,
        Op::Shape { start, end },
        &[Some(x)],
        &out_names(node),
    )
}

pub fn constant(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    _: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let a = node
        .attribute
        .first()
        .ok_or("a Constant needs a value attribute")?;
    let t = match a.name.as_str() {
        "value" => decode(a.t.as_ref().ok_or("value is not a tensor")?, ctx.model_dir)?,
        "value_float" => Tensor::scalar_f32(a.f),
        "value_floats" => {
            Tensor::from_f32(&[a.floats.len()], a.floats.clone()).ok_or("bad floats")?
        }
        "value_int" => Tensor::I64(ndarray::arr0(a.i).into_dyn()),
        "value_ints" => Tensor::from_i64(&[a.ints.len()], a.ints.clone()).ok_or("bad ints")?,
        other => {
            return Err(format!(
                "Constant with attribute '{other}' is not supported"
            ));
        }
    };
    let name = node
        .output
        .first()
        .cloned()
        .unwrap_or_else(|| label.to_string());
    Ok(vec![ctx.constant(&name, t)])
}

pub fn constant_of_shape(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let value = match attr_t(node, "value") {
        Some(t) => decode(t, ctx.model_dir)?,
        None => Tensor::scalar_f32(0.0),
    };
    if value.len() != 1 {
        return Err(format!(
            "value must hold one element, it has {}",
            value.len()
        ));
    }
    ctx.add(
        label,
        Op::ConstantOfShape { value },
        &[Some(need(ops, 0, "input")?)],
        &out_names(node),
    )
}
