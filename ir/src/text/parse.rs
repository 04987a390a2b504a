//! The parser of the `.hir` text form: a recursive descent over the tokens of `lex`. Operands
//! may refer to values defined later (a graph need not be printed in topological order), so
//! edges are added when a graph's closing brace is reached.

use super::lex::{Tok, Token, lex};
use super::ops::{AVal, Attr, Attrs, build_op, parse_f32};
use super::weights::{WeightStore, hex, unhex};
use super::{ParseError, is_ident};
use crate::graph::{Graph, Node, Port, Value, ValueInfo};
use crate::op::{Constant, Op};
use crate::tensor::{DType, Dim, Tensor, TensorType};
use ndarray::{ArrayD, IxDyn};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) type Res<T> = Result<T, ParseError>;

pub(crate) fn parse_graph(text: &str, store: Option<&WeightStore>) -> Res<Graph> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        i: 0,
        store,
        depth: 0,
    };
    p.keyword("graph")?;
    let g = p.graph()?;
    if p.peek() != &Tok::Eof {
        return Err(p.expected("the end of the text after the graph"));
    }
    Ok(g)
}

/// A use of a value, resolved when its graph is complete.
enum Ref {
    Named(String, Option<u64>),
    Raw(usize, usize),
}

struct Use {
    r: Ref,
    line: usize,
    col: usize,
}

#[derive(Default)]
struct Scope {
    defs: HashMap<(String, Option<u64>), Value>,
    order: Vec<NodeIndex>,
    /// (consumer, operand slot, value)
    pending: Vec<(NodeIndex, usize, Use)>,
}

impl Scope {
    fn define(&mut self, name: String, dis: Option<u64>, v: Value, at: &Token) -> Res<()> {
        let shown = show_ref(&name, dis);
        if self.defs.insert((name, dis), v).is_some() {
            return Err(err_at(at, format!("value {shown} is defined twice")));
        }
        Ok(())
    }

    fn resolve(&self, u: &Use) -> Res<Value> {
        let e = |m: String| ParseError {
            line: u.line,
            col: u.col,
            message: m,
        };
        match &u.r {
            Ref::Named(name, dis) => {
                let key = (name.clone(), *dis);
                self.defs
                    .get(&key)
                    .copied()
                    .ok_or_else(|| e(format!("undefined value {}", show_ref(name, *dis))))
            }
            Ref::Raw(n, slot) => match self.order.get(*n) {
                Some(&node) => Ok(Value { node, slot: *slot }),
                None => Err(e(format!(
                    "@{n}:{slot}: the graph has no node at position {n}"
                ))),
            },
        }
    }
}

fn show_ref(name: &str, dis: Option<u64>) -> String {
    let base = if super::is_ref_word(name) {
        format!("%{name}")
    } else {
        format!("%{}", super::quote(name))
    };
    match dis {
        Some(k) => format!("{base}#{k}"),
        None => base,
    }
}

pub(super) fn err_at(t: &Token, message: impl Into<String>) -> ParseError {
    ParseError {
        line: t.line,
        col: t.col,
        message: message.into(),
    }
}

struct Parser<'s> {
    toks: Vec<Token>,
    i: usize,
    store: Option<&'s WeightStore>,
    depth: usize,
}

impl Parser<'_> {
    fn tok(&self) -> &Token {
        // The last token is always Eof, and `i` never passes it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }
    fn peek(&self) -> &Tok {
        &self.tok().tok
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].tok
    }
    fn next(&mut self) -> Token {
        let t = self.tok().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn expected(&self, what: &str) -> ParseError {
        err_at(
            self.tok(),
            format!("expected {what}, found {}", self.peek().describe()),
        )
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == &Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }
    fn punct(&mut self, c: char) -> Res<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{c}'")))
        }
    }
    fn keyword(&mut self, kw: &str) -> Res<()> {
        match self.peek() {
            Tok::Word(w) if w == kw => {
                self.next();
                Ok(())
            }
            _ => Err(self.expected(&format!("'{kw}'"))),
        }
    }
    fn word(&mut self, what: &str) -> Res<(String, Token)> {
        match self.peek().clone() {
            Tok::Word(w) => Ok((w, self.next())),
            _ => Err(self.expected(what)),
        }
    }
    /// A value use: `%name`, `%name#k` or `@N:k`.
    fn use_(&mut self, what: &str) -> Res<Use> {
        let (line, col) = (self.tok().line, self.tok().col);
        let r = match self.peek().clone() {
            Tok::Ref(n, d) => Ref::Named(n, d),
            Tok::Raw(n, k) => Ref::Raw(n, k),
            _ => return Err(self.expected(what)),
        };
        self.next();
        Ok(Use { r, line, col })
    }

    fn dtype(&mut self) -> Res<DType> {
        let (w, t) = self.word("a dtype (f32, i64, i32, bool)")?;
        DType::from_name(&w).ok_or_else(|| err_at(&t, format!("unknown dtype '{w}'")))
    }

    /// `f32[T,1,?]`, `f32[]`, or `f32[*]` (unranked).
    fn ty(&mut self) -> Res<TensorType> {
        let dtype = self.dtype()?;
        self.punct('[')?;
        if self.eat('*') {
            self.punct(']')?;
            return Ok(TensorType::unranked(dtype));
        }
        let mut dims = Vec::new();
        if !self.eat(']') {
            loop {
                let t = self.next();
                dims.push(match t.tok.clone() {
                    Tok::Punct('?') => Dim::Unknown,
                    Tok::Str(s) => Dim::Sym(s),
                    Tok::Word(w) => match w.parse::<usize>() {
                        Ok(n) => Dim::Known(n),
                        Err(_) if is_ident(&w) => Dim::Sym(w),
                        Err(_) => return Err(err_at(&t, format!("bad dimension '{w}'"))),
                    },
                    _ => {
                        return Err(err_at(
                            &t,
                            format!("expected a dimension, found {}", t.tok.describe()),
                        ));
                    }
                });
                if self.eat(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(TensorType::new(dtype, dims))
    }

    /// A tensor: `f32[2,2] [1.0, 0.0, 0.5, 2.0]` or `f32[256,96] sha256:<64 hex digits>`.
    fn tensor(&mut self) -> Res<Tensor> {
        let start = self.tok().clone();
        let ty = self.ty()?;
        let dims = ty
            .concrete()
            .ok_or_else(|| err_at(&start, "a constant's dimensions must be numbers"))?;
        if matches!(self.peek(), Tok::Word(w) if w == "sha256") {
            return self.hashed(&start, &ty, &dims);
        }
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let count = count.ok_or_else(|| err_at(&start, "the element count overflows"))?;
        self.punct('[')?;
        let mut words = Vec::new();
        if !self.eat(']') {
            loop {
                words.push(self.word("a number")?);
                if self.eat(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        if words.len() != count {
            return Err(err_at(
                &start,
                format!(
                    "{} needs {count} elements, the literal has {}",
                    super::print::ty(&ty),
                    words.len()
                ),
            ));
        }
        fn all<T>(
            ws: &[(String, Token)],
            what: &str,
            f: impl Fn(&str) -> Option<T>,
        ) -> Res<Vec<T>> {
            ws.iter()
                .map(|(w, t)| f(w).ok_or_else(|| err_at(t, format!("bad {what} '{w}'"))))
                .collect()
        }
        let shape = IxDyn(&dims);
        let t = match ty.dtype {
            DType::F32 => {
                ArrayD::from_shape_vec(shape, all(&words, "f32", parse_f32)?).map(Tensor::F32)
            }
            DType::I64 => ArrayD::from_shape_vec(shape, all(&words, "i64", |w| w.parse().ok())?)
                .map(Tensor::I64),
            DType::I32 => ArrayD::from_shape_vec(shape, all(&words, "i32", |w| w.parse().ok())?)
                .map(Tensor::I32),
            DType::Bool => {
                let b = all(&words, "bool", |w| match w {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                })?;
                ArrayD::from_shape_vec(shape, b).map(Tensor::Bool)
            }
        };
        t.map_err(|e| err_at(&start, format!("bad tensor shape: {e}")))
    }

    fn hashed(&mut self, start: &Token, ty: &TensorType, dims: &[usize]) -> Res<Tensor> {
        self.next(); // sha256
        self.punct(':')?;
        let (w, t) = self.word("64 hex digits")?;
        let h = unhex(&w).ok_or_else(|| err_at(&t, "a sha256 hash is 64 hex digits"))?;
        let store = self.store.ok_or_else(|| {
            err_at(start, format!("constant sha256:{w} is given by hash; its data is in a weight store (use parse_with_weights)"))
        })?;
        let v = store.get(&h).ok_or_else(|| {
            err_at(
                &t,
                format!("constant sha256:{} is not in the weight store", hex(&h)),
            )
        })?;
        if v.dtype() != ty.dtype || v.shape() != dims {
            let found = super::print::ty(&v.ty());
            return Err(err_at(
                start,
                format!(
                    "the weight store holds {found} under this hash, the text says {}",
                    super::print::ty(ty)
                ),
            ));
        }
        Ok(v.clone())
    }

    fn attrs(&mut self) -> Res<Vec<Attr>> {
        let mut out: Vec<Attr> = Vec::new();
        self.punct('{')?;
        if self.eat('}') {
            return Ok(out);
        }
        loop {
            let (key, at) = self.word("an attribute name")?;
            if out.iter().any(|a| a.key == key) {
                return Err(err_at(&at, format!("attribute '{key}' given twice")));
            }
            self.punct('=')?;
            let val = match self.peek().clone() {
                Tok::Str(s) => {
                    self.next();
                    AVal::Str(s)
                }
                Tok::Punct('[') => {
                    self.next();
                    let mut items = Vec::new();
                    if !self.eat(']') {
                        loop {
                            items.push(self.word("a list element")?);
                            if self.eat(']') {
                                break;
                            }
                            self.punct(',')?;
                        }
                    }
                    AVal::List(items)
                }
                Tok::Word(w)
                    if DType::from_name(&w).is_some() && self.peek2() == &Tok::Punct('[') =>
                {
                    AVal::Tensor(self.tensor()?)
                }
                Tok::Word(w) => {
                    self.next();
                    AVal::Word(w)
                }
                _ => return Err(self.expected("an attribute value")),
            };
            out.push(Attr { key, val, at });
            if self.eat('}') {
                return Ok(out);
            }
            self.punct(',')?;
        }
    }

    fn graph(&mut self) -> Res<Graph> {
        self.depth += 1;
        if let Err(e) = crate::limits::check_nesting(|| "a body".into(), self.depth) {
            return Err(err_at(self.tok(), e.to_string()));
        }
        let mut g = Graph::new();
        let mut sc = Scope::default();
        // Inputs: `%x: type` (an input node, created here) or a use of a node defined below.
        enum In {
            Node(NodeIndex),
            Use(Use),
        }
        let mut ins = Vec::new();
        self.punct('(')?;
        if !self.eat(')') {
            loop {
                let at = self.tok().clone();
                let u = self.use_("a graph input")?;
                let node_name = match self.peek().clone() {
                    Tok::Str(s) => {
                        self.next();
                        Some(s)
                    }
                    _ => None,
                };
                match u.r {
                    Ref::Named(name, dis) if self.eat(':') => {
                        let ty = self.ty()?;
                        let n = g.nodes.add_node(Node {
                            name: node_name.unwrap_or_else(|| name.clone()),
                            op: Op::Input,
                            results: vec![ValueInfo {
                                name: name.clone(),
                                ty,
                            }],
                        });
                        sc.order.push(n);
                        sc.define(name, dis, Value { node: n, slot: 0 }, &at)?;
                        ins.push(In::Node(n));
                    }
                    _ if node_name.is_some() || self.peek() == &Tok::Punct(':') => {
                        return Err(self.expected("':' and the input's type"));
                    }
                    r => ins.push(In::Use(Use { r, ..u })),
                }
                if self.eat(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        if self.peek() != &Tok::Arrow {
            return Err(self.expected("'->'"));
        }
        self.next();
        self.punct('(')?;
        let mut outs = Vec::new();
        if !self.eat(')') {
            loop {
                let name = match self.next() {
                    Token {
                        tok: Tok::Word(w) | Tok::Str(w),
                        ..
                    } => w,
                    t => {
                        return Err(err_at(
                            &t,
                            format!("expected an output name, found {}", t.tok.describe()),
                        ));
                    }
                };
                self.punct('=')?;
                outs.push((name, self.use_("a value")?));
                if self.eat(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        self.punct('{')?;
        while !self.eat('}') {
            self.stmt(&mut g, &mut sc)?;
        }
        for (n, slot, u) in std::mem::take(&mut sc.pending) {
            let v = sc.resolve(&u)?;
            g.nodes.add_edge(
                v.node,
                n,
                Port {
                    out_slot: v.slot,
                    in_slot: slot,
                },
            );
        }
        for i in ins {
            let n = match i {
                In::Node(n) => n,
                In::Use(u) => sc.resolve(&u)?.node,
            };
            g.inputs.push(n);
        }
        for (name, u) in outs {
            g.outputs.push((name, sc.resolve(&u)?));
        }
        self.depth -= 1;
        Ok(g)
    }

    /// `%a, %b = op{attrs}(operands) "node name" : types [body (..) -> (..) { .. }]`
    fn stmt(&mut self, g: &mut Graph, sc: &mut Scope) -> Res<()> {
        let mut defs = Vec::new();
        if matches!(self.peek(), Tok::Ref(..)) {
            loop {
                match self.next() {
                    Token {
                        tok: Tok::Ref(name, dis),
                        line,
                        col,
                    } => defs.push((
                        name,
                        dis,
                        Token {
                            tok: Tok::Eof,
                            line,
                            col,
                        },
                    )),
                    t => {
                        return Err(err_at(
                            &t,
                            format!("expected a value name, found {}", t.tok.describe()),
                        ));
                    }
                }
                if !self.eat(',') {
                    break;
                }
            }
            self.punct('=')?;
        }
        let (op_name, op_at) = match self.peek() {
            Tok::Word(_) => self.word("an op")?,
            _ => {
                return Err(self.expected(if defs.is_empty() {
                    "a statement or '}'"
                } else {
                    "an op name"
                }));
            }
        };
        let attrs = if self.peek() == &Tok::Punct('{') {
            self.attrs()?
        } else {
            Vec::new()
        };
        // A constant's op is built once its node name is known.
        let (mut op, mut konst) = if op_name == "const" {
            let mut a = Attrs {
                list: attrs,
                op: op_name.clone(),
                at: op_at.clone(),
            };
            let cname = match a.take("name") {
                None => None,
                Some(Attr {
                    val: AVal::Str(s), ..
                }) => Some(s),
                Some(x) => return Err(err_at(&x.at, "attribute 'name' takes a string")),
            };
            a.finish()?;
            (Op::Identity, Some((cname, self.tensor()?)))
        } else {
            (build_op(&op_name, &op_at, attrs)?, None)
        };
        let mut operands = Vec::new();
        if self.eat('(') && !self.eat(')') {
            loop {
                if matches!(self.peek(), Tok::Word(w) if w == "_") {
                    self.next();
                    operands.push(None);
                } else {
                    operands.push(Some(self.use_("an operand or '_'")?));
                }
                if self.eat(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        let node_name = match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                s
            }
            _ => defs.first().map(|d| d.0.clone()).unwrap_or_default(),
        };
        let types_at = self.tok().clone();
        let types = if self.eat(':') {
            let mut ts = Vec::new();
            if self.eat('(') {
                self.punct(')')?;
            } else {
                loop {
                    ts.push(self.ty()?);
                    if !self.eat(',') {
                        break;
                    }
                }
            }
            ts
        } else if let (Some((_, value)), 1) = (&konst, defs.len()) {
            vec![value.ty()]
        } else {
            return Err(self.expected("':' and the result types"));
        };
        if types.len() != defs.len() {
            let msg = format!(
                "{} values are defined but {} types given",
                defs.len(),
                types.len()
            );
            return Err(err_at(&types_at, msg));
        }
        if let Some((cname, value)) = konst.take() {
            op = Op::Const(Arc::new(Constant {
                name: cname.unwrap_or_else(|| node_name.clone()),
                value: Arc::new(value),
            }));
        }
        if let Op::Recurrence(r) = &mut op {
            self.keyword("body")?;
            *r.body = self.graph()?;
        }
        let results = defs
            .iter()
            .zip(types)
            .map(|(d, ty)| ValueInfo {
                name: d.0.clone(),
                ty,
            })
            .collect();
        let n = g.nodes.add_node(Node {
            name: node_name,
            op,
            results,
        });
        sc.order.push(n);
        for (slot, (name, dis, at)) in defs.into_iter().enumerate() {
            sc.define(name, dis, Value { node: n, slot }, &at)?;
        }
        for (slot, u) in operands.into_iter().enumerate() {
            if let Some(u) = u {
                sc.pending.push((n, slot, u));
            }
        }
        Ok(())
    }
}
