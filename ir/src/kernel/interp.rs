//! A plain interpreter for the kernel IR: checks lowering against the graph interpreter, and is
//! the reference the code generators are compared with statement by statement.

use super::verify::bcast_strides;
use super::{LoopRun, Program, Stmt, Storage, View, Weight};
use crate::interp::kernels::check_size;

/// Runs a program on f32 inputs (flat, row-major, in the program's input order); returns the
/// outputs flat. A program with a run-time sequence length runs its longest one.
pub fn run(p: &Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, String> {
    Machine::new(p)?.run(p, inputs, None, false)
}

/// A program's buffers kept between calls, so that a call can resume the sequence where the
/// previous one stopped (the streaming step API).
pub struct Machine {
    bufs: Vec<Vec<f32>>,
}

impl Machine {
    pub fn new(p: &Program) -> Result<Machine, String> {
        let mut bufs: Vec<Vec<f32>> = Vec::with_capacity(p.buffers.len());
        for b in &p.buffers {
            check_size(&b.dims)?;
            bufs.push(vec![0.0; b.len()]);
        }
        Ok(Machine { bufs })
    }

    /// Runs `steps` time steps (None: the longest the program takes), on inputs of that many
    /// steps ([`Program::len_for_steps`]); with `resume`, the sequence continues from the
    /// state the previous call left ([`Stmt::Start`] blocks are skipped).
    pub fn run(
        &mut self,
        p: &Program,
        inputs: &[&[f32]],
        steps: Option<usize>,
        resume: bool,
    ) -> Result<Vec<Vec<f32>>, String> {
        let steps = p.check_steps(steps)?;
        let loop_steps = p.loop_steps(inputs, steps)?;
        if resume && !p.streamable() {
            return Err("this program cannot resume a sequence (see Program::streamable)".into());
        }
        if inputs.len() != p.inputs.len() {
            return Err(format!(
                "expected {} inputs, got {}",
                p.inputs.len(),
                inputs.len()
            ));
        }
        let bufs = &mut self.bufs;
        for (k, (&id, data)) in p.inputs.iter().zip(inputs).enumerate() {
            let want = p.len_for_steps(id, steps);
            if data.len() != want {
                return Err(format!(
                    "input {k} has {} elements, expected {want}",
                    data.len()
                ));
            }
            bufs[id.0][..want].copy_from_slice(data);
        }
        let cx = Run {
            p,
            steps: loop_steps,
            resume,
        };
        cx.exec(&p.body, bufs, 0)?;
        Ok(p.outputs
            .iter()
            .map(|b| bufs[b.0][..p.len_for_steps(*b, steps)].to_vec())
            .collect())
    }
}

/// A view with its first dim cut to `rows`.
fn rows_of(v: &View, rows: usize) -> View {
    let mut v = v.clone();
    if let Some(d) = v.dims.first_mut() {
        *d = rows;
    }
    v
}

fn read(p: &Program, bufs: &[Vec<f32>], v: &View, t: usize) -> Result<Vec<f32>, String> {
    let data: &[f32] = match v.storage {
        Storage::Buf(b) => &bufs[b.0],
        Storage::Const(c) => &p.consts[c.0].data,
    };
    v.offsets(t)
        .into_iter()
        .map(|o| {
            usize::try_from(o)
                .ok()
                .and_then(|o| data.get(o).copied())
                .ok_or_else(|| format!("a read at {o} is outside its storage of {}", data.len()))
        })
        .collect()
}

/// A view's elements broadcast to `dims` (its own dims must broadcast to them).
fn read_as(
    p: &Program,
    bufs: &[Vec<f32>],
    v: &View,
    dims: &[usize],
    t: usize,
) -> Result<Vec<f32>, String> {
    if v.dims == dims {
        return read(p, bufs, v, t);
    }
    let bv = View {
        dims: dims.to_vec(),
        strides: bcast_strides(v, dims)?,
        ..v.clone()
    };
    read(p, bufs, &bv, t)
}

fn write(bufs: &mut [Vec<f32>], v: &View, t: usize, vals: &[f32]) -> Result<(), String> {
    let Storage::Buf(b) = v.storage else {
        return Err("a write to a constant".into());
    };
    let len = bufs[b.0].len();
    for (o, x) in v.offsets(t).into_iter().zip(vals) {
        let o = usize::try_from(o)
            .ok()
            .filter(|o| *o < len)
            .ok_or_else(|| format!("a write at {o} is outside its buffer of {len}"))?;
        bufs[b.0][o] = *x;
    }
    Ok(())
}

/// One call's parameters.
struct Run<'a> {
    p: &'a Program,
    steps: usize,
    resume: bool,
}

impl Run<'_> {
    fn exec(&self, body: &[Stmt], bufs: &mut Vec<Vec<f32>>, t: usize) -> Result<(), String> {
        let p = self.p;
        for s in body {
            match s {
                Stmt::MatMul {
                    out,
                    a,
                    w,
                    rows_per_step,
                } => {
                    let (out, a) = match rows_per_step {
                        Some(r) => (&rows_of(out, self.steps * r), &rows_of(a, self.steps * r)),
                        None => (out, a),
                    };
                    let (m, k, n) = (out.dims[0], a.dims[1], out.dims[1]);
                    let av = read(p, bufs, a, t)?;
                    let wv = match w {
                        Weight::Const(c, _) => p.consts[c.0].data.to_vec(),
                        Weight::View(v) => read(p, bufs, v, t)?,
                        Weight::Masked(v, c) => {
                            let mut w = read(p, bufs, v, t)?;
                            let pattern = &p.consts[c.0].data;
                            if pattern.len() != w.len() {
                                return Err(format!(
                                    "matmul pattern ${} has {} elements for a {:?} weight",
                                    c.0,
                                    pattern.len(),
                                    v.dims
                                ));
                            }
                            for (x, m) in w.iter_mut().zip(pattern.iter()) {
                                if *m == 0.0 {
                                    *x = 0.0;
                                }
                            }
                            w
                        }
                    };
                    if av.len() != m * k || wv.len() != k * n {
                        return Err(format!(
                            "matmul shapes {:?} x [{k},{n}] -> {:?}",
                            a.dims, out.dims
                        ));
                    }
                    let mut r = vec![0f32; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            let mut acc = 0f64;
                            for q in 0..k {
                                acc += av[i * k + q] as f64 * wv[q * n + j] as f64;
                            }
                            r[i * n + j] = acc as f32;
                        }
                    }
                    write(bufs, out, t, &r)?;
                }
                Stmt::Unary { op, out, x } => {
                    let xv = read_as(p, bufs, x, &out.dims, t)?;
                    let r: Vec<f32> = xv.iter().map(|v| op.apply(*v)).collect();
                    write(bufs, out, t, &r)?;
                }
                Stmt::Binary { op, out, a, b } => {
                    let (av, bv) = (
                        read_as(p, bufs, a, &out.dims, t)?,
                        read_as(p, bufs, b, &out.dims, t)?,
                    );
                    let r: Vec<f32> = av
                        .iter()
                        .zip(&bv)
                        .map(|(x, y)| match op {
                            crate::BinOp::Add => x + y,
                            crate::BinOp::Sub => x - y,
                            crate::BinOp::Mul => x * y,
                            crate::BinOp::Div => x / y,
                        })
                        .collect();
                    write(bufs, out, t, &r)?;
                }
                Stmt::Softmax { out, x, log } => {
                    // As the graph interpreter: the max in f32, the sum and the result in f64.
                    let mut r = read_as(p, bufs, x, &out.dims, t)?;
                    let n = out.dims.last().copied().unwrap_or(1).max(1);
                    for row in r.chunks_mut(n) {
                        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let sum: f64 = row.iter().map(|v| ((v - m) as f64).exp()).sum();
                        let ls = sum.ln();
                        for v in row.iter_mut() {
                            let d = (*v - m) as f64;
                            *v = if *log {
                                (d - ls) as f32
                            } else {
                                (d.exp() / sum) as f32
                            };
                        }
                    }
                    write(bufs, out, t, &r)?;
                }
                Stmt::Clip { out, x, min, max } => {
                    let xv = read_as(p, bufs, x, &out.dims, t)?;
                    let r: Vec<f32> = xv
                        .iter()
                        .map(|v| {
                            if *v < *min {
                                *min
                            } else if *v > *max {
                                *max
                            } else {
                                *v
                            }
                        })
                        .collect();
                    write(bufs, out, t, &r)?;
                }
                Stmt::Copy { out, x } => {
                    let xv = read_as(p, bufs, x, &out.dims, t)?;
                    write(bufs, out, t, &xv)?;
                }
                Stmt::Loop {
                    trip,
                    reverse,
                    run,
                    body,
                } => {
                    let count = match run {
                        LoopRun::Fixed => *trip,
                        LoopRun::Steps => self.steps,
                        LoopRun::LastStep => {
                            self.exec(body, bufs, self.steps - 1)?;
                            continue;
                        }
                    };
                    for i in 0..count {
                        let step = if *reverse { count - 1 - i } else { i };
                        self.exec(body, bufs, step)?;
                    }
                }
                Stmt::Barrier => {}
                Stmt::Start { body } => {
                    if !self.resume {
                        self.exec(body, bufs, t)?;
                    }
                }
            }
        }
        Ok(())
    }
}
