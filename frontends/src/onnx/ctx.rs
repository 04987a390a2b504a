//! The import context: maps ONNX value names to IR values while nodes are added, infers each
//! result's type, and folds nodes whose operands are all constants (shape arithmetic, weight
//! transposes) into named constants.

use hlstm_ir::interp::eval_op;
use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{Graph, Op, Tensor, TensorType, Value, ValueInfo};
use onnx_protobuf::{AttributeProto, GraphProto, NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub struct Ctx<'a> {
    pub g: Graph,
    pub values: HashMap<String, Value>,
    pub opset: i64,
    pub model_dir: Option<&'a Path>,
    /// The enclosing graph, for bodies.
    pub outer: Option<&'a Ctx<'a>>,
    /// Outer values this body captured as invariant inputs: (outer value, body input).
    pub captures: Vec<(Value, Value)>,
    /// What the importer warns about (see `outputs.rs`), one sentence each.
    pub warnings: Vec<String>,
    /// Counter for generated names.
    fresh: usize,
    /// The position in its graph of the ONNX node being imported, and when each name is last
    /// read ([`LastReads`]). With them a weight is freed, or moved into what is made of it, as
    /// soon as nothing later can read it: a weight of 16 MiB otherwise lives, and is copied,
    /// until dead-code elimination (BENCHMARKS.md, "Memory").
    pub node_at: usize,
    pub last_read: LastReads,
    /// The names bound to each value ([`Ctx::bind`]): what [`Ctx::take_unread_const`] checks,
    /// without a scan of every name per constant.
    names_of: HashMap<Value, Vec<String>>,
}

/// For each ONNX name of a graph, the position of the last node that reads it (directly or
/// from a body; `usize::MAX` for the graph's outputs), and for each node the names it reads
/// last.
#[derive(Default)]
pub struct LastReads {
    pub at: HashMap<String, usize>,
    pub by_node: Vec<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(opset: i64, model_dir: Option<&'a Path>, outer: Option<&'a Ctx<'a>>) -> Self {
        Ctx {
            g: Graph::new(),
            values: HashMap::new(),
            opset,
            model_dir,
            outer,
            captures: Vec::new(),
            warnings: Vec::new(),
            fresh: 0,
            node_at: 0,
            last_read: LastReads::default(),
            names_of: HashMap::new(),
        }
    }

    pub fn fresh_name(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("{base}#{}", self.fresh)
    }

    /// Looks an ONNX value name up here, then in enclosing graphs. An outer constant is shared
    /// in (its tensor, not a copy); any other outer value becomes an invariant input of this body.
    pub fn lookup(&mut self, name: &str) -> Option<Value> {
        if let Some(v) = self.values.get(name) {
            return Some(*v);
        }
        let outer = self.outer?;
        let ov = outer.lookup_readonly(name)?;
        let v = match outer.g.constant(ov) {
            Some(c) => self.g.add_shared_const(name, c.value.clone()),
            None => {
                let ty = outer.type_of_readonly(name)?;
                let v = self.g.add_input(name, ty);
                self.captures.push((ov, v));
                v
            }
        };
        self.bind(name, v);
        Some(v)
    }

    /// Binds the ONNX name `name` to `v`; returns the value it was bound to before.
    pub fn bind(&mut self, name: &str, v: Value) -> Option<Value> {
        self.names_of.entry(v).or_default().push(name.to_string());
        self.values.insert(name.to_string(), v)
    }

    fn lookup_readonly(&self, name: &str) -> Option<Value> {
        self.values.get(name).copied()
    }

    fn type_of_readonly(&self, name: &str) -> Option<TensorType> {
        self.values.get(name).map(|v| self.g.value_type(*v).clone())
    }

    pub fn const_value(&self, v: Value) -> Option<&Tensor> {
        self.g.constant(v).map(|c| &*c.value)
    }

    /// Removes the constant `v` from the graph and returns its tensor when nothing can read it
    /// any more: no node of the graph reads it, it is no output, and every ONNX name bound to
    /// it is read by no node after the current one (a name whose readers are unknown, as in a
    /// body built by an importer, is never taken). `None` leaves the graph as it was.
    pub fn take_unread_const(&mut self, v: Value) -> Option<Tensor> {
        self.g.nodes.node_weight(v.node)?;
        self.const_value(v)?;
        if !self.g.users(v.node).is_empty() || self.g.outputs.iter().any(|(_, o)| *o == v) {
            return None;
        }
        // Names bound to `v` and not bound again since (an ONNX graph binds each name once,
        // so that is every one of them).
        let names: Vec<String> = self
            .names_of
            .get(&v)
            .into_iter()
            .flatten()
            .filter(|n| self.values.get(*n) == Some(&v))
            .cloned()
            .collect();
        if names
            .iter()
            .any(|n| self.last_read.at.get(n).is_none_or(|&at| at > self.node_at))
        {
            return None;
        }
        for n in &names {
            self.values.remove(n);
        }
        self.names_of.remove(&v);
        match self.g.nodes.remove_node(v.node)?.op {
            Op::Const(c) => Some(Arc::unwrap_or_clone(Arc::unwrap_or_clone(c).value)),
            _ => None,
        }
    }

    /// Frees the constants bound to names that no node after the current one reads (between
    /// two nodes of the import).
    pub fn free_unread_consts(&mut self) {
        let done: Vec<Value> = self
            .last_read
            .by_node
            .get(self.node_at)
            .into_iter()
            .flatten()
            .filter_map(|n| self.values.get(n).copied())
            .collect();
        for v in done {
            self.take_unread_const(v);
        }
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        self.g.value_type(v)
    }

    pub fn constant(&mut self, name: &str, t: Tensor) -> Value {
        self.g.add_const(name, t)
    }

    pub fn int_const(&mut self, name: &str, v: &[i64]) -> Value {
        let t = Tensor::from_i64(&[v.len()], v.to_vec()).expect("1-D");
        self.constant(name, t)
    }

    /// Adds an op; folds it when every operand is a constant. `names` name the results (ONNX
    /// output names); missing ones are generated from the node name.
    pub fn add(
        &mut self,
        node: &str,
        op: Op,
        operands: &[Option<Value>],
        names: &[&str],
    ) -> Result<Vec<Value>, String> {
        let n = op.num_results();
        let result_names: Vec<String> = (0..n)
            .map(|i| match names.get(i) {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => {
                    if n == 1 {
                        format!("{node}:out")
                    } else {
                        format!("{node}:out{i}")
                    }
                }
            })
            .collect();
        let consts: Option<Vec<Option<&Tensor>>> = operands
            .iter()
            .map(|o| match o {
                None => Some(None),
                Some(v) => self.const_value(*v).map(Some),
            })
            .collect();
        if let Some(vals) = consts
            && !matches!(op, Op::Recurrence(_) | Op::Input | Op::Const(_))
            && !operands.is_empty()
        {
            let results = eval_op(&op, &vals)?;
            return Ok(results
                .into_iter()
                .zip(&result_names)
                .map(|(t, nm)| self.g.add_const(nm, t))
                .collect());
        }
        // Borrowed, not cloned: an operand may be a weight of many megabytes.
        let args: Vec<Option<Operand>> = operands
            .iter()
            .map(|o| {
                o.map(|v| Operand {
                    ty: self.ty(v),
                    value: self.const_value(v),
                })
            })
            .collect();
        let mut tys = infer(&op, &args)?;
        drop(args);
        super::shape_values::refine(self, &op, operands, &mut tys);
        let results = tys
            .into_iter()
            .zip(result_names)
            .map(|(ty, name)| ValueInfo { name, ty })
            .collect();
        let idx = self.g.add_node(node, op, operands, results);
        Ok((0..n).map(|slot| Value { node: idx, slot }).collect())
    }

    /// `add` for single-result ops.
    pub fn add1(
        &mut self,
        node: &str,
        op: Op,
        operands: &[Option<Value>],
    ) -> Result<Value, String> {
        Ok(self.add(node, op, operands, &[])?[0])
    }
}

// Attribute access.

pub fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub fn attr_floats(node: &NodeProto, name: &str) -> Option<Vec<f32>> {
    attr(node, name).map(|a| a.floats.clone())
}

pub fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub fn attr_strings(node: &NodeProto, name: &str) -> Option<Vec<String>> {
    attr(node, name).map(|a| {
        a.strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    })
}

pub fn attr_t<'n>(node: &'n NodeProto, name: &str) -> Option<&'n TensorProto> {
    attr(node, name).and_then(|a| a.t.as_ref())
}

pub fn attr_g<'n>(node: &'n NodeProto, name: &str) -> Option<&'n GraphProto> {
    attr(node, name).and_then(|a| a.g.as_ref())
}
