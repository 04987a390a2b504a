//! The `.kir` parser: the inverse of [`super::print`]. The text is line-oriented: a header
//! (`program`, `steps`, `seq_lens`, `batch`, `buffer`, `const` lines) and then one statement
//! per line, `loop` and `start` blocks closed by a `}` line. Blank lines and `//` comment lines
//! are skipped. Errors name the line and what was expected there; no input panics.
//!
//! Beyond the grammar the parser checks what later stages rely on: buffer and constant numbers
//! in order, references to existing ones, views whose rank matches their strides and whose
//! elements (at every step of their loop) lie inside their storage, matmul shapes, and that
//! each input and output number is given once.

use super::{
    BatchAxes, BufId, BufKind, Buffer, Const, ConstData, ConstId, LoopRun, Program, Stmt, Storage,
    Strategy, View, Weight,
};
use crate::op::{Act, BinOp};
use crate::text::{WeightStore, unhex};

/// The most elements a buffer or constant may have (as the interpreter's limit).

/// Parses `.kir` text. A constant given by hash is an error here; use [`parse_with_weights`].
pub fn parse(text: &str) -> Result<Program, String> {
    Parser::new(text, None).program()
}

/// Parses `.kir` text, reading constants given by hash from `store`.
pub fn parse_with_weights(text: &str, store: &WeightStore) -> Result<Program, String> {
    Parser::new(text, Some(store)).program()
}

/// One line being read: the rest of it and its number.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("line {}: {msg}", self.line)
    }
    /// What comes next, for an error message.
    fn found(&self) -> String {
        let r = self.rest.trim_start();
        match r.chars().next() {
            None => "the end of the line".into(),
            Some(c) if is_word(c) => {
                let w: String = r.chars().take_while(|c| is_word(*c)).take(40).collect();
                format!("'{w}'")
            }
            Some(c) => format!("'{c}'"),
        }
    }
    fn expected(&self, what: &str) -> String {
        self.err(format!("expected {what}, found {}", self.found()))
    }
    fn ws(&mut self) {
        self.rest = self.rest.trim_start();
    }
    /// Eats `lit` (after optional spaces) if it comes next.
    fn eat(&mut self, lit: &str) -> bool {
        let r = self.rest.trim_start();
        match r.strip_prefix(lit) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }
    fn expect(&mut self, lit: &str) -> Result<(), String> {
        if self.eat(lit) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{lit}'")))
        }
    }
    /// A keyword: `lit` followed by something other than a word character.
    fn eat_kw(&mut self, lit: &str) -> bool {
        let r = self.rest.trim_start();
        match r.strip_prefix(lit) {
            Some(rest) if !rest.starts_with(is_word) => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }
    fn word(&mut self) -> &'a str {
        self.ws();
        let n = self
            .rest
            .find(|c: char| !is_word(c))
            .unwrap_or(self.rest.len());
        let (w, rest) = self.rest.split_at(n);
        self.rest = rest;
        w
    }
    fn end(&mut self) -> Result<(), String> {
        self.ws();
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.expected("the end of the line"))
        }
    }
    fn usize(&mut self, what: &str) -> Result<usize, String> {
        self.ws();
        let n = self
            .rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if n == 0 {
            return Err(self.expected(what));
        }
        let v = self.rest[..n]
            .parse::<usize>()
            .map_err(|_| self.err(format!("{what} '{}' is too large", &self.rest[..n])))?;
        self.rest = &self.rest[n..];
        Ok(v)
    }
    /// A signed integer with an explicit sign (`+0`, `-12`).
    fn signed(&mut self, what: &str) -> Result<isize, String> {
        self.ws();
        let neg = if self.rest.starts_with('-') {
            true
        } else if self.rest.starts_with('+') {
            false
        } else {
            return Err(self.expected(what));
        };
        self.rest = &self.rest[1..];
        if self.rest.starts_with(|c: char| !c.is_ascii_digit()) || self.rest.is_empty() {
            return Err(self.expected(what));
        }
        let v = self.isize(what)?;
        Ok(if neg { -v } else { v })
    }
    /// An integer with an optional minus sign.
    fn isize(&mut self, what: &str) -> Result<isize, String> {
        self.ws();
        let neg = self.rest.starts_with('-');
        let start = usize::from(neg);
        let n = self.rest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len() - start);
        if n == 0 {
            return Err(self.expected(what));
        }
        let digits = &self.rest[start..start + n];
        let v = digits
            .parse::<isize>()
            .map_err(|_| self.err(format!("{what} '{digits}' is too large")))?;
        self.rest = &self.rest[start + n..];
        Ok(if neg { -v } else { v })
    }
    /// An f32: what `{:?}` prints (`1.5`, `-inf`, `NaN`, `1e-7`) or raw bits `0x7fc00000`.
    fn f32(&mut self, what: &str) -> Result<f32, String> {
        let w = self.word();
        if let Some(hex) = w.strip_prefix("0x") {
            return u32::from_str_radix(hex, 16)
                .map(f32::from_bits)
                .map_err(|_| self.err(format!("expected {what}, found '{w}'")));
        }
        w.parse::<f32>().map_err(|_| {
            if w.is_empty() {
                self.expected(what)
            } else {
                self.err(format!("expected {what}, found '{w}'"))
            }
        })
    }
    /// A string as `{:?}` prints it.
    fn string(&mut self, what: &str) -> Result<String, String> {
        self.ws();
        let Some(body) = self.rest.strip_prefix('"') else {
            return Err(self.expected(what));
        };
        let mut out = String::new();
        let mut it = body.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '"' => {
                    self.rest = &body[i + 1..];
                    return Ok(out);
                }
                '\\' => match it.next().map(|x| x.1) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('\'') => out.push('\''),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('u') => {
                        if it.next().map(|x| x.1) != Some('{') {
                            return Err(self.err("expected '{' after \\u in a string"));
                        }
                        let mut hex = String::new();
                        loop {
                            match it.next().map(|x| x.1) {
                                Some('}') => break,
                                Some(h) if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                                _ => return Err(self.err("bad \\u{...} escape in a string")),
                            }
                        }
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.err("bad \\u{...} escape in a string"))?;
                        out.push(ch);
                    }
                    _ => return Err(self.err("unknown escape in a string")),
                },
                c => out.push(c),
            }
        }
        Err(self.err("unterminated string"))
    }
    /// `[a,b,c]` of unsigned integers (an empty list is `[]`).
    fn dims_list(&mut self, what: &str) -> Result<Vec<usize>, String> {
        self.expect("[")?;
        let mut d = Vec::new();
        if self.eat("]") {
            return Ok(d);
        }
        loop {
            d.push(self.usize(what)?);
            if self.eat("]") {
                return Ok(d);
            }
            self.expect(",")?;
        }
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')
}

/// The element count of `dims`, or why it is over the `elements` limit.
fn count(dims: &[usize], cur: &Cursor) -> Result<usize, String> {
    crate::limits::check_dims(|| format!("buffer {}", crate::dims_text(dims)), dims)
        .map_err(|e| cur.err(e.to_string()))
}

struct Parser<'a> {
    lines: Vec<(usize, &'a str)>,
    pos: usize,
    store: Option<&'a WeightStore>,
    p: Program,
    /// The last line's number, for errors at the end of the text.
    last: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, store: Option<&'a WeightStore>) -> Self {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with("//"))
            .collect();
        let last = text.lines().count();
        Parser {
            lines,
            pos: 0,
            store,
            p: Program::default(),
            last,
        }
    }

    fn peek(&self) -> Option<Cursor<'a>> {
        self.lines
            .get(self.pos)
            .map(|&(line, rest)| Cursor { rest, line })
    }
    fn next(&mut self) -> Option<Cursor<'a>> {
        let c = self.peek();
        self.pos += 1;
        c
    }
    /// The next line starts with keyword `kw`.
    fn at(&self, kw: &str) -> bool {
        self.peek().is_some_and(|mut c| c.eat_kw(kw))
    }

    fn program(mut self) -> Result<Program, String> {
        let Some(mut c) = self.next() else {
            return Err("line 1: expected 'program \"NAME\"', found the end of the text".into());
        };
        if !c.eat_kw("program") {
            return Err(c.expected("'program'"));
        }
        self.p.name = c.string("the program's name (a string)")?;
        c.end()?;
        if self.at("steps") {
            let mut c = self.next().expect("peeked");
            c.eat_kw("steps");
            if c.eat_kw("static") {
                c.expect("(")?;
                let why = c
                    .rest
                    .trim()
                    .strip_suffix(')')
                    .ok_or_else(|| c.expected("a reason in parentheses"))?;
                self.p.static_steps_reason = Some(why.to_string());
            } else {
                c.expect("1..=")?;
                self.p.max_steps = Some(c.usize("the most steps")?);
                if c.eat("(static:") {
                    let why = c
                        .rest
                        .trim()
                        .strip_suffix(')')
                        .ok_or_else(|| c.expected("')' at the end of the line"))?;
                    self.p.static_steps_reason = Some(why.trim_start().to_string());
                } else {
                    c.end()?;
                }
            }
        }
        let mut seq_lens = None;
        if self.at("seq_lens") {
            let mut c = self.next().expect("peeked");
            c.eat_kw("seq_lens");
            c.expect("%")?;
            let b = c.usize("a buffer number")?;
            c.expect("(the time loops run the length it gives)")?;
            c.end()?;
            seq_lens = Some((b, c.line));
        }
        if self.at("batch") {
            let mut c = self.next().expect("peeked");
            c.eat_kw("batch");
            c.expect("max")?;
            let max = c.usize("the batch")?;
            c.expect("inputs")?;
            let inputs = axes(&mut c)?;
            c.expect("outputs")?;
            let outputs = axes(&mut c)?;
            c.end()?;
            self.p.batch_axes = Some(BatchAxes {
                max,
                inputs,
                outputs,
            });
        }
        while self.at("buffer") {
            let c = self.next().expect("peeked");
            self.buffer(c)?;
        }
        while self.at("const") {
            let c = self.next().expect("peeked");
            self.constant(c)?;
        }
        self.io()?;
        if let Some((b, line)) = seq_lens {
            if !matches!(self.p.buffers.get(b), Some(x) if matches!(x.kind, BufKind::Input(_))) {
                return Err(format!("line {line}: seq_lens %{b} is not an input buffer"));
            }
            self.p.seq_lens = Some(BufId(b));
        }
        if let Some(b) = &self.p.batch_axes
            && (b.inputs.len() != self.p.inputs.len() || b.outputs.len() != self.p.outputs.len())
        {
            return Err(format!(
                "the batch line gives {} input and {} output axes for {} inputs and {} outputs",
                b.inputs.len(),
                b.outputs.len(),
                self.p.inputs.len(),
                self.p.outputs.len()
            ));
        }
        let (body, close) = self.block(0, None)?;
        if let Some(line) = close {
            return Err(format!("line {line}: '}}' closes no block"));
        }
        self.p.body = body;
        Ok(self.p)
    }

    /// `inputs` and `outputs` from the buffers' kinds: each number once, none missing.
    fn io(&mut self) -> Result<(), String> {
        let mut ins: Vec<Option<BufId>> = Vec::new();
        let mut outs: Vec<Option<BufId>> = Vec::new();
        for (i, b) in self.p.buffers.iter().enumerate() {
            let (list, k, what) = match b.kind {
                BufKind::Input(k) => (&mut ins, k, "input"),
                BufKind::Output(k) => (&mut outs, k, "output"),
                BufKind::Temp => continue,
            };
            if k >= self.p.buffers.len() {
                return Err(format!(
                    "buffer %{i} is {what} {k}, but there are only {} buffers",
                    self.p.buffers.len()
                ));
            }
            if list.len() <= k {
                list.resize(k + 1, None);
            }
            if let Some(o) = list[k] {
                return Err(format!("buffers %{} and %{i} are both {what} {k}", o.0));
            }
            list[k] = Some(BufId(i));
        }
        for (list, what, dst) in [(ins, "input", 0), (outs, "output", 1)] {
            let mut v = Vec::new();
            for (k, b) in list.into_iter().enumerate() {
                v.push(b.ok_or_else(|| format!("no buffer is {what} {k}"))?);
            }
            if dst == 0 {
                self.p.inputs = v;
            } else {
                self.p.outputs = v;
            }
        }
        Ok(())
    }

    fn buffer(&mut self, mut c: Cursor) -> Result<(), String> {
        c.eat_kw("buffer");
        c.expect("%")?;
        let i = c.usize("a buffer number")?;
        if i != self.p.buffers.len() {
            return Err(c.err(format!(
                "buffer %{i} out of order: expected %{}",
                self.p.buffers.len()
            )));
        }
        let name = c.string("the buffer's name (a string)")?;
        let kind = match c.word() {
            "input" => BufKind::Input(c.usize("the input's number")?),
            "output" => BufKind::Output(c.usize("the output's number")?),
            "temp" => BufKind::Temp,
            w => {
                return Err(c.err(format!("expected 'input', 'output' or 'temp', found '{w}'")));
            }
        };
        let dims = c.dims_list("a dimension")?;
        count(&dims, &c)?;
        let step_len = if c.rest.trim().is_empty() {
            None
        } else {
            let n = c.usize("elements per step")?;
            c.expect("/step")?;
            Some(n)
        };
        c.end()?;
        self.p.buffers.push(Buffer {
            name,
            kind,
            dims,
            step_len,
        });
        Ok(())
    }

    fn constant(&mut self, mut c: Cursor) -> Result<(), String> {
        c.eat_kw("const");
        c.expect("$")?;
        let i = c.usize("a constant number")?;
        if i != self.p.consts.len() {
            return Err(c.err(format!(
                "constant ${i} out of order: expected ${}",
                self.p.consts.len()
            )));
        }
        let name = c.string("the constant's name (a string)")?;
        let dims = c.dims_list("a dimension")?;
        let n = count(&dims, &c)?;
        c.expect("nnz")?;
        let nnz = c.usize("the count of nonzeros")?;
        let data: Vec<f32> = if c.eat("[") {
            let mut v = Vec::new();
            if !c.eat("]") {
                loop {
                    v.push(c.f32("a number")?);
                    if c.eat("]") {
                        break;
                    }
                    c.expect(",")?;
                }
            }
            if v.len() != n {
                return Err(c.err(format!(
                    "constant ${i} has {} values for dims {dims:?} ({n} elements)",
                    v.len()
                )));
            }
            v
        } else if c.eat("sha256:") {
            let h = c.word();
            let hash = unhex(h).ok_or_else(|| c.err(format!("'{h}' is not a sha256 hash")))?;
            let store = self.store.ok_or_else(|| {
                c.err(format!(
                    "constant ${i} is given by hash; its data needs a weight store \
                     (parse_with_weights)"
                ))
            })?;
            let t = store
                .get(&hash)
                .ok_or_else(|| c.err(format!("no weight with hash {h} in the store")))?;
            let a = t.as_f32().filter(|a| a.shape() == dims.as_slice());
            let a = a.ok_or_else(|| {
                c.err(format!(
                    "the stored weight {h} is {}{:?}, not f32{dims:?}",
                    t.dtype(),
                    t.shape()
                ))
            })?;
            a.iter().copied().collect()
        } else {
            return Err(c.expected("the data: '[...]' or 'sha256:HASH'"));
        };
        c.end()?;
        let k = Const {
            name,
            dims,
            data: ConstData::new(data),
        };
        if k.nonzeros() != nnz {
            return Err(c.err(format!(
                "constant ${i} says nnz {nnz}, but its data has {} nonzeros",
                k.nonzeros()
            )));
        }
        self.p.consts.push(k);
        Ok(())
    }

    /// Statements up to a `}` line (whose number is returned) or the end of the text.
    fn block(
        &mut self,
        depth: usize,
        trip: Option<usize>,
    ) -> Result<(Vec<Stmt>, Option<usize>), String> {
        let mut body = Vec::new();
        while let Some(c) = self.next() {
            if c.rest == "}" {
                return Ok((body, Some(c.line)));
            }
            body.push(self.stmt(c, depth, trip)?);
        }
        Ok((body, None))
    }

    /// A block's statements and its closing `}`.
    fn nested(
        &mut self,
        c: &Cursor,
        depth: usize,
        trip: Option<usize>,
    ) -> Result<Vec<Stmt>, String> {
        if let Err(e) = crate::limits::check_nesting(|| "a block".into(), depth + 1) {
            return Err(c.err(e.to_string()));
        }
        let (body, close) = self.block(depth + 1, trip)?;
        if close.is_none() {
            return Err(format!(
                "line {}: expected '}}' to close the block opened on line {}, found the end of \
                 the text",
                self.last, c.line
            ));
        }
        Ok(body)
    }

    fn stmt(
        &mut self,
        mut c: Cursor<'a>,
        depth: usize,
        trip: Option<usize>,
    ) -> Result<Stmt, String> {
        let op = c.word();
        let s = match op {
            "barrier" => Stmt::Barrier,
            "start" => {
                c.expect("{")?;
                c.end()?;
                let body = self.nested(&c, depth, trip)?;
                return Ok(Stmt::Start { body });
            }
            "loop" => {
                c.expect("t")?;
                c.expect("in")?;
                let (n, reverse, run) = loop_range(&mut c)?;
                c.expect("{")?;
                c.end()?;
                let body = self.nested(&c, depth, Some(n))?;
                return Ok(Stmt::Loop {
                    trip: n,
                    reverse,
                    run,
                    body,
                });
            }
            "matmul" => {
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let a = self.view(&mut c, trip)?;
                c.expect("x")?;
                let w = if c.eat("$") {
                    let k = self.const_id(&mut c)?;
                    c.expect("(")?;
                    let strategy = match c.word() {
                        "dense" => Strategy::Dense,
                        "sparse-unrolled" => Strategy::SparseUnrolled,
                        "sparse-csr" => Strategy::SparseCsr,
                        w => {
                            return Err(c.err(format!(
                                "expected a strategy ('dense', 'sparse-unrolled' or \
                                 'sparse-csr'), found '{w}'"
                            )));
                        }
                    };
                    c.expect(")")?;
                    Weight::Const(k, strategy)
                } else {
                    let v = self.view(&mut c, trip)?;
                    if c.eat("(dense, run-time)") {
                        Weight::View(v)
                    } else {
                        c.expect("(masked by $")?;
                        let k = self.const_id(&mut c)?;
                        c.expect(", run-time)")?;
                        Weight::Masked(v, k)
                    }
                };
                let rows_per_step = if c.eat_kw("rows") {
                    let r = c.usize("rows per step")?;
                    c.expect("/step")?;
                    Some(r)
                } else {
                    None
                };
                self.check_matmul(&c, &out, &a, &w)?;
                Stmt::MatMul {
                    out,
                    a,
                    w,
                    rows_per_step,
                }
            }
            "add" | "sub" | "mul" | "div" => {
                let op = match op {
                    "add" => BinOp::Add,
                    "sub" => BinOp::Sub,
                    "mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let a = self.view(&mut c, trip)?;
                c.expect(",")?;
                let b = self.view(&mut c, trip)?;
                for v in [&a, &b] {
                    same_rank(&c, &out, v)?;
                }
                Stmt::Binary { op, out, a, b }
            }
            "clip" => {
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let x = self.view(&mut c, trip)?;
                c.expect("in")?;
                c.expect("[")?;
                let min = c.f32("the lower bound")?;
                c.expect(",")?;
                let max = c.f32("the upper bound")?;
                c.expect("]")?;
                same_rank(&c, &out, &x)?;
                Stmt::Clip { out, x, min, max }
            }
            "copy" => {
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let x = self.view(&mut c, trip)?;
                same_rank(&c, &out, &x)?;
                Stmt::Copy { out, x }
            }
            "softmax" | "log_softmax" => {
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let x = self.view(&mut c, trip)?;
                c.expect("over the last dim")?;
                if out.dims != x.dims {
                    return Err(c.err(format!(
                        "softmax of dims {:?} into dims {:?}",
                        x.dims, out.dims
                    )));
                }
                Stmt::Softmax {
                    out,
                    x,
                    log: op == "log_softmax",
                }
            }
            name => {
                let mut alpha = None;
                let mut beta = None;
                if c.eat("{") {
                    loop {
                        let k = c.word();
                        c.expect("=")?;
                        let v = c.f32("a number")?;
                        match k {
                            "alpha" if alpha.is_none() => alpha = Some(v),
                            "beta" if beta.is_none() => beta = Some(v),
                            _ => return Err(c.err(format!("unexpected parameter '{k}'"))),
                        }
                        if c.eat("}") {
                            break;
                        }
                        c.expect(",")?;
                    }
                }
                let act = Act::from_name(name, alpha, beta)
                    .filter(|a| {
                        let names: Vec<&str> = a.params().iter().map(|(k, _)| *k).collect();
                        (alpha.is_none() || names.contains(&"alpha"))
                            && (beta.is_none() || names.contains(&"beta"))
                    })
                    .ok_or_else(|| {
                        if name.is_empty() {
                            c.expected("a statement")
                        } else {
                            c.err(format!(
                                "unknown statement '{name}' (or parameters it does not take)"
                            ))
                        }
                    })?;
                let out = self.view(&mut c, trip)?;
                c.expect("=")?;
                let x = self.view(&mut c, trip)?;
                same_rank(&c, &out, &x)?;
                Stmt::Unary { op: act, out, x }
            }
        };
        c.end()?;
        Ok(s)
    }

    fn const_id(&self, c: &mut Cursor) -> Result<ConstId, String> {
        let k = c.usize("a constant number")?;
        if k >= self.p.consts.len() {
            return Err(c.err(format!(
                "${k} is not a constant (there are {})",
                self.p.consts.len()
            )));
        }
        Ok(ConstId(k))
    }

    /// `%b[+off +St; AxB : s,t]` or the same with `$c`; checked against its storage.
    fn view(&self, c: &mut Cursor, trip: Option<usize>) -> Result<View, String> {
        let (storage, len) = if c.eat("%") {
            let b = c.usize("a buffer number")?;
            let buf = self.p.buffers.get(b).ok_or_else(|| {
                c.err(format!(
                    "%{b} is not a buffer (there are {})",
                    self.p.buffers.len()
                ))
            })?;
            (Storage::Buf(BufId(b)), buf.len())
        } else if c.eat("$") {
            let k = self.const_id(c)?;
            (Storage::Const(k), self.p.consts[k.0].data.len())
        } else {
            return Err(c.expected("a view ('%N[...]' or '$N[...]')"));
        };
        c.expect("[")?;
        let offset = c.signed("the view's offset (+N or -N)")?;
        let step_stride = if c.eat(";") {
            0
        } else {
            let s = c.signed("a step stride (+Nt or -Nt)")?;
            c.expect("t")?;
            c.expect(";")?;
            s
        };
        let mut dims = Vec::new();
        c.ws();
        if !c.rest.starts_with(':') {
            loop {
                dims.push(c.usize("a dimension")?);
                if !c.eat("x") {
                    break;
                }
            }
        }
        c.expect(":")?;
        let mut strides = Vec::new();
        if !c.eat("]") {
            loop {
                strides.push(c.isize("a stride")?);
                if c.eat("]") {
                    break;
                }
                c.expect(",")?;
            }
        }
        if dims.len() != strides.len() {
            return Err(c.err(format!(
                "a view with {} dims and {} strides",
                dims.len(),
                strides.len()
            )));
        }
        count(&dims, c)?;
        let v = View {
            storage,
            offset,
            dims,
            strides,
            step_stride,
        };
        in_bounds(c, &v, len, trip)?;
        Ok(v)
    }

    fn check_matmul(&self, c: &Cursor, out: &View, a: &View, w: &Weight) -> Result<(), String> {
        let (k, n) = match w {
            Weight::Const(id, _) => {
                let d = &self.p.consts[id.0].dims;
                if d.len() != 2 {
                    return Err(c.err(format!("the weight ${} is not a matrix: {d:?}", id.0)));
                }
                (d[0], d[1])
            }
            Weight::View(v) | Weight::Masked(v, _) => {
                if v.dims.len() != 2 {
                    return Err(c.err("the weight view is not of rank 2"));
                }
                if let Weight::Masked(_, id) = w
                    && self.p.consts[id.0].dims != v.dims
                {
                    return Err(c.err(format!(
                        "the mask ${} has dims {:?}, the weight {:?}",
                        id.0, self.p.consts[id.0].dims, v.dims
                    )));
                }
                (v.dims[0], v.dims[1])
            }
        };
        if out.dims.len() != 2 || a.dims.len() != 2 {
            return Err(c.err("a matmul's output and left operand are views of rank 2"));
        }
        if a.dims[1] != k || out.dims[0] != a.dims[0] || out.dims[1] != n {
            return Err(c.err(format!(
                "matmul shapes: {:?} = {:?} x [{k}, {n}]",
                out.dims, a.dims
            )));
        }
        Ok(())
    }
}

/// `1,-,0`: a batch axis per input or output, `-` for none, in brackets.
fn axes(c: &mut Cursor) -> Result<Vec<Option<usize>>, String> {
    c.expect("[")?;
    let mut v = Vec::new();
    if c.eat("]") {
        return Ok(v);
    }
    loop {
        v.push(if c.eat("-") {
            None
        } else {
            Some(c.usize("an axis or '-'")?)
        });
        if c.eat("]") {
            return Ok(v);
        }
        c.expect(",")?;
    }
}

/// The range of a `loop t in ...` line: trip count, reverse, how it runs.
fn loop_range(c: &mut Cursor) -> Result<(usize, bool, LoopRun), String> {
    if c.eat("steps-1") {
        c.expect("(")?;
        let reverse = c.eat("reverse,");
        c.expect("steps <=")?;
        let n = c.usize("the trip count")?;
        c.expect(")")?;
        return Ok((n, reverse, LoopRun::LastStep));
    }
    if c.eat("steps..0") {
        c.expect("(reverse, steps <=")?;
        let n = c.usize("the trip count")?;
        c.expect(")")?;
        return Ok((n, true, LoopRun::Steps));
    }
    if c.eat("0..steps") {
        c.expect("(steps <=")?;
        let n = c.usize("the trip count")?;
        c.expect(")")?;
        return Ok((n, false, LoopRun::Steps));
    }
    if c.eat("0..") {
        let n = c.usize("the trip count")?;
        // `0..0 (reverse)`: a reverse loop of no iterations.
        let reverse = n == 0 && c.eat("(reverse)");
        return Ok((n, reverse, LoopRun::Fixed));
    }
    let n = c.usize("a range ('0..N', 'N..0 (reverse)', '0..steps (steps <= N)', ...)")?;
    c.expect("..0")?;
    c.expect("(reverse)")?;
    Ok((n, true, LoopRun::Fixed))
}

fn same_rank(c: &Cursor, out: &View, x: &View) -> Result<(), String> {
    if out.dims.len() != x.dims.len() {
        return Err(c.err(format!(
            "an operand of rank {} for an output of rank {}",
            x.dims.len(),
            out.dims.len()
        )));
    }
    Ok(())
}

/// Every element of `v`, at every step of its loop, lies in 0..len.
fn in_bounds(c: &Cursor, v: &View, len: usize, trip: Option<usize>) -> Result<(), String> {
    if v.dims.contains(&0) {
        return Ok(());
    }
    let last_t = match trip {
        Some(t) => t.saturating_sub(1) as i128,
        None if v.step_stride != 0 => {
            return Err(c.err("a view with a step stride outside any loop"));
        }
        None => 0,
    };
    let (mut lo, mut hi) = (v.offset as i128, v.offset as i128);
    let step = v.step_stride as i128 * last_t;
    if step < 0 {
        lo += step;
    } else {
        hi += step;
    }
    for (&d, &s) in v.dims.iter().zip(&v.strides) {
        let span = (d as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi >= len as i128 {
        return Err(c.err(format!(
            "the view reaches elements {lo} to {hi} of storage with {len}"
        )));
    }
    Ok(())
}
