//! The one map from a legalized operation to its PTX instruction template. Legalization
//! (`legalize.rs`) expands every kernel-IR statement into these primitives; the printer fills
//! the templates and knows no operation of its own.
//!
//! Placeholders: `{d}` the result register, `{0}`, `{1}`, ... the arguments (f32 registers or
//! immediates `0fXXXXXXXX`), `{p}` a fresh predicate register.

/// A primitive f32 operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prim {
    Add,
    Sub,
    Mul,
    Div,
    Fma,
    Max,
    Min,
    Neg,
    Abs,
    /// 2^x
    Ex2,
    /// log2 x
    Lg2,
    /// `{0} < {1} ? {2} : {3}`
    SelLt,
    /// `{0} > {1} ? {2} : {3}`
    SelGt,
}

/// An argument: a register of the statement (inputs first, then one per operation) or an
/// immediate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Reg(usize),
    Imm(f32),
}

/// One operation of an elementwise statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Micro {
    pub prim: Prim,
    pub args: Vec<Arg>,
}

/// The table: each primitive's arity and template.
pub fn template(p: Prim) -> (usize, &'static str) {
    match p {
        Prim::Add => (2, "add.rn.f32 {d}, {0}, {1};"),
        Prim::Sub => (2, "sub.rn.f32 {d}, {0}, {1};"),
        Prim::Mul => (2, "mul.rn.f32 {d}, {0}, {1};"),
        Prim::Div => (2, "div.rn.f32 {d}, {0}, {1};"),
        Prim::Fma => (3, "fma.rn.f32 {d}, {0}, {1}, {2};"),
        Prim::Max => (2, "max.f32 {d}, {0}, {1};"),
        Prim::Min => (2, "min.f32 {d}, {0}, {1};"),
        Prim::Neg => (1, "neg.f32 {d}, {0};"),
        Prim::Abs => (1, "abs.f32 {d}, {0};"),
        Prim::Ex2 => (1, "ex2.approx.f32 {d}, {0};"),
        Prim::Lg2 => (1, "lg2.approx.f32 {d}, {0};"),
        Prim::SelLt => (
            4,
            "setp.lt.f32 {p}, {0}, {1};\n\tselp.f32 {d}, {2}, {3}, {p};",
        ),
        Prim::SelGt => (
            4,
            "setp.gt.f32 {p}, {0}, {1};\n\tselp.f32 {d}, {2}, {3}, {p};",
        ),
    }
}

/// Every primitive, for tests that walk the table.
pub const ALL: [Prim; 13] = [
    Prim::Add,
    Prim::Sub,
    Prim::Mul,
    Prim::Div,
    Prim::Fma,
    Prim::Max,
    Prim::Min,
    Prim::Neg,
    Prim::Abs,
    Prim::Ex2,
    Prim::Lg2,
    Prim::SelLt,
    Prim::SelGt,
];

/// A PTX f32 immediate (exact bits).
pub fn imm(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

/// Fills a template.
pub fn fill(p: Prim, d: &str, args: &[String], pred: &str) -> String {
    let (arity, t) = template(p);
    assert_eq!(arity, args.len(), "{p:?} takes {arity} arguments");
    let mut s = t.replace("{d}", d).replace("{p}", pred);
    for (i, a) in args.iter().enumerate() {
        s = s.replace(&format!("{{{i}}}"), a);
    }
    s
}
