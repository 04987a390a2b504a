//! Rows innermost (docs/kernels.md, "Rows innermost"): a target whose sparse kernels multiply
//! vectors of rows (the CPU's, from four rows: one nonzero weight broadcast into the rows of
//! its input column) wants each matrix such a product reads or writes stored column after
//! column, the rows of a column contiguous. Lowered row-major, every such product transposes
//! its input into scratch and its result back: at batch 16 a pruned H-LSTM spent a quarter of
//! its time in those transposes.
//!
//! This pass stores temporary buffers transposed instead. A buffer read as the `[M, K]`
//! operand of a sparse product of M >= `min_rows` rows (with M its whole row count), or written
//! as such a product's result, is a seed; every buffer linked to a seed through elementwise
//! statements follows it, so the gates' bias adds, activations and cell updates between the
//! products run on the transposed layout too. A buffer of `[R, C]` elements (C its last dim,
//! R the product of the others) stored transposed holds element (r, c) at `c * R + r`; every
//! view of it is rewritten to those offsets. Only temporaries change (the caller's inputs and
//! outputs keep their layout), and only where each of their views can be rewritten; where an
//! elementwise statement mixes the two layouts, its operands of the other layout are copied
//! (copies between the layouts are transposes, which code generation does by blocks).
//!
//! The statements compute the same values in the same order of operations, so results are the
//! same bits; `tests/rows_inner.rs` checks it through the kernel interpreter and the JIT.

use hlstm_ir::kernel::verify::{bcast_strides, overlap};
use hlstm_ir::kernel::{
    BufId, BufKind, Program, Stmt, Storage, Strategy, View, Weight, row_major_strides, visit,
};
use std::collections::HashMap;

/// How a transposed buffer's elements are arranged: `rows` x `cols` (its last dim), stored
/// column after column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    rows: usize,
    cols: usize,
}

/// Stores the temporaries that feed or receive sparse products of at least `min_rows` rows
/// transposed (see the module's documentation). Leaves the program as it was when no buffer
/// qualifies.
pub fn rows_innermost(p: &mut Program, min_rows: usize) {
    let grids = choose(p, min_rows);
    if grids.is_empty() {
        return;
    }
    let mut out = p.clone();
    let body = std::mem::take(&mut out.body);
    match rewrite_block(&mut out, &grids, body) {
        Some(body) => {
            out.body = body;
            for b in grids.keys() {
                // The rows of a step are no longer a contiguous run.
                out.buffers[b.0].step_len = None;
            }
            *p = out;
        }
        // `choose` only keeps buffers every view of which rewrites; a failure here is a bug
        // in it, and the row-major program is still correct.
        None => debug_assert!(false, "rows innermost: a chosen buffer did not rewrite"),
    }
}

/// Which buffers to store transposed, each with its grid.
fn choose(p: &Program, min_rows: usize) -> HashMap<BufId, Grid> {
    let mut grids: HashMap<BufId, Grid> = HashMap::new();
    for (i, b) in p.buffers.iter().enumerate() {
        let cols = b.dims.last().copied().unwrap_or(0);
        if b.kind != BufKind::Temp || p.seq_lens == Some(BufId(i)) || cols == 0 {
            continue;
        }
        let rows = b.len() / cols;
        if rows >= 2 {
            grids.insert(BufId(i), Grid { rows, cols });
        }
    }
    // Drop the buffers some statement cannot take transposed, until none is dropped: every
    // view of a remaining buffer then rewrites (a view that rewrites with more buffers
    // transposed rewrites with fewer, see `split_for`).
    let mut seeds;
    loop {
        let mut drop = Vec::new();
        seeds = Vec::new();
        visit::walk(&p.body, &mut |s, site| {
            check(s, site.trip, &grids, min_rows, &mut drop, &mut seeds)
        });
        if drop.is_empty() {
            break;
        }
        for b in drop {
            grids.remove(&b);
        }
    }
    // Keep the buffers linked to a seed through elementwise statements.
    let mut parent: HashMap<BufId, BufId> = grids.keys().map(|b| (*b, *b)).collect();
    fn find(parent: &mut HashMap<BufId, BufId>, b: BufId) -> BufId {
        let up = parent[&b];
        if up == b {
            return b;
        }
        let root = find(parent, up);
        parent.insert(b, root);
        root
    }
    visit::walk(&p.body, &mut |s, _| {
        if elementwise(s).is_none() {
            return;
        }
        let bufs: Vec<BufId> = s
            .output()
            .into_iter()
            .chain(s.inputs())
            .filter_map(|v| buf_of(v).filter(|b| parent.contains_key(b)))
            .collect();
        for w in bufs.windows(2) {
            let (x, y) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
            parent.insert(x, y);
        }
    });
    let seeded: Vec<BufId> = seeds
        .iter()
        .filter(|b| grids.contains_key(b))
        .map(|b| find(&mut parent, *b))
        .collect();
    let keep: Vec<BufId> = grids
        .keys()
        .copied()
        .filter(|b| seeded.contains(&find(&mut parent, *b)))
        .collect();
    keep.into_iter().map(|b| (b, grids[&b])).collect()
}

fn buf_of(v: &View) -> Option<BufId> {
    match v.storage {
        Storage::Buf(b) => Some(b),
        Storage::Const(_) => None,
    }
}

/// A statement's constraints on the transposed buffers: buffers it cannot take go to `drop`,
/// buffers a sparse product of vectors of rows reads or writes to `seeds`.
fn check(
    s: &Stmt,
    trip: usize,
    grids: &HashMap<BufId, Grid>,
    min_rows: usize,
    drop: &mut Vec<BufId>,
    seeds: &mut Vec<BufId>,
) {
    let grid_of = |v: &View| buf_of(v).and_then(|b| grids.get(&b).map(|g| (b, *g)));
    match s {
        Stmt::MatMul {
            out,
            a,
            w,
            rows_per_step,
        } => {
            let m = out.dims[0];
            let vectors = matches!(
                w,
                Weight::Const(_, Strategy::SparseUnrolled | Strategy::SparseCsr)
            ) && m >= min_rows
                && out.dims.len() == 2
                && a.dims.len() == 2
                && !overlap(out, a, trip);
            if let Some((b, g)) = grid_of(a) {
                // The kernels read the transposed operand at row stride M: all of the
                // buffer's rows, a whole number of columns.
                let fits = vectors
                    && rows_per_step.is_none()
                    && g.rows == m
                    && map_view(a, g).is_some_and(|v| v.strides == [1, m as isize]);
                if fits { &mut *seeds } else { &mut *drop }.push(b);
            }
            if let Some((b, g)) = grid_of(out) {
                // A product over all steps (the hoisted input projection) writes rows the
                // steps read a batch at a time: it is worth it with a batch of vectors.
                let fits = vectors
                    && rows_per_step.unwrap_or(m) >= min_rows
                    && map_view(out, g).is_some_and(|v| v.strides[0] == 1);
                if fits { &mut *seeds } else { &mut *drop }.push(b);
            }
            if let Some((b, _)) = w.view().and_then(grid_of) {
                drop.push(b);
            }
        }
        Stmt::Softmax { out, x, .. } => {
            drop.extend(grid_of(out).map(|x| x.0));
            drop.extend(grid_of(x).map(|x| x.0));
        }
        _ => {
            let Some(mut views) = elementwise(s).and_then(|v| broadcast(&v)) else {
                // Views that do not broadcast are the verifier's to report: leave them.
                drop.extend(
                    s.output()
                        .into_iter()
                        .chain(s.inputs())
                        .filter_map(|v| grid_of(v).map(|x| x.0)),
                );
                return;
            };
            let transposed: Vec<Option<Grid>> =
                views.iter().map(|v| grid_of(v).map(|x| x.1)).collect();
            let splits_ok = split_for(&mut views, &transposed);
            for (v, g) in views.iter().zip(&transposed) {
                if let Some(g) = g
                    && (!splits_ok || map_view(v, *g).is_none())
                {
                    drop.extend(buf_of(v));
                }
            }
        }
    }
}

/// An elementwise statement's views, the output first.
fn elementwise(s: &Stmt) -> Option<Vec<View>> {
    match s {
        Stmt::Unary { out, x, .. } | Stmt::Clip { out, x, .. } | Stmt::Copy { out, x } => {
            Some(vec![out.clone(), x.clone()])
        }
        Stmt::Binary { out, a, b, .. } => Some(vec![out.clone(), a.clone(), b.clone()]),
        _ => None,
    }
}

/// The views with the inputs broadcast to the output's dims (explicit zero strides).
fn broadcast(views: &[View]) -> Option<Vec<View>> {
    let dims = views[0].dims.clone();
    views
        .iter()
        .map(|v| {
            let strides = bcast_strides(v, &dims).ok()?;
            Some(View {
                dims: dims.clone(),
                strides,
                ..v.clone()
            })
        })
        .collect()
}

/// Splits dims of all `views` (which share dims) until every transposed one (`grids[i]` Some)
/// moves within a column or by whole columns in each dim: a dim that runs across the end of
/// a column becomes two, whole columns outside and the run within one inside. False when a
/// dim cannot be split so.
fn split_for(views: &mut [View], grids: &[Option<Grid>]) -> bool {
    'again: loop {
        for (v, g) in views.iter().zip(grids) {
            let Some(g) = g else { continue };
            let cols = g.cols as isize;
            let start = v.offset.rem_euclid(cols);
            for d in 0..v.dims.len() {
                let (n, s) = (v.dims[d], v.strides[d]);
                if n <= 1 || s <= 0 || s % cols == 0 || start + (n as isize - 1) * s < cols {
                    continue;
                }
                // The run crosses a column's end: split it at whole columns.
                if cols % s != 0 || start != 0 {
                    return false;
                }
                let inner = (cols / s) as usize;
                if inner <= 1 || n % inner != 0 {
                    return false;
                }
                for w in views.iter_mut() {
                    let st = w.strides[d];
                    w.dims.splice(d..=d, [n / inner, inner]);
                    w.strides.splice(d..=d, [st * inner as isize, st]);
                }
                continue 'again;
            }
        }
        return true;
    }
}

/// The view of a transposed buffer's elements under the transposed layout, when each of its
/// dims moves either within a column or by whole columns (and its steps by whole columns).
fn map_view(v: &View, g: Grid) -> Option<View> {
    let (rows, cols) = (g.rows as isize, g.cols as isize);
    if v.offset < 0 || v.step_stride % cols != 0 {
        return None;
    }
    let (r0, c0) = (v.offset / cols, v.offset % cols);
    let mut strides = Vec::with_capacity(v.dims.len());
    let mut col_end = c0;
    for (&n, &s) in v.dims.iter().zip(&v.strides) {
        if n <= 1 || s == 0 {
            strides.push(0);
        } else if s % cols == 0 {
            strides.push(s / cols);
        } else if s > 0 && s < cols {
            col_end += (n as isize - 1) * s;
            strides.push(s * rows);
        } else {
            return None;
        }
    }
    (col_end < cols).then(|| View {
        offset: c0 * rows + r0,
        strides,
        step_stride: v.step_stride / cols,
        ..v.clone()
    })
}

fn rewrite_block(
    p: &mut Program,
    grids: &HashMap<BufId, Grid>,
    body: Vec<Stmt>,
) -> Option<Vec<Stmt>> {
    let mut out = Vec::with_capacity(body.len());
    for s in body {
        match s {
            Stmt::Loop {
                trip,
                reverse,
                run,
                body,
            } => {
                let body = rewrite_block(p, grids, body)?;
                out.push(Stmt::Loop {
                    trip,
                    reverse,
                    run,
                    body,
                });
            }
            Stmt::Start { body } => {
                let body = rewrite_block(p, grids, body)?;
                out.push(Stmt::Start { body });
            }
            Stmt::MatMul {
                out: o,
                a,
                w,
                rows_per_step,
            } => {
                let map = |v: View| match buf_of(&v).and_then(|b| grids.get(&b)) {
                    Some(g) => map_view(&v, *g),
                    None => Some(v),
                };
                out.push(Stmt::MatMul {
                    out: map(o)?,
                    a: map(a)?,
                    w,
                    rows_per_step,
                });
            }
            s if elementwise(&s).is_some() => rewrite_elementwise(p, grids, s, &mut out)?,
            s => out.push(s),
        }
    }
    Some(out)
}

/// Rewrites an elementwise statement touching transposed buffers onto their layout, copying
/// operands whose layout is not the one most of its views have.
fn rewrite_elementwise(
    p: &mut Program,
    grids: &HashMap<BufId, Grid>,
    s: Stmt,
    out: &mut Vec<Stmt>,
) -> Option<()> {
    let views = elementwise(&s)?;
    let grid_of = |v: &View| buf_of(v).and_then(|b| grids.get(&b).copied());
    if views.iter().all(|v| grid_of(v).is_none()) {
        out.push(s);
        return Some(());
    }
    let mut views = broadcast(&views)?;
    let transposed: Vec<Option<Grid>> = views.iter().map(grid_of).collect();
    if !split_for(&mut views, &transposed) {
        return None;
    }
    for (v, g) in views.iter_mut().zip(&transposed) {
        if let Some(g) = g {
            *v = map_view(v, *g)?;
        }
    }
    // The layout of each view: the dim it is contiguous along.
    let inner: Vec<Option<usize>> = views.iter().map(innermost).collect();
    let copy = matches!(s, Stmt::Copy { .. });
    let across: Vec<usize> = (1..views.len())
        .filter(|&i| inner[i].is_some() && inner[0].is_some() && inner[i] != inner[0])
        .collect();
    let mut before = Vec::new();
    let mut after = Vec::new();
    if !copy && !across.is_empty() {
        let along = (1..views.len())
            .filter(|&i| inner[i].is_some() && inner[i] == inner[0])
            .count()
            + 1;
        if across.len() > along && across.iter().all(|&i| inner[i] == inner[across[0]]) {
            // Most views have the other layout: compute in it, then copy into the output.
            let tmp = scratch_like(p, &views[0], &views[across[0]]);
            after.push(Stmt::Copy {
                out: views[0].clone(),
                x: tmp.clone(),
            });
            views[0] = tmp;
            for i in 1..views.len() {
                if inner[i].is_some() && inner[i] == inner[0] {
                    let t = scratch_like(p, &views[i], &views[across[0]]);
                    before.push(Stmt::Copy {
                        out: t.clone(),
                        x: views[i].clone(),
                    });
                    views[i] = t;
                }
            }
        } else {
            for &i in &across {
                let t = scratch_like(p, &views[i], &views[0]);
                before.push(Stmt::Copy {
                    out: t.clone(),
                    x: views[i].clone(),
                });
                views[i] = t;
            }
        }
    }
    for st in before {
        out.push(tidy(st));
    }
    out.push(tidy(with_views(s, views)));
    for st in after {
        out.push(tidy(st));
    }
    Some(())
}

/// The dim along which a view is contiguous (stride 1, size above 1), if any; None for a
/// broadcast view too (a bias along rows or columns), which code generation reads in either
/// layout without a copy.
fn innermost(v: &View) -> Option<usize> {
    let sized = || (0..v.dims.len()).filter(|&d| v.dims[d] > 1);
    if sized().any(|d| v.strides[d] == 0) {
        return None;
    }
    sized().find(|&d| v.strides[d] == 1)
}

/// A new temporary holding `v`'s elements, laid out like `like` (its dims in the order of
/// `like`'s strides, the smallest innermost).
fn scratch_like(p: &mut Program, v: &View, like: &View) -> View {
    let mut order: Vec<usize> = (0..v.dims.len()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(like.strides[d].unsigned_abs()));
    let dims: Vec<usize> = order.iter().map(|&d| v.dims[d]).collect();
    let packed = row_major_strides(&dims);
    let mut strides = vec![0isize; v.dims.len()];
    for (k, &d) in order.iter().enumerate() {
        strides[d] = packed[k];
    }
    let name = match v.storage {
        Storage::Buf(b) => format!("{}.relaid", p.buffers[b.0].name),
        Storage::Const(c) => format!("{}.relaid", p.consts[c.0].name),
    };
    let b = p.add_buffer(&name, BufKind::Temp, &dims);
    View {
        storage: Storage::Buf(b),
        offset: 0,
        dims: v.dims.clone(),
        strides,
        step_stride: 0,
    }
}

/// The statement with its views replaced (the output first).
fn with_views(s: Stmt, views: Vec<View>) -> Stmt {
    let mut it = views.into_iter();
    let mut next = || it.next().expect("a view per operand");
    match s {
        Stmt::Unary { op, .. } => Stmt::Unary {
            op,
            out: next(),
            x: next(),
        },
        Stmt::Clip { min, max, .. } => Stmt::Clip {
            out: next(),
            x: next(),
            min,
            max,
        },
        Stmt::Copy { .. } => Stmt::Copy {
            out: next(),
            x: next(),
        },
        Stmt::Binary { op, .. } => Stmt::Binary {
            op,
            out: next(),
            a: next(),
            b: next(),
        },
        s => s,
    }
}

/// An elementwise statement's dims ordered by the output's strides (largest first), dims of
/// size 1 dropped and dims contiguous in every view merged: the form code generation
/// vectorizes best.
fn tidy(s: Stmt) -> Stmt {
    let Some(views) = elementwise(&s) else {
        return s;
    };
    let Some(views) = broadcast(&views) else {
        return s;
    };
    let mut order: Vec<usize> = (0..views[0].dims.len())
        .filter(|&d| views[0].dims[d] > 1)
        .collect();
    order.sort_by_key(|&d| std::cmp::Reverse(views[0].strides[d].unsigned_abs()));
    let mut dims: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<isize>> = vec![Vec::new(); views.len()];
    for d in order {
        let n = views[0].dims[d];
        let merge = !dims.is_empty()
            && views
                .iter()
                .zip(&strides)
                .all(|(v, s)| *s.last().expect("a dim") == v.strides[d] * n as isize);
        if merge {
            *dims.last_mut().expect("a dim") *= n;
            for (v, s) in views.iter().zip(strides.iter_mut()) {
                *s.last_mut().expect("a dim") = v.strides[d];
            }
        } else {
            dims.push(n);
            for (v, s) in views.iter().zip(strides.iter_mut()) {
                s.push(v.strides[d]);
            }
        }
    }
    if dims.is_empty() {
        dims.push(1);
        for s in strides.iter_mut() {
            s.push(0);
        }
    }
    let views = views
        .into_iter()
        .zip(strides)
        .map(|(v, strides)| View {
            dims: dims.clone(),
            strides,
            ..v
        })
        .collect();
    with_views(s, views)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(offset: isize, dims: &[usize], strides: &[isize], step: isize) -> View {
        View {
            storage: Storage::Buf(BufId(0)),
            offset,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            step_stride: step,
        }
    }

    const G: Grid = Grid {
        rows: 16,
        cols: 2048,
    };

    #[test]
    fn a_slice_of_columns_maps_to_rows_innermost() {
        // Rows 0..16, columns 1536..2048 of a [16, 2048] buffer.
        let v = map_view(&view(1536, &[16, 512], &[2048, 1], 0), G).expect("maps");
        assert_eq!((v.offset, v.strides.clone()), (1536 * 16, vec![1, 16]));
        // A step of a stacked [T, 16, 2048] buffer moves by whole columns' worth of rows.
        let g = Grid {
            rows: 256,
            cols: 2048,
        };
        let v = map_view(&view(0, &[16, 2048], &[2048, 1], 32768), g).expect("maps");
        assert_eq!((v.strides.clone(), v.step_stride), (vec![1, 256], 16));
    }

    #[test]
    fn views_across_a_columns_end_split_or_are_refused() {
        // A flat run over the whole buffer splits at whole columns, then maps.
        let mut vs = vec![view(0, &[32768], &[1], 0), view(0, &[32768], &[1], 0)];
        assert!(split_for(&mut vs, &[Some(G), None]));
        assert_eq!(vs[0].dims, [16, 2048]);
        assert_eq!(
            vs[1].strides,
            [2048, 1],
            "every view of the statement splits alike"
        );
        assert_eq!(map_view(&vs[0], G).expect("maps").strides, [1, 16]);
        // A run starting inside a column cannot split at columns' ends.
        let mut vs = vec![view(5, &[4096], &[1], 0)];
        assert!(!split_for(&mut vs, &[Some(G)]));
        // A stride mixing rows and columns, or a step inside a row, does not map.
        assert!(map_view(&view(0, &[4], &[2049], 0), G).is_none());
        assert!(map_view(&view(0, &[4], &[1], 7), G).is_none());
        assert!(map_view(&view(2046, &[4], &[1], 0), G).is_none());
    }

    #[test]
    fn tidy_orders_dims_by_the_output_and_merges_them() {
        let s = Stmt::Copy {
            out: view(0, &[16, 512], &[1, 16], 0),
            x: view(0, &[16, 512], &[1, 16], 0),
        };
        let Stmt::Copy { out, x } = tidy(s) else {
            unreachable!()
        };
        assert_eq!((out.dims, out.strides), (vec![8192], vec![1]));
        assert_eq!(x.strides, [1]);
        // A transposing copy keeps two dims, the output contiguous innermost.
        let s = Stmt::Copy {
            out: view(0, &[16, 512], &[512, 1], 0),
            x: view(0, &[16, 512], &[1, 16], 0),
        };
        let Stmt::Copy { out, x } = tidy(s) else {
            unreachable!()
        };
        assert_eq!((out.strides, x.strides), (vec![512, 1], vec![1, 16]));
    }
}
