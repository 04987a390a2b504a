//! The `.kir` printer. Its output parses back ([`super::parse`]) to the same program.
//! Constants of at most [`INLINE_LIMIT`] elements print their data inline; larger ones print
//! a content hash (`sha256:...`, as in `.hir`), whose data [`print_with_weights`] collects.

use super::{BufKind, LoopRun, Program, Stmt, Storage, View, Weight};
use crate::Tensor;
use crate::text::{INLINE_LIMIT, WeightStore, fmt_f32, hex, tensor_hash};
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
        Stmt::Unary { op, out: o, x } => {
            let params = op.params();
            let params = if params.is_empty() {
                String::new()
            } else {
                let p: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", fmt_f32(*v)))
                    .collect();
                format!("{{{}}}", p.join(", "))
            };
            format!("{}{params} {} = {}", op.name(), view(o), view(x))
        }
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
                (LoopRun::LastStep, false) => format!("steps-1 (steps <= {trip})"),
                (LoopRun::LastStep, true) => format!("steps-1 (reverse, steps <= {trip})"),
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

/// Prints a program as `.kir` text. Constants larger than [`INLINE_LIMIT`] elements appear
/// by hash only, so such text parses back only with the store of [`print_with_weights`].
pub fn print(p: &Program) -> String {
    print_program(p, None)
}

/// Prints a program and collects the data of every constant printed by hash.
pub fn print_with_weights(p: &Program) -> (String, WeightStore) {
    let mut store = WeightStore::new();
    let text = print_program(p, Some(&mut store));
    (text, store)
}

fn axes(a: &[Option<usize>]) -> String {
    let a: Vec<String> = a
        .iter()
        .map(|x| x.map_or("-".to_string(), |k| k.to_string()))
        .collect();
    a.join(",")
}

fn print_program(p: &Program, mut store: Option<&mut WeightStore>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "program {:?}", p.name);
    match (p.max_steps, &p.static_steps_reason) {
        (Some(t), None) => {
            let _ = writeln!(out, "steps 1..={t}");
        }
        (Some(t), Some(why)) => {
            let _ = writeln!(out, "steps 1..={t} (static: {why})");
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
    if let Some(b) = &p.batch_axes {
        let _ = writeln!(
            out,
            "batch max {} inputs [{}] outputs [{}]",
            b.max,
            axes(&b.inputs),
            axes(&b.outputs)
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
        let data = if c.data.len() <= INLINE_LIMIT {
            let v: Vec<String> = c.data.iter().map(|v| fmt_f32(*v)).collect();
            format!("[{}]", v.join(", "))
        } else {
            let t = Tensor::from_f32(&c.dims, c.data.to_vec());
            match (t, store.as_deref_mut()) {
                (Some(t), Some(s)) => format!("sha256:{}", hex(&s.insert(t))),
                (Some(t), None) => format!("sha256:{}", hex(&tensor_hash(&t))),
                // Dims that disagree with the data (never made by the lowering).
                (None, _) => format!("<{} elements for these dims>", c.data.len()),
            }
        };
        let _ = writeln!(
            out,
            "const ${i} {:?} [{}] nnz {} {data}",
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
