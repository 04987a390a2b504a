//! View arithmetic for the lowering: every layout op (reshape, transpose, slice, broadcast,
//! reverse) becomes new offsets and strides over the same storage, and elementwise statements get
//! their dims merged where every operand allows it.

use hlstm_ir::kernel::{View, row_major_strides};

/// A hashable identity of a view (for memo tables).
pub type ViewKey = (
    hlstm_ir::kernel::Storage,
    isize,
    Vec<usize>,
    Vec<isize>,
    isize,
);

pub fn key(v: &View) -> ViewKey {
    (
        v.storage,
        v.offset,
        v.dims.clone(),
        v.strides.clone(),
        v.step_stride,
    )
}

/// Whether the view is row-major contiguous within one step (dims of size 1 may have any
/// stride).
pub fn is_contiguous(v: &View) -> bool {
    if v.dims.contains(&0) {
        return true;
    }
    let mut acc = 1isize;
    for d in (0..v.dims.len()).rev() {
        if v.dims[d] == 1 {
            continue;
        }
        if v.strides[d] != acc {
            return false;
        }
        acc *= v.dims[d] as isize;
    }
    true
}

/// The same elements in row-major order under new dims, without copying, when the strides allow
/// it (numpy's no-copy reshape); `None` when a copy is needed.
pub fn reshape(v: &View, new_dims: &[usize]) -> Option<View> {
    let total: usize = v.dims.iter().product();
    if new_dims.iter().product::<usize>() != total {
        return None;
    }
    let with = |strides: Vec<isize>| View {
        dims: new_dims.to_vec(),
        strides,
        ..v.clone()
    };
    if total == 0 || is_contiguous(v) {
        return Some(with(row_major_strides(new_dims)));
    }
    // Old dims without the size-1 ones.
    let (od, os): (Vec<usize>, Vec<isize>) = v
        .dims
        .iter()
        .zip(&v.strides)
        .filter(|(d, _)| **d != 1)
        .map(|(d, s)| (*d, *s))
        .unzip();
    let nd = new_dims;
    let mut ns = vec![0isize; nd.len()];
    let (mut oi, mut oj, mut ni, mut nj) = (0usize, 1usize, 0usize, 1usize);
    while ni < nd.len() && oi < od.len() {
        let mut np = nd[ni];
        let mut op = od[oi];
        while np != op {
            if np < op {
                np *= *nd.get(nj)?;
                nj += 1;
            } else {
                op *= *od.get(oj)?;
                oj += 1;
            }
        }
        for ok in oi..oj - 1 {
            if os[ok] != od[ok + 1] as isize * os[ok + 1] {
                return None;
            }
        }
        ns[nj - 1] = os[oj - 1];
        for nk in (ni + 1..nj).rev() {
            ns[nk - 1] = ns[nk] * nd[nk] as isize;
        }
        ni = nj;
        nj += 1;
        oi = oj;
        oj += 1;
    }
    // Trailing dims of size 1: any stride; take the natural one.
    let last = if ni > 0 { ns[ni - 1] } else { 1 };
    for s in ns.iter_mut().skip(ni) {
        *s = last;
    }
    Some(with(ns))
}

/// Axes permuted: result axis i is axis `perm[i]` of `v`.
pub fn permute(v: &View, perm: &[usize]) -> View {
    View {
        dims: perm.iter().map(|&p| v.dims[p]).collect(),
        strides: perm.iter().map(|&p| v.strides[p]).collect(),
        ..v.clone()
    }
}

/// `len` elements along `axis`, from `start`, every `step` (negative steps walk backwards).
pub fn slice_axis(v: &View, axis: usize, start: usize, len: usize, step: isize) -> View {
    let mut r = v.clone();
    if len > 0 {
        r.offset += start as isize * v.strides[axis];
    }
    r.dims[axis] = len;
    r.strides[axis] = v.strides[axis] * step;
    r
}

/// Element `i` along `axis`, the axis removed.
pub fn index_axis(v: &View, axis: usize, i: usize) -> View {
    let mut r = v.clone();
    r.offset += i as isize * v.strides[axis];
    r.dims.remove(axis);
    r.strides.remove(axis);
    r
}

/// The order along `axis` reversed.
pub fn reverse_axis(v: &View, axis: usize) -> View {
    let mut r = v.clone();
    if v.dims[axis] > 0 {
        r.offset += (v.dims[axis] as isize - 1) * v.strides[axis];
    }
    r.strides[axis] = -v.strides[axis];
    r
}

/// Broadcast to `dims` by numpy's rules (right-aligned; a dim of 1 repeats with stride 0).
pub fn broadcast_to(v: &View, dims: &[usize]) -> Result<View, String> {
    let r = dims.len();
    if v.dims.len() > r {
        return Err(format!(
            "cannot broadcast {} to {}",
            hlstm_ir::dims_text(&v.dims),
            hlstm_ir::dims_text(dims)
        ));
    }
    let pad = r - v.dims.len();
    let mut strides = vec![0isize; r];
    for d in 0..v.dims.len() {
        let t = dims[pad + d];
        if v.dims[d] == t {
            strides[pad + d] = if t == 1 { 0 } else { v.strides[d] };
        } else if v.dims[d] != 1 {
            return Err(format!(
                "cannot broadcast {} to {}",
                hlstm_ir::dims_text(&v.dims),
                hlstm_ir::dims_text(dims)
            ));
        }
    }
    Ok(View {
        dims: dims.to_vec(),
        strides,
        ..v.clone()
    })
}

/// Merges the dims of views of equal dims (an elementwise statement's operands): dims of size 1
/// go, and neighbouring dims merge where every view steps through them as one. At least one dim
/// is kept.
pub fn coalesce(views: &mut [&mut View]) {
    let dims = views[0].dims.clone();
    if dims.contains(&0) || views.iter().any(|v| v.dims != dims) {
        return;
    }
    let mut nd: Vec<usize> = Vec::new();
    let mut ns: Vec<Vec<isize>> = vec![Vec::new(); views.len()];
    for d in 0..dims.len() {
        if dims[d] == 1 {
            continue;
        }
        let merge = !nd.is_empty()
            && views.iter().zip(&ns).all(|(v, s)| {
                *s.last().expect("a previous dim") == v.strides[d] * dims[d] as isize
            });
        if merge {
            *nd.last_mut().expect("a previous dim") *= dims[d];
            for (v, s) in views.iter().zip(ns.iter_mut()) {
                *s.last_mut().expect("a previous dim") = v.strides[d];
            }
        } else {
            nd.push(dims[d]);
            for (v, s) in views.iter().zip(ns.iter_mut()) {
                s.push(v.strides[d]);
            }
        }
    }
    if nd.is_empty() {
        nd.push(1);
        for s in ns.iter_mut() {
            s.push(1);
        }
    }
    for (v, s) in views.iter_mut().zip(ns) {
        v.dims = nd.clone();
        v.strides = s;
    }
}

/// Flat element offsets of a view (at step 0), in row-major order of its dims.
pub fn offsets(v: &View) -> Vec<isize> {
    let n: usize = v.dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; v.dims.len()];
    for _ in 0..n {
        out.push(
            v.offset
                + idx
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

#[cfg(test)]
mod tests {
    use super::*;
    use hlstm_ir::kernel::BufId;

    fn elems(v: &View) -> Vec<isize> {
        offsets(v)
    }

    #[test]
    fn reshape_keeps_order() {
        let v = View::whole(BufId(0), &[2, 3, 4]);
        // A transposed view cannot merge its swapped axes...
        let t = permute(&v, &[0, 2, 1]);
        assert!(reshape(&t, &[2, 12]).is_none());
        // ...but may split and merge the untouched ones.
        let r = reshape(&t, &[2, 2, 2, 3]).expect("split");
        assert_eq!(elems(&r), elems(&t));
        // A slice of rows reshapes to [rows * cols].
        let s = slice_axis(&View::whole(BufId(0), &[4, 8]), 1, 2, 4, 1);
        assert!(reshape(&s, &[16]).is_none());
        let s = slice_axis(&View::whole(BufId(0), &[4, 8]), 0, 1, 2, 1);
        let r = reshape(&s, &[1, 2, 1, 8, 1]).expect("contiguous");
        assert_eq!(elems(&r), elems(&s));
        // Unit axes inserted into a strided view.
        let col = slice_axis(&View::whole(BufId(0), &[4, 8]), 1, 3, 1, 1);
        let r = reshape(&col, &[1, 4, 1]).expect("unit axes");
        assert_eq!(elems(&r), elems(&col));
        // Rows of 24 with gaps between them: the inner dims merge, the outer ones do not.
        let st = View {
            strides: vec![48, 6, 1],
            dims: vec![2, 4, 6],
            ..v.clone()
        };
        let r = reshape(&st, &[2, 24]).expect("merge inner");
        assert_eq!(elems(&r), elems(&st));
        let r = reshape(&st, &[2, 2, 12]).expect("split and merge");
        assert_eq!(elems(&r), elems(&st));
        assert!(reshape(&st, &[8, 6]).is_none());
    }

    #[test]
    fn coalesce_merges_common_runs() {
        let mut a = View::whole(BufId(0), &[2, 1, 3, 4]);
        let mut b = broadcast_to(&View::whole(BufId(1), &[4]), &[2, 1, 3, 4]).unwrap();
        let (ea, eb) = (elems(&a), elems(&b));
        coalesce(&mut [&mut a, &mut b]);
        assert_eq!((elems(&a), elems(&b)), (ea, eb));
        assert_eq!(a.dims, vec![6, 4]);
        let mut c = View::whole(BufId(0), &[1, 1]);
        coalesce(&mut [&mut c]);
        assert_eq!((c.dims, c.strides), (vec![1], vec![1]));
    }

    #[test]
    fn reverse_and_broadcast() {
        let v = View::whole(BufId(0), &[3, 2]);
        assert_eq!(elems(&reverse_axis(&v, 0)), vec![4, 5, 2, 3, 0, 1]);
        let b = broadcast_to(&View::whole(BufId(0), &[2]), &[3, 2]).unwrap();
        assert_eq!(elems(&b), vec![0, 1, 0, 1, 0, 1]);
        assert!(broadcast_to(&v, &[3, 3]).is_err());
    }
}
