//! The rule table: every rewrite by name, with the condition it needs and what it builds.
//! Conditions read the analysis (types, constant values, sparsity). Appliers that build new
//! constants check shapes before adding a node. There is no commutativity or associativity.

use super::analysis::{HEGraph, TensorAnalysis, const_leaf};
use super::lang::{ConcatAxis, HLang};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use hlstm_ir::Tensor;

pub struct NamedRule {
    pub name: String,
    pub description: &'static str,
    pub rewrite: Rewrite<HLang, TensorAnalysis>,
}

pub(super) fn var(s: &str) -> Var {
    s.parse().expect("a pattern variable")
}

/// Unions the matched class with `new` when both have the same type (a rewrite must not change
/// a shape); returns the changed classes, as appliers do.
pub(super) fn union_same_type(eg: &mut HEGraph, id: Id, new: Id) -> Vec<Id> {
    if eg[new].data.ty != eg[id].data.ty {
        return vec![];
    }
    if eg.union(id, new) { vec![id] } else { vec![] }
}

fn pat(s: &str) -> Pattern<HLang> {
    s.parse().expect("a valid pattern")
}

fn is_zero(v: Var) -> impl Fn(&mut HEGraph, Id, &Subst) -> bool {
    move |eg, _, s| eg[s[v]].data.is_zero()
}

fn is_one(v: Var) -> impl Fn(&mut HEGraph, Id, &Subst) -> bool {
    move |eg, _, s| eg[s[v]].data.is_one()
}

/// The matched class has the same concrete type as `v` (so replacing it changes no shape).
fn same_type(v: Var) -> impl Fn(&mut HEGraph, Id, &Subst) -> bool {
    move |eg, id, s| {
        let (a, b) = (&eg[id].data, &eg[s[v]].data);
        a.concrete().is_some() && a.ty == b.ty
    }
}

fn both<A, B>(a: A, b: B) -> impl Fn(&mut HEGraph, Id, &Subst) -> bool
where
    A: Fn(&mut HEGraph, Id, &Subst) -> bool,
    B: Fn(&mut HEGraph, Id, &Subst) -> bool,
{
    move |eg, id, s| a(eg, id, s) && b(eg, id, s)
}

/// Replaces the matched class with a zero constant of its type.
struct ZeroOfMatch;

impl Applier<HLang, TensorAnalysis> for ZeroOfMatch {
    fn apply_one(
        &self,
        eg: &mut HEGraph,
        id: Id,
        _: &Subst,
        _: Option<&PatternAst<HLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let Some(ty) = eg[id].data.ty.clone() else {
            return vec![];
        };
        let Some(dims) = ty.concrete() else {
            return vec![];
        };
        if hlstm_ir::interp::kernels::check_size(&dims).is_err() {
            return vec![];
        }
        let key = format!("zeros:{}:{dims:?}", ty.dtype);
        let k = eg.analysis.tables.memo_const(key, || {
            (
                format!(
                    "zeros_{}",
                    dims.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                ),
                Tensor::zeros(ty.dtype, &dims),
            )
        });
        let leaf = eg.add(HLang::Const(k));
        if eg.union(id, leaf) { vec![id] } else { vec![] }
    }
}

/// matmul(concat(x, h), W) -> matmul(x, W[:kx]) + matmul(h, W[kx:]): the input projection and
/// the recurrent one become separate, so the input part can leave the time loop.
struct SplitConcatMatmul {
    x: Var,
    h: Var,
    w: Var,
}

impl Applier<HLang, TensorAnalysis> for SplitConcatMatmul {
    fn apply_one(
        &self,
        eg: &mut HEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<HLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let (x, h, w) = (s[self.x], s[self.h], s[self.w]);
        let Some(Tensor::F32(wv)) = eg[w].data.value.as_deref().cloned() else {
            return vec![];
        };
        let (Some(xd), Some(hd)) = (eg[x].data.concrete(), eg[h].data.concrete()) else {
            return vec![];
        };
        if wv.ndim() != 2 || xd.len() < 2 || hd.len() != xd.len() {
            return vec![];
        }
        let (kx, kh) = (xd[xd.len() - 1], hd[hd.len() - 1]);
        if wv.shape()[0] != kx + kh {
            return vec![];
        }
        let Some(wk) = const_leaf(eg, w) else {
            return vec![];
        };
        let base = eg.analysis.tables.consts[wk.0 as usize].name.clone();
        let rows = |a: usize, b: usize| {
            Tensor::F32(
                wv.slice_axis(ndarray::Axis(0), ndarray::Slice::from(a..b))
                    .to_owned(),
            )
        };
        let t = &mut eg.analysis.tables;
        let kt = t.memo_const(format!("split:{}:{kx}:top", wk.0), || {
            (format!("{base}[:{kx}]"), rows(0, kx))
        });
        let kb = t.memo_const(format!("split:{}:{kx}:bottom", wk.0), || {
            (format!("{base}[{kx}:]"), rows(kx, kx + kh))
        });
        let (ct, cb) = (eg.add(HLang::Const(kt)), eg.add(HLang::Const(kb)));
        let mx = eg.add(HLang::MatMul([x, ct]));
        let mh = eg.add(HLang::MatMul([h, cb]));
        let sum = eg.add(HLang::Add([mx, mh]));
        if eg.union(id, sum) { vec![id] } else { vec![] }
    }
}

/// A rule of the table, as egg's tests write them: `rule!(name, description; searcher =>
/// applier)`, or with a condition, `rule!(name, description; searcher => applier, if
/// condition)`. The applier is a pattern (`pat("?x")`) or an `Applier` that builds nodes.
macro_rules! rule {
    ($name:expr, $desc:expr; $lhs:expr => $rhs:expr, if $cond:expr) => {
        named(
            $name,
            $desc,
            Rewrite::new(
                $name,
                pat($lhs),
                egg::ConditionalApplier {
                    condition: $cond,
                    applier: $rhs,
                },
            ),
        )
    };
    ($name:expr, $desc:expr; $lhs:expr => $rhs:expr) => {
        named($name, $desc, Rewrite::new($name, pat($lhs), $rhs))
    };
}

/// A rewrite with its name and description; an invalid rule is a bug of the table.
fn named(
    name: &str,
    description: &'static str,
    rewrite: Result<Rewrite<HLang, TensorAnalysis>, String>,
) -> NamedRule {
    NamedRule {
        name: name.into(),
        description,
        rewrite: rewrite.unwrap_or_else(|e| panic!("rule {name}: {e}")),
    }
}

/// The rule table. Names are what `--stats` reports and tests refer to.
#[rustfmt::skip]
pub fn rule_table() -> Vec<NamedRule> {
    let (x, w, z, o, h) = (var("?x"), var("?w"), var("?z"), var("?o"), var("?h"));
    let mut rules = vec![
        rule!("matmul-zero-weight", "x · 0 = 0: a pruned (all-zero) weight block contributes nothing"; "(matmul ?x ?z)" => ZeroOfMatch, if is_zero(z)),
        rule!("matmul-zero-left", "0 · x = 0"; "(matmul ?z ?x)" => ZeroOfMatch, if is_zero(z)),
        rule!("mul-zero", "x * 0 = 0 (and 0 * x)"; "(mul ?x ?z)" => ZeroOfMatch, if is_zero(z)),
        rule!("mul-zero-left", "0 * x = 0"; "(mul ?z ?x)" => ZeroOfMatch, if is_zero(z)),
        rule!("add-zero", "x + 0 = x when the shapes agree"; "(add ?x ?z)" => pat("?x"), if both(is_zero(z), same_type(x))),
        rule!("add-zero-left", "0 + x = x when the shapes agree"; "(add ?z ?x)" => pat("?x"), if both(is_zero(z), same_type(x))),
        rule!("sub-zero", "x - 0 = x when the shapes agree"; "(sub ?x ?z)" => pat("?x"), if both(is_zero(z), same_type(x))),
        rule!("mul-one", "x * 1 = x when the shapes agree"; "(mul ?x ?o)" => pat("?x"), if both(is_one(o), same_type(x))),
        rule!("mul-one-left", "1 * x = x when the shapes agree"; "(mul ?o ?x)" => pat("?x"), if both(is_one(o), same_type(x))),
        rule!("split-concat-matmul", "W·[x; h] = W_x·x + W_h·h, so the input part can leave the time loop"; &format!("(matmul ({} ?x ?h) ?w)", ConcatAxis(1)) => SplitConcatMatmul { x, h, w }),
        rule!("split-concat-matmul-neg", "W·[x; h] = W_x·x + W_h·h, so the input part can leave the time loop"; &format!("(matmul ({} ?x ?h) ?w)", ConcatAxis(-1)) => SplitConcatMatmul { x, h, w }),
        rule!("add-constants", "(x + c1) + c2 = x + (c1 + c2) for constants c1, c2 (biases meet after a rewrite)"; "(add (add ?x ?c1) ?c2)" => AddConstants),
    ];
    for (name, description, rewrite) in super::neurons::neuron_rules() {
        rules.push(NamedRule { name, description, rewrite });
    }
    rules
}

/// (x + c1) + c2 -> x + (c1 + c2) when both are constants and the shape stays the same.
struct AddConstants;

impl Applier<HLang, TensorAnalysis> for AddConstants {
    fn apply_one(
        &self,
        eg: &mut HEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<HLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let (x, c1, c2) = (s[var("?x")], s[var("?c1")], s[var("?c2")]);
        if eg[x].data.value.is_some() {
            return vec![];
        }
        let (Some(a), Some(b)) = (eg[c1].data.value.clone(), eg[c2].data.value.clone()) else {
            return vec![];
        };
        if eg[c1].data.is_zero() || eg[c2].data.is_zero() {
            return vec![];
        }
        let Ok(sum) = hlstm_ir::interp::kernels::binary(hlstm_ir::BinOp::Add, &a, &b) else {
            return vec![];
        };
        let (Some(ka), Some(kb)) = (const_leaf(eg, c1), const_leaf(eg, c2)) else {
            return vec![];
        };
        let name = format!(
            "{}+{}",
            eg.analysis.tables.consts[ka.0 as usize].name,
            eg.analysis.tables.consts[kb.0 as usize].name
        );
        let k = eg
            .analysis
            .tables
            .memo_const(format!("add:{}:{}", ka.0, kb.0), || (name, sum));
        let cn = eg.add(HLang::Const(k));
        let out = eg.add(HLang::Add([x, cn]));
        union_same_type(eg, id, out)
    }
}
