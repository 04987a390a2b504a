//! Attributes (`{axis=1, perm=[1, 0]}`) and building an op from its name and attributes.

use super::lex::Token;
use super::parse::{Res, err_at};
use crate::graph::Graph;
use crate::op::{Act, BinOp, CmpOp, LogicOp, Op, Recurrence};
use crate::tensor::{DType, Tensor};

pub(super) enum AVal {
    Word(String),
    Str(String),
    List(Vec<(String, Token)>),
    Tensor(Tensor),
}

pub(super) struct Attr {
    pub key: String,
    pub val: AVal,
    pub at: Token,
}

/// The attributes of one op, taken one by one; leftovers are errors.
pub(super) struct Attrs {
    pub list: Vec<Attr>,
    pub op: String,
    pub at: Token,
}

impl Attrs {
    pub fn take(&mut self, key: &str) -> Option<Attr> {
        let i = self.list.iter().position(|a| a.key == key)?;
        Some(self.list.remove(i))
    }
    pub fn req(&mut self, key: &str) -> Res<Attr> {
        match self.take(key) {
            Some(a) => Ok(a),
            None => Err(err_at(
                &self.at,
                format!("'{}' needs the attribute '{key}'", self.op),
            )),
        }
    }
    pub fn finish(self) -> Res<()> {
        match self.list.first() {
            Some(a) => Err(err_at(
                &a.at,
                format!("'{}' has no attribute '{}'", self.op, a.key),
            )),
            None => Ok(()),
        }
    }
}

fn word_of(a: &Attr, what: &str) -> Res<String> {
    match &a.val {
        AVal::Word(w) => Ok(w.clone()),
        _ => Err(err_at(&a.at, format!("attribute '{}' takes {what}", a.key))),
    }
}

fn num<T: std::str::FromStr>(a: &Attr, what: &str) -> Res<T> {
    word_of(a, what)?
        .parse()
        .map_err(|_| err_at(&a.at, format!("attribute '{}' takes {what}", a.key)))
}

fn boolean(a: &Attr) -> Res<bool> {
    match word_of(a, "true or false")?.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err_at(
            &a.at,
            format!("attribute '{}' takes true or false", a.key),
        )),
    }
}

pub(super) fn parse_f32(w: &str) -> Option<f32> {
    match w.strip_prefix("0x") {
        Some(h) if h.len() == 8 => u32::from_str_radix(h, 16).ok().map(f32::from_bits),
        Some(_) => None,
        None => w.parse().ok(),
    }
}

fn float(a: &Attr) -> Res<f32> {
    let w = word_of(a, "a float")?;
    parse_f32(&w).ok_or_else(|| err_at(&a.at, format!("attribute '{}': bad float '{w}'", a.key)))
}

/// The op of a statement, from its name and attributes. A recurrence gets an empty body,
/// filled in by the caller.
pub(super) fn build_op(name: &str, at: &Token, list: Vec<Attr>) -> Res<Op> {
    let mut a = Attrs {
        list,
        op: name.to_string(),
        at: at.clone(),
    };
    let axis = |a: &mut Attrs| -> Res<i64> { num(&a.req("axis")?, "an integer") };
    let op = match name {
        "input" => Op::Input,
        "identity" => Op::Identity,
        "add" => Op::Binary(BinOp::Add),
        "sub" => Op::Binary(BinOp::Sub),
        "mul" => Op::Binary(BinOp::Mul),
        "div" => Op::Binary(BinOp::Div),
        "clip" => Op::Clip,
        "matmul" => Op::MatMul,
        "gemm" => Op::Gemm {
            alpha: float(&a.req("alpha")?)?,
            beta: float(&a.req("beta")?)?,
            trans_a: boolean(&a.req("trans_a")?)?,
            trans_b: boolean(&a.req("trans_b")?)?,
        },
        "softmax" => Op::Softmax {
            axis: axis(&mut a)?,
        },
        "log_softmax" => Op::LogSoftmax {
            axis: axis(&mut a)?,
        },
        "where" => Op::Where,
        "not" => Op::Not,
        "reduce_sum" => Op::ReduceSum {
            keepdims: boolean(&a.req("keepdims")?)?,
            noop_with_empty_axes: boolean(&a.req("noop_with_empty_axes")?)?,
        },
        "concat" => Op::Concat {
            axis: axis(&mut a)?,
        },
        "split" => Op::Split {
            axis: axis(&mut a)?,
            num_outputs: num(&a.req("num_outputs")?, "a count")?,
        },
        "slice" => Op::Slice,
        "gather" => Op::Gather {
            axis: axis(&mut a)?,
        },
        "unsqueeze" => Op::Unsqueeze,
        "squeeze" => Op::Squeeze,
        "flatten" => Op::Flatten {
            axis: axis(&mut a)?,
        },
        "reshape" => Op::Reshape {
            allowzero: boolean(&a.req("allowzero")?)?,
        },
        "transpose" => Op::Transpose {
            perm: match a.take("perm") {
                None => None,
                Some(p) => match &p.val {
                    AVal::List(items) => Some(
                        items
                            .iter()
                            .map(|(w, t)| {
                                w.parse()
                                    .map_err(|_| err_at(t, format!("bad axis '{w}' in perm")))
                            })
                            .collect::<Res<Vec<usize>>>()?,
                    ),
                    _ => return Err(err_at(&p.at, "attribute 'perm' takes a list [..]")),
                },
            },
        },
        "expand" => Op::Expand,
        "shape" => Op::Shape {
            start: num(&a.req("start")?, "an integer")?,
            end: a.take("end").map(|e| num(&e, "an integer")).transpose()?,
        },
        "constant_of_shape" => {
            let v = a.req("value")?;
            match v.val {
                AVal::Tensor(value) => Op::ConstantOfShape { value },
                _ => {
                    return Err(err_at(
                        &v.at,
                        "attribute 'value' takes a tensor such as f32[1] [0.0]",
                    ));
                }
            }
        }
        "cast" => {
            let t = a.req("to")?;
            let w = word_of(&t, "a dtype")?;
            Op::Cast {
                to: DType::from_name(&w)
                    .ok_or_else(|| err_at(&t.at, format!("unknown dtype '{w}'")))?,
            }
        }
        "reverse" => Op::Reverse {
            axis: axis(&mut a)?,
        },
        "recurrence" => {
            let count = |a: &mut Attrs, k: &str| -> Res<usize> { num(&a.req(k)?, "a count") };
            let r = Recurrence {
                body: Box::new(Graph::new()),
                num_carried: count(&mut a, "carried")?,
                num_scanned: count(&mut a, "scanned")?,
                num_invariant: count(&mut a, "invariant")?,
                reverse: boolean(&a.req("reverse")?)?,
                has_seq_lens: boolean(&a.req("seq_lens")?)?,
            };
            let total = r
                .num_carried
                .checked_add(r.num_scanned)
                .and_then(|s| s.checked_add(r.num_invariant));
            if total.and_then(|s| s.checked_add(1)).is_none() {
                return Err(err_at(at, "recurrence operand counts overflow"));
            }
            Op::Recurrence(r)
        }
        _ if CmpOp::ALL.iter().any(|c| c.name() == name) => {
            Op::Compare(*CmpOp::ALL.iter().find(|c| c.name() == name).expect("found"))
        }
        _ if LogicOp::ALL.iter().any(|l| l.name() == name) => Op::Logic(
            *LogicOp::ALL
                .iter()
                .find(|l| l.name() == name)
                .expect("found"),
        ),
        _ => match Act::from_name(name, None, None) {
            Some(_) => {
                let alpha = a.take("alpha").map(|x| float(&x)).transpose()?;
                let beta = a.take("beta").map(|x| float(&x)).transpose()?;
                let act = Act::from_name(name, alpha, beta)
                    .ok_or_else(|| err_at(at, "unknown activation"))?;
                let params = act.params();
                let has = |k: &str| params.iter().any(|(p, _)| *p == k);
                if alpha.is_some() && !has("alpha") || beta.is_some() && !has("beta") {
                    let k = if alpha.is_some() && !has("alpha") {
                        "alpha"
                    } else {
                        "beta"
                    };
                    return Err(err_at(at, format!("'{name}' has no attribute '{k}'")));
                }
                Op::Unary(act)
            }
            None => return Err(err_at(at, format!("unknown op '{name}'"))),
        },
    };
    a.finish()?;
    Ok(op)
}
