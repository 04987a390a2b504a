//! Between the graph IR and the e-graph: one level of a graph (recurrence bodies are saturated
//! separately) becomes e-nodes under an `outputs` root; the extracted expression becomes a graph
//! again, with the same inputs in the same order and the same output names.

use super::analysis::{HEGraph, OpEntry, Tables, TensorAnalysis};
use super::lang::{ConcatAxis, ConstKey, HLang, OpKey, VarKey};
use egg::{Id, Language, RecExpr};
use hlstm_ir::shape::infer_in;
use hlstm_ir::{Act, BinOp, Graph, Op, Value, ValueInfo};
use std::collections::HashMap;

/// Builds the e-graph of one graph level (whose first `carried` inputs are carried state, in a
/// recurrence body); returns it with the root class.
pub fn to_egraph(g: &Graph, carried: usize, fold_limit: usize) -> Result<(HEGraph, Id), String> {
    let mut tables = Tables {
        num_carried: carried,
        ..Tables::default()
    };
    for &i in &g.inputs {
        tables.inputs.push(g.nodes[i].results[0].clone());
    }
    let mut eg = HEGraph::new(TensorAnalysis { tables, fold_limit });
    let mut ids: HashMap<Value, Id> = HashMap::new();
    for (k, &i) in g.inputs.iter().enumerate() {
        ids.insert(
            Value { node: i, slot: 0 },
            eg.add(HLang::Input(VarKey(k as u32))),
        );
    }
    let none = eg.add(HLang::NoOperand);
    let order = g.topo_order().map_err(|n| format!("cycle through '{n}'"))?;
    for n in order {
        let node = &g.nodes[n];
        let operand_ids: Vec<Id> = g
            .operands(n)
            .iter()
            .map(|o| o.map_or(none, |v| ids[&v]))
            .collect();
        match &node.op {
            Op::Input => {}
            Op::Const(c) => {
                let k = eg
                    .analysis
                    .tables
                    .add_shared_const(c.name.clone(), c.value.clone());
                ids.insert(Value { node: n, slot: 0 }, eg.add(HLang::Const(k)));
            }
            op => {
                let two = || [operand_ids[0], operand_ids[1]];
                let enode = match op {
                    Op::MatMul if operand_ids.len() == 2 => Some(HLang::MatMul(two())),
                    Op::Binary(BinOp::Add) => Some(HLang::Add(two())),
                    Op::Binary(BinOp::Sub) => Some(HLang::Sub(two())),
                    Op::Binary(BinOp::Mul) => Some(HLang::Mul(two())),
                    Op::Unary(Act::Relu) => Some(HLang::Relu(operand_ids[0])),
                    Op::Unary(Act::Sigmoid) => Some(HLang::Sigmoid(operand_ids[0])),
                    Op::Unary(Act::Tanh) => Some(HLang::Tanh(operand_ids[0])),
                    Op::Reshape { allowzero: false } if operand_ids.len() == 2 => {
                        Some(HLang::Reshape(two()))
                    }
                    Op::Concat { axis } => {
                        Some(HLang::Concat(ConcatAxis(*axis), operand_ids.clone()))
                    }
                    _ => None,
                };
                match enode {
                    Some(e) => {
                        let id = eg.add(e);
                        ids.insert(Value { node: n, slot: 0 }, id);
                        eg.analysis.tables.names.push((
                            id,
                            op.kind(),
                            node.name.clone(),
                            node.results[0].name.clone(),
                        ));
                    }
                    None => {
                        let t = &mut eg.analysis.tables;
                        t.ops.push(OpEntry {
                            name: node.name.clone(),
                            op: op.clone(),
                            results: node.results.clone(),
                        });
                        let key = t.ops.len() as u32 - 1;
                        for slot in 0..node.results.len() {
                            let id = eg.add(HLang::Op(
                                OpKey {
                                    op: key,
                                    slot: slot as u32,
                                },
                                operand_ids.clone(),
                            ));
                            ids.insert(Value { node: n, slot }, id);
                        }
                    }
                }
            }
        }
    }
    let outs: Vec<Id> = g.outputs.iter().map(|(_, v)| ids[v]).collect();
    let root = eg.add(HLang::Outputs(outs.into_boxed_slice()));
    eg.rebuild();
    Ok((eg, root))
}

/// Rebuilds a graph from an expression extracted from `eg`; `like` supplies inputs and output
/// names. Nodes that were in the input graph keep their names.
pub fn from_expr(expr: &RecExpr<HLang>, eg: &HEGraph, like: &Graph) -> Result<Graph, String> {
    let tables = &eg.analysis.tables;
    let names: HashMap<(Id, &'static str), (&str, &str)> = tables
        .names
        .iter()
        .map(|(id, kind, node, result)| ((eg.find(*id), *kind), (node.as_str(), result.as_str())))
        .collect();
    // The e-class of each expression node, to find its original name.
    let mut class_of: Vec<Option<Id>> = Vec::with_capacity(expr.as_ref().len());
    for enode in expr.as_ref() {
        let mapped = enode
            .clone()
            .map_children(|c| class_of[usize::from(c)].unwrap_or(c));
        class_of.push(eg.lookup(mapped));
    }
    let mut g = Graph::new();
    g.stored = like.stored.clone();
    for &i in &like.inputs {
        let info = &like.nodes[i].results[0];
        g.add_input(&info.name, info.ty.clone());
    }
    let inputs = g.inputs.clone();
    let mut vals: Vec<Option<Value>> = Vec::with_capacity(expr.as_ref().len());
    // Multi-result ops: one graph node for every (op, operands) pair.
    let mut op_nodes: HashMap<(u32, Vec<Id>), petgraph::stable_graph::NodeIndex> = HashMap::new();
    let mut const_nodes: HashMap<ConstKey, Value> = HashMap::new();
    let mut fresh = 0usize;
    for (i, enode) in expr.as_ref().iter().enumerate() {
        let child = |c: &Id| vals[usize::from(*c)];
        let v = match enode {
            HLang::NoOperand => None,
            HLang::Input(k) => Some(Value {
                node: inputs[k.0 as usize],
                slot: 0,
            }),
            HLang::Const(k) => Some(*const_nodes.entry(*k).or_insert_with(|| {
                let c = &tables.consts[k.0 as usize];
                g.add_shared_const(&c.name, c.value.clone())
            })),
            HLang::Outputs(children) => {
                for ((name, _), c) in like.outputs.iter().zip(children.iter()) {
                    let v = child(c).ok_or("an output is an empty operand")?;
                    g.outputs.push((name.clone(), v));
                }
                None
            }
            HLang::Op(key, children) => {
                let entry = &tables.ops[key.op as usize];
                let operands: Vec<Option<Value>> = children.iter().map(child).collect();
                let node = match op_nodes.get(&(key.op, children.clone())) {
                    Some(n) => *n,
                    None => {
                        let results = result_types(&g, &entry.op, &operands, &entry.results)?;
                        let n =
                            g.add_node(&entry.name, entry.op.clone(), &trim(&operands), results);
                        op_nodes.insert((key.op, children.clone()), n);
                        n
                    }
                };
                Some(Value {
                    node,
                    slot: key.slot as usize,
                })
            }
            other => {
                let (op, _) =
                    super::analysis::node_op(other, tables).ok_or("an e-node without an op")?;
                let operands: Vec<Option<Value>> = other.children().iter().map(child).collect();
                fresh += 1;
                let original = class_of[i].and_then(|c| names.get(&(c, op.kind())));
                let (name, result_name) = match original {
                    Some((n, r)) => (n.to_string(), r.to_string()),
                    None => (
                        format!("{}_{fresh}", op.kind()),
                        format!("{}_{fresh}", op.kind()),
                    ),
                };
                let results = result_types(&g, &op, &operands, &[])?;
                let results: Vec<ValueInfo> = results
                    .into_iter()
                    .map(|mut r| {
                        r.name = result_name.clone();
                        r
                    })
                    .collect();
                let n = g.add_node(&name, op, &operands, results);
                Some(Value { node: n, slot: 0 })
            }
        };
        debug_assert_eq!(vals.len(), i);
        vals.push(v);
    }
    Ok(g)
}

/// Drops trailing empty operand slots.
fn trim(ops: &[Option<Value>]) -> Vec<Option<Value>> {
    let end = ops.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    ops[..end].to_vec()
}

/// Result types by inference; names (and types inference cannot give) from the original node.
fn result_types(
    g: &Graph,
    op: &Op,
    operands: &[Option<Value>],
    original: &[ValueInfo],
) -> Result<Vec<ValueInfo>, String> {
    let inferred = match op {
        Op::Recurrence(_) => original.iter().map(|r| r.ty.clone()).collect(),
        _ => infer_in(g, op, operands)?,
    };
    Ok(inferred
        .into_iter()
        .enumerate()
        .map(|(i, ty)| ValueInfo {
            name: original.get(i).map_or_else(String::new, |r| r.name.clone()),
            ty,
        })
        .collect())
}
