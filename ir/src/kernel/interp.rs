//! A plain interpreter for the kernel IR: checks lowering against the graph interpreter, and is
//! the reference the code generators are compared with statement by statement.

use super::{Program, Stmt, Storage, View, Weight};
use crate::interp::kernels::check_size;

/// Runs a program on f32 inputs (flat, row-major, in the program's input order); returns the
/// outputs flat.
pub fn run(p: &Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, String> {
    if inputs.len() != p.inputs.len() {
        return Err(format!(
            "expected {} inputs, got {}",
            p.inputs.len(),
            inputs.len()
        ));
    }
    let mut bufs: Vec<Vec<f32>> = Vec::with_capacity(p.buffers.len());
    for b in &p.buffers {
        check_size(&b.dims)?;
        bufs.push(vec![0.0; b.len()]);
    }
    for (k, (&id, data)) in p.inputs.iter().zip(inputs).enumerate() {
        if data.len() != bufs[id.0].len() {
            return Err(format!(
                "input {k} has {} elements, expected {}",
                data.len(),
                bufs[id.0].len()
            ));
        }
        bufs[id.0].copy_from_slice(data);
    }
    exec(p, &p.body, &mut bufs, 0)?;
    Ok(p.outputs.iter().map(|b| bufs[b.0].clone()).collect())
}

/// Flat element offsets of a view at step t, in row-major order of its dims.
fn offsets(v: &View, t: usize) -> Vec<isize> {
    let base = v.offset + v.step_stride * t as isize;
    let n: usize = v.dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; v.dims.len()];
    for _ in 0..n {
        out.push(
            base + idx
                .iter()
                .zip(&v.strides)
                .map(|(i, s)| *i as isize * s)
                .sum::<isize>(),
        );
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < v.dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn read(p: &Program, bufs: &[Vec<f32>], v: &View, t: usize) -> Result<Vec<f32>, String> {
    let data: &[f32] = match v.storage {
        Storage::Buf(b) => &bufs[b.0],
        Storage::Const(c) => &p.consts[c.0].data,
    };
    offsets(v, t)
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
    let r = dims.len();
    if v.dims.len() > r {
        return Err(format!("cannot broadcast {:?} to {dims:?}", v.dims));
    }
    let pad = r - v.dims.len();
    let mut bv = View {
        dims: dims.to_vec(),
        strides: vec![0; r],
        ..v.clone()
    };
    for d in 0..v.dims.len() {
        let target = dims[pad + d];
        if v.dims[d] == target {
            bv.strides[pad + d] = v.strides[d];
        } else if v.dims[d] != 1 {
            return Err(format!("cannot broadcast {:?} to {dims:?}", v.dims));
        }
    }
    read(p, bufs, &bv, t)
}

fn write(bufs: &mut [Vec<f32>], v: &View, t: usize, vals: &[f32]) -> Result<(), String> {
    let Storage::Buf(b) = v.storage else {
        return Err("a write to a constant".into());
    };
    let len = bufs[b.0].len();
    for (o, x) in offsets(v, t).into_iter().zip(vals) {
        let o = usize::try_from(o)
            .ok()
            .filter(|o| *o < len)
            .ok_or_else(|| format!("a write at {o} is outside its buffer of {len}"))?;
        bufs[b.0][o] = *x;
    }
    Ok(())
}

fn exec(p: &Program, body: &[Stmt], bufs: &mut Vec<Vec<f32>>, t: usize) -> Result<(), String> {
    for s in body {
        match s {
            Stmt::MatMul { out, a, w } => {
                let (m, k, n) = (out.dims[0], a.dims[1], out.dims[1]);
                let av = read(p, bufs, a, t)?;
                let wv = match w {
                    Weight::Const(c, _) => p.consts[c.0].data.as_ref().clone(),
                    Weight::View(v) => read(p, bufs, v, t)?,
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
                body,
            } => {
                for i in 0..*trip {
                    let step = if *reverse { trip - 1 - i } else { i };
                    exec(p, body, bufs, step)?;
                }
            }
        }
    }
    Ok(())
}
