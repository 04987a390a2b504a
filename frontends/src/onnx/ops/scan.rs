//! Scan (opset 8 and 9+) onto `recurrence`: the body becomes the cell; scan axes other than 0
//! become transposes and backward directions become reverses around it; outer values the body
//! reads become invariants (constants are copied into the body).

use super::out_names;
use crate::onnx::ctx::{Ctx, attr_g, attr_i, attr_ints};
use crate::onnx::import_graph;
use hlstm_ir::{Dim, Op, Recurrence, Tensor, TensorType, Value};
use onnx_protobuf::NodeProto;

/// Imports the body with `formal` input types; returns it with the outer values it captured.
pub fn import_body(
    ctx: &Ctx,
    node: &NodeProto,
    formal: &[TensorType],
) -> Result<(hlstm_ir::Graph, Vec<Value>), String> {
    let body = attr_g(node, "body").ok_or("the body attribute is required")?;
    let mut bctx = Ctx::new(ctx.opset, ctx.model_dir, Some(ctx));
    import_graph(&mut bctx, body, formal).map_err(|e| format!("in the body: {e}"))?;
    let captures = bctx.captures.iter().map(|(outer, _)| *outer).collect();
    Ok((bctx.g, captures))
}

fn drop_axis(ty: &TensorType, axis: usize) -> TensorType {
    TensorType {
        dtype: ty.dtype,
        shape: ty.shape.as_ref().map(|s| {
            s.iter()
                .enumerate()
                .filter(|(i, _)| *i != axis)
                .map(|(_, d)| d.clone())
                .collect()
        }),
    }
}

fn norm(axis: i64, rank: Option<usize>) -> Result<usize, String> {
    if axis >= 0 {
        return Ok(axis as usize);
    }
    let r = rank.ok_or("a negative scan axis needs an input of known rank")? as i64;
    if axis + r < 0 {
        return Err(format!("axis {axis} out of range for rank {r}"));
    }
    Ok((axis + r) as usize)
}

/// Moves axis `a` of a value to the front.
fn to_front(ctx: &mut Ctx, label: &str, v: Value, a: usize) -> Result<Value, String> {
    if a == 0 {
        return Ok(v);
    }
    let r = ctx
        .ty(v)
        .rank()
        .ok_or("a scan axis other than 0 needs an input of known rank")?;
    if a >= r {
        return Err(format!("scan axis {a} out of range for rank {r}"));
    }
    let mut perm = vec![a];
    perm.extend((0..r).filter(|&i| i != a));
    ctx.add1(label, Op::Transpose { perm: Some(perm) }, &[Some(v)])
}

pub fn scan(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    if ctx.opset < 9 {
        return scan8(ctx, node, label, ops);
    }
    let m = attr_i(node, "num_scan_inputs", -1);
    if m < 1 || m as usize > ops.len() {
        return Err(format!(
            "num_scan_inputs is {m}, the node has {} inputs",
            ops.len()
        ));
    }
    let m = m as usize;
    let n = ops.len() - m;
    let vals: Vec<Value> = ops
        .iter()
        .map(|o| o.ok_or("an input is empty"))
        .collect::<Result<_, _>>()?;
    let in_axes = attr_ints(node, "scan_input_axes").unwrap_or_else(|| vec![0; m]);
    let in_dirs = attr_ints(node, "scan_input_directions").unwrap_or_else(|| vec![0; m]);
    if in_axes.len() != m || in_dirs.len() != m {
        return Err("scan_input_axes/directions must have one entry per scan input".into());
    }
    if let Some(d) = in_dirs.iter().find(|d| !matches!(d, 0 | 1)) {
        return Err(format!(
            "scan_input_directions holds {d}; a direction is 0 (forward) or 1 (reverse)"
        ));
    }
    let mut formal: Vec<TensorType> = vals[..n].iter().map(|v| ctx.ty(*v).clone()).collect();
    let mut scanned = Vec::new();
    for (i, v) in vals[n..].iter().enumerate() {
        let a = norm(in_axes[i], ctx.ty(*v).rank())?;
        let mut x = to_front(ctx, &format!("{label}/in{i}/transpose"), *v, a)?;
        if in_dirs[i] != 0 {
            x = ctx.add1(
                &format!("{label}/in{i}/reverse"),
                Op::Reverse { axis: 0 },
                &[Some(x)],
            )?;
        }
        formal.push(drop_axis(ctx.ty(x), 0));
        scanned.push(x);
    }
    let (body, captures) = import_body(ctx, node, &formal)?;
    let k = body
        .outputs
        .len()
        .checked_sub(n)
        .ok_or("the body has fewer outputs than states")?;
    if body.inputs.len() != n + m + captures.len() {
        return Err(format!(
            "the body has {} inputs, expected {} states and scan inputs",
            body.inputs.len() - captures.len(),
            n + m
        ));
    }
    let out_axes = attr_ints(node, "scan_output_axes").unwrap_or_else(|| vec![0; k]);
    let out_dirs = attr_ints(node, "scan_output_directions").unwrap_or_else(|| vec![0; k]);
    if out_axes.len() != k || out_dirs.len() != k {
        return Err("scan_output_axes/directions must have one entry per scan output".into());
    }
    if let Some(d) = out_dirs.iter().find(|d| !matches!(d, 0 | 1)) {
        return Err(format!(
            "scan_output_directions holds {d}; a direction is 0 (forward) or 1 (reverse)"
        ));
    }
    let rec = Recurrence {
        body: Box::new(body),
        num_carried: n,
        num_scanned: m,
        num_invariant: captures.len(),
        reverse: false,
        has_seq_lens: false,
    };
    let mut operands: Vec<Option<Value>> = vals[..n].iter().map(|v| Some(*v)).collect();
    operands.extend(scanned.iter().map(|v| Some(*v)));
    operands.extend(captures.iter().map(|v| Some(*v)));
    let names = out_names(node);
    let mut results = ctx.add(
        label,
        Op::Recurrence(rec),
        &operands,
        &names[..n.min(names.len())],
    )?;
    for j in 0..k {
        let mut y = results[n + j];
        if out_dirs[j] != 0 {
            y = ctx.add1(
                &format!("{label}/out{j}/reverse"),
                Op::Reverse { axis: 0 },
                &[Some(y)],
            )?;
        }
        let r = ctx.ty(y).rank();
        let a = norm(out_axes[j], r)?;
        if a != 0 {
            let r = r.ok_or("a scan output axis other than 0 needs a known rank")?;
            if a >= r {
                return Err(format!("scan output axis {a} out of range for rank {r}"));
            }
            let perm: Vec<usize> = (0..r)
                .map(|i| {
                    if i < a {
                        i + 1
                    } else if i == a {
                        0
                    } else {
                        i
                    }
                })
                .collect();
            y = ctx.add1(
                &format!("{label}/out{j}/transpose"),
                Op::Transpose { perm: Some(perm) },
                &[Some(y)],
            )?;
        }
        results[n + j] = y;
    }
    Ok(results)
}

/// Scan-8: batch axis 0 and sequence axis 1 on every input; the body sees one batch row. The
/// batch must be static: each row gets its own recurrence, and the rows are concatenated.
fn scan8(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let m = attr_i(node, "num_scan_inputs", -1);
    let rest = ops.get(1..).unwrap_or(&[]);
    if m < 1 || m as usize > rest.len() {
        return Err(format!(
            "num_scan_inputs is {m}, the node has {} inputs after sequence_lens",
            rest.len()
        ));
    }
    let m = m as usize;
    let n = rest.len() - m;
    let vals: Vec<Value> = rest
        .iter()
        .map(|o| o.ok_or("an input is empty"))
        .collect::<Result<_, _>>()?;
    let dirs = attr_ints(node, "directions").unwrap_or_else(|| vec![0; m]);
    let batch = ctx
        .ty(vals[0])
        .shape
        .as_ref()
        .and_then(|s| s.first())
        .and_then(Dim::known)
        .ok_or("Scan-8 needs a static batch dimension")?;
    let mut formal: Vec<TensorType> = vals[..n].iter().map(|v| drop_axis(ctx.ty(*v), 0)).collect();
    for v in &vals[n..] {
        formal.push(drop_axis(&drop_axis(ctx.ty(*v), 0), 0));
    }
    let (body, captures) = import_body(ctx, node, &formal)?;
    let k = body
        .outputs
        .len()
        .checked_sub(n)
        .ok_or("the body has fewer outputs than states")?;
    let lens = ops.first().copied().flatten();
    // Every Scan-8 operand has a batch axis, which the rows below index.
    if let Some(i) = vals
        .iter()
        .chain(&lens)
        .position(|v| ctx.ty(*v).rank() == Some(0))
    {
        return Err(format!(
            "operand {i} is a scalar: Scan-8 operands need a batch axis"
        ));
    }
    let mut per_row: Vec<Vec<Value>> = Vec::new();
    for b in 0..batch {
        let idx = ctx.constant(
            &format!("{label}/row{b}"),
            Tensor::I64(ndarray::arr0(b as i64).into_dyn()),
        );
        let mut operands = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            let mut x = ctx.add1(
                &format!("{label}/row{b}/in{i}"),
                Op::Gather { axis: 0 },
                &[Some(*v), Some(idx)],
            )?;
            if i >= n && dirs.get(i - n).copied().unwrap_or(0) != 0 {
                x = ctx.add1(
                    &format!("{label}/row{b}/in{i}/reverse"),
                    Op::Reverse { axis: 0 },
                    &[Some(x)],
                )?;
            }
            operands.push(Some(x));
        }
        operands.extend(captures.iter().map(|v| Some(*v)));
        if let Some(l) = lens {
            let idx1 = ctx.int_const(&format!("{label}/row{b}/len_idx"), &[b as i64]);
            operands.push(Some(ctx.add1(
                &format!("{label}/row{b}/len"),
                Op::Gather { axis: 0 },
                &[Some(l), Some(idx1)],
            )?));
        }
        let rec = Recurrence {
            body: Box::new(body.clone()),
            num_carried: n,
            num_scanned: m,
            num_invariant: captures.len(),
            reverse: false,
            has_seq_lens: lens.is_some(),
        };
        per_row.push(ctx.add(
            &format!("{label}/row{b}"),
            Op::Recurrence(rec),
            &operands,
            &[],
        )?);
    }
    let axes0 = ctx.int_const(&format!("{label}/axes0"), &[0]);
    let names = out_names(node);
    let mut results = Vec::new();
    for j in 0..n + k {
        let parts: Vec<Option<Value>> = per_row
            .iter()
            .enumerate()
            .map(|(b, r)| {
                ctx.add1(
                    &format!("{label}/row{b}/out{j}"),
                    Op::Unsqueeze,
                    &[Some(r[j]), Some(axes0)],
                )
                .map(Some)
            })
            .collect::<Result<_, _>>()?;
        let name = names.get(j).copied().unwrap_or("");
        results.push(
            ctx.add(
                &format!("{label}/out{j}"),
                Op::Concat { axis: 0 },
                &parts,
                &[name],
            )?[0],
        );
    }
    Ok(results)
}
