/* Matrix products with wide vectors, called by code hlstmc generates (docs/kernels.md, "Wide
 * kernels"): Cranelift's vectors are 128 bits wide, and a matmul over many rows is bound by the
 * multiply-add rate, where AVX2's 256-bit and AVX-512's 512-bit multiply-adds do two and four
 * times the work. Compiled into hlstmc for the JIT and, with NAME_ replaced by the library's
 * name, into each library whose code calls them (all symbols hidden). Each exists for AVX-512
 * (_avx512) and for AVX2 with FMA (_avx2); the code generator calls the one its target has.
 *
 * Dense (NAME_gemm_*):
 *
 *   out[i][j] = sum_q a[i * lda + q] * W(q, j)   for i < m, j < n
 *
 * W is packed in 16-column tiles (Layout::packed): W(q, j) = w[(j / 16) * 16 k + 16 q + j % 16],
 * the last tile zero-padded. Columns past n are never stored. NAME_gemm_rm_* takes W row-major
 * (W(q, j) = w[q * ldw + j]) instead, as a run-time weight comes.
 *
 * Loop order: blocks of ROW_BLOCK rows; in each, groups of tiles; in each, the rows in register
 * tiles (micro kernels of MR rows by NT tiles, accumulators in registers, one weight vector
 * load shared by MR rows, one broadcast of a[i][q] shared by NT tiles). A group's weight panel
 * (k x 16 NT floats) is read by every row of the block while it is in the cache. With fewer
 * than four rows (a step at batch 1 to 3) each row walks all tiles with eight independent
 * accumulators (a matrix-vector product is bound by the weight loads). */
#include <immintrin.h>
#include <stdint.h>

#define HIDDEN __attribute__((visibility("hidden")))
#define TILE 16
#define ROW_BLOCK 64

/* Valid columns of tile t of a group whose first column is `first`, of n. */
static inline int64_t tile_cols(int64_t n, int64_t first, int t) {
    int64_t c = n - first - (int64_t)t * TILE;
    return c < 0 ? 0 : (c > TILE ? TILE : c);
}

/* ---- AVX-512: a tile is one 16-lane vector. ---- */

#define MICRO512(MR, NT)                                                                       \
    __attribute__((target("avx512f,fma"))) static void micro512_##MR##x##NT(                 \
        int64_t k, const float *a, int64_t lda, const float *w, int64_t tstride, int64_t qstride, \
        float *out, int64_t ldo, int64_t n, int64_t first, int add) {                          \
        __m512 acc[MR][NT];                                                                    \
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {                                 \
            int64_t c = tile_cols(n, first, t);                                                \
            __mmask16 mask = (__mmask16)(c >= TILE ? 0xffff : (1u << c) - 1);                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) acc[r][t] =                   \
                add ? _mm512_maskz_loadu_ps(mask, out + r * ldo + t * TILE) : _mm512_setzero_ps(); \
        }                                                                                      \
        for (int64_t q = 0; q < k; q++) {                                                      \
            __m512 wv[NT];                                                                     \
            _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)                               \
                wv[t] = _mm512_loadu_ps(w + t * tstride + q * qstride);                           \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {                             \
                __m512 x = _mm512_set1_ps(a[r * lda + q]);                                     \
                _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)                           \
                    acc[r][t] = _mm512_fmadd_ps(x, wv[t], acc[r][t]);                          \
            }                                                                                  \
        }                                                                                      \
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {                                 \
            int64_t c = tile_cols(n, first, t);                                                \
            __mmask16 mask = (__mmask16)(c >= TILE ? 0xffff : (1u << c) - 1);                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                               \
                _mm512_mask_storeu_ps(out + r * ldo + t * TILE, mask, acc[r][t]);              \
        }                                                                                      \
    }

MICRO512(8, 2)
MICRO512(4, 2)
MICRO512(2, 2)
MICRO512(1, 2)
MICRO512(1, 8)
MICRO512(1, 1)

/* ---- AVX2: a tile is two 8-lane vectors. ---- */

static inline __attribute__((target("avx2"))) __m256i mask8(int64_t c) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)c), lanes);
}

#define MICRO256(MR, NT)                                                                       \
    __attribute__((target("avx2,fma"))) static void micro256_##MR##x##NT(                    \
        int64_t k, const float *a, int64_t lda, const float *w, int64_t tstride, int64_t qstride, \
        float *out, int64_t ldo, int64_t n, int64_t first, int add) {                          \
        __m256 acc[MR][2 * NT];                                                                \
        _Pragma("GCC unroll 8") for (int v = 0; v < 2 * NT; v++) {                             \
            __m256i mask = mask8(tile_cols(n, first, v / 2) - (v % 2) * 8);                    \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) acc[r][v] = add               \
                ? _mm256_maskload_ps(out + r * ldo + (v / 2) * TILE + (v % 2) * 8, mask)       \
                : _mm256_setzero_ps();                                                         \
        }                                                                                      \
        for (int64_t q = 0; q < k; q++) {                                                      \
            __m256 wv[2 * NT];                                                                 \
            _Pragma("GCC unroll 8") for (int v = 0; v < 2 * NT; v++)                           \
                wv[v] = _mm256_loadu_ps(w + (v / 2) * tstride + q * qstride + (v % 2) * 8);       \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {                             \
                __m256 x = _mm256_broadcast_ss(a + r * lda + q);                               \
                _Pragma("GCC unroll 8") for (int v = 0; v < 2 * NT; v++)                       \
                    acc[r][v] = _mm256_fmadd_ps(x, wv[v], acc[r][v]);                          \
            }                                                                                  \
        }                                                                                      \
        _Pragma("GCC unroll 8") for (int v = 0; v < 2 * NT; v++) {                             \
            int64_t c = tile_cols(n, first, v / 2) - (v % 2) * 8;                              \
            __m256i mask = mask8(c);                                                           \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                               \
                _mm256_maskstore_ps(out + r * ldo + (v / 2) * TILE + (v % 2) * 8, mask, acc[r][v]); \
        }                                                                                      \
    }

MICRO256(6, 1)
MICRO256(4, 1)
MICRO256(2, 1)
MICRO256(1, 1)
MICRO256(1, 4)

/* The last tile of a row-major weight whose columns are not a multiple of 16: one row, its
 * loads masked (the tile's columns past n may lie past the end of the weight). */
__attribute__((target("avx512f,fma"))) static void tail512(int64_t k, const float *a, int64_t lda,
                                                          const float *w, int64_t tstride,
                                                          int64_t qstride, float *out, int64_t ldo,
                                                          int64_t n, int64_t first, int add) {
    (void)lda, (void)tstride, (void)ldo, (void)add;
    const int64_t c = tile_cols(n, first, 0);
    const __mmask16 mask = (__mmask16)(c >= TILE ? 0xffff : (1u << c) - 1);
    /* One accumulator, q in order, as every micro kernel: a column's bits do not depend on
     * which kernel computes it (a thread's share of the columns may end in a partial tile). */
    __m512 acc = _mm512_setzero_ps();
    for (int64_t q = 0; q < k; q++)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(a[q]), _mm512_maskz_loadu_ps(mask, w + q * qstride),
                              acc);
    _mm512_mask_storeu_ps(out, mask, acc);
}

__attribute__((target("avx2,fma"))) static void tail256(int64_t k, const float *a, int64_t lda,
                                                       const float *w, int64_t tstride,
                                                       int64_t qstride, float *out, int64_t ldo,
                                                       int64_t n, int64_t first, int add) {
    (void)lda, (void)tstride, (void)ldo, (void)add;
    const int64_t c = tile_cols(n, first, 0);
    const __m256i lo = mask8(c), hi = mask8(c - 8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; q++) {
        const __m256 x = _mm256_broadcast_ss(a + q);
        acc0 = _mm256_fmadd_ps(x, _mm256_maskload_ps(w + q * qstride, lo), acc0);
        acc1 = _mm256_fmadd_ps(x, _mm256_maskload_ps(w + q * qstride + 8, hi), acc1);
    }
    _mm256_maskstore_ps(out, lo, acc0);
    _mm256_maskstore_ps(out + 8, hi, acc1);
}

/* (k, a, lda, w, tstride, qstride, out, ldo, n, first, add): out = a x W over k, or with `add`
 * out += a x W (a product over blocks of k). `tail` always stores. */
typedef void (*micro_fn)(int64_t, const float *, int64_t, const float *, int64_t, int64_t, float *,
                         int64_t, int64_t, int64_t, int);

/* The blocked loops around one ISA's micro kernels: `big` takes `big_rows` rows (and then the
 * rows of `mid` and `small` in turn take the rest) over a group of `nt` tiles; `wide`
 * (one row, `wide_nt` tiles) and `one` (one row, one tile) serve the matrix-vector case, and
 * `tail` a row-major weight's last, partial tile. */
struct kernels {
    micro_fn big, mid, pair, single;
    int big_rows, nt;
    micro_fn wide, one, tail;
    int wide_nt;
};

/* Tile t's row q of the weight is at w + t * tstride + q * qstride: packed (16 k, 16) or
 * row-major (16, the row stride). The first `full` tiles can be read whole (every tile of a
 * packed weight, zero-padded; a row-major weight's whole tiles); a last one past them is read
 * by `tail`. */
static void gemm(const struct kernels *kn, int64_t m, int64_t k, int64_t n, const float *a,
                 int64_t lda, const float *w, int64_t tstride, int64_t qstride, int64_t full,
                 float *out, int64_t ldo) {
    const int64_t tiles = (n + TILE - 1) / TILE;
#define TILE_ARGS(t) w + (t) * tstride, tstride, qstride
    if (m < 4) {
        for (int64_t i = 0; i < m; i++) {
            const float *ai = a + i * lda;
            float *oi = out + i * ldo;
            int64_t t = 0;
            for (; t + kn->wide_nt <= full; t += kn->wide_nt)
                kn->wide(k, ai, lda, TILE_ARGS(t), oi + t * TILE, ldo, n, t * TILE, 0);
            for (; t < full; t++)
                kn->one(k, ai, lda, TILE_ARGS(t), oi + t * TILE, ldo, n, t * TILE, 0);
            if (full < tiles)
                kn->tail(k, ai, lda, TILE_ARGS(full), oi + full * TILE, ldo, n, full * TILE, 0);
        }
        return;
    }
    for (int64_t i0 = 0; i0 < m; i0 += ROW_BLOCK) {
        const int64_t i1 = m < i0 + ROW_BLOCK ? m : i0 + ROW_BLOCK;
        for (int64_t t = 0; t < full; t += kn->nt) {
            float *ot = out + t * TILE;
            const int64_t first = t * TILE;
            int64_t i = i0;
            if (t + kn->nt <= full) {
                for (; i + kn->big_rows <= i1; i += kn->big_rows)
                    kn->big(k, a + i * lda, lda, TILE_ARGS(t), ot + i * ldo, ldo, n, first, 0);
                for (; i + 4 <= i1; i += 4)
                    kn->mid(k, a + i * lda, lda, TILE_ARGS(t), ot + i * ldo, ldo, n, first, 0);
                for (; i + 2 <= i1; i += 2)
                    kn->pair(k, a + i * lda, lda, TILE_ARGS(t), ot + i * ldo, ldo, n, first, 0);
                for (; i < i1; i++)
                    kn->single(k, a + i * lda, lda, TILE_ARGS(t), ot + i * ldo, ldo, n, first, 0);
            } else {
                /* A last group of fewer tiles: a group reads nt whole tiles, which past the
                 * last one would lie outside w. */
                for (int64_t tt = t; tt < full; tt++)
                    for (int64_t r = i0; r < i1; r++)
                        kn->one(k, a + r * lda, lda, TILE_ARGS(tt), out + r * ldo + tt * TILE, ldo,
                                n, tt * TILE, 0);
            }
        }
        if (full < tiles)
            for (int64_t r = i0; r < i1; r++)
                kn->tail(k, a + r * lda, lda, TILE_ARGS(full), out + r * ldo + full * TILE, ldo, n,
                         full * TILE, 0);
    }
#undef TILE_ARGS
}

static const struct kernels KERNELS_512 = {micro512_8x2, micro512_4x2, micro512_2x2, micro512_1x2,
                                           8, 2, micro512_1x8, micro512_1x1, tail512, 8};
static const struct kernels KERNELS_256 = {micro256_6x1, micro256_4x1, micro256_2x1, micro256_1x1,
                                           6, 1, micro256_1x4, micro256_1x1, tail256, 4};

HIDDEN void NAME_gemm_avx512(int64_t m, int64_t k, int64_t n, const float *a, int64_t lda,
                             const float *w, float *out, int64_t ldo) {
    const int64_t tiles = (n + TILE - 1) / TILE;
    gemm(&KERNELS_512, m, k, n, a, lda, w, k * TILE, TILE, tiles, out, ldo);
}

HIDDEN void NAME_gemm_avx2(int64_t m, int64_t k, int64_t n, const float *a, int64_t lda,
                           const float *w, float *out, int64_t ldo) {
    const int64_t tiles = (n + TILE - 1) / TILE;
    gemm(&KERNELS_256, m, k, n, a, lda, w, k * TILE, TILE, tiles, out, ldo);
}

/* Rows of a row-major weight's tile group copied into one contiguous panel at a time: at most
 * PANEL_ROWS rows of MAX_NT tiles (32 KiB, on the stack). */
#define PANEL_ROWS 256
#define MAX_NT 2

/* A row-major weight, four rows or more: each group of tiles is copied, PANEL_ROWS rows of k at
 * a time, into a contiguous panel that every row's micro kernel then reads, adding into the
 * output after the first block. Read in place, a tile's rows lie ldw floats apart, and with
 * ldw a multiple of 1024 (a 4 KiB stride: 1024 or 512 columns) they all fall in one set of the
 * L1 cache and a few of the L2: the panel that each row's micro kernel reads again was evicted
 * since the last (BENCHMARKS.md, Training). The copy reads the weight once per call. */
static void gemm_rm_panels(const struct kernels *kn, int64_t m, int64_t k, int64_t n,
                           const float *a, int64_t lda, const float *w, int64_t ldw, float *out,
                           int64_t ldo) {
    _Alignas(64) float panel[PANEL_ROWS * TILE * MAX_NT];
    const int64_t full = n / TILE;
    for (int64_t t = 0; t < full; t += kn->nt) {
        const int64_t nt = full - t < kn->nt ? full - t : kn->nt;
        for (int64_t q0 = 0; q0 < k; q0 += PANEL_ROWS) {
            const int64_t kc = k - q0 < PANEL_ROWS ? k - q0 : PANEL_ROWS;
            for (int64_t tt = 0; tt < nt; tt++)
                for (int64_t q = 0; q < kc; q++)
                    __builtin_memcpy(panel + (tt * kc + q) * TILE, w + (q0 + q) * ldw + (t + tt) * TILE,
                                     TILE * sizeof(float));
            const int add = q0 > 0;
            const float *aq = a + q0;
            float *ot = out + t * TILE;
            const int64_t first = t * TILE, ts = kc * TILE;
            int64_t i = 0;
            if (nt == kn->nt) {
                for (; i + kn->big_rows <= m; i += kn->big_rows)
                    kn->big(kc, aq + i * lda, lda, panel, ts, TILE, ot + i * ldo, ldo, n, first, add);
                for (; i + 4 <= m; i += 4)
                    kn->mid(kc, aq + i * lda, lda, panel, ts, TILE, ot + i * ldo, ldo, n, first, add);
                for (; i + 2 <= m; i += 2)
                    kn->pair(kc, aq + i * lda, lda, panel, ts, TILE, ot + i * ldo, ldo, n, first, add);
                for (; i < m; i++)
                    kn->single(kc, aq + i * lda, lda, panel, ts, TILE, ot + i * ldo, ldo, n, first,
                               add);
            } else {
                for (int64_t tt = 0; tt < nt; tt++)
                    for (i = 0; i < m; i++)
                        kn->one(kc, aq + i * lda, lda, panel + tt * ts, ts, TILE,
                                ot + i * ldo + tt * TILE, ldo, n, first + tt * TILE, add);
            }
        }
    }
    if (full * TILE < n)
        for (int64_t i = 0; i < m; i++)
            kn->tail(k, a + i * lda, lda, w + full * TILE, TILE, ldw, out + i * ldo + full * TILE, ldo,
                     n, full * TILE, 0);
}

/* Dense with a row-major weight (NAME_gemm_rm_*): W(q, j) = w[q * ldw + j], as given at run
 * time (a weight that is a model input, the trainer's weights). Fewer than four rows read it in
 * place (each weight once), more through panels (above). */
HIDDEN void NAME_gemm_rm_avx512(int64_t m, int64_t k, int64_t n, const float *a, int64_t lda,
                                const float *w, int64_t ldw, float *out, int64_t ldo) {
    if (m < 4)
        gemm(&KERNELS_512, m, k, n, a, lda, w, TILE, ldw, n / TILE, out, ldo);
    else
        gemm_rm_panels(&KERNELS_512, m, k, n, a, lda, w, ldw, out, ldo);
}

HIDDEN void NAME_gemm_rm_avx2(int64_t m, int64_t k, int64_t n, const float *a, int64_t lda,
                              const float *w, int64_t ldw, float *out, int64_t ldo) {
    if (m < 4)
        gemm(&KERNELS_256, m, k, n, a, lda, w, TILE, ldw, n / TILE, out, ldo);
    else
        gemm_rm_panels(&KERNELS_256, m, k, n, a, lda, w, ldw, out, ldo);
}

/* A row-major [k, n] weight (row stride ldw) packed for NAME_gemm_*: tiles of 16 columns, each
 * k rows of 16, the last tile's columns past n zero. Generated code packs a run-time weight
 * before a loop whose products read it (docs/kernels.md, "Run-time weights"). */
HIDDEN void NAME_pack(int64_t k, int64_t n, const float *w, int64_t ldw, float *dst) {
    const int64_t tiles = (n + TILE - 1) / TILE;
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t c = tile_cols(n, 0, t);
        float *d = dst + t * k * TILE;
        const float *src = w + t * TILE;
        if (c == TILE) {
            for (int64_t q = 0; q < k; q++)
                __builtin_memcpy(d + q * TILE, src + q * ldw, TILE * sizeof(float));
        } else {
            for (int64_t q = 0; q < k; q++)
                for (int64_t j = 0; j < TILE; j++)
                    d[q * TILE + j] = j < c ? src[q * ldw + j] : 0.0f;
        }
    }
}

/* A masked run-time weight's values gathered for NAME_spmm_* (the generated code does it before
 * a loop whose products read the weight, docs/kernels.md, "Run-time weights"): for each of the
 * NCLASS classes of `table`, the value at each nonzero's byte offset in the view at wv (the
 * i32 at byte o of `ro`) is stored at byte o - first of dst. spmm then reads the values in
 * order, as a constant's, with wdata = dst and wfirst = first. */
HIDDEN void NAME_gather(const uint8_t *ro, const int64_t *table, int64_t nclass, const uint8_t *wv,
                        uint8_t *dst, int64_t first) {
    for (int64_t c = 0; c < nclass; c++) {
        const int64_t *t = table + 6 * c;
        const int64_t n = t[0] * t[1];
        const uint8_t *o = ro + t[3];
        uint8_t *d = dst + (t[3] - first);
        for (int64_t i = 0; i < n; i++) {
            int32_t at;
            __builtin_memcpy(&at, o + 4 * i, 4);
            __builtin_memcpy(d + 4 * i, wv + at, 4);
        }
    }
}

/* Sigmoid, tanh and relu over a contiguous run (NAME_act_*): out[i] = f(x[i]) for i < n; kind 0
 * is sigmoid, 1 tanh, 2 relu. The same algorithms, constants and operation order as the inline code
 * (backends/src/cpu/math.rs, with fused multiply-adds), so the results are the same bits, with
 * 16 or 8 lanes where Cranelift has 4: at batch 16 the gates' activations were most of a step's
 * elementwise work. Kind 2 is relu (max(0, x), a NaN kept). out may be x itself. */

#define MAGIC 12582912.0f
#define LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
static const float EXP_P[6] = {1.9875691e-4f, 1.3981999e-3f, 8.3334519e-3f,
                               4.1665796e-2f, 1.6666665e-1f, 5.0000001e-1f};
static const float TANH_P[5] = {-5.7049887e-3f, 2.0639089e-2f, -5.3739716e-2f, 1.3331442e-1f,
                                -3.3333282e-1f};

/* One ISA's activations, from its vector type V, its integer vector type VI and the
 * operations below (each a macro of that ISA). */
#define DEFINE_ACTS(SUF, TARGET, V, VI, LANES)                                                   \
    __attribute__((target(TARGET))) static inline V exp_bounded_##SUF(V x) {                     \
        x = SEL_LT(SET1(88.0f), x, SET1(88.0f), x);                                             \
        x = SEL_LT(x, SET1(-87.0f), SET1(-87.0f), x);                                           \
        V t = FMA(x, SET1(LOG2E), SET1(MAGIC));                                                 \
        V nf = SUB(t, SET1(MAGIC));                                                             \
        VI ni = ISUB(CASTI(t), SET1I((int)0x4b400000));                                         \
        V r = FMA(nf, SET1(-EXP_C1), x);                                                        \
        r = FMA(nf, SET1(-EXP_C2), r);                                                          \
        V p = SET1(EXP_P[0]);                                                                   \
        for (int k = 1; k < 6; k++) p = FMA(p, r, SET1(EXP_P[k]));                              \
        V em1 = FMA(p, MUL(r, r), r);                                                           \
        V s = CASTF(ISHL23(IADD(ni, SET1I(127))));                                              \
        return FMA(em1, s, s);                                                                  \
    }                                                                                           \
    __attribute__((target(TARGET))) static inline V sigmoid_##SUF(V x) {                         \
        V e = exp_bounded_##SUF(NEG(x));                                                        \
        return DIV(SET1(1.0f), ADD(SET1(1.0f), e));                                             \
    }                                                                                           \
    __attribute__((target(TARGET))) static inline V tanh_##SUF(V x) {                            \
        V ax = ABS(x);                                                                          \
        V e = exp_bounded_##SUF(ADD(ax, ax));                                                   \
        V q = DIV(SET1(2.0f), ADD(e, SET1(1.0f)));                                              \
        V yl = SUB(SET1(1.0f), q);                                                              \
        yl = CASTF(IOR(CASTI(yl), IAND(CASTI(x), SET1I((int)0x80000000))));                   \
        V z = MUL(x, x);                                                                        \
        V p = SET1(TANH_P[0]);                                                                  \
        for (int k = 1; k < 5; k++) p = FMA(p, z, SET1(TANH_P[k]));                             \
        V ys = FMA(MUL(p, z), x, x);                                                            \
        return SEL_LT(ax, SET1(0.625f), ys, yl);                                                \
    }                                                                                           \
    HIDDEN __attribute__((target(TARGET))) void NAME_act_##SUF(int64_t kind, int64_t n,          \
                                                               const float *x, float *out) {     \
        int64_t i = 0;                                                                          \
        if (kind == 0) {                                                                        \
            for (; i + LANES <= n; i += LANES) STORE(out + i, sigmoid_##SUF(LOAD(x + i)));       \
            if (i < n) STORE_TAIL(out + i, sigmoid_##SUF(LOAD_TAIL(x + i, n - i)), n - i);      \
        } else if (kind == 1) {                                                                 \
            for (; i + LANES <= n; i += LANES) STORE(out + i, tanh_##SUF(LOAD(x + i)));          \
            if (i < n) STORE_TAIL(out + i, tanh_##SUF(LOAD_TAIL(x + i, n - i)), n - i);         \
        } else {                                                                                \
            /* relu: max(0, x), which keeps a NaN x (the second operand), as the inline code. */ \
            for (; i + LANES <= n; i += LANES) STORE(out + i, MAX(SET1(0.0f), LOAD(x + i)));     \
            if (i < n) STORE_TAIL(out + i, MAX(SET1(0.0f), LOAD_TAIL(x + i, n - i)), n - i);    \
        }                                                                                       \
    }

#define SET1(c) _mm512_set1_ps(c)
#define SET1I(c) _mm512_set1_epi32(c)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define ADD(a, b) _mm512_add_ps(a, b)
#define SUB(a, b) _mm512_sub_ps(a, b)
#define MUL(a, b) _mm512_mul_ps(a, b)
#define DIV(a, b) _mm512_div_ps(a, b)
#define MAX(a, b) _mm512_max_ps(a, b)
#define NEG(a) CASTF(_mm512_xor_si512(CASTI(a), SET1I((int)0x80000000)))
#define ABS(a) CASTF(_mm512_and_si512(CASTI(a), SET1I(0x7fffffff)))
#define CASTI(a) _mm512_castps_si512(a)
#define CASTF(a) _mm512_castsi512_ps(a)
#define ISUB(a, b) _mm512_sub_epi32(a, b)
#define IADD(a, b) _mm512_add_epi32(a, b)
#define IOR(a, b) _mm512_or_si512(a, b)
#define IAND(a, b) _mm512_and_si512(a, b)
#define ISHL23(a) _mm512_slli_epi32(a, 23)
/* a < b ? x : y, ordered (a NaN picks y). */
#define SEL_LT(a, b, x, y) _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x)
#define LOAD(p) _mm512_loadu_ps(p)
#define STORE(p, v) _mm512_storeu_ps(p, v)
#define TAIL_MASK(k) ((__mmask16)((1u << (k)) - 1))
#define LOAD_TAIL(p, k) _mm512_maskz_loadu_ps(TAIL_MASK(k), p)
#define STORE_TAIL(p, v, k) _mm512_mask_storeu_ps(p, TAIL_MASK(k), v)
DEFINE_ACTS(avx512, "avx512f,fma", __m512, __m512i, 16)
#undef SET1
#undef SET1I
#undef FMA
#undef ADD
#undef SUB
#undef MUL
#undef DIV
#undef MAX
#undef NEG
#undef ABS
#undef CASTI
#undef CASTF
#undef ISUB
#undef IADD
#undef IOR
#undef IAND
#undef ISHL23
#undef SEL_LT
#undef LOAD
#undef STORE
#undef LOAD_TAIL
#undef STORE_TAIL

#define SET1(c) _mm256_set1_ps(c)
#define SET1I(c) _mm256_set1_epi32(c)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ADD(a, b) _mm256_add_ps(a, b)
#define SUB(a, b) _mm256_sub_ps(a, b)
#define MUL(a, b) _mm256_mul_ps(a, b)
#define DIV(a, b) _mm256_div_ps(a, b)
#define MAX(a, b) _mm256_max_ps(a, b)
#define NEG(a) CASTF(_mm256_xor_si256(CASTI(a), SET1I((int)0x80000000)))
#define ABS(a) CASTF(_mm256_and_si256(CASTI(a), SET1I(0x7fffffff)))
#define CASTI(a) _mm256_castps_si256(a)
#define CASTF(a) _mm256_castsi256_ps(a)
#define ISUB(a, b) _mm256_sub_epi32(a, b)
#define IADD(a, b) _mm256_add_epi32(a, b)
#define IOR(a, b) _mm256_or_si256(a, b)
#define IAND(a, b) _mm256_and_si256(a, b)
#define ISHL23(a) _mm256_slli_epi32(a, 23)
#define SEL_LT(a, b, x, y) _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ))
#define LOAD(p) _mm256_loadu_ps(p)
#define STORE(p, v) _mm256_storeu_ps(p, v)
#define LOAD_TAIL(p, k) _mm256_maskload_ps(p, mask8(k))
#define STORE_TAIL(p, v, k) _mm256_maskstore_ps(p, mask8(k), v)
DEFINE_ACTS(avx2, "avx2,fma", __m256, __m256i, 8)

/* Sparse, on the transposed operand (NAME_spmm_*): the rows of the left operand are the lanes.
 *
 *   outt[j * ldo + i] = sum_e w[e] * at[off[e] / 4 + i]   for i < m, and each column j,
 *
 * at = a transposed ([K, M], row k at byte offset k * 4M), outt = the product transposed
 * ([N, M]). The columns come in classes of equal nonzero count (Layout's CsrClass, the same
 * arrays the Cranelift kernels read): a table of NCLASS rows of six i64s, {nonzeros, columns,
 * cols_off, weights_off, offsets_off, narrow}, offsets in bytes from `ro`; a class's columns'
 * indices are i32, their weights f32 (nonzeros per column), their inputs' byte offsets in `at`
 * u16 (narrow) or i32. Class c's weights are at byte c.weights_off - wfirst of wdata: a
 * constant's in `ro` (wdata = ro, wfirst = 0); a masked run-time weight's gathered before the
 * loop (NAME_gather, below), or, with `wv` not null, in place: then each "weight" in `ro` is the
 * byte offset of its value in the weight's view at wv (an i32). Rows go 64 (AVX-512) or 32
 * (AVX2) at a time while there are that many, four vectors sharing each weight and offset load,
 * then (AVX-512) 32 at a time, two vectors sharing them, then sixteen at a time (one AVX-512
 * vector or two AVX2 vectors, the last block masked), each column's products round-robin over
 * CHAINS accumulators so that the multiply-adds of one column do not wait on each other. `epi`
 * (null for none) is the epilogue each column gets before its store (below). */

#define CHAINS 4

/* The epilogue of a product (`epi`, null for none; docs/kernels.md, "Epilogues"): seven i64s
 * {act, add0, ld0, rs0, add1, ld1, rs1}. Before its store, each column j of rows r.. gets the
 * addends that are not null in order, add_q + j * ld_q + r (rows contiguous, rs_q = 1) or the
 * one value at add_q + j * ld_q (rs_q = 0), then the activation: act 0 none, 1 sigmoid, 2 tanh,
 * 3 relu, the same functions as NAME_act_*. The generated code fuses the bias adds, the hoisted
 * projection's add and the activation after a product into it, so that they happen on the
 * accumulators instead of in passes over the product's buffer, with the same bits. */
/* One ISA's epilogue (EPI_LOAD: the rows at p, all or the lanes of `mask`). */
#define DEFINE_EPI(SUF, TARGET, V, M, EPI_LOAD, ADDV, SET1V, MAXV, ZEROV)                       \
    static inline __attribute__((always_inline, target(TARGET))) V epi##SUF(                    \
        const int64_t *epi, int64_t j, int64_t r, V v, M mask, int full) {                      \
        for (int q = 0; q < 2; q++) {                                                           \
            const float *p = (const float *)(intptr_t)epi[1 + 3 * q];                           \
            if (!p)                                                                             \
                continue;                                                                       \
            p += j * epi[2 + 3 * q];                                                            \
            v = ADDV(v, epi[3 + 3 * q] ? EPI_LOAD(p + r, mask, full) : SET1V(*p));              \
        }                                                                                       \
        switch (epi[0]) {                                                                       \
        case 1:                                                                                 \
            return sigmoid_##SUF(v);                                                            \
        case 2:                                                                                 \
            return tanh_##SUF(v);                                                               \
        case 3:                                                                                 \
            return MAXV(ZEROV(), v);                                                            \
        default:                                                                                \
            return v;                                                                           \
        }                                                                                       \
    }
#define EPI_LOAD512(p, mask, full) ((full) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p))
#define EPI_LOAD256(p, mask, full) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask))
DEFINE_EPI(avx512, "avx512f,fma", __m512, __mmask16, EPI_LOAD512, _mm512_add_ps, _mm512_set1_ps,
           _mm512_max_ps, _mm512_setzero_ps)
DEFINE_EPI(avx2, "avx2,fma", __m256, __m256i, EPI_LOAD256, _mm256_add_ps, _mm256_set1_ps,
           _mm256_max_ps, _mm256_setzero_ps)

static inline int64_t input_off(const uint8_t *o, int narrow, int64_t e) {
    if (narrow) {
        uint16_t v;
        __builtin_memcpy(&v, o + 2 * e, 2);
        return v;
    }
    int32_t v;
    __builtin_memcpy(&v, o + 4 * e, 4);
    return v;
}

/* Weight e of a column whose weights are at w: the value, or for a masked run-time weight (`wv`
 * not null) its byte offset in the weight's view at wv, an i32. Inlined into callers that pass
 * a null `wv` literally, the test folds away. */
static inline __attribute__((always_inline)) float weight_at(const float *w, const uint8_t *wv,
                                                              int64_t e) {
    if (!wv)
        return w[e];
    int32_t o;
    float v;
    __builtin_memcpy(&o, w + e, 4);
    __builtin_memcpy(&v, wv + o, 4);
    return v;
}

/* Column j's sum over sixteen rows (one vector, `full`, or the first bits of `mask`). */
static inline __attribute__((always_inline, target("avx512f,fma"))) __m512 col512(
    int64_t nnz, int64_t j, const float *w, const uint8_t *wv, const uint8_t *off, int narrow,
    const uint8_t *a, __mmask16 mask, int full) {
    const float *wj = w + j * nnz;
    const uint8_t *oj = off + j * nnz * (narrow ? 2 : 4);
#define LOAD16(p) (full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p))
    __m512 acc[CHAINS];
    for (int q = 0; q < CHAINS; q++) acc[q] = _mm512_setzero_ps();
    int64_t e = 0;
    for (; e + CHAINS <= nnz; e += CHAINS) {
        _Pragma("GCC unroll 4") for (int q = 0; q < CHAINS; q++) {
            __m512 x = LOAD16(a + input_off(oj, narrow, e + q));
            acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(weight_at(wj, wv, e + q)), x, acc[q]);
        }
    }
    for (; e < nnz; e++) {
        __m512 x = LOAD16(a + input_off(oj, narrow, e));
        acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(weight_at(wj, wv, e)), x, acc[0]);
    }
#undef LOAD16
    return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
}

/* Sixteen rows (one vector, `full`, or the first bits of `mask`) of every column of a class.
 * (Columns four at a time, so that their epilogues overlap, measured no faster.) */
static inline __attribute__((always_inline, target("avx512f,fma"))) void spmm512_rows16(
    int64_t nnz, int64_t cols, const int32_t *col, const float *w, const uint8_t *wv,
    const uint8_t *off, int narrow, const uint8_t *a, float *outt, int64_t ldo, __mmask16 mask,
    int full, const int64_t *epi, int64_t r0) {
    for (int64_t j = 0; j < cols; j++) {
        __m512 sum = col512(nnz, j, w, wv, off, narrow, a, mask, full);
        if (epi)
            sum = epiavx512(epi, col[j], r0, sum, mask, full);
        float *o = outt + (int64_t)col[j] * ldo;
        if (full)
            _mm512_storeu_ps(o, sum);
        else
            _mm512_mask_storeu_ps(o, mask, sum);
    }
}

static inline __attribute__((always_inline, target("avx512f,fma"))) void spmm512_class(
    int64_t m, const uint8_t *at, const uint8_t *ro, const int64_t *c, float *outt, int64_t ldo,
    const uint8_t *wv, const uint8_t *wdata, int64_t wfirst, const int64_t *epi) {
    const int64_t nnz = c[0], cols = c[1];
    const int32_t *col = (const int32_t *)(ro + c[2]);
    const float *w = (const float *)(wdata + (c[3] - wfirst));
    const uint8_t *off = ro + c[4];
    const int narrow = (int)c[5];
    int64_t r0 = 0;
    /* Four vectors of rows at a time while there are 64: each weight and offset loaded once
     * for four multiply-adds (the hoisted projection's T * batch rows), the four vectors the
     * independent chains. */
    for (; r0 + 64 <= m; r0 += 64) {
        const uint8_t *a = at + 4 * r0;
        for (int64_t j = 0; j < cols; j++) {
            const float *wj = w + j * nnz;
            const uint8_t *oj = off + j * nnz * (narrow ? 2 : 4);
            __m512 acc[4];
            for (int q = 0; q < 4; q++) acc[q] = _mm512_setzero_ps();
            for (int64_t e = 0; e < nnz; e++) {
                const float *x = (const float *)(a + input_off(oj, narrow, e));
                const __m512 wb = _mm512_set1_ps(weight_at(wj, wv, e));
                _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) acc[q] =
                    _mm512_fmadd_ps(wb, _mm512_loadu_ps(x + 16 * q), acc[q]);
            }
            float *o = outt + (int64_t)col[j] * ldo + r0;
            if (epi)
                for (int q = 0; q < 4; q++) acc[q] = epiavx512(epi, col[j], r0 + 16 * q, acc[q], 0xffff, 1);
            for (int q = 0; q < 4; q++) _mm512_storeu_ps(o + 16 * q, acc[q]);
        }
    }
    /* Two vectors at a time while there are 32 rows (a training batch of 32): each weight and
     * offset loaded once for both, and two chains of products per vector. */
    for (; r0 + 32 <= m; r0 += 32) {
        const uint8_t *a = at + 4 * r0;
        for (int64_t j = 0; j < cols; j++) {
            const float *wj = w + j * nnz;
            const uint8_t *oj = off + j * nnz * (narrow ? 2 : 4);
            __m512 acc[2][2];
            for (int q = 0; q < 2; q++) acc[q][0] = acc[q][1] = _mm512_setzero_ps();
            int64_t e = 0;
            for (; e + 2 <= nnz; e += 2) {
                _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
                    const float *x = (const float *)(a + input_off(oj, narrow, e + q));
                    const __m512 wb = _mm512_set1_ps(weight_at(wj, wv, e + q));
                    acc[q][0] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x), acc[q][0]);
                    acc[q][1] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x + 16), acc[q][1]);
                }
            }
            for (; e < nnz; e++) {
                const float *x = (const float *)(a + input_off(oj, narrow, e));
                const __m512 wb = _mm512_set1_ps(weight_at(wj, wv, e));
                acc[0][0] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x), acc[0][0]);
                acc[0][1] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x + 16), acc[0][1]);
            }
            float *o = outt + (int64_t)col[j] * ldo + r0;
            __m512 s0 = _mm512_add_ps(acc[0][0], acc[1][0]), s1 = _mm512_add_ps(acc[0][1], acc[1][1]);
            if (epi) {
                s0 = epiavx512(epi, col[j], r0, s0, 0xffff, 1);
                s1 = epiavx512(epi, col[j], r0 + 16, s1, 0xffff, 1);
            }
            _mm512_storeu_ps(o, s0);
            _mm512_storeu_ps(o + 16, s1);
        }
    }
    for (; r0 < m; r0 += 16) {
        const int64_t left = m - r0;
        /* Whole blocks without a mask: a masked load kept reloading its mask register from the
         * stack, a fourth load per multiply-add. */
        if (left >= 16)
            spmm512_rows16(nnz, cols, col, w, wv, off, narrow, at + 4 * r0, outt + r0, ldo, 0xffff, 1,
                           epi, r0);
        else
            spmm512_rows16(nnz, cols, col, w, wv, off, narrow, at + 4 * r0, outt + r0, ldo,
                           (__mmask16)((1u << left) - 1), 0, epi, r0);
    }
}

/* Sixteen rows (two vectors, `full`, or the lanes of `lo` and `hi`) of every column of a
 * class. */
static inline __attribute__((always_inline, target("avx2,fma"))) void spmm256_rows16(
    int64_t nnz, int64_t cols, const int32_t *col, const float *w, const uint8_t *wv,
    const uint8_t *off, int narrow, const uint8_t *a, float *outt, int64_t ldo, __m256i lo,
    __m256i hi, int full, const int64_t *epi, int64_t r0) {
#define LOAD8(p, m) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m))
    for (int64_t j = 0; j < cols; j++) {
        const float *wj = w + j * nnz;
        const uint8_t *oj = off + j * nnz * (narrow ? 2 : 4);
        /* Two chains of two halves: four accumulators in flight. */
        __m256 acc[2][2];
        for (int q = 0; q < 2; q++) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
        int64_t e = 0;
        for (; e + 2 <= nnz; e += 2) {
            _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
                const float *x = (const float *)(a + input_off(oj, narrow, e + q));
                __m256 wb = _mm256_set1_ps(weight_at(wj, wv, e + q));
                acc[q][0] = _mm256_fmadd_ps(wb, LOAD8(x, lo), acc[q][0]);
                acc[q][1] = _mm256_fmadd_ps(wb, LOAD8(x + 8, hi), acc[q][1]);
            }
        }
        for (; e < nnz; e++) {
            const float *x = (const float *)(a + input_off(oj, narrow, e));
            __m256 wb = _mm256_set1_ps(weight_at(wj, wv, e));
            acc[0][0] = _mm256_fmadd_ps(wb, LOAD8(x, lo), acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(wb, LOAD8(x + 8, hi), acc[0][1]);
        }
        float *o = outt + (int64_t)col[j] * ldo;
        __m256 s0 = _mm256_add_ps(acc[0][0], acc[1][0]), s1 = _mm256_add_ps(acc[0][1], acc[1][1]);
        if (epi) {
            s0 = epiavx2(epi, col[j], r0, s0, lo, full);
            s1 = epiavx2(epi, col[j], r0 + 8, s1, hi, full);
        }
        if (full) {
            _mm256_storeu_ps(o, s0);
            _mm256_storeu_ps(o + 8, s1);
        } else {
            _mm256_maskstore_ps(o, lo, s0);
            _mm256_maskstore_ps(o + 8, hi, s1);
        }
    }
#undef LOAD8
}

static inline __attribute__((always_inline, target("avx2,fma"))) void spmm256_class(
    int64_t m, const uint8_t *at, const uint8_t *ro, const int64_t *c, float *outt, int64_t ldo,
    const uint8_t *wv, const uint8_t *wdata, int64_t wfirst, const int64_t *epi) {
    const int64_t nnz = c[0], cols = c[1];
    const int32_t *col = (const int32_t *)(ro + c[2]);
    const float *w = (const float *)(wdata + (c[3] - wfirst));
    const uint8_t *off = ro + c[4];
    const int narrow = (int)c[5];
    int64_t r0 = 0;
    /* Four vectors of rows at a time while there are 32 (as in spmm512_class). */
    for (; r0 + 32 <= m; r0 += 32) {
        const uint8_t *a = at + 4 * r0;
        for (int64_t j = 0; j < cols; j++) {
            const float *wj = w + j * nnz;
            const uint8_t *oj = off + j * nnz * (narrow ? 2 : 4);
            __m256 acc[4];
            for (int q = 0; q < 4; q++) acc[q] = _mm256_setzero_ps();
            for (int64_t e = 0; e < nnz; e++) {
                const float *x = (const float *)(a + input_off(oj, narrow, e));
                const __m256 wb = _mm256_set1_ps(weight_at(wj, wv, e));
                _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) acc[q] =
                    _mm256_fmadd_ps(wb, _mm256_loadu_ps(x + 8 * q), acc[q]);
            }
            float *o = outt + (int64_t)col[j] * ldo + r0;
            if (epi)
                for (int q = 0; q < 4; q++) acc[q] = epiavx2(epi, col[j], r0 + 8 * q, acc[q], mask8(8), 1);
            for (int q = 0; q < 4; q++) _mm256_storeu_ps(o + 8 * q, acc[q]);
        }
    }
    for (; r0 < m; r0 += 16) {
        const int64_t left = m - r0;
        /* Whole blocks with plain loads and stores (as spmm512_rows16). */
        if (left >= 16)
            spmm256_rows16(nnz, cols, col, w, wv, off, narrow, at + 4 * r0, outt + r0, ldo, mask8(16),
                           mask8(8), 1, epi, r0);
        else
            spmm256_rows16(nnz, cols, col, w, wv, off, narrow, at + 4 * r0, outt + r0, ldo,
                           mask8(left), mask8(left - 8), 0, epi, r0);
    }
}

/* The entry points: each case inlined with its null literals, so that their tests fold away. */
#define DEFINE_SPMM(SUF, TARGET, CLASS)                                                          \
    HIDDEN __attribute__((target(TARGET))) void NAME_spmm_##SUF(                                 \
        int64_t m, const uint8_t *at, const uint8_t *ro, const int64_t *table, int64_t nclass,   \
        float *outt, int64_t ldo, const uint8_t *wv, const uint8_t *wdata, int64_t wfirst,       \
        const int64_t *epi) {                                                                    \
        const int64_t *none = (const int64_t *)0;                                                \
        const uint8_t *no_view = (const uint8_t *)0;                                             \
        for (int64_t c = 0; c < nclass; c++) {                                                   \
            const int64_t *t = table + 6 * c;                                                    \
            if (wv && epi)                                                                       \
                CLASS(m, at, ro, t, outt, ldo, wv, ro, 0, epi);                                  \
            else if (wv)                                                                         \
                CLASS(m, at, ro, t, outt, ldo, wv, ro, 0, none);                                 \
            else if (epi)                                                                        \
                CLASS(m, at, ro, t, outt, ldo, no_view, wdata, wfirst, epi);                    \
            else                                                                                 \
                CLASS(m, at, ro, t, outt, ldo, no_view, wdata, wfirst, none);                   \
        }                                                                                        \
    }
DEFINE_SPMM(avx512, "avx512f,fma", spmm512_class)
DEFINE_SPMM(avx2, "avx2,fma", spmm256_class)

#define LOAD_TAIL512(p, k) _mm512_maskz_loadu_ps((__mmask16)((1u << (k)) - 1), p)
#define STORE_TAIL512(p, v, k) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (k)) - 1), v)
#define LOAD_TAIL256(p, k) _mm256_maskload_ps(p, mask8(k))
#define STORE_TAIL256(p, v, k) _mm256_maskstore_ps(p, mask8(k), v)

/* Binary elementwise operations over rows of contiguous elements (NAME_binary_*):
 * out[r * so + j] = a[r * sa + j] OP b[r * sb + j] for r < rows, j < cols, op 0 add, 1 sub,
 * 2 mul, 3 div (IEEE, as the inline code). A row stride of 0 broadcasts that operand's row. */
/* One operation over a row: whole vectors, then a masked tail. */
#define BINARY_ROW(OPV, LANES, LOADU, STOREU, LOADT, STORET)                                     \
    for (; j + LANES <= cols; j += LANES) STOREU(orow + j, OPV(LOADU(ar + j), LOADU(br + j)));   \
    /* A masked-off lane of a division divides 0 by 0: discarded; masked stores never fault. */ \
    if (j < cols) STORET(orow + j, OPV(LOADT(ar + j, cols - j), LOADT(br + j, cols - j)), cols - j)

#define DEFINE_BINARY(SUF, TARGET, V, LANES, LOADU, STOREU, LOADT, STORET, ADDV, SUBV, MULV, DIVV)  \
    HIDDEN __attribute__((target(TARGET))) void NAME_binary_##SUF(                               \
        int64_t op, int64_t rows, int64_t cols, const float *a, int64_t sa, const float *b,        \
        int64_t sb, float *out, int64_t so) {                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                      \
            const float *ar = a + r * sa, *br = b + r * sb;                                       \
            float *orow = out + r * so;                                                           \
            int64_t j = 0;                                                                        \
            if (op == 0) {                                                                        \
                BINARY_ROW(ADDV, LANES, LOADU, STOREU, LOADT, STORET);                            \
            } else if (op == 1) {                                                                 \
                BINARY_ROW(SUBV, LANES, LOADU, STOREU, LOADT, STORET);                            \
            } else if (op == 2) {                                                                 \
                BINARY_ROW(MULV, LANES, LOADU, STOREU, LOADT, STORET);                            \
            } else {                                                                              \
                BINARY_ROW(DIVV, LANES, LOADU, STOREU, LOADT, STORET);                            \
            }                                                                                     \
        }                                                                                         \
    }

DEFINE_BINARY(avx512, "avx512f", __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, LOAD_TAIL512,
              STORE_TAIL512, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_div_ps)
DEFINE_BINARY(avx2, "avx2", __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, LOAD_TAIL256,
              STORE_TAIL256, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_div_ps)

/* Transposes (NAME_transpose_*): dst[j * dst_row + i] = src[i * src_row + j] for i < r, j < c
 * (strides in elements), by 8x8 blocks of AVX registers (the AVX-512 variant uses the same 8x8
 * blocks: the shuffles are what bound it), the rest element by element. Tiles of 64 source rows
 * outermost, so that a large source (the hoisted projection's product, [N, T B]) is read from
 * the cache once per tile rather than once per block of destination rows; within a tile the
 * blocks of destination rows, so that stores go along eight rows at a time. */
#define TRANSPOSE_TILE 64
#define TRANSPOSE8(SUF, TARGET)                                                                   \
    HIDDEN __attribute__((target(TARGET))) void NAME_transpose_##SUF(                             \
        int64_t r, int64_t c, const float *src, int64_t src_row, float *dst, int64_t dst_row) {   \
        for (int64_t i0 = 0; i0 < r; i0 += TRANSPOSE_TILE) {                                      \
            const int64_t i1 = r < i0 + TRANSPOSE_TILE ? r : i0 + TRANSPOSE_TILE;                 \
            int64_t j = 0;                                                                        \
            for (; j + 8 <= c; j += 8) {                                                          \
                int64_t i = i0;                                                                   \
                for (; i + 8 <= i1; i += 8) {                                                     \
                    const float *s = src + i * src_row + j;                                       \
                    __m256 x0 = _mm256_loadu_ps(s), x1 = _mm256_loadu_ps(s + src_row);           \
                    __m256 x2 = _mm256_loadu_ps(s + 2 * src_row);                                 \
                    __m256 x3 = _mm256_loadu_ps(s + 3 * src_row);                                 \
                    __m256 x4 = _mm256_loadu_ps(s + 4 * src_row);                                 \
                    __m256 x5 = _mm256_loadu_ps(s + 5 * src_row);                                 \
                    __m256 x6 = _mm256_loadu_ps(s + 6 * src_row);                                 \
                    __m256 x7 = _mm256_loadu_ps(s + 7 * src_row);                                 \
                    __m256 t0 = _mm256_unpacklo_ps(x0, x1), t1 = _mm256_unpackhi_ps(x0, x1);      \
                    __m256 t2 = _mm256_unpacklo_ps(x2, x3), t3 = _mm256_unpackhi_ps(x2, x3);      \
                    __m256 t4 = _mm256_unpacklo_ps(x4, x5), t5 = _mm256_unpackhi_ps(x4, x5);      \
                    __m256 t6 = _mm256_unpacklo_ps(x6, x7), t7 = _mm256_unpackhi_ps(x6, x7);      \
                    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44);                                  \
                    __m256 u1 = _mm256_shuffle_ps(t0, t2, 0xee);                                  \
                    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44);                                  \
                    __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xee);                                  \
                    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44);                                  \
                    __m256 u5 = _mm256_shuffle_ps(t4, t6, 0xee);                                  \
                    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44);                                  \
                    __m256 u7 = _mm256_shuffle_ps(t5, t7, 0xee);                                  \
                    float *d = dst + j * dst_row + i;                                             \
                    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));                    \
                    _mm256_storeu_ps(d + dst_row, _mm256_permute2f128_ps(u1, u5, 0x20));          \
                    _mm256_storeu_ps(d + 2 * dst_row, _mm256_permute2f128_ps(u2, u6, 0x20));      \
                    _mm256_storeu_ps(d + 3 * dst_row, _mm256_permute2f128_ps(u3, u7, 0x20));      \
                    _mm256_storeu_ps(d + 4 * dst_row, _mm256_permute2f128_ps(u0, u4, 0x31));      \
                    _mm256_storeu_ps(d + 5 * dst_row, _mm256_permute2f128_ps(u1, u5, 0x31));      \
                    _mm256_storeu_ps(d + 6 * dst_row, _mm256_permute2f128_ps(u2, u6, 0x31));      \
                    _mm256_storeu_ps(d + 7 * dst_row, _mm256_permute2f128_ps(u3, u7, 0x31));      \
                }                                                                                 \
                for (; i < i1; i++)                                                               \
                    for (int64_t q = 0; q < 8; q++)                                               \
                        dst[(j + q) * dst_row + i] = src[i * src_row + j + q];                    \
            }                                                                                     \
            for (; j < c; j++)                                                                    \
                for (int64_t i = i0; i < i1; i++) dst[j * dst_row + i] = src[i * src_row + j];     \
        }                                                                                         \
    }

TRANSPOSE8(avx512, "avx2")
TRANSPOSE8(avx2, "avx2")
