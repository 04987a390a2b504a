//! The `.kir` text form (print only: the kernel IR is produced by lowering, never written by
//! hand, so it has no parser yet).

use super::{BufKind, Program, Stmt, Storage, View, Weight};
use std::fmt::Write;

fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn view(v: &View) -> String {
    let base = match v.storage {
        Storage::Buf(b) => format!("%{}", b.0),
        Storage::Const(c) => format!("${}", c.0),
    };
    let step = if v.step_stride != 0 {
        format!(" {:+}t", v.step_stride)
    } else {
        String::new()
    };
    let strides = v
        .strides
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{base}[{:+}{step}; {} : {strides}]",
        v.offset,
        dims(&v.dims)
    )
}

fn stmts(out: &mut String, body: &[Stmt], indent: usize) {
    let pad = "  ".repeat(indent);
    for s in body {
        let _ = match s {
            Stmt::MatMul { out: o, a, w } => {
                let w = match w {
                    Weight::Const(c, strategy) => format!("${} ({})", c.0, strategy.name()),
                    Weight::View(v) => format!("{} (dense, run-time)", view(v)),
                };
                writeln!(out, "{pad}matmul {} = {} x {w}", view(o), view(a))
            }
            Stmt::Unary { op, out: o, x } => {
                writeln!(out, "{pad}{} {} = {}", op.name(), view(o), view(x))
            }
            Stmt::Binary { op, out: o, a, b } => writeln!(
                out,
                "{pad}{} {} = {}, {}",
                op.name(),
                view(o),
                view(a),
                view(b)
            ),
            Stmt::Clip {
                out: o,
                x,
                min,
                max,
            } => writeln!(
                out,
                "{pad}clip {} = {} in [{min:?}, {max:?}]",
                view(o),
                view(x)
            ),
            Stmt::Copy { out: o, x } => writeln!(out, "{pad}copy {} = {}", view(o), view(x)),
            Stmt::Loop {
                trip,
                reverse,
                body,
            } => {
                let range = if *reverse {
                    format!("{}..0 (reverse)", trip)
                } else {
                    format!("0..{trip}")
                };
                let _ = writeln!(out, "{pad}loop t in {range} {{");
                stmts(out, body, indent + 1);
                writeln!(out, "{pad}}}")
            }
        };
    }
}

/// Prints a program as `.kir` text.
pub fn print(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "program {:?}", p.name);
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match b.kind {
            BufKind::Input(k) => format!("input {k}"),
            BufKind::Output(k) => format!("output {k}"),
            BufKind::Temp => "temp".to_string(),
        };
        let _ = writeln!(
            out,
            "buffer %{i} {:?} {kind} [{}]",
            b.name,
            b.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    for (i, c) in p.consts.iter().enumerate() {
        let _ = writeln!(
            out,
            "const ${i} {:?} [{}] nnz {}",
            c.name,
            c.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            c.nonzeros()
        );
    }
    stmts(&mut out, &p.body, 0);
    out
}
