//! Specializing a graph to concrete input shapes inside the IR: the job the ONNX frontend does by
//! re-importing a model with its input shapes patched (`fix_input_shapes`), done on the graph
//! itself, so the model file is never read again.
//!
//! [`bind_input_shapes`] checks the given shapes against the declared inputs, gives every
//! symbolic dimension its value (nested recurrence bodies included), then re-infers every node in
//! topological order, folding what became constant on the way: nodes whose operands are all
//! constants, and `shape` ops of operands whose dims are now known. A `reshape` fed by a shape
//! computed from a symbolic input thus ends up with a concrete type.

use crate::graph::{Graph, Value};
use crate::interp::{eval_op, kernels};
use crate::op::Op;
use crate::shape::infer_in;
use crate::tensor::{Dim, Tensor, TensorType};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeSet, HashMap};

/// Folded results larger than this stay computed (the limit of the fold-constants pass).
const MAX_FOLDED_ELEMENTS: usize = 1 << 22;

/// Specializes `g` to concrete shapes of (some of) its inputs, given by input name.
///
/// Errors, checked in the order `shapes` lists the inputs, with the messages of the ONNX
/// frontend's `fix_input_shapes`: an unknown input name, a rank that differs from the declared
/// one (an unranked input takes the given rank), a known dimension given another value, and a
/// symbolic dimension given two different values (in one input or across several). Zero-sized
/// dimensions are accepted; policy about them is the caller's.
///
/// Then every symbolic dimension with a value takes it everywhere (graph and bodies), the listed
/// inputs' unknown dimensions take the given values, and each node is re-inferred in topological
/// order (recurrence bodies first, their inputs refined from the recurrence's operands). An
/// inferred known dimension replaces a declared symbolic or unknown one; a declared known one
/// stays where inference knows less; two different known dimensions, or ranks, are an error
/// naming the node. Nodes whose operands are all constants are evaluated into constants named
/// like their results (unless a result exceeds 2^22 elements), and a `shape` op whose requested
/// dims are all known becomes an i64 constant; constants that this leaves unread are removed.
/// Other dead nodes are left for the caller's DCE. Graph inputs and outputs keep their names and
/// order. The result is checked with the verifier, whose error is returned.
///
/// An error in the given shapes leaves `g` untouched; an error found while re-inferring (a
/// contradiction that binding revealed) may leave it partly specialized.
pub fn bind_input_shapes(g: &mut Graph, shapes: &[(String, Vec<usize>)]) -> Result<(), String> {
    let mut params: HashMap<String, usize> = HashMap::new();
    let mut new_types: HashMap<NodeIndex, TensorType> = HashMap::new();
    for (name, dims) in shapes {
        let input =
            find_input(g, name).ok_or_else(|| format!("the model has no input named '{name}'"))?;
        let mut ty = match new_types.get(&input) {
            Some(t) => t.clone(),
            None => g.nodes[input].results[0].ty.clone(),
        };
        let shape = ty
            .shape
            .get_or_insert_with(|| vec![Dim::Unknown; dims.len()]);
        if shape.len() != dims.len() {
            return Err(format!(
                "input '{name}' has rank {}, given a shape of rank {}",
                shape.len(),
                dims.len()
            ));
        }
        for (i, (d, &want)) in shape.iter_mut().zip(dims).enumerate() {
            match d {
                Dim::Known(v) if *v != want => {
                    return Err(format!("input '{name}' has {v} in dim {i}, given {want}"));
                }
                Dim::Sym(p) if !p.is_empty() => {
                    if let Some(old) = params.insert(p.clone(), want)
                        && old != want
                    {
                        return Err(format!("dim '{p}' is given both {old} and {want}"));
                    }
                }
                _ => {}
            }
            *d = Dim::Known(want);
        }
        new_types.insert(input, ty);
    }
    for (n, ty) in new_types {
        g.nodes[n].results[0].ty = ty;
    }
    g.bind_dims(&params);
    reinfer(g, "")?;
    crate::verify::verify(g)
}

/// The graph input called `name`: by value name, else by node name.
fn find_input(g: &Graph, name: &str) -> Option<NodeIndex> {
    let is_input = |n: &&NodeIndex| matches!(g.nodes.node_weight(**n), Some(node) if matches!(node.op, Op::Input) && !node.results.is_empty());
    let inputs = || g.inputs.iter().filter(is_input);
    inputs()
        .find(|n| g.nodes[**n].results[0].name == name)
        .or_else(|| inputs().find(|n| g.nodes[**n].name == name))
        .copied()
}

/// Merges a declared type with what inference (or a recurrence operand) gives: known dims of
/// `inf` win, declared known dims stay where `inf` knows less, a declared symbolic dim stays
/// where `inf` has none. `None` when the two contradict (element type, rank or a known dim).
fn merge(decl: &TensorType, inf: &TensorType) -> Option<TensorType> {
    if decl.dtype != inf.dtype {
        return None;
    }
    let shape = match (&decl.shape, &inf.shape) {
        (None, s) => s.clone(),
        (s, None) => s.clone(),
        (Some(a), Some(b)) => {
            if a.len() != b.len() {
                return None;
            }
            let dims = a
                .iter()
                .zip(b)
                .map(|(x, y)| match (x, y) {
                    (Dim::Known(p), Dim::Known(q)) if p != q => None,
                    (_, Dim::Known(_)) => Some(y.clone()),
                    (Dim::Known(_), _) | (Dim::Sym(_), _) => Some(x.clone()),
                    (Dim::Unknown, _) => Some(y.clone()),
                })
                .collect::<Option<Vec<_>>>()?;
            Some(dims)
        }
    };
    Some(TensorType {
        dtype: decl.dtype,
        shape,
    })
}

/// What a recurrence operand says of the matching body input: the operand's type, with the
/// sequence axis dropped for scanned operands.
fn body_input_hint(
    g: &Graph,
    op: &crate::op::Recurrence,
    operand: Value,
    i: usize,
) -> Option<TensorType> {
    let ty = g.value_type(operand);
    let scanned = i >= op.num_carried && i < op.num_carried + op.num_scanned;
    if !scanned {
        return Some(ty.clone());
    }
    match &ty.shape {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(TensorType::new(ty.dtype, s[1..].to_vec())),
    }
}

/// Re-infers (and folds) every node of `g` in topological order; `ctx` prefixes errors in
/// bodies, as the verifier does.
fn reinfer(g: &mut Graph, ctx: &str) -> Result<(), String> {
    let order = g
        .topo_order()
        .map_err(|n| format!("{ctx}node '{n}': the graph has a cycle"))?;
    // Constants that folding may leave unread: operands of folded nodes and folded results.
    let mut candidates: BTreeSet<NodeIndex> = BTreeSet::new();
    for n in order {
        if matches!(g.nodes[n].op, Op::Input | Op::Const(_)) {
            continue;
        }
        let (name, kind) = (g.nodes[n].name.clone(), g.nodes[n].op.kind());
        let at = |msg: String| format!("{ctx}node '{name}' ({kind}): {msg}");
        let operands = g.operands(n);

        if let Op::Recurrence(r) = &g.nodes[n].op {
            let hints: Vec<Option<TensorType>> = (0..r.body.inputs.len())
                .map(|i| {
                    operands
                        .get(i)
                        .copied()
                        .flatten()
                        .and_then(|v| body_input_hint(g, r, v, i))
                })
                .collect();
            let Op::Recurrence(r) = &mut g.nodes[n].op else {
                unreachable!()
            };
            let body = &mut r.body;
            for (i, hint) in hints.into_iter().enumerate() {
                let bi = body.inputs[i];
                let (Some(hint), Some(node)) = (hint, body.nodes.node_weight_mut(bi)) else {
                    continue;
                };
                let Some(info) = node.results.first_mut() else {
                    continue;
                };
                info.ty = merge(&info.ty, &hint).ok_or_else(|| {
                    at(format!(
                        "body input '{}' is declared {} but operand {i} gives {hint}",
                        info.name, info.ty
                    ))
                })?;
            }
            reinfer(body, &format!("{ctx}body of '{name}': "))?;
        } else if let Some(results) = fold(g, n, &operands).map_err(&at)? {
            let names: Vec<String> = g.nodes[n].results.iter().map(|r| r.name.clone()).collect();
            if results.len() != names.len() {
                return Err(at(format!(
                    "has {} results, evaluation gives {}",
                    names.len(),
                    results.len()
                )));
            }
            for (slot, (t, rname)) in results.into_iter().zip(names).enumerate() {
                let decl = &g.nodes[n].results[slot].ty;
                if merge(decl, &t.ty()).is_none() {
                    return Err(at(format!(
                        "result {slot} is declared {decl} but evaluates to {}",
                        t.ty()
                    )));
                }
                let c = g.add_const(&rname, t);
                g.replace_uses(Value { node: n, slot }, c);
                candidates.insert(c.node);
            }
            for o in operands.iter().flatten() {
                if g.constant(*o).is_some() {
                    candidates.insert(o.node);
                }
            }
            g.nodes.remove_node(n);
            continue;
        }

        let inferred = infer_in(g, &g.nodes[n].op, &operands).map_err(&at)?;
        let node = &mut g.nodes[n];
        for (slot, (decl, inf)) in node.results.iter_mut().zip(&inferred).enumerate() {
            decl.ty = merge(&decl.ty, inf).ok_or_else(|| {
                at(format!(
                    "result {slot} is declared {} but inference gives {inf}",
                    decl.ty
                ))
            })?;
        }
    }
    for c in candidates {
        let unread = g
            .nodes
            .node_weight(c)
            .is_some_and(|w| matches!(w.op, Op::Const(_)))
            && g.nodes
                .edges_directed(c, Direction::Outgoing)
                .next()
                .is_none()
            && !g.outputs.iter().any(|(_, v)| v.node == c);
        if unread {
            g.nodes.remove_node(c);
        }
    }
    Ok(())
}

/// The values a node folds to: its evaluation when every operand is a constant (and the results
/// are small enough), or the dims a `shape` op reads when they are all known. `None` when the
/// node stays.
fn fold(
    g: &Graph,
    n: NodeIndex,
    operands: &[Option<Value>],
) -> Result<Option<Vec<Tensor>>, String> {
    let op = &g.nodes[n].op;
    if let Op::Shape { start, end } = op
        && let Some(Some(x)) = operands.first()
        && let Some(s) = &g.value_type(*x).shape
    {
        let (lo, hi) = kernels::shape_range(s.len(), *start, *end);
        let dims: Option<Vec<i64>> = s[lo..hi]
            .iter()
            .map(|d| d.known().map(|v| v as i64))
            .collect();
        if let Some(dims) = dims {
            let t = Tensor::from_i64(&[dims.len()], dims).expect("1-D");
            return Ok(Some(vec![t]));
        }
    }
    if operands.is_empty() || matches!(op, Op::Recurrence(_)) {
        return Ok(None);
    }
    let vals: Option<Vec<Option<&Tensor>>> = operands
        .iter()
        .map(|o| match o {
            None => Some(None),
            Some(v) => g.constant(*v).map(|c| Some(&*c.value)),
        })
        .collect();
    let Some(vals) = vals else {
        return Ok(None);
    };
    let results = eval_op(op, &vals)?;
    if results.iter().any(|t| t.len() > MAX_FOLDED_ELEMENTS) {
        return Ok(None);
    }
    Ok(Some(results))
}
