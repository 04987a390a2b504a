//! Weight gradients left to the trainer (`train.sampled_gradients`). The training graph makes
//! each weight matrix's gradient as one product after the backward recurrence,
//! `gemm{trans_a}(a, g)` with a [R, K] and g [R, M] the per-step factors stacked over all
//! rows (docs/trainer.md, "Weight gradients out of the loop"). [`factor`] takes those products
//! out of the graph: its outputs become the factors, and [`Plan::finish`] makes the gradients
//! from them with `products`: only at the mask's kept positions (a sampled product) where the
//! epoch does not grow and the mask is sparse enough, else dense. The compiled graph no longer
//! pays the dense product of a matrix kept at 10%.

use super::products::{self, Pattern};
use crate::Error;
use crate::gp::Masks;
use hlstm_ir::{DType, Graph, Op, Tensor, Value};
use std::collections::HashMap;

/// A mask at most this dense gets the sampled product; a denser one the dense product, which
/// is faster there. Measured on the text H-LSTM's nine matrices (`examples/products_time.rs`,
/// one thread): the two cost the same at about 20 to 25% with AVX-512 (the dense product at
/// about 125 GFLOP/s, the sampled one at 25) and at about 40% with AVX2 only. Fixed, not chosen
/// per machine, so that a run gives the same bits on every machine.
pub const SAMPLED_MAX_DENSITY: f64 = 0.25;

/// Where an output of the original training graph comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// An output of the factored graph.
    Output(usize),
    /// aᵀ·g from the factored graph's outputs `a` [r, k] and `g` [r, m], for parameter `param`.
    Product {
        param: usize,
        a: usize,
        g: usize,
        r: usize,
        k: usize,
        m: usize,
    },
}

/// The training graph without the chosen weight-gradient products, and how to make its
/// original outputs again.
#[derive(Clone, Debug)]
pub struct Factored {
    pub graph: Graph,
    /// By output of the original graph.
    pub sources: Vec<Source>,
}

fn dims2(g: &Graph, v: Value) -> Option<(usize, usize)> {
    match g.value_type(v).concrete()?.as_slice() {
        [a, b] if g.value_type(v).dtype == DType::F32 => Some((*a, *b)),
        _ => None,
    }
}

/// The factors (a, g) of a value made by `gemm{alpha=1, trans_a, !trans_b}(a, g)` with no C.
fn factors(g: &Graph, v: Value) -> Option<(Value, Value)> {
    let Op::Gemm {
        alpha,
        trans_a: true,
        trans_b: false,
        ..
    } = g.nodes[v.node].op
    else {
        return None;
    };
    match g.operands(v.node).as_slice() {
        [Some(a), Some(b)] if alpha == 1.0 => Some((*a, *b)),
        _ => None,
    }
}

/// A factor that the backward recurrence only passes through: `reshape(y)` where its per-step
/// output y is one of its scanned inputs (a forward value saved per step, such as the gates'
/// [x, h] or a hidden layer's output), stacked in step order like the input. Every use of y
/// then reads that input instead, so the backward loop stops copying it (one copy per weight
/// that reads it) and dead-code elimination drops y.
fn pass_through(g: &mut Graph, a: Value) {
    if !matches!(g.nodes[a.node].op, Op::Reshape { .. }) {
        return;
    }
    let Some(Some(y)) = g.operands(a.node).first().copied() else {
        return;
    };
    let Op::Recurrence(rec) = &g.nodes[y.node].op else {
        return;
    };
    let Some((_, out)) = rec.body.outputs.get(y.slot) else {
        return;
    };
    let Some(i) = rec.body.inputs.iter().position(|&n| n == out.node) else {
        return;
    };
    let scanned = rec.num_carried..rec.num_carried + rec.num_scanned;
    if y.slot < rec.num_carried || !scanned.contains(&i) {
        return;
    }
    if let Some(Some(x)) = g.operands(y.node).get(i).copied()
        && g.value_type(x) == g.value_type(y)
    {
        g.replace_uses(y, x);
    }
}

/// What a factor reads: a reshape's operand and its shape, or the value itself. Factors that
/// read the same are one output of the factored graph.
fn key(g: &Graph, v: Value) -> (Value, Option<(usize, usize)>) {
    if matches!(g.nodes[v.node].op, Op::Reshape { .. })
        && let Some(Some(x)) = g.operands(v.node).first().copied()
    {
        return (x, dims2(g, v));
    }
    (v, None)
}

/// Takes the products of `grads` (by output index of `tg`: (output, parameter index)) out of
/// `tg` where they have the factored form; other outputs stay.
pub fn factor(tg: &Graph, grads: &[(usize, usize)]) -> Factored {
    let mut g = tg.clone();
    for &(o, _) in grads {
        if let Some((a, _)) = tg.outputs.get(o).and_then(|(_, v)| factors(tg, *v)) {
            pass_through(&mut g, a);
        }
    }
    let mut outputs: Vec<(String, Value)> = Vec::new();
    let mut slot: HashMap<(Value, Option<(usize, usize)>), usize> = HashMap::new();
    let mut add =
        |g: &Graph, outputs: &mut Vec<(String, Value)>, name: String, v: Value| -> usize {
            *slot.entry(key(g, v)).or_insert_with(|| {
                outputs.push((name, v));
                outputs.len() - 1
            })
        };
    let mut sources = Vec::new();
    for (i, (name, v)) in tg.outputs.iter().enumerate() {
        let product = grads.iter().find(|(o, _)| *o == i).and_then(|&(_, param)| {
            let (a, b) = factors(tg, *v)?;
            let ((r, k), (r2, m)) = (dims2(tg, a)?, dims2(tg, b)?);
            (r == r2).then_some((param, a, b, r, k, m))
        });
        sources.push(match product {
            Some((param, a, b, r, k, m)) => {
                let an = format!("factor.{}", tg.value_info(a).name);
                let bn = format!("factor.{}", tg.value_info(b).name);
                Source::Product {
                    param,
                    a: add(&g, &mut outputs, an, a),
                    g: add(&g, &mut outputs, bn, b),
                    r,
                    k,
                    m,
                }
            }
            // Never shared with a factor or another output: `Plan::finish` moves it out.
            None => {
                outputs.push((name.clone(), *v));
                Source::Output(outputs.len() - 1)
            }
        });
    }
    g.outputs = outputs;
    hlstm_passes::dce::dce_graph(&mut g);
    Factored { graph: g, sources }
}

/// How one epoch makes the gradients: per parameter, the pattern of a sampled product (None:
/// dense).
pub struct Plan {
    sources: Vec<Source>,
    patterns: Vec<Option<Pattern>>,
    threads: usize,
}

impl Plan {
    pub fn new(f: &Factored, threads: usize) -> Plan {
        Plan {
            sources: f.sources.clone(),
            patterns: Vec::new(),
            threads,
        }
    }

    /// The products of the next runs: sampled at the kept positions of `masks` (by parameter)
    /// unless `dense` (growth needs dL/dW everywhere) or a mask is denser than
    /// [`SAMPLED_MAX_DENSITY`].
    pub fn set_masks(&mut self, masks: &Masks, dense: bool) {
        self.patterns = self
            .sources
            .iter()
            .map(|s| match *s {
                Source::Product { param, k, m, .. } if !dense => {
                    let mask = masks.get(param)?.as_ref()?;
                    let kept = mask.iter().filter(|&&on| on).count();
                    (mask.len() == k * m && kept as f64 <= SAMPLED_MAX_DENSITY * mask.len() as f64)
                        .then(|| Pattern::from_mask(mask, k, m))
                }
                _ => None,
            })
            .collect();
    }

    /// The original graph's outputs into `out` from the factored graph's `raw` (whose tensors
    /// are swapped with `out`'s, so that both keep their memory across runs).
    pub fn finish(&self, raw: &mut [Tensor], out: &mut Vec<Tensor>) -> Result<(), Error> {
        let wanted = self.sources.iter().map(|s| match *s {
            Source::Output(j) => j,
            Source::Product { a, g, .. } => a.max(g),
        });
        if wanted.max().is_some_and(|j| j >= raw.len()) {
            return Err(Error::new(format!(
                "internal error: the training graph gave {} outputs, fewer than its plan reads",
                raw.len()
            )));
        }
        out.resize_with(self.sources.len(), || Tensor::zeros(DType::F32, &[0]));
        for (i, s) in self.sources.iter().enumerate() {
            match *s {
                Source::Output(j) => std::mem::swap(&mut out[i], &mut raw[j]),
                Source::Product { k, m, .. } => {
                    if out[i].shape() != [k, m]
                        || out[i].as_f32().and_then(|a| a.as_slice()).is_none()
                    {
                        out[i] = Tensor::zeros(DType::F32, &[k, m]);
                    }
                }
            }
        }
        let bad = || Error::new("internal error: a gradient factor is not a contiguous f32 tensor");
        // The sampled products go together (grouped by their `a`, which the gates share), the
        // dense ones one by one.
        let mut sampled: Vec<(usize, usize, usize, products::Sampled)> = Vec::new();
        for ((i, s), dst) in self.sources.iter().enumerate().zip(out.iter_mut()) {
            let Source::Product { a, g, r, k, m, .. } = *s else {
                continue;
            };
            let (Some(av), Some(gv)) = (slice(&raw[a]), slice(&raw[g])) else {
                return Err(bad());
            };
            let Tensor::F32(dst) = dst else {
                return Err(bad());
            };
            let dst = dst.as_slice_mut().ok_or_else(bad)?;
            match self.patterns.get(i).and_then(Option::as_ref) {
                Some(p) => sampled.push((
                    r,
                    a,
                    i,
                    products::Sampled {
                        a: av,
                        g: gv,
                        p,
                        out: dst,
                    },
                )),
                None => products::dense(av, gv, r, k, m, dst, self.threads),
            }
        }
        // Grouped by rows (all the same in the trainer's graphs), then by `a`.
        sampled.sort_by_key(|(r, a, i, _)| (*r, *a, *i));
        let mut rest = sampled.into_iter().peekable();
        while let Some((r, _, _, j)) = rest.next() {
            let mut jobs = vec![j];
            while let Some((_, _, _, j)) = rest.next_if(|(r2, ..)| *r2 == r) {
                jobs.push(j);
            }
            products::sampled_all(products::Path::Auto, r, &mut jobs, self.threads);
        }
        Ok(())
    }
}

fn slice(t: &Tensor) -> Option<&[f32]> {
    t.as_f32()?.as_slice()
}
