//! `Loop` onto `recurrence` when it is a counted loop over a sequence (what tf2onnx writes for
//! Keras `GRU`, `SimpleRNN` and `LSTM` layers it does not map to ONNX's RNN ops, and for any
//! Keras layer behind `Masking`), and the comparisons and logic such loops are controlled by,
//! folded at import (on run-time values they are IR ops).
//!
//! A Loop is counted when its trip count `M` and initial condition are constants and its
//! condition is computed, step after step, only from counters (the iteration number, and states
//! that start at a constant and grow by a constant each step) and constants: the importer then
//! runs the condition at import and knows the exact number of steps. The body's reads `x[t]`
//! (`Gather(x, counter)` on an outer `x`) become the recurrence's scanned inputs, the states
//! the body passes through unchanged become invariants, and the counters disappear. Any other
//! Loop (a condition that depends on what the loop computes, a counter used in arithmetic) is
//! refused with the reason: it never runs wrong.

use super::out_names;
use crate::onnx::ctx::{Ctx, attr_g, attr_i};
use crate::onnx::export::value_info;
use crate::onnx::shape_values::dims_of_value;
use crate::onnx::{import_graph, tensor};
use hlstm_ir::{CmpOp, DType, LogicOp, Op, Recurrence, Tensor, TensorType, Value};
use ndarray::{ArrayD, IxDyn};
use onnx_protobuf::{GraphProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};

/// The most steps a counted loop may have: its condition is evaluated once per step at import.
const MAX_TRIPS: i64 = 1 << 24;

/// Comparisons and logic (`Less`, `Greater`, `LessOrEqual`, `GreaterOrEqual`, `Equal`, `And`,
/// `Or`, `Xor`, `Not`): folded at import on constants (loop conditions, shape arithmetic), the
/// IR's `compare`, `and`/`or`/`xor` and `not` ops on values computed at run time (a Keras
/// `Masking` layer's mask).
pub fn logic(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let consts: Option<Vec<&Tensor>> = ops
        .iter()
        .map(|o| o.and_then(|v| ctx.const_value(v)))
        .collect();
    if let Some(args) = consts {
        let out = fold_logic(&node.op_type, &args)?;
        let name = out_names(node).first().copied().unwrap_or("").to_string();
        return Ok(vec![ctx.constant(&name, out)]);
    }
    let op = match node.op_type.as_str() {
        "Not" => Op::Not,
        "And" => Op::Logic(LogicOp::And),
        "Or" => Op::Logic(LogicOp::Or),
        "Xor" => Op::Logic(LogicOp::Xor),
        other => Op::Compare(
            *CmpOp::ALL
                .iter()
                .find(|c| c.onnx() == other)
                .ok_or_else(|| format!("{other} is not a comparison"))?,
        ),
    };
    let want = if matches!(op, Op::Not) { 1 } else { 2 };
    if ops.len() != want {
        return Err(format!(
            "{} takes {want} inputs, got {}",
            node.op_type,
            ops.len()
        ));
    }
    let args: Vec<Option<Value>> = (0..want)
        .map(|i| super::need(ops, i, if i == 0 { "A" } else { "B" }).map(Some))
        .collect::<Result<_, _>>()?;
    ctx.add(label, op, &args, &out_names(node))
}

fn as_f64(t: &Tensor) -> ArrayD<f64> {
    match t {
        Tensor::F32(a) => a.mapv(f64::from),
        Tensor::I64(a) => a.mapv(|v| v as f64),
        Tensor::I32(a) => a.mapv(f64::from),
        Tensor::Bool(a) => a.mapv(|v| v as u8 as f64),
    }
}

fn fold_logic(op: &str, args: &[&Tensor]) -> Result<Tensor, String> {
    if op == "Not" {
        return match args {
            [Tensor::Bool(a)] => Ok(Tensor::Bool(a.mapv(|v| !v))),
            _ => Err("Not takes one boolean tensor".into()),
        };
    }
    let [a, b] = args else {
        return Err(format!("{op} takes two inputs, got {}", args.len()));
    };
    let shape = hlstm_ir::interp::kernels::broadcast_shapes(a.shape(), b.shape())?;
    let (x, y) = (as_f64(a), as_f64(b));
    let (x, y) = (
        x.broadcast(IxDyn(&shape))
            .ok_or("operands do not broadcast")?,
        y.broadcast(IxDyn(&shape))
            .ok_or("operands do not broadcast")?,
    );
    let f: fn(f64, f64) -> bool = match op {
        "Less" => |p, q| p < q,
        "Greater" => |p, q| p > q,
        "LessOrEqual" => |p, q| p <= q,
        "GreaterOrEqual" => |p, q| p >= q,
        "Equal" => |p, q| p == q,
        "And" => |p, q| p != 0.0 && q != 0.0,
        "Or" => |p, q| p != 0.0 || q != 0.0,
        "Xor" => |p, q| (p != 0.0) != (q != 0.0),
        _ => return Err(format!("{op} is not a comparison")),
    };
    if matches!(op, "And" | "Or" | "Xor") && !(a.dtype() == DType::Bool && b.dtype() == DType::Bool)
    {
        return Err(format!("{op} takes boolean tensors"));
    }
    let out = ndarray::Zip::from(&x).and(&y).map_collect(|&p, &q| f(p, q));
    Ok(Tensor::Bool(out.into_dyn()))
}

/// A scalar at import: a number (any numeric type) or a boolean.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scalar {
    Num(f64),
    Bool(bool),
}

impl Scalar {
    fn of(t: &Tensor) -> Option<Scalar> {
        if t.len() != 1 {
            return None;
        }
        Some(match t {
            Tensor::Bool(a) => Scalar::Bool(*a.iter().next()?),
            _ => Scalar::Num(*as_f64(t).iter().next()?),
        })
    }
    fn num(self) -> f64 {
        match self {
            Scalar::Num(v) => v,
            Scalar::Bool(b) => b as u8 as f64,
        }
    }
    fn truth(self) -> bool {
        match self {
            Scalar::Num(v) => v != 0.0,
            Scalar::Bool(b) => b,
        }
    }
}

/// What a loop state is, from how the body updates it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Passed through unchanged: an invariant of the recurrence.
    Invariant,
    /// Starts at a constant and grows by a constant each step.
    Counter { start: f64, step: f64 },
    /// Anything else: a carried state.
    Carried,
}

/// The body's constants by name: initializers and `Constant` nodes.
fn body_constants(body: &GraphProto, dir: Option<&std::path::Path>) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for init in &body.initializer {
        if let Ok(t) = tensor::decode(init, dir) {
            out.insert(init.name.clone(), t);
        }
    }
    for n in &body.node {
        if n.op_type == "Constant"
            && let (Some(name), Some(t)) = (n.output.first(), constant_attr(n))
            && let Ok(t) = tensor::decode(t, dir)
        {
            out.insert(name.clone(), t);
        }
    }
    out
}

fn constant_attr(n: &NodeProto) -> Option<&TensorProto> {
    n.attribute
        .iter()
        .find(|a| a.name == "value")
        .and_then(|a| a.t.as_ref())
}

/// The condition's evaluation at import: values by name, given the counters' values.
struct CondEval<'a> {
    producers: &'a HashMap<&'a str, &'a NodeProto>,
    constants: &'a HashMap<String, Tensor>,
    outer: &'a dyn Fn(&str) -> Option<Scalar>,
    env: HashMap<String, Scalar>,
}

impl CondEval<'_> {
    fn value(&mut self, name: &str, depth: usize) -> Result<Scalar, String> {
        if let Some(v) = self.env.get(name) {
            return Ok(*v);
        }
        if let Some(t) = self.constants.get(name) {
            return Scalar::of(t)
                .ok_or_else(|| format!("'{name}' in the condition is not a scalar"));
        }
        let Some(node) = self.producers.get(name) else {
            return (self.outer)(name).ok_or_else(|| {
                format!(
                    "the condition reads '{name}', which the loop computes or reads at run time \
                     (a data-dependent loop)"
                )
            });
        };
        if depth > 64 {
            return Err("the condition is computed too deep".into());
        }
        let args = node
            .input
            .iter()
            .map(|i| self.value(i, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let bin = |f: fn(f64, f64) -> f64| match args[..] {
            [a, b] => Ok(Scalar::Num(f(a.num(), b.num()))),
            _ => Err(format!("{} takes two inputs", node.op_type)),
        };
        let cmp = |f: fn(f64, f64) -> bool| match args[..] {
            [a, b] => Ok(Scalar::Bool(f(a.num(), b.num()))),
            _ => Err(format!("{} takes two inputs", node.op_type)),
        };
        let v = match node.op_type.as_str() {
            "Identity" => args.first().copied().ok_or("Identity without input")?,
            "Add" => bin(|a, b| a + b)?,
            "Sub" => bin(|a, b| a - b)?,
            "Mul" => bin(|a, b| a * b)?,
            "Less" => cmp(|a, b| a < b)?,
            "Greater" => cmp(|a, b| a > b)?,
            "LessOrEqual" => cmp(|a, b| a <= b)?,
            "GreaterOrEqual" => cmp(|a, b| a >= b)?,
            "Equal" => cmp(|a, b| a == b)?,
            "And" => cmp(|a, b| a != 0.0 && b != 0.0)?,
            "Or" => cmp(|a, b| a != 0.0 || b != 0.0)?,
            "Not" => Scalar::Bool(!args.first().ok_or("Not without input")?.truth()),
            "Cast" => {
                let a = *args.first().ok_or("Cast without input")?;
                match attr_i(node, "to", 0) {
                    9 => Scalar::Bool(a.truth()),
                    1 | 10 | 11 | 16 => Scalar::Num(a.num()),
                    _ => Scalar::Num(a.num().trunc()),
                }
            }
            other => {
                return Err(format!(
                    "the condition uses {other} (node '{}'); hlstmc evaluates loop conditions \
                     made of counters, constants, arithmetic, comparisons and logic",
                    node.name
                ));
            }
        };
        self.env.insert(name.to_string(), v);
        Ok(v)
    }
}

/// Whether `name` is a body-local value (made by a node or an initializer of the body).
fn defined_in(body: &GraphProto, producers: &HashMap<&str, &NodeProto>, name: &str) -> bool {
    producers.contains_key(name)
        || body.initializer.iter().any(|i| i.name == name)
        || body.input.iter().any(|i| i.name == name)
}

pub fn loop_(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let body = attr_g(node, "body").ok_or("the body attribute is required")?;
    let n = ops
        .len()
        .checked_sub(2)
        .ok_or("a Loop has inputs M, cond (either may be empty) and its states")?;
    if body.input.len() != n + 2 {
        return Err(format!(
            "the body has {} inputs; a Loop with {n} states needs {} (iteration, condition, states)",
            body.input.len(),
            n + 2
        ));
    }
    let k = body
        .output
        .len()
        .checked_sub(n + 1)
        .ok_or("the body has fewer outputs than the condition and the states")?;
    let scalar = |ctx: &Ctx, v: Option<Value>, what: &str| -> Result<Option<Scalar>, String> {
        match v {
            None => Ok(None),
            Some(v) => ctx
                .const_value(v)
                .and_then(Scalar::of)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{what} is computed at run time; hlstmc compiles a Loop only when it is \
                         known at import (a fixed sequence length)"
                    )
                }),
        }
    };
    let max_trips = scalar(ctx, ops[0], "the trip count M")?.map(|s| s.num() as i64);
    let cond0 = scalar(ctx, ops[1], "the initial condition")?.is_none_or(|s| s.truth());

    let producers: HashMap<&str, &NodeProto> = body
        .node
        .iter()
        .flat_map(|nd| nd.output.iter().map(move |o| (o.as_str(), nd)))
        .collect();
    let constants = body_constants(body, ctx.model_dir);
    let outer_scalar = |name: &str| -> Option<Scalar> {
        let v = ctx.values.get(name)?;
        Scalar::of(ctx.const_value(*v)?)
    };
    let iter_name = body.input[0].name.as_str();
    let cond_in = body.input[1].name.as_str();
    let cond_out = body.output[0].name.as_str();

    // Each state: invariant, counter or carried.
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        let (sin, sout) = (
            body.input[2 + i].name.as_str(),
            body.output[1 + i].name.as_str(),
        );
        let state = if sin == sout {
            State::Invariant
        } else {
            let start = ops[2 + i]
                .and_then(|v| ctx.const_value(v))
                .and_then(Scalar::of);
            let step = producers.get(sout).and_then(|p| {
                let sign = match p.op_type.as_str() {
                    "Add" => 1.0,
                    "Sub" => -1.0,
                    _ => return None,
                };
                let other = match p.input.as_slice() {
                    [a, b] if a == sin => b,
                    [a, b] if b == sin && sign > 0.0 => a,
                    _ => return None,
                };
                let c = constants.get(other).and_then(Scalar::of).or_else(|| {
                    (!defined_in(body, &producers, other)).then(|| outer_scalar(other))?
                })?;
                Some(sign * c.num())
            });
            match (start, step) {
                (Some(s), Some(c)) => State::Counter {
                    start: s.num(),
                    step: c,
                },
                _ => State::Carried,
            }
        };
        states.push(state);
    }
    let counters: HashMap<&str, (f64, f64)> = std::iter::once((iter_name, (0.0, 1.0)))
        .chain((0..n).filter_map(|i| match states[i] {
            State::Counter { start, step } => {
                Some((body.input[2 + i].name.as_str(), (start, step)))
            }
            _ => None,
        }))
        .collect();

    // The trip count: the condition run at import, step after step.
    let mut trips: i64 = 0;
    let mut cond = cond0;
    let same_cond = cond_out == cond_in;
    while cond && max_trips.is_none_or(|m| trips < m) {
        if trips >= MAX_TRIPS {
            return Err(format!(
                "the loop runs more than {MAX_TRIPS} steps (or without end) by its condition"
            ));
        }
        if !same_cond {
            let env = counters
                .iter()
                .map(|(name, (s, c))| (name.to_string(), Scalar::Num(s + c * trips as f64)))
                .chain(std::iter::once((cond_in.to_string(), Scalar::Bool(cond))))
                .collect();
            let mut eval = CondEval {
                producers: &producers,
                constants: &constants,
                outer: &outer_scalar,
                env,
            };
            cond = eval
                .value(cond_out, 0)
                .map_err(|e| format!("not a counted loop: {e}"))?
                .truth();
        }
        trips += 1;
    }
    if trips == 0 {
        return Err("the loop runs no step; an empty recurrence is not supported".into());
    }

    // Reads x[t]: Gather(outer x, counter) along axis 0.
    struct Read<'a> {
        node: &'a NodeProto,
        outer: &'a str,
        counter: (f64, f64),
    }
    let mut reads: Vec<Read> = Vec::new();
    for nd in &body.node {
        if nd.op_type != "Gather" {
            continue;
        }
        if let [x, idx] = nd.input.as_slice()
            && let Some(&c) = counters.get(idx.as_str())
            && !defined_in(body, &producers, x)
        {
            if attr_i(nd, "axis", 0) != 0 {
                return Err(format!(
                    "node '{}' reads '{x}' along axis {} by the loop counter; only axis 0 is \
                     supported",
                    nd.name,
                    attr_i(nd, "axis", 0)
                ));
            }
            reads.push(Read {
                node: nd,
                outer: x,
                counter: c,
            });
        }
    }
    if reads.is_empty() {
        return Err(
            "the loop reads no sequence (no Gather of an outer tensor by the loop counter); \
                    hlstmc compiles loops over a sequence"
                .into(),
        );
    }

    // The body of the recurrence: carried states and scanned reads in, carried states and the
    // step outputs out, invariants read under their outer names.
    let carried: Vec<usize> = (0..n).filter(|&i| states[i] == State::Carried).collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    for (i, state) in states.iter().enumerate() {
        if *state == State::Invariant {
            rename.insert(body.input[2 + i].name.clone(), node.input[2 + i].clone());
        }
    }
    let read_outputs: HashSet<&str> = reads
        .iter()
        .filter_map(|r| r.node.output.first().map(String::as_str))
        .collect();
    let wanted: Vec<&str> = carried
        .iter()
        .map(|&i| body.output[1 + i].name.as_str())
        .chain(body.output[1 + n..].iter().map(|o| o.name.as_str()))
        .collect();
    // Nodes the outputs need, in body order.
    let mut need: HashSet<&str> = wanted.iter().copied().collect();
    let mut keep = vec![false; body.node.len()];
    for (j, nd) in body.node.iter().enumerate().rev() {
        if nd.output.iter().any(|o| need.contains(o.as_str()))
            && !nd.output.iter().any(|o| read_outputs.contains(o.as_str()))
        {
            keep[j] = true;
            need.extend(nd.input.iter().map(String::as_str));
        }
    }
    let banned: HashSet<&str> = counters
        .keys()
        .copied()
        .chain(std::iter::once(cond_in))
        .collect();
    let mut new_body = GraphProto::new();
    new_body.name = body.name.clone();
    new_body.initializer = body.initializer.clone();
    for (j, nd) in body.node.iter().enumerate() {
        if !keep[j] {
            continue;
        }
        if let Some(b) = nd.input.iter().find(|i| banned.contains(i.as_str())) {
            return Err(format!(
                "node '{}' ({}) in the body uses the loop's counter or condition '{b}'; only \
                 reads x[t] (Gather by the counter) may",
                nd.name, nd.op_type
            ));
        }
        let mut nd = nd.clone();
        for i in nd.input.iter_mut() {
            if let Some(r) = rename.get(i.as_str()) {
                *i = r.clone();
            }
        }
        new_body.node.push(nd);
    }
    let mut formal: Vec<TensorType> = Vec::new();
    let mut operands: Vec<Option<Value>> = Vec::new();
    for &i in &carried {
        let ty = ctx
            .ty(ops[2 + i].ok_or("a state's initial value is empty")?)
            .clone();
        // The body declares its states with symbols of its own (tf2onnx: `unk__319` where the
        // outer batch is `unk__672`); the initial value's type is the one that holds.
        let declared = &body.input[2 + i];
        new_body.input.push(match &ty.shape {
            Some(_) => value_info(&declared.name, &ty),
            None => declared.clone(),
        });
        formal.push(ty);
        operands.push(ops[2 + i]);
    }
    for (r_i, r) in reads.iter().enumerate() {
        let x = ctx
            .lookup(r.outer)
            .ok_or_else(|| format!("'{}' is not defined", r.outer))?;
        let ty = ctx.ty(x).clone();
        let (start, step) = r.counter;
        let idx: Vec<i64> = (0..trips)
            .map(|t| (start + step * t as f64) as i64)
            .collect();
        let len = ty
            .shape
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|d| d.known());
        if idx
            .iter()
            .any(|&t| t < 0 || len.is_some_and(|l| t as usize >= l))
        {
            return Err(format!(
                "the loop reads '{}' at steps {}..{} of its {} along axis 0",
                r.outer,
                idx[0],
                idx[idx.len() - 1],
                len.map_or("unknown length".into(), |l| format!("{l} steps"))
            ));
        }
        let whole =
            len == Some(trips as usize) && idx.iter().enumerate().all(|(t, &i)| i == t as i64);
        let seq = if whole {
            x
        } else {
            let at = ctx.int_const(&format!("{label}/read{r_i}/steps"), &idx);
            ctx.add1(
                &format!("{label}/read{r_i}"),
                Op::Gather { axis: 0 },
                &[Some(x), Some(at)],
            )?
        };
        let step = TensorType {
            dtype: ty.dtype,
            shape: ty.shape.as_ref().map(|s| s[1..].to_vec()),
        };
        let name = r.node.output.first().map(String::as_str).unwrap_or("");
        new_body.input.push(value_info(name, &step));
        formal.push(step);
        operands.push(Some(seq));
    }
    for &i in &carried {
        new_body.output.push(body.output[1 + i].clone());
    }
    new_body.output.extend(body.output[1 + n..].iter().cloned());

    let mut bctx = Ctx::new(ctx.opset, ctx.model_dir, Some(ctx));
    import_graph(&mut bctx, &new_body, &formal).map_err(|e| format!("in the body: {e}"))?;
    let captures: Vec<Value> = bctx.captures.iter().map(|(outer, _)| *outer).collect();
    let rec = Recurrence {
        body: Box::new(bctx.g),
        num_carried: carried.len(),
        num_scanned: reads.len(),
        num_invariant: captures.len(),
        reverse: false,
        has_seq_lens: false,
    };
    operands.extend(captures.iter().map(|v| Some(*v)));
    let names = out_names(node);
    let rec_names: Vec<&str> = carried
        .iter()
        .map(|&i| names.get(i).copied().unwrap_or(""))
        .chain((0..k).map(|j| names.get(n + j).copied().unwrap_or("")))
        .collect();
    let results = ctx.add(label, Op::Recurrence(rec), &operands, &rec_names)?;
    // The Loop's outputs: final states, then the step outputs.
    let mut out = Vec::with_capacity(n + k);
    let mut next_carried = 0;
    for i in 0..n {
        out.push(match states[i] {
            State::Carried => {
                next_carried += 1;
                results[next_carried - 1]
            }
            State::Invariant => ops[2 + i].ok_or("a state's initial value is empty")?,
            State::Counter { start, step } => {
                let init = ops[2 + i].ok_or("a state's initial value is empty")?;
                let last = start + step * trips as f64;
                let t = match ctx.ty(init).dtype {
                    DType::F32 => Tensor::F32(ndarray::arr0(last as f32).into_dyn()),
                    DType::I32 => Tensor::I32(ndarray::arr0(last as i32).into_dyn()),
                    _ => Tensor::I64(ndarray::arr0(last as i64).into_dyn()),
                };
                let name = names.get(i).copied().unwrap_or("").to_string();
                ctx.constant(&name, t)
            }
        });
    }
    out.extend_from_slice(&results[carried.len()..]);
    Ok(out)
}

/// `ReverseSequence` when every sequence length is the whole time axis (what tf2onnx writes for
/// Keras `go_backwards`: the lengths are the time dim expanded over the batch): a reverse of the
/// time axis. Lengths that may differ per row are refused.
pub fn reverse_sequence(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = super::need(ops, 0, "input")?;
    let lens = super::need(ops, 1, "sequence_lens")?;
    let time_axis = attr_i(node, "time_axis", 0);
    let batch_axis = attr_i(node, "batch_axis", 1);
    if !matches!((time_axis, batch_axis), (0, 1) | (1, 0)) {
        return Err(format!(
            "time_axis {time_axis} and batch_axis {batch_axis}: one must be 0 and the other 1"
        ));
    }
    let steps = ctx
        .ty(x)
        .shape
        .as_ref()
        .and_then(|s| s.get(time_axis as usize))
        .and_then(|d| d.known())
        .ok_or("the time axis must have a known length")?;
    let full = known_values(ctx, lens, 0)
        .is_some_and(|a| !a.is_empty() && a.iter().all(|&l| l == steps as f64));
    if !full {
        return Err(format!(
            "sequence lengths that may be shorter than the {steps} steps are not supported; \
             only a reverse of whole sequences (every length {steps}) is"
        ));
    }
    let names = out_names(node);
    ctx.add(label, Op::Reverse { axis: time_axis }, &[Some(x)], &names)
}

/// The values `v` takes whatever the run-time dims, where import can tell: a constant; an
/// `Expand` of such values (the same values repeated); or shape arithmetic whose dims are known
/// (`Gather(Shape(x), 0)`, the time length of a tensor with a symbolic batch).
fn known_values(ctx: &Ctx, v: Value, depth: usize) -> Option<Vec<f64>> {
    if let Some(t) = ctx.const_value(v) {
        return Some(as_f64(t).iter().copied().collect());
    }
    if matches!(ctx.g.nodes[v.node].op, Op::Expand) && depth < 8 {
        let repeated = ctx.g.operands(v.node).first().copied().flatten()?;
        return known_values(ctx, repeated, depth + 1);
    }
    dims_of_value(ctx, v, 0)?
        .iter()
        .map(|d| d.known().map(|n| n as f64))
        .collect()
}
