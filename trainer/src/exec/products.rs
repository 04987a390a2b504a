//! The weight-gradient products the trainer computes itself (`train.sampled_gradients`):
//! dW = aᵀ·g from the backward pass's factors a [R, K] and g [R, M] (R = steps x batch rows,
//! both row-major), either dense ([`dense`]) or only at a mask's kept positions ([`sampled`], a
//! sampled dense-dense product, SDDMM).
//!
//! Both are deterministic and do not depend on the thread count, the CPU's vector width or
//! whether AVX2 or AVX-512 is there (the scalar path does the same operations, with fused
//! multiply-adds):
//!
//! - [`dense`]: every element is the chain `acc = fma(a[r,k], g[r,m], acc)` over r = 0, 1, ...
//!   from 0, in row order. Tiles and threads only decide which elements are computed where.
//! - [`sampled`]: the rows are cut into panels of [`PANEL`]; within a panel, eight lanes
//!   (row r goes to lane r mod 8) each chain their fused products in row order, the lanes are
//!   added in a fixed tree ((0+4)+(2+6))+((1+5)+(3+7)), and the panels' sums are added in panel
//!   order. Threads take whole panels and the sum over panels is made after them.
//!
//! So the two differ only by the order of the same R products: |sampled - dense| is within
//! the usual bound of a reordered f32 sum, about 2·R·2⁻²⁴·Σ_r |a[r,k]·g[r,m]| (tested).

/// Rows per panel of [`sampled`]: the unit of its order and of its threads.
pub const PANEL: usize = 256;

/// Where a K x M matrix is kept, by row (compressed rows, no values).
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub rows: usize,
    pub cols: usize,
    /// `start[k]..start[k + 1]` index `col` for row k.
    pub start: Vec<usize>,
    pub col: Vec<u32>,
}

impl Pattern {
    /// The kept positions of a row-major mask of `rows` x `cols`.
    pub fn from_mask(mask: &[bool], rows: usize, cols: usize) -> Pattern {
        let mut start = Vec::with_capacity(rows + 1);
        let mut col = Vec::new();
        start.push(0);
        for k in 0..rows {
            let row = &mask[k * cols..(k + 1) * cols];
            col.extend((0..cols as u32).filter(|&m| row[m as usize]));
            start.push(col.len());
        }
        Pattern {
            rows,
            cols,
            start,
            col,
        }
    }

    /// Kept positions.
    pub fn nnz(&self) -> usize {
        self.col.len()
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Splits `0..n` into at most `parts` ranges whose lengths are multiples of `unit` (the last
/// takes the rest).
fn ranges(n: usize, parts: usize, unit: usize) -> Vec<std::ops::Range<usize>> {
    let units = n.div_ceil(unit);
    let parts = parts.clamp(1, units.max(1));
    let mut out = Vec::new();
    let mut at = 0;
    for p in 0..parts {
        let end = ((units * (p + 1) / parts) * unit).min(n);
        if end > at {
            out.push(at..end);
            at = end;
        }
    }
    out
}

/// Which code the products run: the vector kernels where the CPU has them, or the scalar
/// path everywhere (for tests: both give the same bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Auto,
    Scalar,
}

impl Path {
    fn fast(self) -> bool {
        self == Path::Auto && avx2()
    }
}

/// out [K, M] = aᵀ·g, a [R, K], g [R, M], every element a fused chain in row order.
pub fn dense(a: &[f32], g: &[f32], r: usize, k: usize, m: usize, out: &mut [f32], threads: usize) {
    dense_on(Path::Auto, a, g, r, k, m, out, threads)
}

/// [`dense`] on `path`.
#[allow(clippy::too_many_arguments)]
pub fn dense_on(
    path: Path,
    a: &[f32],
    g: &[f32],
    r: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
    threads: usize,
) {
    assert!(a.len() == r * k && g.len() == r * m && out.len() == k * m);
    out.fill(0.0);
    let fast = path.fast();
    // AVX-512: tiles of 8 x 32 in sixteen registers; else 6 x 16 (the same bits: tiles only
    // decide where each element's chain is computed).
    let wide = fast && avx512();
    let parts = ranges(k, threads, if wide { 8 } else { TK });
    let mut rest: &mut [f32] = out;
    let mut jobs = Vec::new();
    for range in parts {
        let (mine, tail) = rest.split_at_mut(range.len() * m);
        rest = tail;
        jobs.push((range, mine));
    }
    let work = |(range, mine): (std::ops::Range<usize>, &mut [f32])| {
        if wide {
            #[cfg(target_arch = "x86_64")]
            dense_rows::<8, 32>(a, g, r, k, m, range, mine, &|a, lda, g, ldg, rows, c| {
                // SAFETY: AVX-512F is present (`avx512`); `tile` checked the bounds.
                unsafe { x86::tile512(a.as_ptr(), lda, g.as_ptr(), ldg, rows, c) }
            });
        } else {
            dense_rows::<TK, TM>(a, g, r, k, m, range, mine, &|a, lda, g, ldg, rows, c| {
                tile(a, lda, g, ldg, rows, c, fast)
            });
        }
    };
    if jobs.len() == 1 {
        jobs.into_iter().for_each(work);
    } else {
        std::thread::scope(|s| {
            for j in jobs {
                s.spawn(move || work(j));
            }
        });
    }
}

/// Tile of the dense kernel: TK rows of out (columns of a) by TM columns (of g).
const TK: usize = 6;
const TM: usize = 16;
/// Rows of a and g per pass over a tile (g's tile columns stay in L1).
const CHUNK: usize = 256;

/// A tile kernel: c[i][j] = fma chain of a[r*lda + i] * g[r*ldg + j] over r in 0..rows.
type Tile<'a, const TK: usize, const TM: usize> =
    &'a dyn Fn(&[f32], usize, &[f32], usize, usize, &mut [[f32; TM]; TK]);

/// Rows `ks` of out (`mine`, row-major [ks.len(), m]) in tiles of TK x TM.
#[allow(clippy::too_many_arguments)]
fn dense_rows<const TK: usize, const TM: usize>(
    a: &[f32],
    g: &[f32],
    r: usize,
    k: usize,
    m: usize,
    ks: std::ops::Range<usize>,
    mine: &mut [f32],
    tile: Tile<TK, TM>,
) {
    // Zero-padded copies of an edge tile's operands, so the tile kernel always runs whole.
    let mut pa = vec![0f32; CHUNK * TK];
    let mut pg = vec![0f32; CHUNK * TM];
    for r0 in (0..r).step_by(CHUNK) {
        let rows = CHUNK.min(r - r0);
        for m0 in (0..m).step_by(TM) {
            let nm = TM.min(m - m0);
            if nm < TM {
                for i in 0..rows {
                    let src = &g[(r0 + i) * m + m0..(r0 + i) * m + m0 + nm];
                    pg[i * TM..i * TM + nm].copy_from_slice(src);
                    pg[i * TM + nm..(i + 1) * TM].fill(0.0);
                }
            }
            for k0 in (ks.start..ks.end).step_by(TK) {
                let nk = TK.min(ks.end - k0);
                if nk < TK {
                    for i in 0..rows {
                        let src = &a[(r0 + i) * k + k0..(r0 + i) * k + k0 + nk];
                        pa[i * TK..i * TK + nk].copy_from_slice(src);
                        pa[i * TK + nk..(i + 1) * TK].fill(0.0);
                    }
                }
                let (ap, lda) = if nk < TK {
                    (&pa[..], TK)
                } else {
                    (&a[r0 * k + k0..], k)
                };
                let (gp, ldg) = if nm < TM {
                    (&pg[..], TM)
                } else {
                    (&g[r0 * m + m0..], m)
                };
                let mut c = [[0f32; TM]; TK];
                for (i, row) in c.iter_mut().enumerate().take(nk) {
                    let at = (k0 - ks.start + i) * m + m0;
                    row[..nm].copy_from_slice(&mine[at..at + nm]);
                }
                assert!(ap.len() >= (rows - 1) * lda + TK && gp.len() >= (rows - 1) * ldg + TM);
                tile(ap, lda, gp, ldg, rows, &mut c);
                for (i, row) in c.iter().enumerate().take(nk) {
                    let at = (k0 - ks.start + i) * m + m0;
                    mine[at..at + nm].copy_from_slice(&row[..nm]);
                }
            }
        }
    }
}

/// c[i][j] = fma chain of a[r*lda + i] * g[r*ldg + j] over r in 0..rows, continuing c.
fn tile(
    a: &[f32],
    lda: usize,
    g: &[f32],
    ldg: usize,
    rows: usize,
    c: &mut [[f32; TM]; TK],
    fast: bool,
) {
    assert!(rows == 0 || (a.len() >= (rows - 1) * lda + TK && g.len() >= (rows - 1) * ldg + TM));
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2 and FMA are present (`avx2`), and the bounds are checked above.
        unsafe { x86::tile(a.as_ptr(), lda, g.as_ptr(), ldg, rows, c) };
        return;
    }
    let _ = fast;
    for r in 0..rows {
        for (i, row) in c.iter_mut().enumerate() {
            let x = a[r * lda + i];
            for (j, v) in row.iter_mut().enumerate() {
                *v = x.mul_add(g[r * ldg + j], *v);
            }
        }
    }
}

/// out [K, M] = aᵀ·g at the kept positions of `p` (K x M), zero elsewhere.
pub fn sampled(a: &[f32], g: &[f32], r: usize, p: &Pattern, out: &mut [f32], threads: usize) {
    sampled_all(Path::Auto, r, &mut [Sampled { a, g, p, out }], threads)
}

/// One sampled product of [`sampled_all`]: out [K, M] = aᵀ·g at the kept positions of `p`.
pub struct Sampled<'a> {
    pub a: &'a [f32],
    pub g: &'a [f32],
    pub p: &'a Pattern,
    pub out: &'a mut [f32],
}

/// Several sampled products over the same rows `r`, each as [`sampled`] computes it alone.
/// Products next to each other with the same `a` (the gates' first layers all read [x, h])
/// transpose its panels once.
pub fn sampled_all(path: Path, r: usize, jobs: &mut [Sampled], threads: usize) {
    for j in jobs.iter() {
        let (k, m) = (j.p.rows, j.p.cols);
        assert!(j.a.len() == r * k && j.g.len() == r * m && j.out.len() == k * m);
    }
    let panels = r.div_ceil(PANEL);
    // Panel q's sums for job i: sums[q][base[i] + e], e its kept positions in pattern order.
    let mut base = vec![0];
    for j in jobs.iter() {
        base.push(base.last().copied().unwrap_or(0) + j.p.nnz());
    }
    let nnz = base.last().copied().unwrap_or(0);
    let mut sums = vec![0f32; panels * nnz];
    let fast = path.fast();
    let kmax = jobs.iter().map(|j| j.p.rows).max().unwrap_or(0);
    let mmax = jobs.iter().map(|j| j.p.cols).max().unwrap_or(0);
    let jobs_ro: Vec<(&[f32], &[f32], &Pattern)> = jobs.iter().map(|j| (j.a, j.g, j.p)).collect();
    let work = |first: usize, mine: &mut [f32]| {
        let mut at = vec![0f32; kmax * PANEL];
        let mut gt = vec![0f32; mmax * PANEL];
        for (q, dst) in mine.chunks_mut(nnz.max(1)).enumerate() {
            let r0 = (first + q) * PANEL;
            let rows = PANEL.min(r - r0);
            let mut have: Option<(*const f32, usize)> = None;
            for (i, &(a, g, p)) in jobs_ro.iter().enumerate() {
                let (k, m) = (p.rows, p.cols);
                if have != Some((a.as_ptr(), a.len())) {
                    transpose(&a[r0 * k..(r0 + rows) * k], rows, k, &mut at, fast);
                    have = Some((a.as_ptr(), a.len()));
                }
                transpose(&g[r0 * m..(r0 + rows) * m], rows, m, &mut gt, fast);
                panel_dots(&at, &gt, p, &mut dst[base[i]..base[i + 1]], fast);
            }
        }
    };
    let parts = ranges(panels, threads, 1);
    if parts.len() <= 1 || nnz == 0 {
        work(0, &mut sums);
    } else {
        std::thread::scope(|s| {
            let mut rest: &mut [f32] = &mut sums;
            for range in parts {
                let (mine, tail) = rest.split_at_mut(range.len() * nnz);
                rest = tail;
                let work = &work;
                s.spawn(move || work(range.start, mine));
            }
        });
    }
    for (i, j) in jobs.iter_mut().enumerate() {
        let (p, m) = (j.p, j.p.cols);
        j.out.fill(0.0);
        for row in 0..p.rows {
            for e in p.start[row]..p.start[row + 1] {
                let mut s = 0f32;
                for q in 0..panels {
                    s += sums[q * nnz + base[i] + e];
                }
                j.out[row * m + p.col[e] as usize] = s;
            }
        }
    }
}

/// t [cols, PANEL] = x [rows, cols]ᵀ, rows ≤ PANEL, zero past `rows`.
fn transpose(x: &[f32], rows: usize, cols: usize, t: &mut [f32], fast: bool) {
    assert!(rows <= PANEL && x.len() == rows * cols && t.len() >= cols * PANEL);
    const B: usize = 8;
    let (r8, c8) = (rows / B * B, cols / B * B);
    for c0 in (0..c8).step_by(B) {
        for r0 in (0..r8).step_by(B) {
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: AVX2 is present; rows r0..r0+8 and columns c0..c0+8 are inside
                // both (asserted above, r0 + 8 <= rows, c0 + 8 <= cols).
                unsafe {
                    x86::transpose8(
                        x.as_ptr().add(r0 * cols + c0),
                        cols,
                        t.as_mut_ptr().add(c0 * PANEL + r0),
                        PANEL,
                    )
                };
                continue;
            }
            for r in r0..r0 + B {
                for c in c0..c0 + B {
                    t[c * PANEL + r] = x[r * cols + c];
                }
            }
        }
    }
    // The edges: rows past the last whole block of eight, columns past theirs.
    for r in r8..rows {
        for c in 0..cols {
            t[c * PANEL + r] = x[r * cols + c];
        }
    }
    for r in 0..r8 {
        for c in c8..cols {
            t[c * PANEL + r] = x[r * cols + c];
        }
    }
    let _ = fast;
    if rows < PANEL {
        for c in 0..cols {
            t[c * PANEL + rows..(c + 1) * PANEL].fill(0.0);
        }
    }
}

/// For each kept (k, m) in pattern order: the panel's dot of at[k] and gt[m].
fn panel_dots(at: &[f32], gt: &[f32], p: &Pattern, dst: &mut [f32], fast: bool) {
    for k in 0..p.rows {
        let arow = &at[k * PANEL..(k + 1) * PANEL];
        let (s, e) = (p.start[k], p.start[k + 1]);
        let mut i = s;
        while i < e {
            let n = (e - i).min(4);
            let mut rows = [arow; 4];
            for (row, &c) in rows.iter_mut().zip(&p.col[i..i + n]) {
                let c = c as usize;
                *row = &gt[c * PANEL..(c + 1) * PANEL];
            }
            let d = dot4(arow, rows, fast);
            dst[i..i + n].copy_from_slice(&d[..n]);
            i += n;
        }
    }
}

/// Four dots of `x` with `ys`, each over PANEL in eight lanes (see the module's order).
fn dot4(x: &[f32], ys: [&[f32]; 4], fast: bool) -> [f32; 4] {
    assert!(x.len() == PANEL && ys.iter().all(|y| y.len() == PANEL));
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2 and FMA are present (`avx2`); every slice has PANEL elements.
        return unsafe { x86::dot4(x.as_ptr(), ys.map(|y| y.as_ptr())) };
    }
    let _ = fast;
    ys.map(|y| {
        let mut l = [0f32; 8];
        for (xs, ys) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
            for j in 0..8 {
                l[j] = xs[j].mul_add(ys[j], l[j]);
            }
        }
        hsum(l)
    })
}

/// ((0+4)+(2+6))+((1+5)+(3+7)): the lane sum both paths use.
fn hsum(l: [f32; 8]) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let q = [h[0] + h[2], h[1] + h[3]];
    q[0] + q[1]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PANEL, TK, TM, hsum};
    use std::arch::x86_64::*;

    /// See `super::tile`: a TK x TM tile in twelve registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        a: *const f32,
        lda: usize,
        g: *const f32,
        ldg: usize,
        rows: usize,
        c: &mut [[f32; TM]; TK],
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; TK];
            for (i, row) in c.iter().enumerate() {
                acc[i] = [
                    _mm256_loadu_ps(row.as_ptr()),
                    _mm256_loadu_ps(row.as_ptr().add(8)),
                ];
            }
            for r in 0..rows {
                let gr = g.add(r * ldg);
                let (g0, g1) = (_mm256_loadu_ps(gr), _mm256_loadu_ps(gr.add(8)));
                let ar = a.add(r * lda);
                for (i, v) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*ar.add(i));
                    v[0] = _mm256_fmadd_ps(x, g0, v[0]);
                    v[1] = _mm256_fmadd_ps(x, g1, v[1]);
                }
            }
            for (i, row) in c.iter_mut().enumerate() {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[i][0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[i][1]);
            }
        }
    }

    /// dst[j * ldd + i] = src[i * lds + j] for i, j < 8.
    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let o = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, v) in o.iter().enumerate() {
                _mm256_storeu_ps(dst.add(j * ldd), *v);
            }
        }
    }

    /// See `super::tile`: an 8 x 32 tile in sixteen AVX-512 registers.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile512(
        a: *const f32,
        lda: usize,
        g: *const f32,
        ldg: usize,
        rows: usize,
        c: &mut [[f32; 32]; 8],
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; 8];
            for (i, row) in c.iter().enumerate() {
                acc[i] = [
                    _mm512_loadu_ps(row.as_ptr()),
                    _mm512_loadu_ps(row.as_ptr().add(16)),
                ];
            }
            for r in 0..rows {
                let gr = g.add(r * ldg);
                let (g0, g1) = (_mm512_loadu_ps(gr), _mm512_loadu_ps(gr.add(16)));
                let ar = a.add(r * lda);
                for (i, v) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ar.add(i));
                    v[0] = _mm512_fmadd_ps(x, g0, v[0]);
                    v[1] = _mm512_fmadd_ps(x, g1, v[1]);
                }
            }
            for (i, row) in c.iter_mut().enumerate() {
                _mm512_storeu_ps(row.as_mut_ptr(), acc[i][0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[i][1]);
            }
        }
    }

    /// See `super::dot4`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(x: *const f32, ys: [*const f32; 4]) -> [f32; 4] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..PANEL).step_by(8) {
                let xv = _mm256_loadu_ps(x.add(i));
                for (v, y) in acc.iter_mut().zip(ys) {
                    *v = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y.add(i)), *v);
                }
            }
            acc.map(|v| {
                let mut l = [0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), v);
                hsum(l)
            })
        }
    }
}
