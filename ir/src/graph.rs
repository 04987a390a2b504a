//! The graph IR: a petgraph `StableDiGraph` of op nodes. Edges carry (result slot, operand slot)
//! because petgraph keeps no port order; operands are read back sorted by slot.

use crate::op::{Constant, Op};
use crate::tensor::{Tensor, TensorType};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// Result slot of the producer.
    pub out_slot: usize,
    /// Operand slot of the consumer.
    pub in_slot: usize,
}

/// A result of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub slot: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: TensorType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The ONNX node name (or a generated one); errors and dumps name nodes by it.
    pub name: String,
    pub op: Op,
    pub results: Vec<ValueInfo>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: StableDiGraph<Node, Port>,
    /// `Op::Input` nodes, in the order the caller passes inputs.
    pub inputs: Vec<NodeIndex>,
    /// Named graph results.
    pub outputs: Vec<(String, Value)>,
    /// The float type (f16, bf16, f64) each input, output and weight had in the file it was
    /// imported from, where not f32; computation is f32 (docs/precision.md).
    pub stored: crate::precision::StoredTypes,
}

impl PartialEq for Graph {
    /// Structural equality: same nodes in the same order with the same operands.
    fn eq(&self, other: &Self) -> bool {
        let a: Vec<_> = self.nodes.node_indices().collect();
        let b: Vec<_> = other.nodes.node_indices().collect();
        if a.len() != b.len() {
            return false;
        }
        let pos_a: HashMap<_, _> = a.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let pos_b: HashMap<_, _> = b.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let ops = |g: &Graph, n: NodeIndex, pos: &HashMap<NodeIndex, usize>| {
            g.operands(n)
                .into_iter()
                .map(|o| o.map(|v| (pos[&v.node], v.slot)))
                .collect::<Vec<_>>()
        };
        a.iter().zip(&b).all(|(&x, &y)| {
            self.nodes[x] == other.nodes[y] && ops(self, x, &pos_a) == ops(other, y, &pos_b)
        }) && self
            .inputs
            .iter()
            .map(|n| pos_a[n])
            .eq(other.inputs.iter().map(|n| pos_b[n]))
            && self.outputs.len() == other.outputs.len()
            && self
                .outputs
                .iter()
                .zip(&other.outputs)
                .all(|((na, va), (nb, vb))| {
                    na == nb && pos_a[&va.node] == pos_b[&vb.node] && va.slot == vb.slot
                })
    }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.nodes[n]
    }

    pub fn value_info(&self, v: Value) -> &ValueInfo {
        &self.nodes[v.node].results[v.slot]
    }

    pub fn value_type(&self, v: Value) -> &TensorType {
        &self.value_info(v).ty
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> Value {
        let n = self.nodes.add_node(Node {
            name: name.to_string(),
            op: Op::Input,
            results: vec![ValueInfo {
                name: name.to_string(),
                ty,
            }],
        });
        self.inputs.push(n);
        Value { node: n, slot: 0 }
    }

    /// Adds a named constant.
    pub fn add_const(&mut self, name: &str, value: Tensor) -> Value {
        self.add_shared_const(name, Arc::new(value))
    }

    /// Adds a named constant whose tensor may be shared (with another graph, or the optimizer's
    /// tables): no copy of it is made.
    pub fn add_shared_const(&mut self, name: &str, value: Arc<Tensor>) -> Value {
        let ty = value.ty();
        let n = self.nodes.add_node(Node {
            name: name.to_string(),
            op: Op::Const(Arc::new(Constant {
                name: name.to_string(),
                value,
            })),
            results: vec![ValueInfo {
                name: name.to_string(),
                ty,
            }],
        });
        Value { node: n, slot: 0 }
    }

    /// Adds a node with operands by slot (`None` leaves an optional slot empty) and the types of
    /// its results, which the caller (usually shape inference) supplies.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        operands: &[Option<Value>],
        results: Vec<ValueInfo>,
    ) -> NodeIndex {
        let n = self.nodes.add_node(Node {
            name: name.to_string(),
            op,
            results,
        });
        for (slot, v) in operands.iter().enumerate() {
            if let Some(v) = v {
                self.nodes.add_edge(
                    v.node,
                    n,
                    Port {
                        out_slot: v.slot,
                        in_slot: slot,
                    },
                );
            }
        }
        n
    }

    /// Operands of a node by slot; empty optional slots are `None`.
    pub fn operands(&self, n: NodeIndex) -> Vec<Option<Value>> {
        let mut by_slot: BTreeMap<usize, Value> = BTreeMap::new();
        for e in self.nodes.edges_directed(n, Direction::Incoming) {
            by_slot.insert(
                e.weight().in_slot,
                Value {
                    node: e.source(),
                    slot: e.weight().out_slot,
                },
            );
        }
        let len = by_slot.keys().next_back().map_or(0, |k| k + 1);
        (0..len).map(|s| by_slot.get(&s).copied()).collect()
    }

    /// Consumers of a node's results: (consumer, port).
    pub fn users(&self, n: NodeIndex) -> Vec<(NodeIndex, Port)> {
        let mut u: Vec<_> = self
            .nodes
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        u.sort_by_key(|(t, p)| (t.index(), p.in_slot, p.out_slot));
        u
    }

    /// A deterministic topological order (Kahn's algorithm, lowest node index first), or the
    /// name of a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, String> {
        use std::collections::BTreeSet;
        let mut indeg: HashMap<NodeIndex, usize> = HashMap::new();
        for n in self.nodes.node_indices() {
            indeg.insert(n, self.nodes.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BTreeSet<NodeIndex> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = self
                .nodes
                .node_indices()
                .find(|n| !order.contains(n))
                .map(|n| self.nodes[n].name.clone())
                .unwrap_or_default();
            return Err(stuck);
        }
        Ok(order)
    }

    /// The constant behind a value, if it is one.
    pub fn constant(&self, v: Value) -> Option<&Arc<Constant>> {
        match &self.nodes[v.node].op {
            Op::Const(c) => Some(c),
            _ => None,
        }
    }

    /// Replaces every symbolic dim named in `dims` by its value, in every value's type, nested
    /// bodies included (specializing a graph to a batch size or sequence length). The caller
    /// checks the result with the verifier: a symbol bound where a shape op computed something
    /// else would disagree with inference there.
    pub fn bind_dims(&mut self, dims: &std::collections::HashMap<String, usize>) {
        let idx: Vec<NodeIndex> = self.nodes.node_indices().collect();
        for n in idx {
            let node = &mut self.nodes[n];
            for r in &mut node.results {
                if let Some(shape) = &mut r.ty.shape {
                    for d in shape.iter_mut() {
                        if let crate::Dim::Sym(s) = d
                            && let Some(&v) = dims.get(s.as_str())
                        {
                            *d = crate::Dim::Known(v);
                        }
                    }
                }
            }
            if let Op::Recurrence(r) = &mut node.op {
                r.body.bind_dims(dims);
            }
        }
    }

    /// Visits this graph and every nested body, depth first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Graph, NodeIndex, bool)) {
        self.walk_inner(f, false)
    }

    fn walk_inner<'a>(&'a self, f: &mut dyn FnMut(&'a Graph, NodeIndex, bool), in_body: bool) {
        for n in self.nodes.node_indices() {
            f(self, n, in_body);
            if let Op::Recurrence(r) = &self.nodes[n].op {
                r.body.walk_inner(f, true);
            }
        }
    }

    /// Redirects every use of `from` to `to`, including graph outputs.
    pub fn replace_uses(&mut self, from: Value, to: Value) {
        let edges: Vec<_> = self
            .nodes
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().out_slot == from.slot)
            .map(|e| (e.id(), e.target(), e.weight().in_slot))
            .collect();
        for (id, target, in_slot) in edges {
            self.nodes.remove_edge(id);
            self.nodes.add_edge(
                to.node,
                target,
                Port {
                    out_slot: to.slot,
                    in_slot,
                },
            );
        }
        for (_, v) in self.outputs.iter_mut() {
            if *v == from {
                *v = to;
            }
        }
    }
}
