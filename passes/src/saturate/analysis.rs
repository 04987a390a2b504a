//! The analysis: for every e-class its type (shape included), its value when it is a constant,
//! and through the value a sparsity summary. Classes whose operands are all constants are folded:
//! their value is computed and a constant leaf is added to them.

use super::lang::{ConstKey, HLang};
use egg::{Analysis, DidMerge, EGraph, Id, Language};
use hlstm_ir::interp::eval_op;
use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{Act, BinOp, Op, Sparsity, Tensor, TensorType, ValueInfo};
use std::sync::Arc;

/// A constant known to the e-graph.
#[derive(Clone, Debug)]
pub struct ConstEntry {
    pub name: String,
    pub value: Arc<Tensor>,
    pub sparsity: Sparsity,
}

/// An op of the input graph that the language keeps opaque.
#[derive(Clone, Debug)]
pub struct OpEntry {
    pub name: String,
    pub op: Op,
    pub results: Vec<ValueInfo>,
}

#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub consts: Vec<ConstEntry>,
    pub inputs: Vec<ValueInfo>,
    pub ops: Vec<OpEntry>,
    /// Inputs below this index are carried state (in a recurrence body).
    pub num_carried: usize,
    /// Constants built by appliers, by a key describing them, so a rule applied again to the
    /// same match adds nothing new and saturation can end.
    pub memo: std::collections::HashMap<String, ConstKey>,
    /// Constants by content hash.
    pub by_content: std::collections::HashMap<u64, Vec<ConstKey>>,
    /// Node and result names of the input graph's matmuls, adds, activations...: (class, op
    /// kind) -> (node name, result name), so that unchanged nodes keep their names.
    pub names: Vec<(Id, &'static str, String, String)>,
}

/// Bitwise equality (so -0.0 and 0.0, or two NaNs with different payloads, stay apart).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => {
            x.shape() == y.shape()
                && match (x.as_slice(), y.as_slice()) {
                    (Some(p), Some(q)) => p.iter().zip(q).all(|(p, q)| p.to_bits() == q.to_bits()),
                    _ => x
                        .iter()
                        .zip(y.iter())
                        .all(|(p, q)| p.to_bits() == q.to_bits()),
                }
        }
        _ => a == b,
    }
}

/// A hash of f32 bit patterns: four independent multiply-rotate lanes over the elements (a
/// weight of millions of elements is hashed at memory speed; SipHash per element took longer
/// than the rest of saturation on a pruned H-LSTM 512), mixed with the length at the end.
fn hash_f32(xs: impl Iterator<Item = f32>) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [
        0x243F_6A88_85A3_08D3u64,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut n = 0u64;
    for (i, v) in xs.enumerate() {
        let l = &mut lanes[i & 3];
        *l = (*l ^ v.to_bits() as u64).wrapping_mul(K).rotate_left(29);
        n += 1;
    }
    lanes.iter().fold(n.wrapping_mul(K), |h, l| {
        (h ^ l).wrapping_mul(K).rotate_left(31)
    })
}

/// A hash of a tensor's type and contents, for finding equal constants.
fn content_hash(t: &Tensor) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.dtype().hash(&mut h);
    t.shape().hash(&mut h);
    match t {
        Tensor::F32(a) => match a.as_slice() {
            Some(s) => hash_f32(s.iter().copied()).hash(&mut h),
            None => hash_f32(a.iter().copied()).hash(&mut h),
        },
        Tensor::I64(a) => a.iter().for_each(|v| v.hash(&mut h)),
        Tensor::I32(a) => a.iter().for_each(|v| v.hash(&mut h)),
        Tensor::Bool(a) => a.iter().for_each(|v| v.hash(&mut h)),
    }
    h.finish()
}

impl Tables {
    /// A constant built once per `key`.
    pub fn memo_const(
        &mut self,
        key: String,
        build: impl FnOnce() -> (String, Tensor),
    ) -> ConstKey {
        if let Some(k) = self.memo.get(&key) {
            return *k;
        }
        let (name, value) = build();
        let k = self.add_const(name, value);
        self.memo.insert(key, k);
        k
    }

    /// Adds a constant, or returns the key of an equal one (bit for bit): equal constants must be
    /// one leaf, or rules that build constants could go on making new copies of the same value.
    pub fn add_const(&mut self, name: String, value: Tensor) -> ConstKey {
        self.add_shared_const(name, Arc::new(value))
    }

    /// [`Tables::add_const`] of a tensor shared with the graph it came from: no copy is made.
    pub fn add_shared_const(&mut self, name: String, value: Arc<Tensor>) -> ConstKey {
        let h = content_hash(&value);
        if let Some(keys) = self.by_content.get(&h)
            && let Some(k) = keys
                .iter()
                .find(|k| same_bits(&self.consts[k.0 as usize].value, &value))
        {
            return *k;
        }
        let sparsity = Sparsity::of(&value);
        self.consts.push(ConstEntry {
            name,
            value,
            sparsity,
        });
        let k = ConstKey(self.consts.len() as u32 - 1);
        self.by_content.entry(h).or_default().push(k);
        k
    }
}

#[derive(Clone, Debug, Default)]
pub struct TensorAnalysis {
    pub tables: Tables,
    /// Results larger than this many elements are not folded.
    pub fold_limit: usize,
}

#[derive(Clone, Debug)]
pub struct Data {
    pub ty: Option<TensorType>,
    pub value: Option<Arc<Tensor>>,
    /// The constant's sparsity, when the class is a constant.
    pub sparsity: Option<Sparsity>,
    /// The class of an empty optional operand slot.
    pub empty: bool,
    /// Does the value depend on carried state (so it must stay inside the time loop)?
    pub on_state: bool,
}

impl Data {
    pub fn unknown() -> Data {
        Data {
            ty: None,
            value: None,
            sparsity: None,
            empty: false,
            on_state: false,
        }
    }
    pub fn is_zero(&self) -> bool {
        matches!((&self.value, &self.sparsity), (Some(_), Some(s)) if s.nonzeros == 0)
    }
    pub fn is_one(&self) -> bool {
        matches!(self.value.as_deref(), Some(Tensor::F32(a)) if a.iter().all(|v| *v == 1.0))
    }
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.ty.as_ref().and_then(|t| t.concrete())
    }
}

pub type HEGraph = EGraph<HLang, TensorAnalysis>;

/// The constant leaf of an e-class, when it has one.
pub fn const_leaf(eg: &HEGraph, id: Id) -> Option<ConstKey> {
    eg[id].nodes.iter().find_map(|n| {
        if let HLang::Const(k) = n {
            Some(*k)
        } else {
            None
        }
    })
}

pub fn node_op(enode: &HLang, tables: &Tables) -> Option<(Op, usize)> {
    Some(match enode {
        HLang::MatMul(_) => (Op::MatMul, 0),
        HLang::Add(_) => (Op::Binary(BinOp::Add), 0),
        HLang::Sub(_) => (Op::Binary(BinOp::Sub), 0),
        HLang::Mul(_) => (Op::Binary(BinOp::Mul), 0),
        HLang::Relu(_) => (Op::Unary(Act::Relu), 0),
        HLang::Sigmoid(_) => (Op::Unary(Act::Sigmoid), 0),
        HLang::Tanh(_) => (Op::Unary(Act::Tanh), 0),
        HLang::Reshape(_) => (Op::Reshape { allowzero: false }, 0),
        HLang::Concat(axis, _) => (Op::Concat { axis: axis.0 }, 0),
        HLang::Op(key, _) => (
            tables.ops.get(key.op as usize)?.op.clone(),
            key.slot as usize,
        ),
        _ => return None,
    })
}

impl Analysis<HLang> for TensorAnalysis {
    type Data = Data;

    fn make(egraph: &mut HEGraph, enode: &HLang, _id: Id) -> Data {
        let tables = &egraph.analysis.tables;
        match enode {
            HLang::Const(k) => {
                let c = &tables.consts[k.0 as usize];
                return Data {
                    ty: Some(c.value.ty()),
                    value: Some(c.value.clone()),
                    sparsity: Some(c.sparsity.clone()),
                    empty: false,
                    on_state: false,
                };
            }
            HLang::Input(k) => {
                let on_state = (k.0 as usize) < tables.num_carried;
                return Data {
                    ty: Some(tables.inputs[k.0 as usize].ty.clone()),
                    value: None,
                    sparsity: None,
                    empty: false,
                    on_state,
                };
            }
            HLang::NoOperand => {
                return Data {
                    ty: None,
                    value: None,
                    sparsity: None,
                    empty: true,
                    on_state: false,
                };
            }
            HLang::Outputs(_) => return Data::unknown(),
            _ => {}
        }
        let Some((op, slot)) = node_op(enode, tables) else {
            return Data::unknown();
        };
        let children: Vec<Option<&Data>> = enode
            .children()
            .iter()
            .map(|c| {
                let d = &egraph[*c].data;
                if d.empty { None } else { Some(d) }
            })
            .collect();
        let on_state = children.iter().flatten().any(|d| d.on_state);
        // Recurrences are never folded or typed here: their types come from the table.
        if let (Op::Recurrence(_), HLang::Op(key, _)) = (&op, enode) {
            let ty = tables.ops[key.op as usize]
                .results
                .get(slot)
                .map(|r| r.ty.clone());
            return Data {
                ty,
                value: None,
                sparsity: None,
                empty: false,
                on_state,
            };
        }
        let all_const =
            children.iter().all(|c| c.is_none_or(|d| d.value.is_some())) && !children.is_empty();
        if all_const {
            let vals: Vec<Option<&Tensor>> = children
                .iter()
                .map(|c| c.and_then(|d| d.value.as_deref()))
                .collect();
            if let Ok(mut results) = eval_op(&op, &vals)
                && slot < results.len()
                && results[slot].len() <= egraph.analysis.fold_limit
            {
                let t = results.swap_remove(slot);
                let sparsity = Sparsity::of(&t);
                return Data {
                    ty: Some(t.ty()),
                    value: Some(Arc::new(t)),
                    sparsity: Some(sparsity),
                    empty: false,
                    on_state: false,
                };
            }
        }
        let types: Vec<Option<TensorType>> = children
            .iter()
            .map(|c| c.and_then(|d| d.ty.clone()))
            .collect();
        let operands: Vec<Option<Operand>> = types
            .iter()
            .zip(&children)
            .map(|(t, c)| {
                t.as_ref().map(|ty| Operand {
                    ty,
                    value: c.and_then(|d| d.value.as_deref()),
                })
            })
            .collect();
        let ty = infer(&op, &operands).ok().and_then(|mut v| {
            if slot < v.len() {
                Some(v.swap_remove(slot))
            } else {
                None
            }
        });
        Data {
            ty,
            value: None,
            sparsity: None,
            empty: false,
            on_state,
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let (mut to_a, mut to_b) = (false, false);
        match (&a.ty, &b.ty) {
            (None, Some(_)) => {
                a.ty = b.ty.clone();
                to_a = true;
            }
            (Some(_), None) => to_b = true,
            _ => {}
        }
        match (&a.value, &b.value) {
            (None, Some(_)) => {
                a.value = b.value.clone();
                a.sparsity = b.sparsity.clone();
                to_a = true;
            }
            (Some(_), None) => to_b = true,
            _ => {}
        }
        // Equal values cannot differ in state dependence unless one form reaches state and the
        // other does not (x*0 on state is the constant 0): the weaker claim wins.
        if a.on_state && !b.on_state {
            a.on_state = false;
            to_a = true;
        } else if !a.on_state && b.on_state {
            to_b = true;
        }
        DidMerge(to_a, to_b)
    }

    fn modify(egraph: &mut HEGraph, id: Id) {
        // A folded class gets a constant leaf, so extraction can pick the constant.
        if const_leaf(egraph, id).is_some() {
            return;
        }
        if let Some(v) = egraph[id].data.value.clone() {
            let n = egraph.analysis.tables.consts.len();
            let k = egraph
                .analysis
                .tables
                .add_const(format!("folded_{n}"), (*v).clone());
            let leaf = egraph.add(HLang::Const(k));
            egraph.union(id, leaf);
        }
    }
}
