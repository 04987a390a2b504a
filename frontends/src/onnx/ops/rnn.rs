//! LSTM, GRU and RNN expanded into `recurrence` ops, one per direction.
//!
//! The time loop is a `recurrence` whose body is the cell: carried states [h] (RNN, GRU) or
//! [h, c] (LSTM), one scanned input (the step slice x_t of X in [T, B, I] form), then the weights
//! as invariants. Weights given as constants (initializers) are sliced per direction, transposed
//! and split at import time and placed in the body as constants; weights computed at run time
//! (graph inputs) get the same ops outside the loop and enter the body as invariant operands.
//! Per step the body computes x_t·W^T + h·R^T + b, splits it into gates and applies the
//! activations; its per-step output is h. The node's outputs are assembled from the directions
//! (unsqueeze, concat on the direction axis, transpose for layout 1).
//!
//! `sequence_lens` becomes the recurrence's length operand: the recurrence runs steps 0..L
//! (L-1 down to 0 for the reverse direction), its stacked output is zero past L, and its final
//! states are those of the last step run, which is what Y_h/Y_c hold. All lengths must be equal.

use super::{need, opt, out_names};
use crate::onnx::ctx::{Ctx, attr, attr_floats, attr_i, attr_s, attr_strings};
use hlstm_ir::{Act, BinOp, DType, Dim, Op, Recurrence, Tensor, TensorType, Value};
use onnx_protobuf::NodeProto;
use std::collections::HashMap;

pub fn lstm(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let input_forget = attr_i(node, "input_forget", 0) != 0;
    expand(ctx, node, label, ops, Kind::Lstm { input_forget })
}

pub fn gru(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let linear_before_reset = attr_i(node, "linear_before_reset", 0) != 0;
    expand(
        ctx,
        node,
        label,
        ops,
        Kind::Gru {
            linear_before_reset,
        },
    )
}

pub fn rnn(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    expand(ctx, node, label, ops, Kind::Rnn)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Lstm { input_forget: bool },
    Gru { linear_before_reset: bool },
    Rnn,
}

impl Kind {
    fn op_name(self) -> &'static str {
        match self {
            Kind::Lstm { .. } => "LSTM",
            Kind::Gru { .. } => "GRU",
            Kind::Rnn => "RNN",
        }
    }
    /// Gates stacked in W and R.
    fn gates(self) -> usize {
        match self {
            Kind::Lstm { .. } => 4,
            Kind::Gru { .. } => 3,
            Kind::Rnn => 1,
        }
    }
    /// Activations per direction.
    fn num_acts(self) -> usize {
        match self {
            Kind::Lstm { .. } => 3,
            Kind::Gru { .. } => 2,
            Kind::Rnn => 1,
        }
    }
    fn default_acts(self) -> Vec<Act> {
        match self {
            Kind::Lstm { .. } => vec![Act::Sigmoid, Act::Tanh, Act::Tanh],
            Kind::Gru { .. } => vec![Act::Sigmoid, Act::Tanh],
            Kind::Rnn => vec![Act::Tanh],
        }
    }
    fn is_lstm(self) -> bool {
        matches!(self, Kind::Lstm { .. })
    }
    /// Highest input slot: X, W, R, B, sequence_lens, initial_h (, initial_c, P).
    fn max_inputs(self) -> usize {
        if self.is_lstm() { 8 } else { 6 }
    }
}

/// Maps an ONNX RNN activation name (case-insensitive) to its IR form, consuming alpha and beta
/// values from the shared lists when the function takes them (missing ones take the defaults).
fn onnx_act(
    name: &str,
    alphas: &mut std::slice::Iter<f32>,
    betas: &mut std::slice::Iter<f32>,
) -> Result<Act, String> {
    let (ir, n_alpha, n_beta) = match name.to_ascii_lowercase().as_str() {
        "relu" => ("relu", 0, 0),
        "tanh" => ("tanh", 0, 0),
        "sigmoid" => ("sigmoid", 0, 0),
        "affine" => ("affine", 1, 1),
        "leakyrelu" => ("leaky_relu", 1, 0),
        "thresholdedrelu" => ("thresholded_relu", 1, 0),
        "scaledtanh" => ("scaled_tanh", 1, 1),
        "hardsigmoid" => ("hard_sigmoid", 1, 1),
        "elu" => ("elu", 1, 0),
        "softsign" => ("softsign", 0, 0),
        "softplus" => ("softplus", 0, 0),
        _ => {
            return Err(format!(
                "unknown activation '{name}' (expected one of Relu, Tanh, Sigmoid, Affine, \
                 LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)"
            ));
        }
    };
    let alpha = if n_alpha > 0 {
        alphas.next().copied()
    } else {
        None
    };
    let beta = if n_beta > 0 {
        betas.next().copied()
    } else {
        None
    };
    Act::from_name(ir, alpha, beta).ok_or_else(|| format!("activation '{name}' is not supported"))
}

/// The activations of each direction, `kind.num_acts()` per direction.
fn parse_acts(node: &NodeProto, kind: Kind, nd: usize) -> Result<Vec<Vec<Act>>, String> {
    let n = kind.num_acts();
    let Some(names) = attr_strings(node, "activations") else {
        return Ok(vec![kind.default_acts(); nd]);
    };
    let alphas = attr_floats(node, "activation_alpha").unwrap_or_default();
    let betas = attr_floats(node, "activation_beta").unwrap_or_default();
    let (mut ai, mut bi) = (alphas.iter(), betas.iter());
    let acts: Vec<Act> = names
        .iter()
        .map(|s| onnx_act(s, &mut ai, &mut bi))
        .collect::<Result<_, _>>()?;
    if acts.len() == n * nd {
        Ok(acts.chunks(n).map(<[Act]>::to_vec).collect())
    } else if acts.len() == n {
        // One set for both directions.
        Ok(vec![acts; nd])
    } else if kind == Kind::Rnn && nd == 1 && acts.len() == 2 {
        // The schema's default list ["Tanh", "Tanh"] written out for a forward RNN.
        Ok(vec![acts[..1].to_vec()])
    } else {
        Err(format!(
            "activations lists {} functions; {} expects {} per direction ({} in all for {} direction{})",
            acts.len(),
            kind.op_name(),
            n,
            n * nd,
            nd,
            if nd == 1 { "" } else { "s" }
        ))
    }
}

fn dims_text(want: &[(&str, Option<usize>)]) -> String {
    let parts: Vec<String> = want
        .iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Checks a value's type against the expected dims (None: any); unknown dims pass.
fn check_shape(
    what: &str,
    ty: &TensorType,
    dtypes: &[DType],
    want: &[(&str, Option<usize>)],
) -> Result<(), String> {
    if !dtypes.contains(&ty.dtype) {
        let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
        return Err(format!(
            "{what} must be {}, got {}",
            names.join(" or "),
            ty.dtype
        ));
    }
    let Some(s) = &ty.shape else { return Ok(()) };
    let bad = s.len() != want.len()
        || s.iter().zip(want).any(|(d, (_, w))| match (d, w) {
            (Dim::Known(k), Some(w)) => k != w,
            _ => false,
        });
    if bad {
        return Err(format!(
            "{what} must have shape {}, got {ty}",
            dims_text(want)
        ));
    }
    Ok(())
}

fn dim_at(ty: &TensorType, i: usize) -> Dim {
    ty.shape
        .as_ref()
        .and_then(|s| s.get(i).cloned())
        .unwrap_or(Dim::Unknown)
}

/// Everything one direction's cell needs, as outer values (constants when the weights are).
struct DirWeights {
    /// W^T: [I, gates*H].
    w_t: Value,
    /// R^T: [H, gates*H]; for GRU with linear_before_reset = 0, only the z and r rows: [H, 2H].
    r_t: Value,
    /// GRU with linear_before_reset = 0: Rh^T, [H, H].
    r_h_t: Option<Value>,
    /// Added to x·W^T (LSTM, RNN, GRU lbr=0: Wb + Rb; GRU lbr=1: Wb), [gates*H].
    bias_x: Option<Value>,
    /// GRU with linear_before_reset = 1: Rb, added to h·R^T, [3H].
    bias_h: Option<Value>,
    /// LSTM peepholes (i, o, f), each [H].
    peep: Option<[Value; 3]>,
}

struct Attrs {
    kind: Kind,
    clip: Option<f32>,
    acts: Vec<Act>,
    want_y: bool,
}

fn expand(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
    kind: Kind,
) -> Result<Vec<Value>, String> {
    let name = kind.op_name();
    if ops.len() > kind.max_inputs() {
        return Err(format!(
            "{name} takes at most {} inputs, the node has {}",
            kind.max_inputs(),
            ops.len()
        ));
    }
    if node.output.len() > 2 + kind.is_lstm() as usize {
        return Err(format!(
            "{name} has at most {} outputs, the node lists {}",
            2 + kind.is_lstm() as usize,
            node.output.len()
        ));
    }
    let direction = attr_s(node, "direction").unwrap_or_else(|| "forward".into());
    let (nd, dirs): (usize, Vec<bool>) = match direction.as_str() {
        "forward" => (1, vec![false]),
        "reverse" => (1, vec![true]),
        "bidirectional" => (2, vec![false, true]),
        other => {
            return Err(format!(
                "direction '{other}' is not supported (forward, reverse or bidirectional)"
            ));
        }
    };
    let layout = attr_i(node, "layout", 0);
    if layout != 0 && layout != 1 {
        return Err(format!("layout must be 0 or 1, got {layout}"));
    }
    let clip = match attr(node, "clip") {
        Some(a) if a.f.is_nan() || a.f <= 0.0 => {
            return Err(format!("clip must be a positive threshold, got {}", a.f));
        }
        Some(a) => Some(a.f),
        None => None,
    };
    let acts = parse_acts(node, kind, nd)?;
    let g = kind.gates();

    let x = need(ops, 0, "X")?;
    let w = need(ops, 1, "W")?;
    let r = need(ops, 2, "R")?;
    let b = opt(ops, 3);
    let seq_lens = opt(ops, 4);
    let init_h = opt(ops, 5);
    let init_c = if kind.is_lstm() { opt(ops, 6) } else { None };
    let p = if kind.is_lstm() { opt(ops, 7) } else { None };

    // X in [T, B, I] form.
    let xty = ctx.ty(x).clone();
    let x_names: [&str; 3] = if layout == 0 {
        ["seq_length", "batch_size", "input_size"]
    } else {
        ["batch_size", "seq_length", "input_size"]
    };
    check_shape("X", &xty, &[DType::F32], &x_names.map(|n| (n, None)))?;
    let x_seq = if layout == 1 {
        ctx.add1(
            &format!("{label}/X_tbi"),
            Op::Transpose {
                perm: Some(vec![1, 0, 2]),
            },
            &[Some(x)],
        )?
    } else {
        x
    };
    let sty = ctx.ty(x_seq).clone();
    let (t_dim, b_dim, i_dim) = (dim_at(&sty, 0), dim_at(&sty, 1), dim_at(&sty, 2));

    // Hidden size: the attribute, else R's last dim, else W's gate dim.
    let (wty, rty) = (ctx.ty(w).clone(), ctx.ty(r).clone());
    let h = match attr(node, "hidden_size") {
        Some(a) if a.i <= 0 || a.i > 1 << 30 => {
            return Err(format!("hidden_size must be in 1..=2^30, got {}", a.i));
        }
        Some(a) => a.i as usize,
        None => match (dim_at(&rty, 2), dim_at(&rty, 1), dim_at(&wty, 1)) {
            (Dim::Known(h), _, _) if h > 0 => h,
            (_, Dim::Known(gh), _) | (_, _, Dim::Known(gh)) if gh % g == 0 && gh > 0 => gh / g,
            _ => {
                return Err(
                    "hidden_size is absent and cannot be inferred from the shapes of R or W".into(),
                );
            }
        },
    };
    let gh_name = match g {
        4 => "4*hidden_size",
        3 => "3*hidden_size",
        _ => "hidden_size",
    };
    let i_known = i_dim.known().or_else(|| dim_at(&wty, 2).known());
    check_shape(
        "W",
        &wty,
        &[DType::F32],
        &[
            ("num_directions", Some(nd)),
            (gh_name, Some(g * h)),
            ("input_size", i_known),
        ],
    )?;
    check_shape(
        "R",
        &rty,
        &[DType::F32],
        &[
            ("num_directions", Some(nd)),
            (gh_name, Some(g * h)),
            ("hidden_size", Some(h)),
        ],
    )?;
    let i_dim = match i_known {
        Some(i) => Dim::Known(i),
        None => i_dim,
    };
    if let Some(b) = b {
        let bname = match g {
            4 => "8*hidden_size",
            3 => "6*hidden_size",
            _ => "2*hidden_size",
        };
        check_shape(
            "B",
            ctx.ty(b),
            &[DType::F32],
            &[("num_directions", Some(nd)), (bname, Some(2 * g * h))],
        )?;
    }
    if let Some(p) = p {
        check_shape(
            "P",
            ctx.ty(p),
            &[DType::F32],
            &[("num_directions", Some(nd)), ("3*hidden_size", Some(3 * h))],
        )?;
    }
    let b_known = b_dim.known();
    for (what, v) in [("initial_h", init_h), ("initial_c", init_c)] {
        if let Some(v) = v {
            let want = if layout == 0 {
                [
                    ("num_directions", Some(nd)),
                    ("batch_size", b_known),
                    ("hidden_size", Some(h)),
                ]
            } else {
                [
                    ("batch_size", b_known),
                    ("num_directions", Some(nd)),
                    ("hidden_size", Some(h)),
                ]
            };
            check_shape(what, ctx.ty(v), &[DType::F32], &want)?;
        }
    }
    let seq_lens = match seq_lens {
        Some(s) => seq_lens_operand(ctx, s, &t_dim, b_known)?,
        None => None,
    };

    let names = out_names(node);
    let named = |i: usize| names.get(i).copied().filter(|s| !s.is_empty());
    let want_y = named(0).is_some();

    // Zero initial states when none are given.
    let mut zeros: Option<Value> = None;
    let mut zero_state = |ctx: &mut Ctx| -> Result<Value, String> {
        if let Some(z) = zeros {
            return Ok(z);
        }
        let z = match b_known {
            Some(bn) => {
                hlstm_ir::interp::kernels::check_size(&[bn, h])?;
                ctx.constant(
                    &format!("{label}/zero_state"),
                    Tensor::zeros(DType::F32, &[bn, h]),
                )
            }
            None => {
                let bsz = ctx.add1(
                    &format!("{label}/batch"),
                    Op::Shape {
                        start: 1,
                        end: Some(2),
                    },
                    &[Some(x_seq)],
                )?;
                let hc = ctx.int_const(&format!("{label}/hidden"), &[h as i64]);
                let shape = ctx.add1(
                    &format!("{label}/state_shape"),
                    Op::Concat { axis: 0 },
                    &[Some(bsz), Some(hc)],
                )?;
                ctx.add1(
                    &format!("{label}/zero_state"),
                    Op::ConstantOfShape {
                        value: Tensor::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1]))),
                    },
                    &[Some(shape)],
                )?
            }
        };
        zeros = Some(z);
        Ok(z)
    };

    let mut y_parts = Vec::new();
    let mut h_parts = Vec::new();
    let mut c_parts = Vec::new();
    for (d, &reverse) in dirs.iter().enumerate() {
        let dn = if reverse { "bw" } else { "fw" };
        let dl = format!("{label}/{dn}");
        let idx = ctx.constant(
            &format!("{dl}/index"),
            Tensor::I64(ndarray::arr0(d as i64).into_dyn()),
        );
        // A single direction's constant weights that no other operand of the node names are
        // moved out of the graph rather than copied (`take_unread_const`).
        let movable: Vec<Value> = [Some(w), Some(r), b, p]
            .into_iter()
            .flatten()
            .filter(|&v| nd == 1 && ops.iter().flatten().filter(|&&o| o == v).count() == 1)
            .collect();
        let weights = dir_weights(ctx, &dl, kind, h, idx, &movable, [w, r], b, p)?;
        let state_axis = if layout == 0 { 0 } else { 1 };
        let mut init = Vec::new();
        for (what, v) in [("h0", init_h), ("c0", init_c)] {
            if what == "c0" && !kind.is_lstm() {
                continue;
            }
            init.push(match v {
                Some(v) => ctx.add1(
                    &format!("{dl}/{what}"),
                    Op::Gather { axis: state_axis },
                    &[Some(v), Some(idx)],
                )?,
                None => zero_state(ctx)?,
            });
        }
        let attrs = Attrs {
            kind,
            clip,
            acts: acts[d].clone(),
            want_y,
        };
        let state_ty = TensorType::new(DType::F32, vec![b_dim.clone(), Dim::Known(h)]);
        let x_ty = TensorType::new(DType::F32, vec![b_dim.clone(), i_dim.clone()]);
        let (body, invariants) = build_body(ctx, &dl, &attrs, &weights, &state_ty, &x_ty)?;
        let num_carried = init.len();
        let mut operands: Vec<Option<Value>> = init.into_iter().map(Some).collect();
        operands.push(Some(x_seq));
        operands.extend(invariants.iter().map(|v| Some(*v)));
        if let Some(s) = seq_lens {
            operands.push(Some(s));
        }
        let rec = Recurrence {
            body: Box::new(body),
            num_carried,
            num_scanned: 1,
            num_invariant: invariants.len(),
            reverse,
            has_seq_lens: seq_lens.is_some(),
        };
        let res = ctx.add(&dl, Op::Recurrence(rec), &operands, &[])?;
        h_parts.push(res[0]);
        if kind.is_lstm() {
            c_parts.push(res[1]);
        }
        if want_y {
            y_parts.push(res[num_carried]);
        }
    }

    let mut results = Vec::new();
    let placeholder = h_parts[0];
    // Y: [T, num_dir, B, H], or [B, T, num_dir, H] for layout 1.
    results.push(match named(0) {
        Some(nm) => stack_dirs(
            ctx,
            &format!("{label}/Y"),
            &y_parts,
            1,
            (layout == 1).then(|| vec![2, 0, 1, 3]),
            nm,
        )?,
        None => placeholder,
    });
    // Y_h, Y_c: [num_dir, B, H], or [B, num_dir, H] for layout 1.
    let state_outs: Vec<(usize, &[Value])> = if kind.is_lstm() {
        vec![(1, &h_parts), (2, &c_parts)]
    } else {
        vec![(1, &h_parts)]
    };
    for (i, parts) in state_outs {
        if i >= node.output.len() {
            break;
        }
        results.push(match named(i) {
            Some(nm) => stack_dirs(
                ctx,
                &format!("{label}/{}", if i == 1 { "Y_h" } else { "Y_c" }),
                parts,
                0,
                (layout == 1).then(|| vec![1, 0, 2]),
                nm,
            )?,
            None => placeholder,
        });
    }
    Ok(results)
}

/// The sequence_lens operand for the recurrences, or None when it is a constant equal to the
/// full sequence length. Constant lengths are checked here; run-time ones by the recurrence.
fn seq_lens_operand(
    ctx: &mut Ctx,
    s: Value,
    t_dim: &Dim,
    b_known: Option<usize>,
) -> Result<Option<Value>, String> {
    check_shape(
        "sequence_lens",
        ctx.ty(s),
        &[DType::I32, DType::I64],
        &[("batch_size", b_known)],
    )?;
    let Some(t) = ctx.const_value(s) else {
        return Ok(Some(s));
    };
    let lens = t.to_i64_vec().ok_or("sequence_lens must be integers")?;
    if let Some(&first) = lens.first() {
        if lens.iter().any(|&l| l != first) {
            return Err(format!(
                "sequence_lens {} differ; only equal lengths are supported",
                hlstm_ir::dims_text(&lens)
            ));
        }
        let t_len = t_dim.known();
        if first < 0 || t_len.is_some_and(|tl| first as usize > tl) {
            return Err(format!(
                "sequence length {first} is outside 0..={}",
                t_len.map_or("seq_length".to_string(), |v| v.to_string())
            ));
        }
        if t_len == Some(first as usize) {
            return Ok(None);
        }
    }
    Ok(Some(s))
}

/// Unsqueezes each direction's value at `axis`, concatenates them there, then transposes (for
/// layout 1). The last op's result is named `name`.
fn stack_dirs(
    ctx: &mut Ctx,
    label: &str,
    parts: &[Value],
    axis: i64,
    perm: Option<Vec<usize>>,
    name: &str,
) -> Result<Value, String> {
    let axes = ctx.int_const(&format!("{label}/axes"), &[axis]);
    let single = parts.len() == 1;
    let mut us = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let nm = if single && perm.is_none() { name } else { "" };
        us.push(Some(
            ctx.add(
                &format!("{label}/unsqueeze{i}"),
                Op::Unsqueeze,
                &[Some(*p), Some(axes)],
                &[nm],
            )?[0],
        ));
    }
    let mut v = match us.as_slice() {
        [Some(u)] => *u,
        _ => {
            let nm = if perm.is_none() { name } else { "" };
            ctx.add(&format!("{label}/concat"), Op::Concat { axis }, &us, &[nm])?[0]
        }
    };
    if let Some(perm) = perm {
        v = ctx.add(
            &format!("{label}/transpose"),
            Op::Transpose { perm: Some(perm) },
            &[Some(v)],
            &[name],
        )?[0];
    }
    Ok(v)
}

/// Slices, transposes and splits one direction's weights (folded when they are constants).
#[allow(clippy::too_many_arguments)]
fn dir_weights(
    ctx: &mut Ctx,
    dl: &str,
    kind: Kind,
    h: usize,
    idx: Value,
    movable: &[Value],
    [w, r]: [Value; 2],
    b: Option<Value>,
    p: Option<Value>,
) -> Result<DirWeights, String> {
    let t = |ctx: &mut Ctx, nm: &str, v: Value| {
        ctx.add1(
            nm,
            Op::Transpose {
                perm: Some(vec![1, 0]),
            },
            &[Some(v)],
        )
    };
    let gather = |ctx: &mut Ctx, nm: &str, v: Value| {
        // The only direction of a weight nothing else reads: its leading dim of 1 is dropped
        // in place, where a folded Gather would copy the whole weight.
        if movable.contains(&v)
            && ctx
                .const_value(v)
                .is_some_and(|t| t.shape().first() == Some(&1))
            && let Some(t) = ctx.take_unread_const(v)
        {
            let t = hlstm_ir::map_tensor!(t, a => a.index_axis_move(ndarray::Axis(0), 0));
            return Ok(ctx.constant(nm, t));
        }
        ctx.add1(nm, Op::Gather { axis: 0 }, &[Some(v), Some(idx)])
    };
    // A folded intermediate (the direction's slice of a constant weight, its parts) is freed
    // as soon as what is made from it exists: each is as large as the weight (16 MiB for an
    // LSTM of 1024 units), and it would otherwise stay in the graph until dead-code
    // elimination.
    let drop_temp = |ctx: &mut Ctx, v: Value, source: Value| {
        if v != source && ctx.const_value(v).is_some() && ctx.g.users(v.node).is_empty() {
            ctx.g.nodes.remove_node(v.node);
        }
    };
    let w_d = gather(ctx, &format!("{dl}/W"), w)?;
    let w_t = t(ctx, &format!("{dl}/W_t"), w_d)?;
    drop_temp(ctx, w_d, w);
    let r_d = gather(ctx, &format!("{dl}/R"), r)?;
    let lbr0 = matches!(
        kind,
        Kind::Gru {
            linear_before_reset: false
        }
    );
    let (r_t, r_h_t) = if lbr0 {
        let sizes = ctx.int_const(&format!("{dl}/R_split"), &[2 * h as i64, h as i64]);
        let parts = ctx.add(
            &format!("{dl}/R_zr_h"),
            Op::Split {
                axis: 0,
                num_outputs: 2,
            },
            &[Some(r_d), Some(sizes)],
            &[],
        )?;
        let zr = t(ctx, &format!("{dl}/R_zr_t"), parts[0])?;
        let h_t = t(ctx, &format!("{dl}/R_h_t"), parts[1])?;
        drop_temp(ctx, r_d, r);
        drop_temp(ctx, parts[0], r);
        drop_temp(ctx, parts[1], r);
        (zr, Some(h_t))
    } else {
        let r_t = t(ctx, &format!("{dl}/R_t"), r_d)?;
        drop_temp(ctx, r_d, r);
        (r_t, None)
    };
    let (bias_x, bias_h) = match b {
        None => (None, None),
        Some(b) => {
            let b_d = gather(ctx, &format!("{dl}/B"), b)?;
            let wr = ctx.add(
                &format!("{dl}/B_split"),
                Op::Split {
                    axis: 0,
                    num_outputs: 2,
                },
                &[Some(b_d)],
                &[],
            )?;
            match kind {
                Kind::Gru {
                    linear_before_reset: true,
                } => (Some(wr[0]), Some(wr[1])),
                _ => {
                    let sum = ctx.add1(
                        &format!("{dl}/bias"),
                        Op::Binary(BinOp::Add),
                        &[Some(wr[0]), Some(wr[1])],
                    )?;
                    (Some(sum), None)
                }
            }
        }
    };
    let peep = match p {
        None => None,
        Some(p) => {
            let p_d = gather(ctx, &format!("{dl}/P"), p)?;
            let iof = ctx.add(
                &format!("{dl}/P_iof"),
                Op::Split {
                    axis: 0,
                    num_outputs: 3,
                },
                &[Some(p_d)],
                &[],
            )?;
            Some([iof[0], iof[1], iof[2]])
        }
    };
    Ok(DirWeights {
        w_t,
        r_t,
        r_h_t,
        bias_x,
        bias_h,
        peep,
    })
}

/// Builds the cell body over a scratch import context (for its shape inference and folding).
struct Body<'c> {
    b: Ctx<'c>,
    prefix: String,
    clip: Option<(Value, Value)>,
    one: Option<Value>,
}

impl Body<'_> {
    fn op(&mut self, what: &str, op: Op, args: &[Value]) -> Result<Value, String> {
        let operands: Vec<Option<Value>> = args.iter().map(|v| Some(*v)).collect();
        self.b
            .add1(&format!("{}/{what}", self.prefix), op, &operands)
    }
    fn bin(&mut self, what: &str, op: BinOp, a: Value, b: Value) -> Result<Value, String> {
        self.op(what, Op::Binary(op), &[a, b])
    }
    fn add_opt(&mut self, what: &str, a: Value, b: Option<Value>) -> Result<Value, String> {
        match b {
            Some(b) => self.bin(what, BinOp::Add, a, b),
            None => Ok(a),
        }
    }
    fn split(&mut self, what: &str, x: Value, n: usize) -> Result<Vec<Value>, String> {
        self.b.add(
            &format!("{}/{what}", self.prefix),
            Op::Split {
                axis: -1,
                num_outputs: n,
            },
            &[Some(x)],
            &[],
        )
    }
    /// Clip (when the node sets one), then the activation.
    fn act(&mut self, what: &str, act: Act, x: Value) -> Result<Value, String> {
        let x = match self.clip {
            Some((lo, hi)) => self.b.add1(
                &format!("{}/{what}_clip", self.prefix),
                Op::Clip,
                &[Some(x), Some(lo), Some(hi)],
            )?,
            None => x,
        };
        self.op(what, Op::Unary(act), &[x])
    }
    /// 1 - x.
    fn one_minus(&mut self, what: &str, x: Value) -> Result<Value, String> {
        let one = match self.one {
            Some(o) => o,
            None => {
                let o = self
                    .b
                    .constant(&format!("{}/one", self.prefix), Tensor::scalar_f32(1.0));
                self.one = Some(o);
                o
            }
        };
        self.bin(what, BinOp::Sub, one, x)
    }
}

/// Builds one direction's cell. Body inputs: h (, c), x_t, then the run-time weights; returns
/// the body and the outer values to pass as its invariants.
fn build_body(
    ctx: &mut Ctx,
    dl: &str,
    a: &Attrs,
    wts: &DirWeights,
    state_ty: &TensorType,
    x_ty: &TensorType,
) -> Result<(hlstm_ir::Graph, Vec<Value>), String> {
    let mut body = Body {
        b: Ctx::new(ctx.opset, ctx.model_dir, None),
        prefix: dl.to_string(),
        clip: None,
        one: None,
    };
    let hv = body.b.g.add_input("h", state_ty.clone());
    let cv = if a.kind.is_lstm() {
        Some(body.b.g.add_input("c", state_ty.clone()))
    } else {
        None
    };
    let xv = body.b.g.add_input("x", x_ty.clone());

    // Weights: constants are moved in (copied where the outer graph still reads them), run-time
    // values become invariant inputs. One outer value brought twice gives one body value.
    let mut invariants = Vec::new();
    let mut brought: HashMap<Value, Value> = HashMap::new();
    let mut bring = |body: &mut Body, nm: &str, v: Value| -> Value {
        if let Some(&in_body) = brought.get(&v) {
            return in_body;
        }
        let in_body = match ctx.take_unread_const(v) {
            Some(t) => body.b.constant(&format!("{dl}/{nm}"), t),
            None => match ctx.const_value(v) {
                Some(t) => body.b.constant(&format!("{dl}/{nm}"), t.clone()),
                None => {
                    invariants.push(v);
                    body.b.g.add_input(nm, ctx.ty(v).clone())
                }
            },
        };
        brought.insert(v, in_body);
        in_body
    };
    let w_t = bring(&mut body, "W_t", wts.w_t);
    let r_t = bring(&mut body, "R_t", wts.r_t);
    let r_h_t = wts.r_h_t.map(|v| bring(&mut body, "Rh_t", v));
    let bias_x = wts.bias_x.map(|v| bring(&mut body, "bias", v));
    let bias_h = wts.bias_h.map(|v| bring(&mut body, "Rb", v));
    let peep = wts.peep.map(|[i, o, f]| {
        [
            bring(&mut body, "P_i", i),
            bring(&mut body, "P_o", o),
            bring(&mut body, "P_f", f),
        ]
    });
    if let Some(c) = a.clip {
        let lo = body
            .b
            .constant(&format!("{dl}/clip_min"), Tensor::scalar_f32(-c));
        let hi = body
            .b
            .constant(&format!("{dl}/clip_max"), Tensor::scalar_f32(c));
        body.clip = Some((lo, hi));
    }

    let xw = body.op("xW", Op::MatMul, &[xv, w_t])?;
    let hr = body.op("hR", Op::MatMul, &[hv, r_t])?;
    let mut outputs: Vec<(&str, Value)> = Vec::new();
    let h_new = match a.kind {
        Kind::Lstm { input_forget } => {
            let (f_act, g_act, h_act) = (a.acts[0], a.acts[1], a.acts[2]);
            let c = cv.ok_or("an LSTM cell has a c state")?;
            let pre = body.bin("gates_xh", BinOp::Add, xw, hr)?;
            let pre = body.add_opt("gates", pre, bias_x)?;
            let gates = body.split("iofc", pre, 4)?;
            let (mut i_pre, mut o_pre, mut f_pre, c_pre) = (gates[0], gates[1], gates[2], gates[3]);
            if let Some([pi, _, pf]) = peep {
                let pic = body.bin("Pi_c", BinOp::Mul, pi, c)?;
                i_pre = body.bin("i_pre", BinOp::Add, i_pre, pic)?;
                if !input_forget {
                    let pfc = body.bin("Pf_c", BinOp::Mul, pf, c)?;
                    f_pre = body.bin("f_pre", BinOp::Add, f_pre, pfc)?;
                }
            }
            let i = body.act("i", f_act, i_pre)?;
            let f = if input_forget {
                body.one_minus("f", i)?
            } else {
                body.act("f", f_act, f_pre)?
            };
            let gc = body.act("g", g_act, c_pre)?;
            let fc = body.bin("f_c", BinOp::Mul, f, c)?;
            let ig = body.bin("i_g", BinOp::Mul, i, gc)?;
            let c_new = body.bin("c_next", BinOp::Add, fc, ig)?;
            if let Some([_, po, _]) = peep {
                let poc = body.bin("Po_c", BinOp::Mul, po, c_new)?;
                o_pre = body.bin("o_pre", BinOp::Add, o_pre, poc)?;
            }
            let o = body.act("o", f_act, o_pre)?;
            let hc = body.op("h_c", Op::Unary(h_act), &[c_new])?;
            let h_new = body.bin("h_next", BinOp::Mul, o, hc)?;
            outputs.push(("h", h_new));
            outputs.push(("c", c_new));
            h_new
        }
        Kind::Gru {
            linear_before_reset,
        } => {
            let (f_act, g_act) = (a.acts[0], a.acts[1]);
            let xw = body.add_opt("xW_b", xw, bias_x)?;
            let xg = body.split("x_zrh", xw, 3)?;
            let (z_pre, r_pre, hh) = if linear_before_reset {
                let hr = body.add_opt("hR_b", hr, bias_h)?;
                let hg = body.split("h_zrh", hr, 3)?;
                (hg[0], hg[1], Some(hg[2]))
            } else {
                let hg = body.split("h_zr", hr, 2)?;
                (hg[0], hg[1], None)
            };
            let z_pre = body.bin("z_pre", BinOp::Add, xg[0], z_pre)?;
            let r_pre = body.bin("r_pre", BinOp::Add, xg[1], r_pre)?;
            let z = body.act("z", f_act, z_pre)?;
            let rg = body.act("r", f_act, r_pre)?;
            let rec = match hh {
                Some(hh) => body.bin("r_hR", BinOp::Mul, rg, hh)?,
                None => {
                    let rh = body.bin("r_h", BinOp::Mul, rg, hv)?;
                    let rh_t = r_h_t.ok_or("GRU without linear_before_reset needs Rh")?;
                    body.op("r_h_R", Op::MatMul, &[rh, rh_t])?
                }
            };
            let h_pre = body.bin("h_pre", BinOp::Add, xg[2], rec)?;
            let ht = body.act("h_tilde", g_act, h_pre)?;
            let one_z = body.one_minus("one_minus_z", z)?;
            let a1 = body.bin("zc_ht", BinOp::Mul, one_z, ht)?;
            let a2 = body.bin("z_h", BinOp::Mul, z, hv)?;
            let h_new = body.bin("h_next", BinOp::Add, a1, a2)?;
            outputs.push(("h", h_new));
            h_new
        }
        Kind::Rnn => {
            let pre = body.bin("xh", BinOp::Add, xw, hr)?;
            let pre = body.add_opt("pre", pre, bias_x)?;
            let h_new = body.act("h_next", a.acts[0], pre)?;
            outputs.push(("h", h_new));
            h_new
        }
    };
    if a.want_y {
        outputs.push(("y", h_new));
    }
    let mut g = body.b.g;
    g.outputs = outputs
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    Ok((g, invariants))
}
