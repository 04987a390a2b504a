//! Splitting a kernel program across threads: one program per thread, over the same buffers,
//! each computing a share of every statement, with the same barriers in the same places.
//!
//! - A matmul's output columns are split into contiguous ranges (multiples of 16, the dense
//!   kernel's tile, for a dense constant weight); each thread multiplies by its own slice of the
//!   weight (a new constant, so the sparse kernels specialize to it).
//! - An elementwise statement is split along its first dim, or its last when the first is
//!   shorter than the thread count (in multiples of 4 there, the vector width). A softmax
//!   (a reduction over its last dim) only along its first, when it has another.
//! - A statement that is too small to split, or whose output overlaps an input through another
//!   view (threads would read what others write), runs on thread 0 only.
//! - A barrier goes before a statement when a thread would read elements another thread wrote
//!   since the last barrier, or write elements another read or wrote (element sets of every
//!   thread's share, at step 0 inside loops: views move by whole steps), and at the end of every
//!   loop iteration and of every `start` block. Elementwise chains split alike (a matmul's
//!   columns and the elementwise statements after it use the same ranges) need none. Barriers
//!   are placed for all threads at once, so every thread meets the same barriers the same
//!   number of times.

use hlstm_ir::kernel::{ConstId, Program, Stmt, Storage, Strategy, View, Weight};
use std::collections::{HashMap, HashSet};

/// One program per thread (a clone of `p` when `threads` is 1).
pub fn split(p: &Program, threads: usize) -> Vec<Program> {
    if threads <= 1 {
        return vec![p.clone()];
    }
    let mut parts: Vec<Program> = (0..threads)
        .map(|_| Program {
            body: Vec::new(),
            ..p.clone()
        })
        .collect();
    let bodies = share_block(&mut parts, &p.body, threads);
    for (q, body) in parts.iter_mut().zip(bodies) {
        q.body = body;
    }
    parts
}

/// Elements of one buffer, by storage.
type Footprint = HashMap<Storage, HashSet<usize>>;

/// What each thread read and wrote since the last barrier.
struct Since {
    read: Vec<Footprint>,
    written: Vec<Footprint>,
}

impl Since {
    fn new(threads: usize) -> Since {
        Since {
            read: vec![Footprint::new(); threads],
            written: vec![Footprint::new(); threads],
        }
    }
    fn any(&self) -> bool {
        self.read.iter().chain(&self.written).any(|f| !f.is_empty())
    }
    fn clear(&mut self) {
        for f in self.read.iter_mut().chain(self.written.iter_mut()) {
            f.clear();
        }
    }
    /// Whether thread `t` touching `set` of `s` (writing when `write`) races with what another
    /// thread did since the last barrier.
    fn conflicts(&self, t: usize, s: Storage, set: &HashSet<usize>, write: bool) -> bool {
        (0..self.read.len()).filter(|u| *u != t).any(|u| {
            let hit = |f: &Footprint| f.get(&s).is_some_and(|e| !e.is_disjoint(set));
            hit(&self.written[u]) || (write && hit(&self.read[u]))
        })
    }
}

/// The elements a view touches at step 0 (views inside a loop move by whole steps).
fn elements(v: &View) -> HashSet<usize> {
    v.offsets(0)
        .into_iter()
        .map(|o| o.max(0) as usize)
        .collect()
}

/// A statement's reads and writes as element sets per buffer (constants left out).
fn footprint(s: &Stmt) -> (Footprint, Footprint) {
    let (mut r, mut w) = (Footprint::new(), Footprint::new());
    for v in s.inputs() {
        if matches!(v.storage, Storage::Buf(_)) {
            r.entry(v.storage).or_default().extend(elements(v));
        }
    }
    if let Some(o) = s.output() {
        w.entry(o.storage).or_default().extend(elements(o));
    }
    (r, w)
}

/// Every thread's share of a block, with barriers where a thread would read or overwrite what
/// another wrote or read since the last one (element by element), at the end of every loop
/// iteration and of every `start` block.
fn share_block(parts: &mut [Program], body: &[Stmt], threads: usize) -> Vec<Vec<Stmt>> {
    let mut out: Vec<Vec<Stmt>> = vec![Vec::new(); threads];
    let mut since = Since::new(threads);
    let barrier = |out: &mut Vec<Vec<Stmt>>, since: &mut Since| {
        for o in out.iter_mut() {
            o.push(Stmt::Barrier);
        }
        since.clear();
    };
    for s in body {
        match s {
            Stmt::Loop {
                trip,
                reverse,
                run,
                body,
            } => {
                if since.any() {
                    barrier(&mut out, &mut since);
                }
                let inner = share_block(parts, body, threads);
                for (o, mut b) in out.iter_mut().zip(inner) {
                    b.push(Stmt::Barrier);
                    o.push(Stmt::Loop {
                        trip: *trip,
                        reverse: *reverse,
                        run: *run,
                        body: b,
                    });
                }
            }
            Stmt::Start { body } => {
                if since.any() {
                    barrier(&mut out, &mut since);
                }
                let inner = share_block(parts, body, threads);
                for (o, mut b) in out.iter_mut().zip(inner) {
                    b.push(Stmt::Barrier);
                    o.push(Stmt::Start { body: b });
                }
            }
            Stmt::Barrier => barrier(&mut out, &mut since),
            s => {
                let shares: Vec<Option<Stmt>> = (0..threads)
                    .map(|t| share_stmt(&mut parts[t], s.clone(), t, threads))
                    .collect();
                let prints: Vec<(Footprint, Footprint)> = shares
                    .iter()
                    .map(|x| x.as_ref().map(footprint).unwrap_or_default())
                    .collect();
                let hazard = prints.iter().enumerate().any(|(t, (r, w))| {
                    r.iter().any(|(st, e)| since.conflicts(t, *st, e, false))
                        || w.iter().any(|(st, e)| since.conflicts(t, *st, e, true))
                });
                if hazard {
                    barrier(&mut out, &mut since);
                }
                for (t, ((r, w), share)) in prints.into_iter().zip(shares).enumerate() {
                    for (st, e) in r {
                        since.read[t].entry(st).or_default().extend(e);
                    }
                    for (st, e) in w {
                        since.written[t].entry(st).or_default().extend(e);
                    }
                    out[t].extend(share);
                }
            }
        }
    }
    out
}

/// [lo, hi) of `n` for thread `tid` of `threads`, in chunks that are multiples of `grain`.
fn range(n: usize, tid: usize, threads: usize, grain: usize) -> (usize, usize) {
    let chunk = n.div_ceil(threads).div_ceil(grain) * grain;
    let lo = (tid * chunk).min(n);
    (lo, (lo + chunk).min(n))
}

/// Thread `tid`'s share of one statement (None: nothing for this thread).
fn share_stmt(q: &mut Program, s: Stmt, tid: usize, threads: usize) -> Option<Stmt> {
    let alone = |s: Stmt| (tid == 0).then_some(s);
    match s {
        Stmt::MatMul {
            mut out,
            a,
            w,
            rows_per_step,
        } => {
            let n = out.dims[1];
            let overlaps =
                a.storage == out.storage || w.view().is_some_and(|v| v.storage == out.storage);
            if overlaps || n < 2 * threads {
                return alone(Stmt::MatMul {
                    out,
                    a,
                    w,
                    rows_per_step,
                });
            }
            // Multiples of 4 like the elementwise statements that follow (so they need no
            // barrier), of 16 for the dense kernel's tiles.
            let grain = match w {
                Weight::Const(_, Strategy::Dense) => 16,
                _ => 4,
            };
            let (lo, hi) = range(n, tid, threads, grain);
            if lo >= hi {
                return None;
            }
            out.offset += lo as isize * out.strides[1];
            out.dims[1] = hi - lo;
            let w = match w {
                Weight::Const(c, strategy) => Weight::Const(const_columns(q, c, lo, hi), strategy),
                Weight::View(mut v) => {
                    v.offset += lo as isize * v.strides[1];
                    v.dims[1] = hi - lo;
                    Weight::View(v)
                }
                Weight::Masked(mut v, c) => {
                    v.offset += lo as isize * v.strides[1];
                    v.dims[1] = hi - lo;
                    Weight::Masked(v, const_columns(q, c, lo, hi))
                }
            };
            Some(Stmt::MatMul {
                out,
                a,
                w,
                rows_per_step,
            })
        }
        s => {
            let Some((d, n)) = split_dim(&s, threads) else {
                return alone(s);
            };
            let grain = if d + 1 == out_view(&s).dims.len() {
                4
            } else {
                1
            };
            let (lo, hi) = range(n, tid, threads, grain);
            if lo >= hi {
                return None;
            }
            let rank = out_view(&s).dims.len();
            let mut s = s;
            hlstm_ir::kernel::visit::views_mut(std::slice::from_mut(&mut s), &mut |v| {
                slice_view(v, rank, d, n, lo, hi)
            });
            Some(s)
        }
    }
}

fn out_view(s: &Stmt) -> &View {
    s.output()
        .expect("only statements with an output are split")
}

/// The dim an elementwise statement splits along, and its length; None when it must run whole.
fn split_dim(s: &Stmt, threads: usize) -> Option<(usize, usize)> {
    let out = out_view(s);
    // An input in the output's storage through another view: threads would race.
    let mut same = false;
    let mut st = s.clone();
    hlstm_ir::kernel::visit::views_mut(std::slice::from_mut(&mut st), &mut |v| {
        if v.storage == out.storage && v != out {
            same = true;
        }
    });
    if same {
        return None;
    }
    let rank = out.dims.len();
    let first = *out.dims.first()?;
    if matches!(s, Stmt::Softmax { .. }) {
        // A row reduction: by rows (the first dim), never along the reduced last one.
        return (rank >= 2 && first >= threads).then_some((0, first));
    }
    if first >= threads {
        return Some((0, first));
    }
    let last = out.dims[rank - 1];
    (last >= 4 * threads).then_some((rank - 1, last))
}

/// Cuts dim `d` (of the output's `rank`, length `n`) of a view to [lo, hi): right-aligned like
/// the interpreter's broadcast; a broadcast dim (length 1) stays whole.
fn slice_view(v: &mut View, rank: usize, d: usize, n: usize, lo: usize, hi: usize) {
    let pad = rank - v.dims.len().min(rank);
    if d < pad {
        return;
    }
    let vd = d - pad;
    if v.dims[vd] == n {
        v.offset += lo as isize * v.strides[vd];
        v.dims[vd] = hi - lo;
    }
}

/// A new constant with columns [lo, hi) of the [K, N] constant `c`.
fn const_columns(q: &mut Program, c: ConstId, lo: usize, hi: usize) -> ConstId {
    let src = &q.consts[c.0];
    let (k, n) = (src.dims[0], src.dims[1]);
    let mut data = Vec::with_capacity(k * (hi - lo));
    for row in 0..k {
        data.extend_from_slice(&src.data[row * n + lo..row * n + hi]);
    }
    let name = format!("{}[:, {lo}:{hi}]", src.name);
    q.add_const(&name, &[k, hi - lo], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_once_in_grains() {
        for (n, t, g) in [(10, 2, 1), (33, 3, 4), (64, 2, 16), (5, 4, 1), (100, 3, 16)] {
            let mut covered = 0;
            for tid in 0..t {
                let (lo, hi) = range(n, tid, t, g);
                assert!(lo <= hi && hi <= n);
                if hi < n && lo < hi {
                    assert_eq!((hi - lo) % g, 0);
                }
                assert_eq!(lo, covered.min(n));
                covered = hi.max(covered);
            }
            assert_eq!(covered, n);
        }
    }
}
