//! The reference interpreter: plain, exact (matmuls accumulate in f64), the oracle for every
//! engine. It evaluates nodes in the graph's deterministic topological order.

pub mod kernels;
mod random;

pub use random::random_inputs;

use crate::graph::{Graph, Value};
use crate::op::{Op, Recurrence};
use crate::tensor::Tensor;
use kernels as k;
use ndarray::Axis;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::fmt;

/// An error at run time, naming the node and op where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpError {
    pub node: String,
    pub op: String,
    pub msg: String,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "node '{}' ({}): {}", self.node, self.op, self.msg)
        }
    }
}

impl std::error::Error for InterpError {}

fn graph_err(msg: String) -> InterpError {
    InterpError {
        node: String::new(),
        op: String::new(),
        msg,
    }
}

/// Runs a graph on inputs given in the order of `g.inputs`; returns outputs in the order of
/// `g.outputs`.
pub fn run(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let order = g
        .topo_order()
        .map_err(|n| graph_err(format!("the graph has a cycle through node '{n}'")))?;
    run_ordered(g, &order, inputs)
}

/// Checks inputs against the graph's declared inputs: count, element type and shape.
pub fn check_inputs(g: &Graph, inputs: &[Tensor]) -> Result<(), InterpError> {
    if inputs.len() != g.inputs.len() {
        return Err(graph_err(format!(
            "expected {} inputs, got {}",
            g.inputs.len(),
            inputs.len()
        )));
    }
    for (n, t) in g.inputs.iter().zip(inputs) {
        let info = &g.nodes[*n].results[0];
        if !info.ty.accepts(t.dtype(), t.shape()) {
            return Err(graph_err(format!(
                "input '{}' expects {}, got {}{}",
                info.name,
                info.ty,
                t.dtype(),
                crate::dims_text(t.shape())
            )));
        }
    }
    Ok(())
}

fn run_ordered(
    g: &Graph,
    order: &[NodeIndex],
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, InterpError> {
    check_inputs(g, inputs)?;
    let mut env: HashMap<Value, Tensor> = HashMap::new();
    for (n, t) in g.inputs.iter().zip(inputs) {
        env.insert(Value { node: *n, slot: 0 }, t.clone());
    }
    for &n in order {
        let node = &g.nodes[n];
        if matches!(node.op, Op::Input) {
            continue;
        }
        let operands = g.operands(n);
        let args: Vec<Option<&Tensor>> = operands
            .iter()
            .map(|o| o.map(|v| env.get(&v).expect("operands are evaluated before use")))
            .collect();
        let results = eval_op(&node.op, &args).map_err(|msg| InterpError {
            node: node.name.clone(),
            op: node.op.kind().to_string(),
            msg,
        })?;
        for (slot, t) in results.into_iter().enumerate() {
            env.insert(Value { node: n, slot }, t);
        }
    }
    g.outputs
        .iter()
        .map(|(name, v)| {
            env.get(v)
                .cloned()
                .ok_or_else(|| graph_err(format!("output '{name}' was not computed")))
        })
        .collect()
}

fn arg<'a>(args: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, String> {
    args.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("operand {i} is missing"))
}

fn opt<'a>(args: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    args.get(i).copied().flatten()
}

/// Evaluates one op on concrete operands (`None` for empty optional slots).
pub fn eval_op(op: &Op, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Input => Err("inputs are not evaluated".into()),
        Op::Const(c) => one((*c.value).clone()),
        Op::Identity => one(arg(args, 0)?.clone()),
        Op::Unary(a) => one(k::unary(*a, arg(args, 0)?)?),
        Op::Binary(b) => one(k::binary(*b, arg(args, 0)?, arg(args, 1)?)?),
        Op::Clip => one(k::clip(arg(args, 0)?, opt(args, 1), opt(args, 2))?),
        Op::MatMul => one(k::matmul(arg(args, 0)?, arg(args, 1)?)?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(k::gemm(
            arg(args, 0)?,
            arg(args, 1)?,
            opt(args, 2),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
        )?),
        Op::Softmax { axis } => one(k::softmax(arg(args, 0)?, *axis, false)?),
        Op::LogSoftmax { axis } => one(k::softmax(arg(args, 0)?, *axis, true)?),
        Op::Where => one(k::where_(arg(args, 0)?, arg(args, 1)?, arg(args, 2)?)?),
        Op::Compare(c) => one(k::compare(*c, arg(args, 0)?, arg(args, 1)?)?),
        Op::Logic(l) => one(k::logic(*l, arg(args, 0)?, arg(args, 1)?)?),
        Op::Not => one(k::not(arg(args, 0)?)?),
        Op::ReduceSum {
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = match opt(args, 1) {
                Some(t) => t.to_i64_vec().ok_or("axes must be integers")?,
                None => vec![],
            };
            one(k::reduce_sum(
                arg(args, 0)?,
                &axes,
                *keepdims,
                *noop_with_empty_axes,
            )?)
        }
        Op::Concat { axis } => {
            let xs: Vec<&Tensor> = (0..args.len())
                .map(|i| arg(args, i))
                .collect::<Result<_, _>>()?;
            one(k::concat(&xs, *axis)?)
        }
        Op::Split { axis, num_outputs } => {
            k::split(arg(args, 0)?, *axis, opt(args, 1), *num_outputs)
        }
        Op::Slice => one(k::slice(
            arg(args, 0)?,
            arg(args, 1)?,
            arg(args, 2)?,
            opt(args, 3),
            opt(args, 4),
        )?),
        Op::Gather { axis } => one(k::gather(arg(args, 0)?, arg(args, 1)?, *axis)?),
        Op::Unsqueeze => {
            let x = arg(args, 0)?;
            let axes = arg(args, 1)?.to_i64_vec().ok_or("axes must be integers")?;
            one(k::reshape_to(x, &k::unsqueeze_shape(x.shape(), &axes)?)?)
        }
        Op::Squeeze => {
            let x = arg(args, 0)?;
            let axes = match opt(args, 1) {
                Some(t) => Some(t.to_i64_vec().ok_or("axes must be integers")?),
                None => None,
            };
            one(k::reshape_to(
                x,
                &k::squeeze_shape(x.shape(), axes.as_deref())?,
            )?)
        }
        Op::Flatten { axis } => {
            let x = arg(args, 0)?;
            one(k::reshape_to(x, &k::flatten_shape(x.shape(), *axis)?)?)
        }
        Op::Reshape { allowzero } => one(k::reshape(arg(args, 0)?, arg(args, 1)?, *allowzero)?),
        Op::Transpose { perm } => one(k::transpose(arg(args, 0)?, perm.as_deref())?),
        Op::Expand => one(k::expand(arg(args, 0)?, arg(args, 1)?)?),
        Op::Shape { start, end } => one(k::shape_of(arg(args, 0)?, *start, *end)),
        Op::ConstantOfShape { value } => one(k::constant_of_shape(arg(args, 0)?, value)?),
        Op::Cast { to } => one(k::cast(arg(args, 0)?, *to)),
        Op::Reverse { axis } => one(k::reverse(arg(args, 0)?, *axis)?),
        Op::Recurrence(r) => run_recurrence(r, args),
    }
}

/// The number of steps to run: the sequence axis, or the (equal) lengths given.
fn steps_to_run(r: &Recurrence, args: &[Option<&Tensor>], t_len: usize) -> Result<usize, String> {
    if !r.has_seq_lens {
        return Ok(t_len);
    }
    let lens = arg(args, r.num_operands() - 1)?
        .to_i64_vec()
        .ok_or("sequence_lens must be integers")?;
    let Some(&first) = lens.first() else {
        return Ok(t_len);
    };
    if lens.iter().any(|&l| l != first) {
        return Err(format!(
            "sequence_lens {} are unequal; only equal lengths are supported",
            crate::dims_text(&lens)
        ));
    }
    if first < 0 || first as usize > t_len {
        return Err(format!("sequence length {first} is outside 0..={t_len}"));
    }
    Ok(first as usize)
}

fn run_recurrence(r: &Recurrence, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    let (nc, ns, ni) = (r.num_carried, r.num_scanned, r.num_invariant);
    let mut carried: Vec<Tensor> = (0..nc)
        .map(|i| arg(args, i).cloned())
        .collect::<Result<_, _>>()?;
    let scanned: Vec<&Tensor> = (nc..nc + ns)
        .map(|i| arg(args, i))
        .collect::<Result<_, _>>()?;
    let invariants: Vec<&Tensor> = (nc + ns..nc + ns + ni)
        .map(|i| arg(args, i))
        .collect::<Result<_, _>>()?;
    let t_len = match scanned.first() {
        Some(s) => *s
            .shape()
            .first()
            .ok_or("a scanned input must have rank >= 1")?,
        None => return Err("a recurrence needs at least one scanned input".into()),
    };
    if let Some(bad) = scanned.iter().find(|s| s.shape().first() != Some(&t_len)) {
        return Err(format!(
            "scanned inputs differ in length: {t_len} vs an input of shape {}",
            crate::dims_text(bad.shape())
        ));
    }
    let len = steps_to_run(r, args, t_len)?;
    let order = r
        .body
        .topo_order()
        .map_err(|n| format!("the body has a cycle through '{n}'"))?;
    let n_out = r.num_step_outputs();
    let mut per_step: Vec<Vec<Option<Tensor>>> = vec![vec![None; t_len]; n_out];
    let steps: Box<dyn Iterator<Item = usize>> = if r.reverse {
        Box::new((0..len).rev())
    } else {
        Box::new(0..len)
    };
    for t in steps {
        let mut body_in = carried.clone();
        for s in &scanned {
            body_in.push(crate::map_tensor!(*s, a => a.index_axis(Axis(0), t).to_owned()));
        }
        body_in.extend(invariants.iter().map(|t| (*t).clone()));
        let out =
            run_ordered(&r.body, &order, &body_in).map_err(|e| format!("in step {t}: {e}"))?;
        let mut out = out.into_iter();
        carried = out.by_ref().take(nc).collect();
        for (k, o) in out.enumerate() {
            per_step[k][t] = Some(o);
        }
    }
    let mut results = carried;
    for (k, slots) in per_step.into_iter().enumerate() {
        results.push(stack_steps(&r.body, nc + k, slots)?);
    }
    Ok(results)
}

/// Stacks per-step outputs along a new axis 0; steps that did not run are zeros.
fn stack_steps(
    body: &Graph,
    out_index: usize,
    slots: Vec<Option<Tensor>>,
) -> Result<Tensor, String> {
    let proto = match slots.iter().flatten().next() {
        Some(t) => (t.dtype(), t.shape().to_vec()),
        None => {
            let ty = body.value_type(body.outputs[out_index].1);
            (
                ty.dtype,
                ty.concrete()
                    .ok_or("no step ran and the step output shape is not static")?,
            )
        }
    };
    let mut full = vec![slots.len()];
    full.extend(&proto.1);
    k::check_size(&full)?;
    let parts: Vec<Tensor> = slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Tensor::zeros(proto.0, &proto.1)))
        .collect();
    let mut shape = vec![parts.len()];
    shape.extend(&proto.1);
    if parts.is_empty() {
        return Ok(Tensor::zeros(proto.0, &shape));
    }
    let expanded: Vec<Tensor> = parts
        .iter()
        .map(|p| crate::map_tensor!(p, a => a.clone().insert_axis(Axis(0))))
        .collect();
    let refs: Vec<&Tensor> = expanded.iter().collect();
    let out = k::concat(&refs, 0)?;
    debug_assert_eq!(out.shape(), &shape[..]);
    Ok(out)
}
