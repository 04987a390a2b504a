//! Adds nodes to a graph under construction: fresh names, shape inference on every node, cached
//! constants, and the few composite helpers that gradient rules and model builders share
//! (reshape, transpose, and `sum_to`, the reduction that undoes broadcasting). Autodiff, the
//! model builders and the tests all build graphs through it.
//!
//! The IR has no reduction op, so reductions are matmuls with a constant vector of ones (exact:
//! the interpreter accumulates matmuls in f64). This needs static shapes, which autodiff requires
//! anyway: it runs on a graph built for one batch size and sequence length.

use hlstm_ir::shape::infer_in;
use hlstm_ir::{BinOp, DType, Graph, Op, Tensor, Value, ValueInfo};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

pub type R<T> = Result<T, String>;

pub struct Builder {
    pub g: Graph,
    used: HashSet<String>,
    ints: HashMap<Vec<i64>, Value>,
    /// Constant f32 tensors of ones or zeros, by (fill, shape).
    fills: HashMap<(u32, Vec<usize>), Value>,
    eyes: HashMap<usize, Value>,
    /// Every node this builder added, in order.
    created: Vec<NodeIndex>,
}

impl Builder {
    pub fn new(g: Graph) -> Builder {
        let mut used = HashSet::new();
        for n in g.nodes.node_weights() {
            used.insert(n.name.clone());
            used.extend(n.results.iter().map(|r| r.name.clone()));
        }
        used.extend(g.outputs.iter().map(|(n, _)| n.clone()));
        Builder {
            g,
            used,
            ints: HashMap::new(),
            fills: HashMap::new(),
            eyes: HashMap::new(),
            created: Vec::new(),
        }
    }

    /// A name not yet used in this graph: `base`, else `base.1`, `base.2`, ...
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.used.contains(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.used.insert(name.clone());
        name
    }

    pub fn dims(&self, v: Value) -> R<Vec<usize>> {
        let info = self.g.value_info(v);
        info.ty.concrete().ok_or_else(|| {
            format!(
                "value '{}' has type {}; sums and autodiff need static shapes (build the graph \
                 for one batch size and sequence length)",
                info.name, info.ty
            )
        })
    }

    pub fn dtype(&self, v: Value) -> DType {
        self.g.value_type(v).dtype
    }

    /// Adds a node with inferred result types; its results are named `base`, `base.1`, ...
    pub fn node(&mut self, base: &str, op: Op, operands: &[Option<Value>]) -> R<Vec<Value>> {
        let tys = infer_in(&self.g, &op, operands).map_err(|e| format!("building {base}: {e}"))?;
        let name = self.fresh(base);
        let mut results = Vec::with_capacity(tys.len());
        for (i, ty) in tys.into_iter().enumerate() {
            let rn = if i == 0 {
                name.clone()
            } else {
                self.fresh(&format!("{name}.{i}"))
            };
            results.push(ValueInfo { name: rn, ty });
        }
        let k = results.len();
        let n = self.g.add_node(&name, op, operands, results);
        self.created.push(n);
        Ok((0..k).map(|slot| Value { node: n, slot }).collect())
    }

    pub fn op(&mut self, base: &str, op: Op, operands: &[Value]) -> R<Value> {
        let ops: Vec<Option<Value>> = operands.iter().copied().map(Some).collect();
        Ok(self.node(base, op, &ops)?[0])
    }

    pub fn constant(&mut self, base: &str, t: Tensor) -> Value {
        let name = self.fresh(base);
        let v = self.g.add_const(&name, t);
        self.created.push(v.node);
        v
    }

    pub fn ints(&mut self, v: &[i64]) -> Value {
        if let Some(&c) = self.ints.get(v) {
            return c;
        }
        let t = Tensor::from_i64(&[v.len()], v.to_vec()).expect("a 1-D shape fits its data");
        let c = self.constant("i64", t);
        self.ints.insert(v.to_vec(), c);
        c
    }

    /// A constant f32 scalar (shared with `fill(x, &[])`).
    pub fn scalar(&mut self, x: f32) -> Value {
        self.fill(x, &[]).expect("a scalar is one element")
    }

    /// A constant f32 tensor filled with `x` (zeros for missing adjoints, ones for sums).
    pub fn fill(&mut self, x: f32, dims: &[usize]) -> R<Value> {
        let key = (x.to_bits(), dims.to_vec());
        if let Some(&c) = self.fills.get(&key) {
            return Ok(c);
        }
        hlstm_ir::interp::kernels::check_size(dims)?;
        let n = dims.iter().product();
        let t = Tensor::from_f32(dims, vec![x; n]).expect("the length is the product of dims");
        let base = match x {
            _ if dims.is_empty() => "k",
            0.0 => "zeros",
            1.0 => "ones",
            _ => "fill",
        };
        let c = self.constant(base, t);
        self.fills.insert(key, c);
        Ok(c)
    }

    /// The n x n identity: gathering its rows by index gives one-hot rows.
    pub fn eye(&mut self, n: usize) -> R<Value> {
        if let Some(&c) = self.eyes.get(&n) {
            return Ok(c);
        }
        hlstm_ir::interp::kernels::check_size(&[n, n])?;
        let mut data = vec![0.0; n * n];
        for i in 0..n {
            data[i * n + i] = 1.0;
        }
        let t = Tensor::from_f32(&[n, n], data).expect("n*n elements");
        let c = self.constant("eye", t);
        self.eyes.insert(n, c);
        Ok(c)
    }

    pub fn bin(&mut self, base: &str, op: BinOp, a: Value, b: Value) -> R<Value> {
        self.op(base, Op::Binary(op), &[a, b])
    }

    pub fn reshape(&mut self, base: &str, x: Value, dims: &[usize]) -> R<Value> {
        if self.dims(x)? == dims {
            return Ok(x);
        }
        let s: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let s = self.ints(&s);
        self.op(base, Op::Reshape { allowzero: false }, &[x, s])
    }

    pub fn transpose(&mut self, base: &str, x: Value, perm: &[usize]) -> R<Value> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.op(
            base,
            Op::Transpose {
                perm: Some(perm.to_vec()),
            },
            &[x],
        )
    }

    pub fn gemm(&mut self, base: &str, a: Value, b: Value, ta: bool, tb: bool) -> R<Value> {
        let op = Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: ta,
            trans_b: tb,
        };
        self.op(base, op, &[a, b])
    }

    /// Sums `x` down to `target`, a shape `x`'s shape was broadcast from (numpy rules: leading
    /// axes dropped, axes of size 1 kept). Summed axes go to one side of a 2-D reshape and a
    /// matmul with ones adds them up; a transpose comes first only when summed and kept axes
    /// interleave.
    pub fn sum_to(&mut self, base: &str, x: Value, target: &[usize]) -> R<Value> {
        let s = self.dims(x)?;
        if s == target {
            return Ok(x);
        }
        if target.len() > s.len() {
            return Err(format!("cannot sum {s:?} to the larger rank of {target:?}"));
        }
        let lead = s.len() - target.len();
        let padded: Vec<usize> = std::iter::repeat_n(1, lead)
            .chain(target.iter().copied())
            .collect();
        let mut summed = Vec::new();
        let mut kept = Vec::new();
        for (i, (&d, &t)) in s.iter().zip(&padded).enumerate() {
            if t == d {
                kept.push(i);
            } else if t == 1 {
                summed.push(i);
            } else {
                return Err(format!("{target:?} does not broadcast to {s:?}"));
            }
        }
        let prod = |ax: &[usize]| ax.iter().map(|&i| s[i]).product::<usize>();
        let (pk, ps) = (prod(&kept), prod(&summed));
        let leading = summed.iter().all(|&i| kept.iter().all(|&k| i < k));
        // The last node gets `base`; the steps before it `base.sum`.
        let mid = format!("{base}.sum");
        let two = if leading { [1, pk] } else { [pk, 1] };
        let last = if two[..] == *target {
            base
        } else {
            mid.as_str()
        };
        let r = if leading {
            let x2 = self.reshape(&mid, x, &[ps, pk])?;
            let ones = self.fill(1.0, &[1, ps])?;
            self.op(last, Op::MatMul, &[ones, x2])?
        } else {
            let perm: Vec<usize> = kept.iter().chain(&summed).copied().collect();
            let xt = self.transpose(&mid, x, &perm)?;
            let x2 = self.reshape(&mid, xt, &[pk, ps])?;
            let ones = self.fill(1.0, &[ps, 1])?;
            self.op(last, Op::MatMul, &[x2, ones])?
        };
        self.reshape(base, r, target)
    }

    /// Sums along `axis`, keeping it with size 1.
    pub fn sum_keep(&mut self, base: &str, x: Value, axis: usize) -> R<Value> {
        let mut t = self.dims(x)?;
        t[axis] = 1;
        self.sum_to(base, x, &t)
    }

    /// `a + b`, skipping the node when one side is absent.
    pub fn accumulate(&mut self, base: &str, a: Option<Value>, b: Value) -> R<Value> {
        match a {
            None => Ok(b),
            Some(a) => self.bin(base, BinOp::Add, a, b),
        }
    }
}

impl Builder {
    /// Adds a node with inferred result types and the given result names (made fresh).
    pub fn node_named(
        &mut self,
        name: &str,
        op: Op,
        operands: &[Option<Value>],
        result_names: &[String],
    ) -> R<Vec<Value>> {
        let tys = infer_in(&self.g, &op, operands).map_err(|e| format!("building {name}: {e}"))?;
        if tys.len() != result_names.len() {
            return Err(format!(
                "building {name}: {} names for {} results",
                result_names.len(),
                tys.len()
            ));
        }
        let name = self.fresh(name);
        let results: Vec<ValueInfo> = tys
            .into_iter()
            .zip(result_names)
            .map(|(ty, rn)| ValueInfo {
                name: self.fresh(rn),
                ty,
            })
            .collect();
        let k = results.len();
        let n = self.g.add_node(&name, op, operands, results);
        self.created.push(n);
        Ok((0..k).map(|slot| Value { node: n, slot }).collect())
    }

    /// How many nodes this builder has added: a mark for `created_since`.
    pub fn mark(&self) -> usize {
        self.created.len()
    }

    /// The nodes added after `mark`.
    pub fn created_since(&self, mark: usize) -> &[NodeIndex] {
        &self.created[mark.min(self.created.len())..]
    }

    /// Renames a value to a fresh name built from `base`, and its node too when the value is
    /// the node's only result (so the printer can leave the node name out).
    pub fn rename(&mut self, v: Value, base: &str) {
        let name = self.fresh(base);
        let node = &mut self.g.nodes[v.node];
        if node.results.len() == 1 {
            node.name = name.clone();
        }
        node.results[v.slot].name = name;
    }
}

/// A copy of `g` with its inputs first (in order) and every other node after its operands, so
/// that the printed text reads top to bottom and declares every input in the header.
pub fn compact(g: &Graph) -> R<Graph> {
    use petgraph::visit::{EdgeRef, IntoEdgeReferences};
    let order = g.topo_order().map_err(|n| format!("cycle through '{n}'"))?;
    let mut out = Graph::new();
    let mut map = HashMap::new();
    for &i in &g.inputs {
        map.insert(i, out.nodes.add_node(g.nodes[i].clone()));
        out.inputs.push(map[&i]);
    }
    for n in order {
        map.entry(n)
            .or_insert_with(|| out.nodes.add_node(g.nodes[n].clone()));
    }
    for e in g.nodes.edge_references() {
        out.nodes
            .add_edge(map[&e.source()], map[&e.target()], *e.weight());
    }
    out.outputs = g
        .outputs
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                Value {
                    node: map[&v.node],
                    slot: v.slot,
                },
            )
        })
        .collect();
    Ok(out)
}
