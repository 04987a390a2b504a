//! The `.kir` text form (print only: the kernel IR is produced by lowering, never written by
//! hand, so it has no parser yet).

use super::{BufKind, LoopRun, Program, Stmt, Storage, View, Weight};
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

/// One statement as a line of `.kir` text (without indent or newline): a loop or `start`
/// block as its header, `loop t in 0..8 {`.
pub fn print_stmt(s: &Stmt) -> String {
    match s {
        Stmt::MatMul {
            out: o,
            a,
            w,
            rows_per_step,
        } => {
            let w = match w {
                Weight::Const(c, strategy) => format!("${} ({})", c.0, strategy.name()),
                Weight::View(v) => format!("{} (dense, run-time)", view(v)),
                Weight::Masked(v, c) => format!("{} (masked by ${}, run-time)", view(v), c.0),
            };
            let rows = match rows_per_step {
                Some(r) => format!(" rows {r}/step"),
                None => String::new(),
            };
            format!("matmul {} = {} x {w}{rows}", view(o), view(a))
        }
        Stmt::Unary { op, out: o, x } => format!("{} {} = {}", op.name(), view(o), view(x)),
        Stmt::Binary { op, out: o, a, b } => {
            format!("{} {} = {}, {}", op.name(), view(o), view(a), view(b))
        }
        Stmt::Clip {
            out: o,
            x,
            min,
            max,
        } => format!("clip {} = {} in [{min:?}, {max:?}]", view(o), view(x)),
        Stmt::Copy { out: o, x } => format!("copy {} = {}", view(o), view(x)),
        Stmt::Softmax { out: o, x, log } => format!(
            "{} {} = {} over the last dim",
            if *log { "log_softmax" } else { "softmax" },
            view(o),
            view(x)
        ),
        Stmt::Loop {
            trip, reverse, run, ..
        } => {
            let range = match (run, reverse) {
                (LoopRun::Fixed, true) => format!("{trip}..0 (reverse)"),
                (LoopRun::Fixed, false) => format!("0..{trip}"),
                (LoopRun::Steps, true) => format!("steps..0 (reverse, steps <= {trip})"),
                (LoopRun::Steps, false) => format!("0..steps (steps <= {trip})"),
                (LoopRun::LastStep, _) => format!("steps-1 (steps <= {trip})"),
            };
            format!("loop t in {range} {{")
        }
        Stmt::Barrier => "barrier".to_string(),
        Stmt::Start { .. } => "start {".to_string(),
    }
}

fn stmts(out: &mut String, body: &[Stmt], indent: usize) {
    let pad = "  ".repeat(indent);
    for s in body {
        let _ = writeln!(out, "{pad}{}", print_stmt(s));
        if let Stmt::Loop { body, .. } | Stmt::Start { body } = s {
            stmts(out, body, indent + 1);
            let _ = writeln!(out, "{pad}}}");
        }
    }
}

/// Prints a program as `.kir` text.
pub fn print(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "program {:?}", p.name);
    match (p.max_steps, &p.static_steps_reason) {
        (Some(t), _) => {
            let _ = writeln!(out, "steps 1..={t}");
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "steps static ({why})");
        }
        (None, None) => {}
    }
    if let Some(b) = p.seq_lens {
        let _ = writeln!(
            out,
            "seq_lens %{} (the time loops run the length it gives)",
            b.0
        );
    }
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match b.kind {
            BufKind::Input(k) => format!("input {k}"),
            BufKind::Output(k) => format!("output {k}"),
            BufKind::Temp => "temp".to_string(),
        };
        let per_step = match b.step_len {
            Some(n) => format!(" {n}/step"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "buffer %{i} {:?} {kind} [{}]{per_step}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufId, ConstId, Strategy};

    /// A statement's line is the line the program's text gives it (PTX comments use it).
    #[test]
    fn print_stmt_is_the_statements_line_in_the_program() {
        let v = |dims: &[usize]| View::whole(BufId(0), dims);
        let stmts = [
            Stmt::MatMul {
                out: v(&[2, 3]),
                a: v(&[2, 4]),
                w: Weight::Const(ConstId(0), Strategy::SparseCsr),
                rows_per_step: Some(2),
            },
            Stmt::Unary {
                op: crate::Act::Tanh,
                out: v(&[3]),
                x: v(&[3]),
            },
            Stmt::Clip {
                out: v(&[3]),
                x: v(&[3]),
                min: -1.0,
                max: 2.5,
            },
            Stmt::Softmax {
                out: v(&[3]),
                x: v(&[3]),
                log: true,
            },
            Stmt::Barrier,
        ];
        for s in stmts {
            let p = Program {
                body: vec![s.clone()],
                ..Default::default()
            };
            let text = print(&p);
            let last = text.lines().rev().find(|l| !l.is_empty()).unwrap();
            assert_eq!(print_stmt(&s), last.trim());
        }
    }
}
