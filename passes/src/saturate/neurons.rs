//! Rules on hidden neurons of a gate network layer `act(x·W1 + b1)·W2`:
//!
//! - `dead-neuron-in`: a neuron with no incoming weight (a zero column of W1) outputs the
//!   constant act(b1[j]); its contribution act(b1[j])·W2[j,:] becomes a constant added after the
//!   next matmul, and the neuron is removed (shapes shrink).
//! - `dead-neuron-out`: a neuron with no outgoing weight (a zero row of W2) is removed with its
//!   incoming weights.
//!
//! When the layer feeds a batched matmul through a reshape ([G,1,n] per gate, W2 [G,n,m]), the
//! gates keep different numbers of neurons, which no single tensor can hold; there the dead
//! neurons' weights are zeroed instead (`-batched` rules), which removes their multiply-adds
//! from every sparse kernel and from the cost.
//!
//! Every constant an applier builds is memoized by its inputs, so a rule applied again to the
//! same match adds nothing and saturation ends.

use super::analysis::{HEGraph, TensorAnalysis, const_leaf};
use super::lang::{ConstKey, HLang};
use super::rules::{union_same_type, var};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};
use hlstm_ir::{Act, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

/// The activation between the two matmuls.
#[derive(Clone, Copy, Debug)]
pub enum Layer {
    Relu,
    Sigmoid,
    Tanh,
    Linear,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Relu => "relu",
            Layer::Sigmoid => "sigmoid",
            Layer::Tanh => "tanh",
            Layer::Linear => "linear",
        }
    }
    fn wrap(self, inner: &str) -> String {
        match self {
            Layer::Linear => inner.to_string(),
            l => format!("({} {inner})", l.name()),
        }
    }
    fn apply(self, v: f32) -> f32 {
        match self {
            Layer::Relu => Act::Relu.apply(v),
            Layer::Sigmoid => Act::Sigmoid.apply(v),
            Layer::Tanh => Act::Tanh.apply(v),
            Layer::Linear => v,
        }
    }
    fn node(self, eg: &mut HEGraph, x: Id) -> Id {
        match self {
            Layer::Relu => eg.add(HLang::Relu(x)),
            Layer::Sigmoid => eg.add(HLang::Sigmoid(x)),
            Layer::Tanh => eg.add(HLang::Tanh(x)),
            Layer::Linear => x,
        }
    }
}

fn f32_value(eg: &HEGraph, id: Id) -> Option<ArrayD<f32>> {
    match eg[id].data.value.as_deref() {
        Some(Tensor::F32(a)) => Some(a.clone()),
        _ => None,
    }
}

/// The matched layer's constants: W1 [k, n], b1 as a flat [n] (with its original shape), W2.
struct LayerConsts {
    keys: [ConstKey; 3],
    w1: ArrayD<f32>,
    b1: Vec<f32>,
    b1_shape: Vec<usize>,
    w2: ArrayD<f32>,
}

fn layer_consts(eg: &HEGraph, s: &Subst, w2_rank: usize) -> Option<LayerConsts> {
    let (w1, b1, w2) = (s[var("?w1")], s[var("?b1")], s[var("?w2")]);
    let keys = [
        const_leaf(eg, w1)?,
        const_leaf(eg, b1)?,
        const_leaf(eg, w2)?,
    ];
    let (w1v, b1v, w2v) = (f32_value(eg, w1)?, f32_value(eg, b1)?, f32_value(eg, w2)?);
    if w1v.ndim() != 2 || w2v.ndim() != w2_rank {
        return None;
    }
    let n = w1v.shape()[1];
    let b1_shape = b1v.shape().to_vec();
    // The bias must be one value per neuron, broadcast over rows.
    if b1v.len() != n || b1_shape.last() != Some(&n) {
        return None;
    }
    Some(LayerConsts {
        keys,
        w1: w1v,
        b1: b1v.iter().copied().collect(),
        b1_shape,
        w2: w2v,
    })
}

/// How many columns (`cols`) or rows of a constant class are all zero, and its last dim, from
/// the analysis's sparsity summary: known without copying or scanning the weight, so a rule
/// with nothing to do returns before it does either.
fn zero_lines(eg: &HEGraph, id: Id, cols: bool) -> Option<(usize, usize)> {
    let d = &eg[id].data;
    let sp = d.sparsity.as_ref()?;
    let dims = d.concrete()?;
    let zero = if cols { &sp.zero_cols } else { &sp.zero_rows };
    Some((zero.len(), *dims.last()?))
}

fn zero_cols(w: &ArrayD<f32>) -> Vec<bool> {
    let n = w.shape()[1];
    let mut zero = vec![true; n];
    for row in w.outer_iter() {
        for (j, v) in row.iter().enumerate() {
            if *v != 0.0 {
                zero[j] = false;
            }
        }
    }
    zero
}

fn select(a: &ArrayD<f32>, axis: usize, keep: &[usize]) -> ArrayD<f32> {
    a.select(Axis(axis), keep)
}

fn key_str(keys: &[ConstKey]) -> String {
    keys.iter()
        .map(|k| k.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes neurons of a 2-D layer: `dead` marks neurons to drop; `fold` says whether their
/// constant output must be carried into a bias after W2 (dead-in) or not (dead-out).
struct Compact {
    layer: Layer,
    incoming: bool,
}

impl Applier<HLang, TensorAnalysis> for Compact {
    fn apply_one(
        &self,
        eg: &mut HEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<HLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        // Dead neurons: columns of W1 with no incoming weight, or rows of W2 with no outgoing
        // one. None, or all of them: nothing to do.
        let (w1, w2) = (s[var("?w1")], s[var("?w2")]);
        let summary = if self.incoming {
            zero_lines(eg, w1, true)
        } else {
            zero_lines(eg, w2, false)
                .zip(zero_lines(eg, w1, true).map(|(_, n)| n))
                .map(|((dead, _), n)| (dead, n))
        };
        if let Some((dead, n)) = summary
            && (dead == 0 || dead == n)
        {
            return vec![];
        }
        let Some(c) = layer_consts(eg, s, 2) else {
            return vec![];
        };
        let (n, m) = (c.w1.shape()[1], c.w2.shape()[1]);
        if c.w2.shape()[0] != n {
            return vec![];
        }
        let dead: Vec<bool> = if self.incoming {
            zero_cols(&c.w1)
        } else {
            (0..n)
                .map(|j| c.w2.index_axis(Axis(0), j).iter().all(|v| *v == 0.0))
                .collect()
        };
        let keep: Vec<usize> = (0..n).filter(|&j| !dead[j]).collect();
        if keep.len() == n || keep.is_empty() {
            return vec![];
        }
        let tag = format!(
            "{}:{}:{}",
            if self.incoming { "in" } else { "out" },
            self.layer.name(),
            key_str(&c.keys)
        );
        let names: Vec<String> = c
            .keys
            .iter()
            .map(|k| eg.analysis.tables.consts[k.0 as usize].name.clone())
            .collect();
        let live = keep.len();
        let mut b1_shape = c.b1_shape.clone();
        *b1_shape.last_mut().expect("bias has a dim") = live;
        let t = &mut eg.analysis.tables;
        let w1k = t.memo_const(format!("{tag}:w1"), || {
            (
                format!("{}[live {live}]", names[0]),
                Tensor::F32(select(&c.w1, 1, &keep)),
            )
        });
        let b1k = t.memo_const(format!("{tag}:b1"), || {
            let v: Vec<f32> = keep.iter().map(|&j| c.b1[j]).collect();
            (
                format!("{}[live {live}]", names[1]),
                Tensor::F32(ArrayD::from_shape_vec(IxDyn(&b1_shape), v).expect("sized")),
            )
        });
        let w2k = t.memo_const(format!("{tag}:w2"), || {
            (
                format!("{}[live {live}]", names[2]),
                Tensor::F32(select(&c.w2, 0, &keep)),
            )
        });
        let carried = if self.incoming {
            // act(b1[j]) · W2[j, :] summed over the dead neurons.
            let mut bias = vec![0f32; m];
            for j in (0..n).filter(|&j| dead[j]) {
                let a = self.layer.apply(c.b1[j]);
                for (o, w) in bias.iter_mut().zip(c.w2.index_axis(Axis(0), j).iter()) {
                    *o += a * w;
                }
            }
            if bias.iter().any(|v| *v != 0.0) {
                Some(t.memo_const(format!("{tag}:carry"), || {
                    (
                        format!("{}[dead neurons' constant]", names[2]),
                        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[m]), bias).expect("sized")),
                    )
                }))
            } else {
                None
            }
        } else {
            None
        };
        let x = s[var("?x")];
        let (w1n, b1n, w2n) = (
            eg.add(HLang::Const(w1k)),
            eg.add(HLang::Const(b1k)),
            eg.add(HLang::Const(w2k)),
        );
        let mm1 = eg.add(HLang::MatMul([x, w1n]));
        let pre = eg.add(HLang::Add([mm1, b1n]));
        let act = self.layer.node(eg, pre);
        let mut out = eg.add(HLang::MatMul([act, w2n]));
        if let Some(k) = carried {
            let cn = eg.add(HLang::Const(k));
            out = eg.add(HLang::Add([out, cn]));
        }
        // Only when the shapes agree (they do unless the match is unusual).
        union_same_type(eg, id, out)
    }
}

/// Zeroes the weights of dead neurons of a layer feeding a batched matmul through a reshape
/// to [G, 1, n]: W2 rows of neurons with no incoming weight (their constant output goes into a
/// [G, 1, m] bias), or W1 columns of neurons with no outgoing weight.
struct Mask {
    layer: Layer,
    incoming: bool,
}

impl Applier<HLang, TensorAnalysis> for Mask {
    fn apply_one(
        &self,
        eg: &mut HEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<HLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        // Neurons with no incoming weight are zero columns of W1: none, nothing to do.
        if self.incoming
            && let Some((0, _)) = zero_lines(eg, s[var("?w1")], true)
        {
            return vec![];
        }
        let Some(c) = layer_consts(eg, s, 3) else {
            return vec![];
        };
        let (g, n, m) = (c.w2.shape()[0], c.w2.shape()[1], c.w2.shape()[2]);
        let shape = eg[s[var("?s")]]
            .data
            .value
            .as_deref()
            .and_then(Tensor::to_i64_vec);
        if shape != Some(vec![g as i64, 1, n as i64]) || c.w1.shape()[1] != g * n {
            return vec![];
        }
        let x_rows = eg[s[var("?x")]]
            .data
            .concrete()
            .map(|d| d[..d.len() - 1].iter().product::<usize>());
        if x_rows != Some(1) {
            return vec![];
        }
        let row_zero = |j: usize| {
            c.w2.index_axis(Axis(0), j / n)
                .index_axis(Axis(0), j % n)
                .iter()
                .all(|v| *v == 0.0)
        };
        let col_zero = zero_cols(&c.w1);
        // Neurons whose weights on the other side are not all zero yet.
        let targets: Vec<usize> = (0..g * n)
            .filter(|&j| {
                if self.incoming {
                    col_zero[j] && !row_zero(j)
                } else {
                    row_zero(j) && (!col_zero[j] || c.b1[j] != 0.0)
                }
            })
            .collect();
        if targets.is_empty() {
            return vec![];
        }
        let tag = format!(
            "mask-{}:{}:{}",
            if self.incoming { "in" } else { "out" },
            self.layer.name(),
            key_str(&c.keys)
        );
        let names: Vec<String> = c
            .keys
            .iter()
            .map(|k| eg.analysis.tables.consts[k.0 as usize].name.clone())
            .collect();
        let (x, w1, w2, sh) = (s[var("?x")], s[var("?w1")], s[var("?w2")], s[var("?s")]);
        let t = &mut eg.analysis.tables;
        // The masked neurons' biases are unused once either side of them is zero.
        let mut b1v = c.b1.clone();
        for &j in &targets {
            b1v[j] = 0.0;
        }
        let b1m = t.memo_const(format!("{tag}:b1"), || {
            (
                format!("{}[dead neurons zeroed]", names[1]),
                Tensor::F32(ArrayD::from_shape_vec(IxDyn(&c.b1_shape), b1v).expect("sized")),
            )
        });
        let out = if self.incoming {
            let mut w2m = c.w2.clone();
            let mut bias = ArrayD::<f32>::zeros(IxDyn(&[g, 1, m]));
            for &j in &targets {
                let a = self.layer.apply(c.b1[j]);
                for o in 0..m {
                    bias[[j / n, 0, o]] += a * c.w2[[j / n, j % n, o]];
                    w2m[[j / n, j % n, o]] = 0.0;
                }
            }
            let w2k = t.memo_const(format!("{tag}:w2"), || {
                (format!("{}[dead rows zeroed]", names[2]), Tensor::F32(w2m))
            });
            let bk = t.memo_const(format!("{tag}:carry"), || {
                (
                    format!("{}[dead neurons' constant]", names[2]),
                    Tensor::F32(bias),
                )
            });
            let a = {
                let mm1 = eg.add(HLang::MatMul([x, w1]));
                let b1n = eg.add(HLang::Const(b1m));
                let pre = eg.add(HLang::Add([mm1, b1n]));
                self.layer.node(eg, pre)
            };

            let r = eg.add(HLang::Reshape([a, sh]));
            let w2n = eg.add(HLang::Const(w2k));
            let mm2 = eg.add(HLang::MatMul([r, w2n]));
            let bn = eg.add(HLang::Const(bk));
            eg.add(HLang::Add([mm2, bn]))
        } else {
            let mut w1m = c.w1.clone();
            for &j in &targets {
                w1m.index_axis_mut(Axis(1), j).fill(0.0);
            }
            let w1k = t.memo_const(format!("{tag}:w1"), || {
                (
                    format!("{}[dead columns zeroed]", names[0]),
                    Tensor::F32(w1m),
                )
            });
            let w1n = eg.add(HLang::Const(w1k));
            let mm1 = eg.add(HLang::MatMul([x, w1n]));
            let b1n = eg.add(HLang::Const(b1m));
            let pre = eg.add(HLang::Add([mm1, b1n]));
            let a = self.layer.node(eg, pre);
            let r = eg.add(HLang::Reshape([a, sh]));
            eg.add(HLang::MatMul([r, w2]))
        };
        union_same_type(eg, id, out)
    }
}

/// (name, description, rewrite) for every neuron rule.
pub fn neuron_rules() -> Vec<(String, &'static str, Rewrite<HLang, TensorAnalysis>)> {
    let mut out = Vec::new();
    for layer in [Layer::Relu, Layer::Sigmoid, Layer::Tanh, Layer::Linear] {
        let inner = layer.wrap("(add (matmul ?x ?w1) ?b1)");
        let flat: Pattern<HLang> = format!("(matmul {inner} ?w2)").parse().expect("pattern");
        let batched: Pattern<HLang> = format!("(matmul (reshape {inner} ?s) ?w2)")
            .parse()
            .expect("pattern");
        for incoming in [true, false] {
            let dir = if incoming { "in" } else { "out" };
            let what = if incoming {
                "a hidden neuron with no incoming weight is a constant: fold it into the next layer's bias and remove it"
            } else {
                "a hidden neuron with no outgoing weight is removed with its incoming weights"
            };
            let name = format!("dead-neuron-{dir}/{}", layer.name());
            out.push((
                name.clone(),
                what,
                Rewrite::new(name, flat.clone(), Compact { layer, incoming }).expect("rule"),
            ));
            let name = format!("dead-neuron-{dir}-batched/{}", layer.name());
            out.push((
                name.clone(),
                what,
                Rewrite::new(name, batched.clone(), Mask { layer, incoming }).expect("rule"),
            ));
        }
    }
    out
}
