//! A parser for the PTX subset: module directives (`.version`, `.target`, `.address_size`),
//! `.global` arrays with initializers, `.shared` arrays, and `.entry` kernels with `.param`
//! parameters, `.reg` declarations, labels and instructions (optionally guarded by `@%p` or
//! `@!%p`). Written from the PTX ISA manual, independently of any emitter.

use std::collections::HashMap;

/// A value type of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Pred,
    B32,
    U32,
    S32,
    F32,
    B64,
    U64,
    S64,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b32" => Ty::B32,
            "u32" => Ty::U32,
            "s32" => Ty::S32,
            "f32" => Ty::F32,
            "b64" => Ty::B64,
            "u64" => Ty::U64,
            "s64" => Ty::S64,
            _ => return None,
        })
    }
    pub fn bytes(self) -> usize {
        match self {
            Ty::Pred => 1,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 => 8,
        }
    }
}

/// Special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sreg {
    TidX,
    NtidX,
    CtaidX,
    NctaidX,
}

/// An operand as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Opd {
    Reg(u16),
    /// Raw bits: an integer (sign-extended to 64 bits) or an f32 (`0fXXXXXXXX`).
    Imm(u64),
    Special(Sreg),
    /// A name: a variable, a parameter or a label.
    Sym(String),
    /// `[base+offset]`: base a register or a name.
    Addr(Box<Opd>, i64),
}

/// State space of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
}

/// Memory-order semantics of an access or fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sem {
    /// A plain (weak) access.
    Weak,
    /// `.relaxed.scope` or `.volatile`: a strong access with no ordering.
    Relaxed,
    Acquire,
    Release,
    AcqRel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// An operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Mov(Ty),
    Ld {
        space: Space,
        sem: Sem,
        nc: bool,
        ty: Ty,
    },
    St {
        space: Space,
        sem: Sem,
        ty: Ty,
    },
    /// `cvta.to.global.u64`: a generic address to a global one.
    CvtaToGlobal,
    Add(Ty),
    Sub(Ty),
    MulLo(Ty),
    MulWide(Ty),
    MadLo(Ty),
    Div(Ty),
    Rem(Ty),
    Fma,
    Neg(Ty),
    Abs(Ty),
    Min(Ty),
    Max(Ty),
    Ex2,
    Lg2,
    Setp(Cmp, Ty),
    Selp(Ty),
    Bra,
    BarSync,
    /// `fence.acq_rel.gpu`, `fence.sc.gpu`, `membar.gl`.
    Fence,
    /// `atom{.sem}{.scope}.global.add.u32`.
    AtomAdd(Sem, Ty),
    Ret,
}

#[derive(Clone, Debug)]
pub struct Inst {
    /// `@%p` (false) or `@!%p` (true).
    pub guard: Option<(u16, bool)>,
    pub op: Op,
    pub args: Vec<Opd>,
    /// Line in the source (1-based).
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<(String, Ty)>,
    pub regs: usize,
    pub insts: Vec<Inst>,
    /// Label -> instruction index.
    pub labels: HashMap<String, usize>,
    /// `.maxntid` or `.reqntid`, x.
    pub max_threads: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct Var {
    pub name: String,
    pub ty: Ty,
    pub align: usize,
    /// Elements.
    pub len: usize,
    /// Initial 32-bit words (global arrays of 32-bit elements; empty: zeros).
    pub init: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct Module {
    pub version: String,
    pub target: String,
    pub globals: Vec<Var>,
    pub shared: Vec<Var>,
    pub kernels: Vec<Kernel>,
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("//") {
        out.push_str(&rest[..i]);
        match rest[i..].find('\n') {
            Some(j) => rest = &rest[i + j..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].matches('\n').count() + 1
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn parse_imm(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(|b| b as u64);
    }
    parse_int(s).map(|v| v as u64)
}

struct Regs {
    names: HashMap<String, u16>,
}

impl Regs {
    fn get(&self, s: &str) -> Result<u16, String> {
        self.names
            .get(s)
            .copied()
            .ok_or_else(|| format!("register {s} is not declared"))
    }
}

fn parse_operand(s: &str, regs: &Regs) -> Result<Opd, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("bad address {s}"))?
            .trim();
        let (base, off) = match inner.find(['+', '-']) {
            Some(i) if i > 0 => {
                let off = parse_int(&inner[i..].replace('+', ""))
                    .ok_or_else(|| format!("bad address offset in {s}"))?;
                (&inner[..i], off)
            }
            _ => (inner, 0),
        };
        let b = parse_operand(base, regs)?;
        return Ok(Opd::Addr(Box::new(b), off));
    }
    Ok(match s {
        "%tid.x" => Opd::Special(Sreg::TidX),
        "%ntid.x" => Opd::Special(Sreg::NtidX),
        "%ctaid.x" => Opd::Special(Sreg::CtaidX),
        "%nctaid.x" => Opd::Special(Sreg::NctaidX),
        _ if s.starts_with('%') => Opd::Reg(regs.get(s)?),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            Opd::Imm(parse_imm(s).ok_or_else(|| format!("bad immediate {s}"))?)
        }
        _ => Opd::Sym(s.to_string()),
    })
}

fn sem_of(mods: &[&str]) -> Sem {
    if mods.contains(&"acquire") {
        Sem::Acquire
    } else if mods.contains(&"release") {
        Sem::Release
    } else if mods.contains(&"acq_rel") {
        Sem::AcqRel
    } else if mods.contains(&"relaxed") || mods.contains(&"volatile") {
        Sem::Relaxed
    } else {
        Sem::Weak
    }
}

fn space_of(mods: &[&str]) -> Result<Space, String> {
    if mods.contains(&"global") {
        Ok(Space::Global)
    } else if mods.contains(&"shared") {
        Ok(Space::Shared)
    } else if mods.contains(&"param") {
        Ok(Space::Param)
    } else {
        Err("generic addressing is not supported: name .global, .shared or .param".into())
    }
}

fn parse_op(opcode: &str) -> Result<Op, String> {
    let parts: Vec<&str> = opcode.split('.').collect();
    let (base, mods) = (parts[0], &parts[1..]);
    let ty = || -> Result<Ty, String> {
        mods.iter()
            .rev()
            .find_map(|m| Ty::parse(m))
            .ok_or_else(|| format!("{opcode}: no type"))
    };
    let f32_only = |op: Op| -> Result<Op, String> {
        if ty()? == Ty::F32 {
            Ok(op)
        } else {
            Err(format!("{opcode}: only .f32 is supported"))
        }
    };
    Ok(match base {
        "mov" => Op::Mov(ty()?),
        "ld" => Op::Ld {
            space: space_of(mods)?,
            sem: sem_of(mods),
            nc: mods.contains(&"nc"),
            ty: ty()?,
        },
        "st" => Op::St {
            space: space_of(mods)?,
            sem: sem_of(mods),
            ty: ty()?,
        },
        "cvta" if mods.first() == Some(&"to") && mods.get(1) == Some(&"global") => Op::CvtaToGlobal,
        "add" => Op::Add(ty()?),
        "sub" => Op::Sub(ty()?),
        "mul" if mods.contains(&"wide") => Op::MulWide(ty()?),
        "mul" if mods.contains(&"lo") => Op::MulLo(ty()?),
        "mul" => f32_only(Op::MulLo(Ty::F32))?,
        "mad" if mods.contains(&"lo") => Op::MadLo(ty()?),
        "div" => Op::Div(ty()?),
        "rem" => Op::Rem(ty()?),
        "fma" => f32_only(Op::Fma)?,
        "neg" => Op::Neg(ty()?),
        "abs" => Op::Abs(ty()?),
        "min" => Op::Min(ty()?),
        "max" => Op::Max(ty()?),
        "ex2" => f32_only(Op::Ex2)?,
        "lg2" => f32_only(Op::Lg2)?,
        "setp" => {
            let cmp = match mods.first().copied() {
                Some("eq") => Cmp::Eq,
                Some("ne") => Cmp::Ne,
                Some("lt") => Cmp::Lt,
                Some("le") => Cmp::Le,
                Some("gt") => Cmp::Gt,
                Some("ge") => Cmp::Ge,
                _ => return Err(format!("{opcode}: unsupported comparison")),
            };
            Op::Setp(cmp, ty()?)
        }
        "selp" => Op::Selp(ty()?),
        "bra" => Op::Bra,
        "bar" if mods.first() == Some(&"sync") => Op::BarSync,
        "barrier" if mods.first() == Some(&"sync") => Op::BarSync,
        "fence" if mods.contains(&"sc") || mods.contains(&"acq_rel") => Op::Fence,
        "membar" if mods.contains(&"gl") || mods.contains(&"sys") => Op::Fence,
        "atom" if mods.contains(&"add") && mods.contains(&"global") => {
            Op::AtomAdd(sem_of(mods), ty()?)
        }
        "ret" | "exit" => Op::Ret,
        _ => return Err(format!("unsupported instruction {opcode}")),
    })
}

/// Splits "a, b, [c+1]" at top-level commas.
fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

fn parse_var(decl: &str) -> Result<Var, String> {
    // .global .align 4 .f32 name[n] = {...}   or   .shared .align 16 .b8 name[n]
    let (head, init) = match decl.find('=') {
        Some(i) => (&decl[..i], Some(&decl[i + 1..])),
        None => (decl, None),
    };
    let toks: Vec<&str> = head.split_whitespace().collect();
    let (mut align, mut ty, mut bytes_only, mut decl_name) = (1, None, false, None);
    let mut i = 1;
    while i < toks.len() {
        let t = toks[i];
        if t == ".align" {
            align = toks
                .get(i + 1)
                .and_then(|a| a.parse().ok())
                .ok_or("bad .align")?;
            i += 2;
            continue;
        }
        match t.strip_prefix('.') {
            Some("b8") => {
                ty = Some(Ty::B32);
                bytes_only = true;
            }
            Some(tn) => {
                ty = Some(Ty::parse(tn).ok_or_else(|| format!("unsupported variable type {t}"))?)
            }
            None => decl_name = Some(t),
        }
        i += 1;
    }
    let t = decl_name.ok_or("a declaration without a name")?;
    let ty = ty.ok_or("a variable without a type")?;
    let (n, mut len) = match t.find('[') {
        Some(j) => (
            &t[..j],
            t[j + 1..]
                .trim_end_matches(']')
                .parse::<usize>()
                .map_err(|_| format!("bad array length in {t}"))?,
        ),
        None => (t, 1),
    };
    if bytes_only {
        if len % 4 != 0 {
            return Err(format!(
                "{n}: a .b8 array of {len} bytes (multiples of 4 are supported)"
            ));
        }
        len /= 4;
    } else if ty.bytes() != 4 {
        return Err(format!("{n}: only 32-bit elements are supported"));
    }
    let mut words = Vec::new();
    if let Some(init) = init {
        if bytes_only {
            return Err(format!("{n}: initializers of .b8 arrays are not supported"));
        }
        let body = init
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .trim();
        for v in split_args(body) {
            let b = parse_imm(v).ok_or_else(|| format!("{n}: bad initializer {v}"))?;
            words.push(b as u32);
        }
        if words.len() > len {
            return Err(format!(
                "{n}: {} initializers for {len} elements",
                words.len()
            ));
        }
    }
    Ok(Var {
        name: n.to_string(),
        ty,
        align,
        len,
        init: words,
    })
}

fn parse_kernel(text: &str, header: &str, body: &str, body_at: usize) -> Result<Kernel, String> {
    // header: "NAME( .param .u64 a, ... ) .maxntid 128, 1, 1"
    let open = header.find('(').ok_or("an entry without parameters")?;
    let close = header.rfind(')').ok_or("unclosed parameter list")?;
    let name = header[..open].trim().to_string();
    let mut params = Vec::new();
    for p in split_args(&header[open + 1..close]) {
        let t: Vec<&str> = p.split_whitespace().collect();
        if t.len() != 3 || t[0] != ".param" {
            return Err(format!("{name}: cannot read parameter {p}"));
        }
        let ty = Ty::parse(t[1].trim_start_matches('.'))
            .ok_or_else(|| format!("{name}: parameter type {}", t[1]))?;
        params.push((t[2].to_string(), ty));
    }
    let dirs = &header[close + 1..];
    let max_threads = ["maxntid", "reqntid"].iter().find_map(|d| {
        let i = dirs.find(&format!(".{d}"))?;
        dirs[i + d.len() + 1..]
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    });
    let mut regs = Regs {
        names: HashMap::new(),
    };
    let mut insts = Vec::new();
    let mut labels = HashMap::new();
    let mut pos = 0;
    for chunk in body.split(';') {
        let at = body_at + pos;
        pos += chunk.len() + 1;
        let mut c = chunk.trim();
        // Leading labels.
        while let Some(i) = c.find(':') {
            let l = c[..i].trim();
            if !l.is_empty()
                && l.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '$')
                && !l.starts_with(|ch: char| ch.is_ascii_digit())
            {
                labels.insert(l.to_string(), insts.len());
                c = c[i + 1..].trim();
            } else {
                break;
            }
        }
        if c.is_empty() {
            continue;
        }
        let line = line_of(text, at + chunk.len() - chunk.trim_start().len());
        if let Some(d) = c.strip_prefix(".reg") {
            // .reg .b32 %r<10>   or   .reg .f32 %a, %b
            let d = d.trim();
            let sp = d.find(char::is_whitespace).ok_or("bad .reg")?;
            for n in split_args(&d[sp..]) {
                match n.find('<') {
                    Some(i) => {
                        let k: usize = n[i + 1..]
                            .trim_end_matches('>')
                            .parse()
                            .map_err(|_| format!("line {line}: bad register count {n}"))?;
                        for j in 0..k {
                            let id = regs.names.len() as u16;
                            regs.names.insert(format!("{}{j}", &n[..i]), id);
                        }
                    }
                    None => {
                        let id = regs.names.len() as u16;
                        regs.names.insert(n.to_string(), id);
                    }
                }
            }
            continue;
        }
        let (guard, c) = match c.strip_prefix('@') {
            Some(g) => {
                let sp = g.find(char::is_whitespace).ok_or("bad guard")?;
                let (neg, r) = match g[..sp].strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, &g[..sp]),
                };
                (
                    Some((regs.get(r).map_err(|e| format!("line {line}: {e}"))?, neg)),
                    g[sp..].trim(),
                )
            }
            None => (None, c),
        };
        let (opcode, rest) = match c.find(char::is_whitespace) {
            Some(i) => (&c[..i], c[i..].trim()),
            None => (c, ""),
        };
        let op = parse_op(opcode).map_err(|e| format!("line {line}: {e}"))?;
        let args = split_args(rest)
            .into_iter()
            .map(|a| parse_operand(a, &regs))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("line {line}: {e}"))?;
        insts.push(Inst {
            guard,
            op,
            args,
            line,
        });
    }
    Ok(Kernel {
        name,
        params,
        regs: regs.names.len(),
        insts,
        labels,
        max_threads,
    })
}

/// Parses a module.
pub fn parse(text: &str) -> Result<Module, String> {
    let clean = strip_comments(text);
    let s = clean.as_str();
    let mut m = Module::default();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        i += rest.len() - trimmed.len();
        let line = line_of(s, i);
        let word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = &trimmed[..word_end];
        match word {
            ".version" | ".target" | ".address_size" => {
                let end = trimmed.find('\n').unwrap_or(trimmed.len());
                let v = trimmed[word_end..end].trim().to_string();
                match word {
                    ".version" => m.version = v,
                    ".target" => m.target = v,
                    _ => {}
                }
                i += end;
            }
            ".global" | ".shared" => {
                let end = trimmed
                    .find(';')
                    .ok_or_else(|| format!("line {line}: unterminated declaration"))?;
                let v = parse_var(&trimmed[..end]).map_err(|e| format!("line {line}: {e}"))?;
                if word == ".global" {
                    m.globals.push(v);
                } else {
                    m.shared.push(v);
                }
                i += end + 1;
            }
            ".visible" | ".entry" => {
                let e = trimmed
                    .find(".entry")
                    .ok_or_else(|| format!("line {line}: expected .entry"))?;
                let open = trimmed
                    .find('{')
                    .ok_or_else(|| format!("line {line}: an entry without a body"))?;
                let header = &trimmed[e + 6..open];
                let close = trimmed
                    .rfind('}')
                    .filter(|c| *c > open)
                    .ok_or_else(|| format!("line {line}: unclosed body"))?;
                // The body ends at the first '}' at depth 0 after it opens.
                let mut depth = 0;
                let mut end = close;
                for (k, ch) in trimmed[open..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let k = parse_kernel(s, header, &trimmed[open + 1..end], i + open + 1)?;
                m.kernels.push(k);
                i += end + 1;
            }
            _ => return Err(format!("line {line}: unexpected {word}")),
        }
    }
    Ok(m)
}
