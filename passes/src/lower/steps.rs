//! The sequence length as a run-time argument: after lowering, decides whether a program's
//! statements allow any number of steps up to the static one, and if so rewrites it so that
//! they take `steps` at run time (`Program::max_steps`, `LoopRun`).
//!
//! The analysis works on the kernel IR, whatever the model's form (an LSTM op, a Scan, a
//! re-rolled unrolled export), so a program qualifies when:
//!
//! - its top-level loops (the time loops) all run the same trip T and contain no loop;
//! - every buffer a time loop addresses by step (`step_stride` s != 0) is laid out step after
//!   step: each step's view lies within its own row [t s, (t+1) s) and the buffer holds T rows
//!   (its "time stride" is s); inside a loop it is never read at a fixed step;
//! - every statement outside the loops that touches such a buffer either works row by row
//!   over all T steps alike (its first dim splits into T blocks of r rows, each block touching
//!   one step of every time buffer and the same data of everything else: elementwise statements
//!   become a loop over the steps, matmuls get `rows_per_step`), or touches only the last step
//!   (the last output of a sequence: a loop that runs once at t = steps - 1), or only the first.
//!   A time stride found on one operand carries to the others (the input a hoisted projection
//!   reads, the copies that stack outputs), until nothing changes.
//!
//! Anything else (batch-first layouts, where the time axis is not outermost; per-step
//! constants; sequence lengths shorter than the time axis; a step read at a fixed index) keeps
//! the sequence length static, and `static_steps_reason` says why.

use hlstm_ir::kernel::{BufId, LoopRun, Program, Stmt, Storage, View};
use std::collections::HashMap;

/// Rewrites `p` to take its sequence length at run time when it can (see the module doc);
/// otherwise records why not in `p.static_steps_reason`.
pub fn dynamic_steps(p: &mut Program) {
    match plan(p) {
        Ok(plan) => apply(p, plan),
        Err(why) => {
            p.max_steps = None;
            p.static_steps_reason = Some(why);
        }
    }
}

/// What the analysis found.
struct Plan {
    trip: usize,
    /// Time stride (elements per step) of each time buffer.
    stride: HashMap<BufId, usize>,
    /// Per top-level statement (and per statement of a `Start` block, in order), how it runs.
    modes: Vec<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Runs as it is (touches no time buffer, or only the first step).
    Fixed,
    /// Row blocks of r rows per step.
    Rows(usize),
    /// Touches only the last step.
    Last,
}

/// How one view relates to a buffer with time stride s.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    Rows(usize),
    First,
    Last,
}

/// The largest offset a view reaches past its start, or None with a negative stride.
fn extent(v: &View) -> Option<isize> {
    let mut hi = 0isize;
    for (d, s) in v.dims.iter().zip(&v.strides) {
        if *s < 0 {
            return None;
        }
        hi += (*d as isize - 1).max(0) * s;
    }
    Some(hi)
}

/// How a view outside the loops touches a buffer with time stride `s` over `trip` steps.
fn access(v: &View, s: usize, trip: usize) -> Option<Access> {
    let s = s as isize;
    let hi = v.offset + extent(v)?;
    if v.offset >= 0 && hi < s {
        return Some(Access::First);
    }
    if v.offset >= (trip as isize - 1) * s && hi < trip as isize * s {
        return Some(Access::Last);
    }
    let (&n0, &d) = (v.dims.first()?, v.strides.first()?);
    if d <= 0 || s % d != 0 {
        return None;
    }
    let r = (s / d) as usize;
    let mut inner = v.clone();
    inner.dims[0] = 1;
    let inner_hi = v.offset + extent(&inner)?;
    (n0 == trip * r && v.offset >= 0 && inner_hi < d).then_some(Access::Rows(r))
}

fn views(st: &Stmt) -> Vec<&View> {
    st.output().into_iter().chain(st.inputs()).collect()
}

/// The statements outside the time loops, in order (a `Start` block's statements inline).
fn outside(p: &Program) -> Vec<&Stmt> {
    let mut out = Vec::new();
    for s in &p.body {
        match s {
            Stmt::Loop { .. } => {}
            Stmt::Start { body } => out.extend(body.iter()),
            s => out.push(s),
        }
    }
    out
}

fn buf(v: &View) -> Option<BufId> {
    match v.storage {
        Storage::Buf(b) => Some(b),
        Storage::Const(_) => None,
    }
}

fn plan(p: &Program) -> Result<Plan, String> {
    let mut trip = None;
    let mut stride: HashMap<BufId, usize> = HashMap::new();
    let mut fixed_in_loop: Vec<BufId> = Vec::new();
    for s in &p.body {
        let Stmt::Loop { trip: t, body, .. } = s else {
            continue;
        };
        if *trip.get_or_insert(*t) != *t {
            return Err("its time loops run different numbers of steps".into());
        }
        for st in body {
            if matches!(st, Stmt::Loop { .. } | Stmt::Start { .. }) {
                return Err("a loop inside the time loop".into());
            }
            for v in views(st) {
                if v.step_stride == 0 {
                    fixed_in_loop.extend(buf(v));
                    continue;
                }
                let Some(b) = buf(v) else {
                    return Err("a constant read step by step (a per-step table)".into());
                };
                let s = usize::try_from(v.step_stride)
                    .map_err(|_| "a view that steps backwards".to_string())?;
                let hi = extent(v).ok_or("a view with a negative stride")?;
                if v.offset < 0 || v.offset + hi >= s as isize {
                    return Err(format!(
                        "buffer '{}' is read or written across steps",
                        p.buffers[b.0].name
                    ));
                }
                if *stride.entry(b).or_insert(s) != s {
                    return Err(format!(
                        "buffer '{}' is addressed with two step strides",
                        p.buffers[b.0].name
                    ));
                }
            }
        }
    }
    let trip = trip.ok_or("no time loop")?;
    let stmts = outside(p);
    // Carry time strides through row-wise statements until nothing changes.
    loop {
        let mut learned = false;
        for st in &stmts {
            let Some(Mode::Rows(r)) = mode(st, &stride, trip, false).ok() else {
                continue;
            };
            for v in row_views(st) {
                let (Some(b), Some(&d)) = (buf(v), v.strides.first()) else {
                    continue;
                };
                let s = r * d.max(0) as usize;
                if d > 0 && !stride.contains_key(&b) && access(v, s, trip) == Some(Access::Rows(r))
                {
                    stride.insert(b, s);
                    learned = true;
                }
            }
        }
        if !learned {
            break;
        }
    }
    for (b, s) in &stride {
        let buffer = &p.buffers[b.0];
        if buffer.len() != trip * s {
            return Err(format!(
                "buffer '{}' holds {} elements, not {trip} steps of {s} (sequence lengths \
                 shorter than the time axis, or a layout with time not outermost)",
                buffer.name,
                buffer.len()
            ));
        }
        if fixed_in_loop.contains(b) {
            return Err(format!(
                "buffer '{}' is read at a fixed step inside the loop",
                buffer.name
            ));
        }
    }
    let modes = stmts
        .iter()
        .map(|st| mode(st, &stride, trip, true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        trip,
        stride,
        modes,
    })
}

/// The views whose first dim is the statement's row dim (a matmul's weight is not).
fn row_views(st: &Stmt) -> Vec<&View> {
    match st {
        Stmt::MatMul { out, a, .. } => vec![out, a],
        _ => views(st),
    }
}

/// How a statement outside the loops runs, given the time strides known so far; `strict`
/// once they are all known (then per-row data that is not laid out by step is an error).
fn mode(
    st: &Stmt,
    stride: &HashMap<BufId, usize>,
    trip: usize,
    strict: bool,
) -> Result<Mode, String> {
    let rank = row_views(st).first().map_or(0, |o| o.dims.len());
    let mut found: Option<Mode> = None;
    for v in views(st) {
        let Some(s) = buf(v).and_then(|b| stride.get(&b)) else {
            continue;
        };
        let m = match access(v, *s, trip) {
            Some(Access::Rows(r)) if v.dims.len() == rank => Mode::Rows(r),
            Some(Access::First) => Mode::Fixed,
            Some(Access::Last) => Mode::Last,
            _ => {
                return Err(format!(
                    "a statement reads or writes steps unevenly: {st:?}"
                ));
            }
        };
        match found {
            None => found = Some(m),
            Some(f) if f == m => {}
            // A block of rows that is also the only step (trip 1, or r rows of one step).
            Some(_) => return Err(format!("a statement mixes steps: {st:?}")),
        }
    }
    let m = found.unwrap_or(Mode::Fixed);
    if let Mode::Rows(r) = m {
        // Everything else must be the same for every block: broadcast along the rows, or a
        // buffer that becomes a time buffer through this statement (checked by the caller).
        for v in row_views(st) {
            let time = buf(v).is_some_and(|b| stride.contains_key(&b));
            if time || v.dims.len() < rank || v.dims[0] == 1 || v.strides[0] == 0 {
                continue;
            }
            if buf(v).is_none() || v.dims[0] != trip * r {
                return Err(format!(
                    "a statement reads per-step data of another shape: {st:?}"
                ));
            }
            if strict {
                let name = match v.storage {
                    Storage::Buf(b) => b.0.to_string(),
                    Storage::Const(c) => format!("${}", c.0),
                };
                return Err(format!(
                    "buffer %{name} is read per step with the time axis not outermost (a \
                     batch-first layout)"
                ));
            }
        }
        if let Stmt::MatMul { w, .. } = st
            && let Some(w) = w.view()
            && buf(w).is_some_and(|b| stride.contains_key(&b))
        {
            return Err("a matmul whose weight changes per step".into());
        }
    }
    Ok(m)
}

fn apply(p: &mut Program, plan: Plan) {
    let Plan {
        trip,
        stride,
        modes,
    } = plan;
    let mut modes = modes.into_iter();
    let rewrite = |st: Stmt, mode: Mode| -> Stmt { rewrite(st, mode, &stride, trip) };
    let body = std::mem::take(&mut p.body);
    for st in body {
        let st = match st {
            Stmt::Loop {
                trip,
                reverse,
                body,
                ..
            } => Stmt::Loop {
                trip,
                reverse,
                run: LoopRun::Steps,
                body,
            },
            Stmt::Start { body } => Stmt::Start {
                body: body
                    .into_iter()
                    .map(|s| rewrite(s, modes.next().unwrap_or(Mode::Fixed)))
                    .collect(),
            },
            s => rewrite(s, modes.next().unwrap_or(Mode::Fixed)),
        };
        p.body.push(st);
    }
    for (b, s) in &stride {
        p.buffers[b.0].step_len = Some(*s);
    }
    p.max_steps = Some(trip);
    p.static_steps_reason = None;
}

/// One statement outside the loops, rewritten for its mode.
fn rewrite(st: Stmt, mode: Mode, stride: &HashMap<BufId, usize>, trip: usize) -> Stmt {
    let time = |v: &View| buf(v).and_then(|b| stride.get(&b).copied());
    match mode {
        Mode::Fixed => st,
        Mode::Rows(r) => {
            if let Stmt::MatMul { out, a, w, .. } = st {
                return Stmt::MatMul {
                    out,
                    a,
                    w,
                    rows_per_step: Some(r),
                };
            }
            let mut st = st;
            let rank = row_views(&st).first().map_or(0, |o| o.dims.len());
            hlstm_ir::kernel::visit::views_mut(std::slice::from_mut(&mut st), &mut |v| {
                if time(v).is_some() {
                    v.step_stride = r as isize * v.strides[0];
                    v.dims[0] = r;
                } else if v.dims.len() == rank && v.dims[0] == trip * r {
                    // Broadcast along the rows (stride 0): the same for every block.
                    v.dims[0] = r;
                }
            });
            Stmt::Loop {
                trip,
                reverse: false,
                run: LoopRun::Steps,
                body: vec![st],
            }
        }
        Mode::Last => {
            let mut st = st;
            hlstm_ir::kernel::visit::views_mut(std::slice::from_mut(&mut st), &mut |v| {
                if let Some(s) = time(v) {
                    v.offset -= (trip as isize - 1) * s as isize;
                    v.step_stride = s as isize;
                }
            });
            Stmt::Loop {
                trip,
                reverse: false,
                run: LoopRun::LastStep,
                body: vec![st],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlstm_ir::BinOp;
    use hlstm_ir::kernel::{BufKind, interp::Machine};

    fn view(b: BufId, offset: isize, dims: &[usize], step: isize) -> View {
        View {
            storage: Storage::Buf(b),
            offset,
            dims: dims.to_vec(),
            strides: hlstm_ir::kernel::row_major_strides(dims),
            step_stride: step,
        }
    }

    /// h_t = h_{t-1} + x_t (two lanes), Y[t] = h_t, and `last` = Y[T-1] read after the loop.
    fn running_sum(t: usize) -> Program {
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[t, 2]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[t, 2]);
        let last = p.add_buffer("last", BufKind::Output(1), &[2]);
        let h = p.add_buffer("h", BufKind::Temp, &[2]);
        let zero = p.add_const("zero", &[2], vec![0.0; 2]);
        p.inputs = vec![x];
        p.outputs = vec![y, last];
        p.body = vec![
            Stmt::Start {
                body: vec![Stmt::Copy {
                    out: view(h, 0, &[2], 0),
                    x: View::constant(zero, &[2]),
                }],
            },
            Stmt::Loop {
                trip: t,
                reverse: false,
                run: LoopRun::Fixed,
                body: vec![
                    Stmt::Binary {
                        op: BinOp::Add,
                        out: view(h, 0, &[2], 0),
                        a: view(h, 0, &[2], 0),
                        b: view(x, 0, &[2], 2),
                    },
                    Stmt::Copy {
                        out: view(y, 0, &[2], 2),
                        x: view(h, 0, &[2], 0),
                    },
                ],
            },
            Stmt::Copy {
                out: view(last, 0, &[2], 0),
                x: view(y, 2 * (t as isize - 1), &[2], 0),
            },
        ];
        p
    }

    #[test]
    fn a_read_of_the_last_step_follows_the_run_time_length() {
        let mut p = running_sum(4);
        dynamic_steps(&mut p);
        assert_eq!(p.max_steps, Some(4), "{:?}", p.static_steps_reason);
        assert!(matches!(
            p.body.last(),
            Some(Stmt::Loop {
                run: LoopRun::LastStep,
                ..
            })
        ));
        assert!(p.streamable());
        let x = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let out = Machine::new(&p)
            .unwrap()
            .run(&p, &[&x], Some(3), false)
            .unwrap();
        assert_eq!(out[0], vec![1.0, 10.0, 3.0, 30.0, 6.0, 60.0]);
        assert_eq!(out[1], vec![6.0, 60.0]);
        // Streaming: the state carries over, the last step is this call's step.
        let mut m = Machine::new(&p).unwrap();
        m.run(&p, &[&x[..2]], Some(1), false).unwrap();
        let out = m.run(&p, &[&x[2..4]], Some(1), true).unwrap();
        assert_eq!(out, vec![vec![3.0, 30.0], vec![3.0, 30.0]]);
        assert!(m.run(&p, &[&x[..2]], Some(5), false).is_err());
    }

    #[test]
    fn a_fixed_middle_step_or_a_per_step_constant_keeps_the_length_static() {
        // Y[1] read after the loop: neither the first nor the last step.
        let mut p = running_sum(4);
        if let Some(Stmt::Copy { x, .. }) = p.body.last_mut() {
            x.offset = 2;
        }
        dynamic_steps(&mut p);
        assert_eq!(p.max_steps, None);
        assert!(p.static_steps_reason.unwrap().contains("unevenly"));
        // A constant read step by step.
        let mut p = running_sum(4);
        let c = p.add_const("table", &[4, 2], vec![1.0; 8]);
        if let Some(Stmt::Loop { body, .. }) = p.body.get_mut(1) {
            body.push(Stmt::Copy {
                out: view(BufId(3), 0, &[2], 0),
                x: View {
                    step_stride: 2,
                    ..View::constant(c, &[2])
                },
            });
        }
        dynamic_steps(&mut p);
        assert!(p.static_steps_reason.unwrap().contains("per-step table"));
    }
}
