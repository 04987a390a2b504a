//! The printer of the `.hir` text form.

use super::weights::{WeightStore, hex, tensor_hash};
use super::{INLINE_LIMIT, fmt_f32, is_ident, is_ref_word, quote};
use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::tensor::{Dim, Tensor, TensorType};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::fmt::Write;

pub(crate) fn print_graph(g: &Graph, store: Option<&mut WeightStore>) -> String {
    let mut p = Printer {
        out: String::new(),
        store,
    };
    p.out.push_str("graph ");
    p.graph(g, 0);
    p.out.push('\n');
    p.out
}

pub(crate) fn dim(d: &Dim) -> String {
    match d {
        Dim::Known(n) => n.to_string(),
        Dim::Unknown => "?".into(),
        Dim::Sym(s) if is_ident(s) => s.clone(),
        Dim::Sym(s) => quote(s),
    }
}

pub(crate) fn ty(t: &TensorType) -> String {
    match &t.shape {
        None => format!("{}[*]", t.dtype),
        Some(s) => format!(
            "{}[{}]",
            t.dtype,
            s.iter().map(dim).collect::<Vec<_>>().join(",")
        ),
    }
}

fn name(s: &str) -> String {
    if is_ident(s) { s.to_string() } else { quote(s) }
}

fn list<T: ToString>(it: impl Iterator<Item = T>) -> String {
    it.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// How each result of one graph is referred to: `%name`, or `%name#k` for the k-th repeat of a
/// name (the first one goes bare).
struct Names {
    refs: HashMap<Value, String>,
    pos: HashMap<NodeIndex, usize>,
}

impl Names {
    fn new(g: &Graph) -> Names {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut refs = HashMap::new();
        let mut pos = HashMap::new();
        for (i, n) in g.nodes.node_indices().enumerate() {
            pos.insert(n, i);
            for (slot, r) in g.nodes[n].results.iter().enumerate() {
                let base = if is_ref_word(&r.name) {
                    format!("%{}", r.name)
                } else {
                    format!("%{}", quote(&r.name))
                };
                let k = seen.entry(r.name.as_str()).or_insert(0);
                let text = if *k == 0 { base } else { format!("{base}#{k}") };
                *k += 1;
                refs.insert(Value { node: n, slot }, text);
            }
        }
        Names { refs, pos }
    }

    /// A use of a value; a slot the node does not have (an ill-formed graph) goes by position.
    fn get(&self, v: Value) -> String {
        match (self.refs.get(&v), self.pos.get(&v.node)) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => format!("@{p}:{}", v.slot),
            // Not parseable on purpose: a dump of a graph that refers to a removed node.
            (None, None) => format!("<missing node #{}>", v.node.index()),
        }
    }
}

struct Printer<'s> {
    out: String,
    store: Option<&'s mut WeightStore>,
}

impl Printer<'_> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    /// Prints `(inputs) -> (outputs) {` .. `}` of a graph whose first line is already started.
    fn graph(&mut self, g: &Graph, depth: usize) {
        let names = Names::new(g);
        let order: Vec<NodeIndex> = g.nodes.node_indices().collect();
        // Inputs that are the leading nodes, in order, are declared in the header.
        let mut in_header = 0;
        while in_header < g.inputs.len()
            && order.get(in_header) == Some(&g.inputs[in_header])
            && matches!(g.nodes[order[in_header]].op, Op::Input)
            && g.nodes[order[in_header]].results.len() == 1
            && g.nodes
                .edges_directed(order[in_header], Direction::Incoming)
                .next()
                .is_none()
        {
            in_header += 1;
        }
        let mut ins = Vec::new();
        for (i, &n) in g.inputs.iter().enumerate() {
            let Some(node) = g.nodes.node_weight(n) else {
                ins.push(format!("<missing node #{}>", n.index()));
                continue;
            };
            if i < in_header {
                let r = &node.results[0];
                let nn = if node.name == r.name {
                    String::new()
                } else {
                    format!(" {}", quote(&node.name))
                };
                ins.push(format!(
                    "{}{nn}: {}",
                    names.get(Value { node: n, slot: 0 }),
                    ty(&r.ty)
                ));
            } else if node.results.is_empty() {
                ins.push(format!("@{}:0", names.pos[&n]));
            } else {
                ins.push(names.get(Value { node: n, slot: 0 }));
            }
        }
        let outs = list(
            g.outputs
                .iter()
                .map(|(nm, v)| format!("{} = {}", name(nm), names.get(*v))),
        );
        let _ = writeln!(self.out, "({}) -> ({outs}) {{", ins.join(", "));
        for &n in &order[in_header..] {
            self.indent(depth + 1);
            self.node(g, n, &names, depth + 1);
        }
        self.indent(depth);
        self.out.push('}');
    }

    fn node(&mut self, g: &Graph, n: NodeIndex, names: &Names, depth: usize) {
        let node = &g.nodes[n];
        if !node.results.is_empty() {
            let defs = (0..node.results.len()).map(|slot| names.get(Value { node: n, slot }));
            let _ = write!(self.out, "{} = ", list(defs));
        }
        let head = self.op_head(&node.op, &node.name);
        self.out.push_str(&head);
        let operands = g.operands(n);
        if !matches!(node.op, Op::Input | Op::Const(_)) || !operands.is_empty() {
            let ops = operands.iter().map(|o| match o {
                Some(v) => names.get(*v),
                None => "_".into(),
            });
            let _ = write!(self.out, "({})", list(ops));
        }
        let default_name = node.results.first().map_or("", |r| r.name.as_str());
        if node.name != default_name {
            let _ = write!(self.out, " {}", quote(&node.name));
        }
        let const_default = match &node.op {
            Op::Const(c) => node.results.len() == 1 && node.results[0].ty == c.value.ty(),
            _ => false,
        };
        if node.results.is_empty() {
            self.out.push_str(" : ()");
        } else if !const_default {
            let _ = write!(
                self.out,
                " : {}",
                list(node.results.iter().map(|r| ty(&r.ty)))
            );
        }
        if let Op::Recurrence(r) = &node.op {
            self.out.push('\n');
            self.indent(depth + 1);
            self.out.push_str("body ");
            self.graph(&r.body, depth + 1);
        }
        self.out.push('\n');
    }

    fn op_head(&mut self, op: &Op, node_name: &str) -> String {
        let attrs: Vec<String> = match op {
            Op::Const(c) => {
                let t = self.tensor(&c.value);
                return if c.name == node_name {
                    format!("const {t}")
                } else {
                    format!("const{{name={}}} {t}", quote(&c.name))
                };
            }
            Op::Unary(a) => a
                .params()
                .iter()
                .map(|(k, v)| format!("{k}={}", fmt_f32(*v)))
                .collect(),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => vec![
                format!("alpha={}", fmt_f32(*alpha)),
                format!("beta={}", fmt_f32(*beta)),
                format!("trans_a={trans_a}"),
                format!("trans_b={trans_b}"),
            ],
            Op::Softmax { axis }
            | Op::LogSoftmax { axis }
            | Op::Concat { axis }
            | Op::Gather { axis }
            | Op::Flatten { axis }
            | Op::Reverse { axis } => vec![format!("axis={axis}")],
            Op::Split { axis, num_outputs } => {
                vec![format!("axis={axis}"), format!("num_outputs={num_outputs}")]
            }
            Op::Reshape { allowzero } => vec![format!("allowzero={allowzero}")],
            Op::ReduceSum {
                keepdims,
                noop_with_empty_axes,
            } => vec![
                format!("keepdims={keepdims}"),
                format!("noop_with_empty_axes={noop_with_empty_axes}"),
            ],
            Op::Transpose { perm: Some(p) } => vec![format!("perm=[{}]", list(p.iter()))],
            Op::Shape { start, end } => {
                let mut v = vec![format!("start={start}")];
                v.extend(end.map(|e| format!("end={e}")));
                v
            }
            Op::ConstantOfShape { value } => vec![format!("value={}", self.tensor(value))],
            Op::Cast { to } => vec![format!("to={to}")],
            Op::Recurrence(r) => vec![
                format!("carried={}", r.num_carried),
                format!("scanned={}", r.num_scanned),
                format!("invariant={}", r.num_invariant),
                format!("reverse={}", r.reverse),
                format!("seq_lens={}", r.has_seq_lens),
            ],
            _ => vec![],
        };
        if attrs.is_empty() {
            op.kind().to_string()
        } else {
            format!("{}{{{}}}", op.kind(), attrs.join(", "))
        }
    }

    /// `f32[2,2] [1.0, 0.0, 0.5, 2.0]`, or `f32[256,96] sha256:...` past the inline limit.
    fn tensor(&mut self, t: &Tensor) -> String {
        let head = ty(&t.ty());
        if t.len() > INLINE_LIMIT {
            let h = match self.store.as_deref_mut() {
                Some(s) => s.insert(t.clone()),
                None => tensor_hash(t),
            };
            return format!("{head} sha256:{}", hex(&h));
        }
        let elems = match t {
            Tensor::F32(a) => list(a.iter().map(|v| fmt_f32(*v))),
            Tensor::I64(a) => list(a.iter()),
            Tensor::I32(a) => list(a.iter()),
            Tensor::Bool(a) => list(a.iter()),
        };
        format!("{head} [{elems}]")
    }
}
