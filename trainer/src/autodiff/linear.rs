//! Gradient rules of the linear ops that need more than a line: numpy matmul with its 1-D and
//! batched forms, and the embedding lookup (gather along axis 0).

use crate::builder::{Builder, R};
use hlstm_ir::{Op, Value};

/// numpy matmul. A 1-D operand is treated as a matrix of one row (a) or one column (b). When
/// b is a matrix (a weight), 2-D gemms do the work and dB sums over a's batch axes for free.
pub(super) fn matmul(
    b: &mut Builder,
    a: Value,
    w: Value,
    g: Value,
    need: [bool; 2],
    tmp: &str,
) -> R<Vec<Option<Value>>> {
    let (da, dw) = (b.dims(a)?, b.dims(w)?);
    let a2d = if da.len() == 1 {
        vec![1, da[0]]
    } else {
        da.clone()
    };
    let w2d = if dw.len() == 1 {
        vec![dw[0], 1]
    } else {
        dw.clone()
    };
    let (k, n) = (w2d[w2d.len() - 2], w2d[w2d.len() - 1]);
    let mut out = vec![None, None];
    let a2 = b.reshape(tmp, a, &a2d)?;
    let w2 = b.reshape(tmp, w, &w2d)?;
    if w2d.len() == 2 {
        let m: usize = a2d[..a2d.len() - 1].iter().product();
        let g2 = b.reshape(tmp, g, &[m, n])?;
        if need[0] {
            let r = b.gemm(tmp, g2, w2, false, true)?;
            out[0] = Some(b.reshape(tmp, r, &da)?);
        }
        if need[1] {
            let a2 = b.reshape(tmp, a2, &[m, k])?;
            let r = b.gemm(tmp, a2, g2, true, false)?;
            out[1] = Some(b.reshape(tmp, r, &dw)?);
        }
        return Ok(out);
    }
    // Batched b: matmuls with the last two axes swapped, then sums over broadcast batch axes.
    // The result lost a's unit row axis when a is 1-D; put it back.
    let mut gd: Vec<usize> = b.dims(g)?;
    if da.len() == 1 {
        gd.insert(gd.len() - 1, 1);
    }
    let g2 = b.reshape(tmp, g, &gd)?;
    let swap = |r: usize| -> Vec<usize> {
        let mut p: Vec<usize> = (0..r).collect();
        p.swap(r - 1, r - 2);
        p
    };
    if need[0] {
        let wt = b.transpose(tmp, w2, &swap(w2d.len()))?;
        let r = b.op(tmp, Op::MatMul, &[g2, wt])?;
        let r = b.sum_to(tmp, r, &a2d)?;
        out[0] = Some(b.reshape(tmp, r, &da)?);
    }
    if need[1] {
        let at = b.transpose(tmp, a2, &swap(a2d.len()))?;
        let r = b.op(tmp, Op::MatMul, &[at, g2])?;
        let r = b.sum_to(tmp, r, &w2d)?;
        out[1] = Some(b.reshape(tmp, r, &dw)?);
    }
    Ok(out)
}

/// Gather along axis 0 (an embedding lookup): dx = onehot(idx)^T g, the scatter-add of the
/// rows of g, as a gemm with one-hot rows gathered from an identity.
pub(super) fn gather0(b: &mut Builder, x: Value, idx: Value, g: Value, tmp: &str) -> R<Value> {
    let xd = b.dims(x)?;
    let rows: usize = b.dims(idx)?.iter().product();
    let rest: usize = xd[1..].iter().product();
    let eye = b.eye(xd[0])?;
    let oh = b.op(tmp, Op::Gather { axis: 0 }, &[eye, idx])?;
    let oh = b.reshape(tmp, oh, &[rows, xd[0]])?;
    let g2 = b.reshape(tmp, g, &[rows, rest])?;
    let d = b.gemm(tmp, oh, g2, true, false)?;
    b.reshape(tmp, d, &xd)
}
