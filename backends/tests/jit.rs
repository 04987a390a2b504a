//! The Cranelift JIT against the kernel IR's reference interpreter: every statement kind, every
//! matmul strategy, broadcasting, loops (forward, reverse, nested) with step strides, constant
//! views, run-time weights, aliasing, zero-initialized state; activation accuracy against f64;
//! no calls in the generated code.

use hlstm_backends::cpu::{CpuIsa, CpuOptions, JitProgram, OptLevel};
use hlstm_ir::kernel::{
    BufId, BufKind, ConstId, LoopRun, Program, Stmt, Storage, Strategy, View, Weight, interp,
};
use hlstm_ir::{Act, BinOp};
use proptest::prelude::*;

// ---------- helpers ----------

/// Counts this thread's allocations (the tests run on several threads).
struct Counting;

thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

/// The project's generator (`hlstm_ir::rng`) with the draws these tests need.
struct Rng(hlstm_ir::rng::Rng);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(hlstm_ir::rng::Rng::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        self.0.range(-1.0, 1.0)
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
    /// Values with about `density` of them nonzero.
    fn sparse(&mut self, n: usize, density: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let keep = (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= density;
                if keep { self.f() } else { 0.0 }
            })
            .collect()
    }
}

fn host_has(isa: CpuIsa) -> bool {
    match isa {
        CpuIsa::Native => true,
        CpuIsa::X86_64V2 => {
            std::is_x86_feature_detected!("sse4.2") && std::is_x86_feature_detected!("popcnt")
        }
        CpuIsa::X86_64V3 => {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("bmi1")
                && std::is_x86_feature_detected!("bmi2")
                && std::is_x86_feature_detected!("lzcnt")
        }
    }
}

/// The option sets every comparison runs under (those the host can run).
fn all_opts() -> Vec<CpuOptions> {
    [
        (CpuIsa::Native, OptLevel::None),
        (CpuIsa::Native, OptLevel::Speed),
        (CpuIsa::X86_64V2, OptLevel::None),
        (CpuIsa::X86_64V3, OptLevel::Speed),
    ]
    .into_iter()
    .filter(|(i, _)| host_has(*i))
    .map(|(isa, opt_level)| CpuOptions { isa, opt_level })
    .collect()
}

fn view(buf: BufId, offset: isize, dims: &[usize], strides: &[isize], step: isize) -> View {
    View {
        storage: Storage::Buf(buf),
        offset,
        dims: dims.to_vec(),
        strides: strides.to_vec(),
        step_stride: step,
    }
}

fn cview(c: ConstId, offset: isize, dims: &[usize], strides: &[isize]) -> View {
    View {
        storage: Storage::Const(c),
        offset,
        dims: dims.to_vec(),
        strides: strides.to_vec(),
        step_stride: 0,
    }
}

fn close(got: f32, want: f32, rel: f32) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got == want {
        return true;
    }
    (got - want).abs() <= rel * want.abs().max(1.0)
}

/// Runs `p` in the interpreter and in the JIT under every option set (twice each: the second
/// run must see the same zeroed state), with outputs prefilled with NaN; compares within `rel`
/// (relative to max(|reference|, 1)).
fn check_rel(p: &Program, inputs: &[Vec<f32>], rel: f32) {
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let want = interp::run(p, &ins).expect("interpreter");
    for o in all_opts() {
        let j = JitProgram::compile(p, &o).unwrap_or_else(|e| panic!("{o:?}: {e}"));
        for round in 0..2 {
            let mut outs: Vec<Vec<f32>> = want.iter().map(|w| vec![f32::NAN; w.len()]).collect();
            {
                let mut om: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                j.run(&ins, &mut om).unwrap();
            }
            for (k, (g, w)) in outs.iter().zip(&want).enumerate() {
                for (i, (a, b)) in g.iter().zip(w).enumerate() {
                    assert!(
                        close(*a, *b, rel),
                        "{o:?} run {round}: output {k}[{i}] = {a}, interpreter {b}\n{}",
                        hlstm_ir::kernel::print(p)
                    );
                }
            }
        }
    }
}

fn check(p: &Program, inputs: &[Vec<f32>]) {
    check_rel(p, inputs, 1e-5);
}

fn native() -> CpuOptions {
    CpuOptions::default()
}

// ---------- elementwise ----------

#[test]
fn copy_contiguous_transposed_and_broadcast() {
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[3, 5]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[5, 3]);
    let z = p.add_buffer("Z", BufKind::Output(1), &[4, 3, 5]);
    let w = p.add_buffer("W", BufKind::Output(2), &[200]);
    let big = p.add_buffer("B", BufKind::Input(1), &[400]);
    p.inputs = vec![x, big];
    p.outputs = vec![y, z, w];
    p.body = vec![
        // transpose
        Stmt::Copy {
            out: View::whole(y, &[5, 3]),
            x: view(x, 0, &[5, 3], &[1, 5], 0),
        },
        // broadcast [3,5] to [4,3,5] (right-aligned)
        Stmt::Copy {
            out: View::whole(z, &[4, 3, 5]),
            x: View::whole(x, &[3, 5]),
        },
        // every other element of a long input (scalar loop path)
        Stmt::Copy {
            out: View::whole(w, &[200]),
            x: view(big, 1, &[200], &[2], 0),
        },
    ];
    let mut r = Rng::new(1);
    check(&p, &[r.vec(15, 1.0), r.vec(400, 1.0)]);
}

#[test]
fn copy_from_constants_and_broadcast_columns() {
    let mut p = Program::default();
    let y = p.add_buffer("Y", BufKind::Output(0), &[6, 7]);
    let y2 = p.add_buffer("Y2", BufKind::Output(1), &[6, 7]);
    let mut r = Rng::new(2);
    let c = p.add_const("C", &[6, 7], r.vec(42, 3.0));
    let col = p.add_const("col", &[6, 1], r.vec(6, 3.0));
    p.outputs = vec![y, y2];
    p.body = vec![
        Stmt::Copy {
            out: View::whole(y, &[6, 7]),
            x: View::constant(c, &[6, 7]),
        },
        // a column broadcast along rows: stride 0 inner dim
        Stmt::Copy {
            out: View::whole(y2, &[6, 7]),
            x: cview(col, 0, &[6, 1], &[1, 1]),
        },
    ];
    check(&p, &[]);
}

fn all_acts() -> Vec<Act> {
    vec![
        Act::Sigmoid,
        Act::Tanh,
        Act::Relu,
        Act::Exp,
        Act::Neg,
        Act::LeakyRelu { alpha: 0.1 },
        Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Act::Affine {
            alpha: 1.5,
            beta: -0.25,
        },
        Act::ThresholdedRelu { alpha: 0.3 },
        Act::ScaledTanh {
            alpha: 1.7,
            beta: 0.6,
        },
        Act::Elu { alpha: 0.8 },
        Act::Softsign,
        Act::Softplus,
        Act::NotZero,
        Act::IsZero,
        Act::IsPositive,
        Act::IsNonNegative,
    ]
}

#[test]
fn unary_every_activation_vector_scalar_and_looped() {
    for act in all_acts() {
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[1000]);
        let a = p.add_buffer("A", BufKind::Output(0), &[37]);
        let b = p.add_buffer("B", BufKind::Output(1), &[1000]);
        let c = p.add_buffer("C", BufKind::Output(2), &[2, 40]);
        p.inputs = vec![x];
        p.outputs = vec![a, b, c];
        p.body = vec![
            // unrolled vectors and a scalar remainder
            Stmt::Unary {
                op: act,
                out: View::whole(a, &[37]),
                x: view(x, 3, &[37], &[1], 0),
            },
            // a vector loop
            Stmt::Unary {
                op: act,
                out: View::whole(b, &[1000]),
                x: View::whole(x, &[1000]),
            },
            // strided: scalar
            Stmt::Unary {
                op: act,
                out: view(c, 0, &[2, 20], &[40, 2], 0),
                x: view(x, 0, &[2, 20], &[1, 2], 0),
            },
        ];
        let mut r = Rng::new(3);
        let mut xs = r.vec(1000, 6.0);
        xs[5] = 0.0;
        xs[6] = -0.0;
        xs[7] = 40.0;
        xs[8] = -40.0;
        xs[9] = 1e-20;
        check_rel(&p, &[xs], 2e-6);
    }
}

/// The step activations that comparisons lower to are exact: the same bits as the interpreter
/// on zeros of both signs, the smallest subnormals, infinities and NaN, in the vector loop, the
/// unrolled vectors and the scalar remainder.
#[test]
fn step_activations_exact_on_special_values() {
    let special = [
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1.1754942e-38,
        -1.1754942e-38,
        1.0,
        -1.0,
        3e38,
        -3e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ];
    let xs: Vec<f32> = special.iter().cycle().take(103).copied().collect();
    let n = xs.len();
    for act in [
        Act::IsZero,
        Act::IsPositive,
        Act::IsNonNegative,
        Act::NotZero,
    ] {
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[n]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[n]);
        let z = p.add_buffer("Z", BufKind::Output(1), &[13]);
        p.inputs = vec![x];
        p.outputs = vec![y, z];
        p.body = vec![
            Stmt::Unary {
                op: act,
                out: View::whole(y, &[n]),
                x: View::whole(x, &[n]),
            },
            Stmt::Unary {
                op: act,
                out: View::whole(z, &[13]),
                x: view(x, 1, &[13], &[1], 0),
            },
        ];
        let j = JitProgram::compile(&p, &native()).unwrap();
        let (mut out, mut out2) = (vec![7.0; n], vec![7.0; 13]);
        j.run(&[&xs], &mut [&mut out, &mut out2]).unwrap();
        for (i, v) in xs.iter().enumerate() {
            assert_eq!(
                out[i].to_bits(),
                act.apply(*v).to_bits(),
                "{}({v})",
                act.name()
            );
        }
        for i in 0..13 {
            let v = xs[i + 1];
            assert_eq!(
                out2[i].to_bits(),
                act.apply(v).to_bits(),
                "{}({v})",
                act.name()
            );
        }
    }
    // The reference itself: IEEE comparisons with 0, NaN false.
    assert_eq!(Act::IsZero.apply(-0.0), 1.0);
    assert_eq!(Act::IsZero.apply(1e-45), 0.0);
    assert_eq!(Act::IsPositive.apply(1e-45), 1.0);
    assert_eq!(Act::IsNonNegative.apply(-0.0), 1.0);
    assert_eq!(Act::IsNonNegative.apply(-1e-45), 0.0);
    for act in [Act::IsZero, Act::IsPositive, Act::IsNonNegative] {
        assert_eq!(act.apply(f32::NAN), 0.0);
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    for op in [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div] {
        let mut p = Program::default();
        let a = p.add_buffer("A", BufKind::Input(0), &[5, 1]);
        let b = p.add_buffer("B", BufKind::Input(1), &[1, 9]);
        let big = p.add_buffer("G", BufKind::Input(2), &[3, 300]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[5, 9]);
        let y2 = p.add_buffer("Y2", BufKind::Output(1), &[3, 300]);
        let y3 = p.add_buffer("Y3", BufKind::Output(2), &[9, 5]);
        let mut r = Rng::new(4);
        let bias = p.add_const("bias", &[300], r.vec(300, 1.0));
        p.inputs = vec![a, b, big];
        p.outputs = vec![y, y2, y3];
        p.body = vec![
            // [5,1] op [1,9] -> [5,9]
            Stmt::Binary {
                op,
                out: View::whole(y, &[5, 9]),
                a: View::whole(a, &[5, 1]),
                b: View::whole(b, &[1, 9]),
            },
            // [3,300] op const [300] (rank-1, right-aligned), vector loops
            Stmt::Binary {
                op,
                out: View::whole(y2, &[3, 300]),
                a: View::whole(big, &[3, 300]),
                b: View::constant(bias, &[300]),
            },
            // transposed output: scalar
            Stmt::Binary {
                op,
                out: view(y3, 0, &[5, 9], &[1, 5], 0),
                a: View::whole(a, &[5, 1]),
                b: View::whole(b, &[1, 9]),
            },
        ];
        let ga: Vec<f32> = r.vec(5, 2.0).iter().map(|v| v + 3.0).collect();
        let gb: Vec<f32> = r.vec(9, 2.0).iter().map(|v| v + 3.0).collect();
        check(&p, &[ga, gb, r.vec(900, 2.0)]);
    }
}

#[test]
fn clip_including_degenerate_bounds() {
    for (lo, hi) in [(-0.5f32, 0.75f32), (0.2, -0.2), (f32::NEG_INFINITY, 0.0)] {
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[23]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[23]);
        p.inputs = vec![x];
        p.outputs = vec![y];
        p.body = vec![Stmt::Clip {
            out: View::whole(y, &[23]),
            x: View::whole(x, &[23]),
            min: lo,
            max: hi,
        }];
        check(&p, &[Rng::new(5).vec(23, 2.0)]);
    }
}

// ---------- matmul ----------

#[derive(Clone, Copy, Debug)]
enum W {
    Const(Strategy),
    /// A run-time weight, its columns contiguous or (transposed storage) strided.
    Runtime {
        transposed: bool,
    },
    /// A run-time weight with its zero pattern known (`Weight::Masked`).
    Masked {
        transposed: bool,
    },
}

#[allow(clippy::too_many_arguments)]
/// out[M,N] = a[M,K] · w[K,N] with `a` optionally a strided slice of a wider input and the
/// output optionally written with a column stride.
fn matmul_program(
    m: usize,
    k: usize,
    n: usize,
    w: W,
    density: f64,
    a_strided: bool,
    out_strided: bool,
    seed: u64,
) -> (Program, Vec<Vec<f32>>) {
    let mut r = Rng::new(seed);
    let mut p = Program::default();
    // a is either [M, K] or the odd columns of an [M, 2K+1] input
    let a_buf_len = if a_strided { m * (2 * k + 1) } else { m * k };
    let a = p.add_buffer("A", BufKind::Input(0), &[a_buf_len]);
    let av = if a_strided {
        view(a, 1, &[m, k], &[(2 * k + 1) as isize, 2], 0)
    } else {
        view(a, 0, &[m, k], &[k as isize, 1], 0)
    };
    let out_len = if out_strided { m * n * 2 } else { m * n };
    let y = p.add_buffer("Y", BufKind::Output(0), &[out_len]);
    let yv = if out_strided {
        view(y, 1, &[m, n], &[(2 * n) as isize, 2], 0)
    } else {
        view(y, 0, &[m, n], &[n as isize, 1], 0)
    };
    let wdata = r.sparse(k * n, density);
    let mut inputs = vec![r.vec(a_buf_len, 1.0)];
    p.inputs = vec![a];
    let pattern: Vec<f32> = wdata.iter().map(|v| f32::from(*v != 0.0)).collect();
    let weight = match w {
        W::Const(s) => Weight::Const(p.add_const("W", &[k, n], wdata), s),
        W::Runtime { transposed } | W::Masked { transposed } => {
            let wb = p.add_buffer("Wrt", BufKind::Input(1), &[k * n]);
            p.inputs.push(wb);
            let v = if transposed {
                // stored as [N, K]
                let mut t = vec![0.0; k * n];
                for q in 0..k {
                    for j in 0..n {
                        t[j * k + q] = wdata[q * n + j];
                    }
                }
                inputs.push(t);
                view(wb, 0, &[k, n], &[1, k as isize], 0)
            } else {
                inputs.push(wdata);
                view(wb, 0, &[k, n], &[n as isize, 1], 0)
            };
            if let W::Masked { .. } = w {
                Weight::Masked(v, p.add_const("pattern", &[k, n], pattern))
            } else {
                Weight::View(v)
            }
        }
    };
    p.outputs = vec![y];
    p.body = vec![Stmt::MatMul {
        rows_per_step: None,
        out: yv,
        a: av,
        w: weight,
    }];
    (p, inputs)
}

fn strategies() -> Vec<W> {
    vec![
        W::Const(Strategy::Dense),
        W::Const(Strategy::SparseUnrolled),
        W::Const(Strategy::SparseCsr),
        W::Runtime { transposed: false },
        W::Runtime { transposed: true },
        W::Masked { transposed: false },
        W::Masked { transposed: true },
    ]
}

/// A masked run-time weight whose columns' nonzero counts spread from none to K, so its
/// compressed classes are coarsened and columns padded (with positions outside the pattern),
/// at 5 rows (blocks of four) and 21 (blocks of sixteen, the last overlapping); then the same
/// weight with new values under the same pattern.
#[test]
fn masked_weight_with_spread_column_counts() {
    let (k, n) = (400, 48);
    for (m, values) in [(5, 1), (21, 2)] {
        let mut r = Rng::new(70 + m as u64);
        let mut p = Program::default();
        let a = p.add_buffer("A", BufKind::Input(0), &[m * k]);
        let wb = p.add_buffer("W", BufKind::Input(1), &[k * n]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[m * n]);
        let pattern: Vec<f32> = (0..k * n)
            .map(|i| f32::from((r.f() + 1.0) / 2.0 * (n as f32) < (i % n) as f32))
            .collect();
        let c = p.add_const("pattern", &[k, n], pattern.clone());
        p.inputs = vec![a, wb];
        p.outputs = vec![y];
        p.body = vec![Stmt::MatMul {
            rows_per_step: None,
            out: view(y, 0, &[m, n], &[n as isize, 1], 0),
            a: view(a, 0, &[m, k], &[k as isize, 1], 0),
            w: Weight::Masked(view(wb, 0, &[k, n], &[n as isize, 1], 0), c),
        }];
        for _ in 0..values {
            let w: Vec<f32> = pattern.iter().map(|on| on * r.f()).collect();
            check_rel(&p, &[r.vec(m * k, 1.0), w], 1e-4);
        }
    }
}

#[test]
fn matmul_every_strategy_and_shape() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (1, 9, 16),
        (1, 33, 70),
        (3, 20, 37),
        (2, 64, 48),
        (1, 0, 5),
        (4, 5, 0),
        // Four and more rows: sparse weights go by blocks of four transposed rows, the last
        // block overlapping the one before when 4 does not divide M.
        (4, 12, 7),
        (5, 17, 9),
        (6, 3, 2),
        (9, 40, 21),
        // Sixteen and more: compressed weights go by blocks of sixteen rows (four vectors),
        // the last block overlapping the one before when 16 does not divide M.
        (16, 30, 20),
        (21, 50, 33),
        (37, 9, 12),
    ];
    let mut seed = 10;
    for w in strategies() {
        for &(m, k, n) in &shapes {
            for (a_strided, out_strided) in [(false, false), (true, true)] {
                for density in [1.0, 0.3] {
                    seed += 1;
                    let (p, ins) =
                        matmul_program(m, k, n, w, density, a_strided, out_strided, seed);
                    check(&p, &ins);
                }
            }
        }
    }
}

/// Weights larger than the K-blocking threshold (256 KiB panels): the K loop runs in blocks,
/// the first from zero and the others adding to the output (with a remainder block), for
/// packed constants and run-time weights; a strided output is not blocked.
#[test]
fn dense_matmul_blocked_over_k() {
    let mut seed = 500;
    for w in [
        W::Const(Strategy::Dense),
        W::Runtime { transposed: false },
        W::Runtime { transposed: true },
    ] {
        for &(m, k, n) in &[(9, 600, 301), (8, 1100, 64), (17, 700, 128)] {
            for (a_strided, out_strided) in [(false, false), (true, false), (false, true)] {
                seed += 1;
                let (p, ins) = matmul_program(m, k, n, w, 1.0, a_strided, out_strided, seed);
                check_rel(&p, &ins, 1e-4);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Batched matmuls (issue 18) against the kernel interpreter: the wide kernels (dense
    /// `gemm` from 1024 weights, sparse `spmm` from 8 rows, under every ISA the host has, and
    /// Cranelift's own kernels where the ISA has none), over batch sizes around the vector
    /// widths (64 and 97: `spmm`'s blocks of four vectors, then the rest), shapes and
    /// sparsity, with contiguous and strided operands.
    #[test]
    fn batched_matmuls_match_the_interpreter(
        m in prop::sample::select(vec![1usize, 2, 3, 4, 5, 8, 16, 17, 33, 64, 97]),
        k in 1usize..90,
        n in 1usize..90,
        density in prop::sample::select(vec![1.0f64, 0.3, 0.05]),
        // Every strategy; run-time weights row-major by the wide kernel on the weight in place
        // (fewer than four rows) or through panels (`gemm_rm`), transposed by Cranelift's;
        // masked ones by the wide sparse kernel reading their values through the view.
        strategy in prop::sample::select(strategies()),
        strided in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let (p, ins) = matmul_program(m, k, n, strategy, density, strided, strided, seed);
        check_rel(&p, &ins, 1e-4);
    }
}

/// A temporary accumulated from zero in a loop and copied whole into an output at the end is
/// computed in the output (`Layout::in_output`): the output, prefilled with NaN, must be
/// zeroed on entry as the temporary was, at every call; beside it a temporary written whole
/// per step and copied out, and one the program reads after its copy.
#[test]
fn temporaries_computed_in_their_outputs() {
    let (steps, n) = (6, 40);
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[steps, n]);
    let sum = p.add_buffer("sum", BufKind::Output(0), &[n]);
    let ys = p.add_buffer("Y", BufKind::Output(1), &[steps, n]);
    let last = p.add_buffer("last", BufKind::Output(2), &[n]);
    let acc = p.add_buffer("acc", BufKind::Temp, &[n]);
    let per_step = p.add_buffer("per_step", BufKind::Temp, &[steps, n]);
    let read_after = p.add_buffer("read_after", BufKind::Temp, &[n]);
    p.inputs = vec![x];
    p.outputs = vec![sum, ys, last];
    let xt = view(x, 0, &[n], &[1], n as isize);
    let whole = View::whole;
    p.body = vec![
        Stmt::Loop {
            run: LoopRun::Fixed,
            trip: steps,
            reverse: false,
            body: vec![
                Stmt::Binary {
                    op: BinOp::Add,
                    out: whole(acc, &[n]),
                    a: whole(acc, &[n]),
                    b: xt.clone(),
                },
                Stmt::Unary {
                    op: Act::Tanh,
                    out: view(per_step, 0, &[n], &[1], n as isize),
                    x: whole(acc, &[n]),
                },
            ],
        },
        Stmt::Unary {
            op: Act::Sigmoid,
            out: whole(read_after, &[n]),
            x: whole(acc, &[n]),
        },
        Stmt::Copy {
            out: whole(sum, &[n]),
            x: whole(acc, &[n]),
        },
        Stmt::Copy {
            out: whole(ys, &[steps, n]),
            x: whole(per_step, &[steps, n]),
        },
        Stmt::Copy {
            out: whole(last, &[n]),
            x: whole(read_after, &[n]),
        },
        Stmt::Binary {
            op: BinOp::Mul,
            out: whole(last, &[n]),
            a: whole(last, &[n]),
            b: whole(read_after, &[n]),
        },
    ];
    let mut r = Rng::new(9);
    check(&p, &[r.vec(steps * n, 1.0)]);
}

/// A recurrence over run-time weights, as the trainer's programs have: products inside a loop
/// by weights that are program inputs (packed once before the loop, `Layout::pack_before`;
/// a masked one's values gathered, from 8 rows), one dense and one masked by weights the loop
/// itself rewrites every step (which must be read as they are at each step, not packed), and
/// an inner loop whose weight the outer loop writes (packed before the inner loop, at each
/// outer step). Row counts around the micro kernels' (4, 6, 8) and column
/// counts that leave a partial tile; every ISA the host has, against the interpreter.
#[test]
fn run_time_weights_inside_loops() {
    for (rows, k, n) in [(4, 40, 48), (6, 33, 70), (9, 64, 100), (32, 96, 64)] {
        let mut r = Rng::new(rows as u64 * 31 + k as u64);
        let (steps, inner_trip) = (5, 3);
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[steps, rows, k]);
        let w = p.add_buffer("W", BufKind::Input(1), &[k, n]);
        let u = p.add_buffer("U", BufKind::Input(2), &[n, k]);
        // A masked weight (zero outside `pattern`, about 20% dense) and a copy the loop
        // rewrites (tanh keeps the zeros).
        let mw = p.add_buffer("M", BufKind::Input(3), &[k, n]);
        let pattern: Vec<f32> = (0..k * n).map(|_| f32::from(r.f() > 0.6)).collect();
        let pat = p.add_const("pattern", &[k, n], pattern.clone());
        let mmoving = p.add_buffer("mmoving", BufKind::Temp, &[k, n]);
        let y = p.add_buffer("Y", BufKind::Output(0), &[steps, rows, n]);
        let z = p.add_buffer("Z", BufKind::Output(1), &[steps, rows, k]);
        let moving = p.add_buffer("moving", BufKind::Temp, &[k, n]);
        let h = p.add_buffer("h", BufKind::Temp, &[rows, n]);
        p.inputs = vec![x, w, u, mw];
        p.outputs = vec![y, z];
        let whole = View::whole;
        let xt = view(x, 0, &[rows, k], &[k as isize, 1], (rows * k) as isize);
        let yt = view(y, 0, &[rows, n], &[n as isize, 1], (rows * n) as isize);
        let zt = view(z, 0, &[rows, k], &[k as isize, 1], (rows * k) as isize);
        // y_t += x_t w, through h.
        let add_product = |w: Weight| {
            [
                Stmt::MatMul {
                    rows_per_step: None,
                    out: whole(h, &[rows, n]),
                    a: xt.clone(),
                    w,
                },
                Stmt::Binary {
                    op: BinOp::Add,
                    out: yt.clone(),
                    a: yt.clone(),
                    b: whole(h, &[rows, n]),
                },
            ]
        };
        let tanh = |b: BufId| Stmt::Unary {
            op: Act::Tanh,
            out: whole(b, &[k, n]),
            x: whole(b, &[k, n]),
        };
        let copies = vec![
            Stmt::Copy {
                out: whole(moving, &[k, n]),
                x: whole(w, &[k, n]),
            },
            Stmt::Copy {
                out: whole(mmoving, &[k, n]),
                x: whole(mw, &[k, n]),
            },
        ];
        // y_t = x_t W, z_t = y_t U: weights the loop never writes.
        let mut step = vec![
            Stmt::MatMul {
                rows_per_step: None,
                out: yt.clone(),
                a: xt.clone(),
                w: Weight::View(whole(w, &[k, n])),
            },
            Stmt::MatMul {
                rows_per_step: None,
                out: zt.clone(),
                a: yt.clone(),
                w: Weight::View(whole(u, &[n, k])),
            },
        ];
        // A product by the weight this loop rewrites, then the rewrite.
        step.extend(add_product(Weight::View(whole(moving, &[k, n]))));
        step.push(tanh(moving));
        // Masked: one the loop never writes (its values gathered before the loop from 8
        // rows), one it rewrites after reading it.
        step.extend(add_product(Weight::Masked(whole(mw, &[k, n]), pat)));
        step.extend(add_product(Weight::Masked(whole(mmoving, &[k, n]), pat)));
        step.push(tanh(mmoving));
        // An inner loop reading the weight the outer one rewrites.
        step.push(Stmt::Loop {
            run: LoopRun::Fixed,
            trip: inner_trip,
            reverse: false,
            body: add_product(Weight::View(whole(moving, &[k, n]))).to_vec(),
        });
        p.body = copies;
        p.body.push(Stmt::Loop {
            run: LoopRun::Fixed,
            trip: steps,
            reverse: false,
            body: step,
        });
        let ins = vec![
            r.vec(steps * rows * k, 1.0),
            r.vec(k * n, 0.3),
            r.vec(n * k, 0.3),
            r.vec(k * n, 0.5)
                .iter()
                .zip(&pattern)
                .map(|(v, on)| v * on)
                .collect(),
        ];
        check_rel(&p, &ins, 1e-4);
        // Packed before the loops: the library calls the packing and the packed weights' kernel.
        let o = hlstm_backends::cpu::aot::compile_object(
            &p,
            &[],
            &CpuOptions {
                isa: CpuIsa::X86_64V3,
                opt_level: OptLevel::Speed,
            },
            "t",
            1,
            false,
        )
        .expect("compiles");
        let gathered = (rows >= 8).then_some("t_gather");
        for want in ["t_pack", "t_gemm_avx2"].into_iter().chain(gathered) {
            assert!(
                o.wide_symbols.iter().any(|s| s == want),
                "{want} not called: {:?}",
                o.wide_symbols
            );
        }
    }
}

/// The wide kernels are called where they should be: a library for x86-64-v3 calls the dense
/// one for a large dense weight at any batch, the sparse one for a sparse weight (constant or
/// masked) over 8 rows or more, only the transpose for one over 4 to 7 rows (Cranelift's
/// vectors of four rows), and none for one row nor for x86-64-v2 (no AVX2).
#[test]
fn wide_kernels_are_called_for_large_dense_and_batched_sparse_weights() {
    use hlstm_backends::cpu::aot::compile_object;
    let calls_w = |m, k, n, w, density, isa| {
        let (p, _) = matmul_program(m, k, n, w, density, false, false, 3);
        let o = compile_object(
            &p,
            &[],
            &CpuOptions {
                isa,
                opt_level: OptLevel::Speed,
            },
            "t",
            1,
            false,
        )
        .expect("compiles");
        assert_eq!(o.calls_wide, !o.wide_symbols.is_empty());
        let mut kinds: Vec<String> = o
            .wide_symbols
            .iter()
            .map(|s| {
                s.trim_start_matches("t_")
                    .trim_end_matches("_avx2")
                    .to_string()
            })
            .collect();
        kinds.sort();
        kinds.join(",")
    };
    let calls = |m, k, n, s, density, isa| calls_w(m, k, n, W::Const(s), density, isa);
    let v3 = CpuIsa::X86_64V3;
    assert_eq!(calls(1, 64, 64, Strategy::Dense, 1.0, v3), "gemm");
    assert_eq!(calls(16, 64, 64, Strategy::Dense, 1.0, v3), "gemm");
    assert_eq!(
        calls(16, 8, 8, Strategy::Dense, 1.0, v3),
        "",
        "too small to call"
    );
    assert_eq!(
        calls(8, 64, 64, Strategy::SparseCsr, 0.1, v3),
        "spmm,transpose"
    );
    assert_eq!(
        calls(16, 64, 64, Strategy::SparseUnrolled, 0.1, v3),
        "spmm,transpose"
    );
    assert_eq!(calls(4, 64, 64, Strategy::SparseCsr, 0.1, v3), "transpose");
    assert_eq!(calls(1, 64, 64, Strategy::SparseUnrolled, 0.1, v3), "");
    assert_eq!(
        calls(16, 64, 64, Strategy::Dense, 1.0, CpuIsa::X86_64V2),
        ""
    );
    // Run-time weights: a row-major one by the wide kernel on the weight as it is, a masked one
    // (over 8 rows or more) by the sparse kernel reading its values through the view.
    let masked = W::Masked { transposed: false };
    assert_eq!(calls_w(16, 64, 64, masked, 0.1, v3), "spmm,transpose");
    assert_eq!(calls_w(4, 64, 64, masked, 0.1, v3), "transpose");
    let runtime = W::Runtime { transposed: false };
    assert_eq!(calls_w(16, 64, 64, runtime, 1.0, v3), "gemm_rm");
    assert_eq!(calls_w(1, 64, 64, runtime, 1.0, v3), "gemm_rm");
}

/// Softmax statements against the interpreter: contiguous and strided rows, rank 1 and 3, in
/// place, logits large enough that exp overflows without the max shift, and rows of one.
#[test]
fn softmax_and_log_softmax_statements() {
    for log in [false, true] {
        let mut p = Program::default();
        let x = p.add_buffer("X", BufKind::Input(0), &[60]);
        let a = p.add_buffer("A", BufKind::Output(0), &[60]);
        let b = p.add_buffer("B", BufKind::Output(1), &[60]);
        let c = p.add_buffer("C", BufKind::Output(2), &[7]);
        let d = p.add_buffer("D", BufKind::Output(3), &[60]);
        let e = p.add_buffer("E", BufKind::Output(4), &[5]);
        p.inputs = vec![x];
        p.outputs = vec![a, b, c, d, e];
        p.body = vec![
            // rows of 5, contiguous
            Stmt::Softmax {
                out: View::whole(a, &[3, 4, 5]),
                x: View::whole(x, &[3, 4, 5]),
                log,
            },
            // rows down the columns of a [12, 5] input (stride 5), written transposed
            Stmt::Softmax {
                out: view(b, 0, &[5, 12], &[1, 5], 0),
                x: view(x, 0, &[5, 12], &[1, 5], 0),
                log,
            },
            // rank 1
            Stmt::Softmax {
                out: View::whole(c, &[7]),
                x: view(x, 3, &[7], &[1], 0),
                log,
            },
            // in place: a copy, then the statement on its own output
            Stmt::Copy {
                out: View::whole(d, &[60]),
                x: View::whole(x, &[60]),
            },
            Stmt::Softmax {
                out: View::whole(d, &[6, 10]),
                x: View::whole(d, &[6, 10]),
                log,
            },
            // rows of one
            Stmt::Softmax {
                out: View::whole(e, &[5, 1]),
                x: view(x, 0, &[5, 1], &[2, 1], 0),
                log,
            },
        ];
        let mut xs = Rng::new(9).vec(60, 4.0);
        xs[7] = 300.0;
        xs[8] = 299.0;
        xs[20] = -200.0;
        check_rel(&p, &[xs], 2e-6);
    }
}

#[test]
fn sparse_unrolled_emits_one_fma_per_nonzero_and_no_zero_weight() {
    let (p, _) = matmul_program(
        2,
        40,
        30,
        W::Const(Strategy::SparseUnrolled),
        0.1,
        false,
        false,
        7,
    );
    let nnz = p.consts[0].nonzeros();
    let j = JitProgram::compile(&p, &native()).unwrap();
    let clif = j.clif();
    let count = |clif: &str, what: &str| clif.lines().filter(|l| l.contains(what)).count();
    if j.has_fma() {
        // One row's code inside the loop over M: each column's first products start its
        // accumulators (fmul), the rest are fused multiply-adds; the partial sums are fadds.
        let products = count(&clif, "= fma ") + count(&clif, "= fmul ");
        assert_eq!(products, nnz, "{clif}");
        assert!(count(&clif, "= fma ") > 0, "{clif}");
    }
    let v2 = CpuOptions {
        isa: CpuIsa::X86_64V2,
        opt_level: OptLevel::None,
    };
    let j2 = JitProgram::compile(&p, &v2).unwrap();
    assert!(!j2.has_fma());
    let clif2 = j2.clif();
    assert_eq!(count(&clif2, "= fma "), 0);
    assert_eq!(count(&clif2, "= fmul "), nnz);
}

// ---------- loops ----------

/// h_t = tanh(X[t] W + h_{t-1} U + b), Y[t] = h_t, and the last h; forward or reverse.
fn rnn(
    t: usize,
    d: usize,
    h: usize,
    s: Strategy,
    reverse: bool,
    seed: u64,
) -> (Program, Vec<Vec<f32>>) {
    let mut r = Rng::new(seed);
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[t, 1, d]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[t, 1, h]);
    let hl = p.add_buffer("h_last", BufKind::Output(1), &[1, h]);
    let hb = p.add_buffer("h", BufKind::Temp, &[1, h]);
    let z = p.add_buffer("z", BufKind::Temp, &[1, h]);
    let z2 = p.add_buffer("z2", BufKind::Temp, &[1, h]);
    let w = p.add_const("W", &[d, h], r.sparse(d * h, 0.4));
    let u = p.add_const("U", &[h, h], r.sparse(h * h, 0.4));
    let b = p.add_const("b", &[h], r.vec(h, 0.5));
    p.inputs = vec![x];
    p.outputs = vec![y, hl];
    let hv = View::whole(hb, &[1, h]);
    let zv = View::whole(z, &[1, h]);
    p.body = vec![
        Stmt::Loop {
            run: LoopRun::Fixed,
            trip: t,
            reverse,
            body: vec![
                Stmt::MatMul {
                    rows_per_step: None,
                    out: zv.clone(),
                    a: view(x, 0, &[1, d], &[d as isize, 1], d as isize),
                    w: Weight::Const(w, s),
                },
                Stmt::MatMul {
                    rows_per_step: None,
                    out: View::whole(z2, &[1, h]),
                    a: hv.clone(),
                    w: Weight::Const(u, s),
                },
                Stmt::Binary {
                    op: BinOp::Add,
                    out: zv.clone(),
                    a: zv.clone(),
                    b: View::whole(z2, &[1, h]),
                },
                Stmt::Binary {
                    op: BinOp::Add,
                    out: zv.clone(),
                    a: zv.clone(),
                    b: View::constant(b, &[h]),
                },
                Stmt::Unary {
                    op: Act::Tanh,
                    out: hv.clone(),
                    x: zv.clone(),
                },
                Stmt::Copy {
                    out: view(y, 0, &[1, h], &[h as isize, 1], h as isize),
                    x: hv.clone(),
                },
            ],
        },
        Stmt::Copy {
            out: View::whole(hl, &[1, h]),
            x: hv,
        },
    ];
    let xs = r.vec(t * d, 1.0);
    (p, vec![xs])
}

#[test]
fn recurrent_loops_forward_and_reverse_every_strategy() {
    let mut seed = 100;
    for s in [
        Strategy::Dense,
        Strategy::SparseUnrolled,
        Strategy::SparseCsr,
    ] {
        for reverse in [false, true] {
            for (t, d, h) in [(1, 3, 4), (5, 7, 9), (8, 32, 64)] {
                seed += 1;
                let (p, ins) = rnn(t, d, h, s, reverse, seed);
                check(&p, &ins);
            }
        }
    }
}

#[test]
fn nested_loops_and_loop_of_zero_trips() {
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[3]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[1]);
    let y2 = p.add_buffer("Y2", BufKind::Output(1), &[4]);
    let acc = p.add_buffer("acc", BufKind::Temp, &[1]);
    let s = p.add_buffer("s", BufKind::Temp, &[1]);
    p.inputs = vec![x];
    p.outputs = vec![y, y2];
    let accv = View::whole(acc, &[1]);
    let sv = View::whole(s, &[1]);
    p.body = vec![
        Stmt::Loop {
            run: LoopRun::Fixed,
            trip: 3,
            reverse: false,
            body: vec![
                Stmt::Binary {
                    op: BinOp::Add,
                    out: accv.clone(),
                    a: accv.clone(),
                    b: view(x, 0, &[1], &[1], 1),
                },
                Stmt::Loop {
                    run: LoopRun::Fixed,
                    trip: 4,
                    reverse: true,
                    body: vec![
                        Stmt::Binary {
                            op: BinOp::Mul,
                            out: sv.clone(),
                            a: accv.clone(),
                            b: accv.clone(),
                        },
                        // Y2[u] = s (u of the inner loop)
                        Stmt::Copy {
                            out: view(y2, 0, &[1], &[1], 1),
                            x: sv.clone(),
                        },
                    ],
                },
            ],
        },
        Stmt::Loop {
            run: LoopRun::Fixed,
            trip: 0,
            reverse: false,
            body: vec![Stmt::Copy {
                out: View::whole(y, &[1]),
                x: view(x, 0, &[1], &[1], 1),
            }],
        },
        Stmt::Copy {
            out: View::whole(y, &[1]),
            x: accv,
        },
    ];
    check(&p, &[vec![1.5, -2.0, 0.25]]);
}

// ---------- state, aliasing, zeroing ----------

#[test]
fn overlapping_output_and_operand() {
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[40]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[40]);
    let hy = p.add_buffer("HY", BufKind::Output(1), &[1, 8]);
    let t = p.add_buffer("T", BufKind::Temp, &[40]);
    let h = p.add_buffer("h", BufKind::Temp, &[1, 8]);
    let mut r = Rng::new(9);
    let u = p.add_const("U", &[8, 8], r.vec(64, 1.0));
    p.inputs = vec![x];
    p.outputs = vec![y, hy];
    p.body = vec![
        Stmt::Copy {
            out: View::whole(t, &[40]),
            x: View::whole(x, &[40]),
        },
        // shift right by one within one buffer: reads all before writing
        Stmt::Copy {
            out: view(t, 1, &[39], &[1], 0),
            x: view(t, 0, &[39], &[1], 0),
        },
        // in place, element for element (no scratch needed)
        Stmt::Binary {
            op: BinOp::Mul,
            out: View::whole(t, &[40]),
            a: View::whole(t, &[40]),
            b: View::whole(x, &[40]),
        },
        // reversed in place: out[i] = t[39 - i]
        Stmt::Unary {
            op: Act::Neg,
            out: View::whole(t, &[40]),
            x: view(t, 39, &[40], &[-1], 0),
        },
        Stmt::Copy {
            out: View::whole(y, &[40]),
            x: View::whole(t, &[40]),
        },
        Stmt::Copy {
            out: View::whole(h, &[1, 8]),
            x: view(x, 0, &[1, 8], &[8, 1], 0),
        },
        // h = h · U (output overlaps the left operand), in each strategy
        Stmt::MatMul {
            rows_per_step: None,
            out: View::whole(h, &[1, 8]),
            a: View::whole(h, &[1, 8]),
            w: Weight::Const(u, Strategy::Dense),
        },
        Stmt::MatMul {
            rows_per_step: None,
            out: View::whole(h, &[1, 8]),
            a: View::whole(h, &[1, 8]),
            w: Weight::Const(u, Strategy::SparseUnrolled),
        },
        Stmt::MatMul {
            rows_per_step: None,
            out: View::whole(h, &[1, 8]),
            a: View::whole(h, &[1, 8]),
            w: Weight::Const(u, Strategy::SparseCsr),
        },
        Stmt::Copy {
            out: View::whole(hy, &[1, 8]),
            x: View::whole(h, &[1, 8]),
        },
    ];
    check(&p, &[r.vec(40, 1.0)]);
}

#[test]
fn partially_written_outputs_and_state_start_at_zero() {
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[4]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[10]);
    let acc = p.add_buffer("acc", BufKind::Temp, &[4]);
    let y2 = p.add_buffer("Y2", BufKind::Output(1), &[4]);
    p.inputs = vec![x];
    p.outputs = vec![y, y2];
    p.body = vec![
        Stmt::Copy {
            out: view(y, 3, &[4], &[1], 0),
            x: View::whole(x, &[4]),
        },
        // acc += x (acc is read first: zero at every call)
        Stmt::Binary {
            op: BinOp::Add,
            out: View::whole(acc, &[4]),
            a: View::whole(acc, &[4]),
            b: View::whole(x, &[4]),
        },
        Stmt::Copy {
            out: View::whole(y2, &[4]),
            x: View::whole(acc, &[4]),
        },
    ];
    // check runs each program twice: the second call must give the same acc.
    check(&p, &[vec![1.0, 2.0, 3.0, 4.0]]);
}

// ---------- errors ----------

#[test]
fn errors_bad_programs_and_bad_arguments() {
    // a view beyond its buffer
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[4]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[4]);
    p.inputs = vec![x];
    p.outputs = vec![y];
    p.body = vec![Stmt::Copy {
        out: View::whole(y, &[4]),
        x: view(x, 1, &[4], &[1], 0),
    }];
    let e = JitProgram::compile(&p, &native()).err().expect("error");
    assert!(e.contains("reaches"), "{e}");
    // in a loop, the step stride counts
    p.body = vec![Stmt::Loop {
        run: LoopRun::Fixed,
        trip: 2,
        reverse: false,
        body: vec![Stmt::Copy {
            out: view(y, 0, &[3], &[1], 0),
            x: view(x, 0, &[3], &[1], 2),
        }],
    }];
    assert!(JitProgram::compile(&p, &native()).is_err());
    // a write to an input
    p.body = vec![Stmt::Copy {
        out: View::whole(x, &[4]),
        x: View::whole(y, &[4]),
    }];
    let e = JitProgram::compile(&p, &native()).err().expect("error");
    assert!(e.contains("input"), "{e}");
    // wrong argument lengths and counts
    p.body = vec![Stmt::Copy {
        out: View::whole(y, &[4]),
        x: View::whole(x, &[4]),
    }];
    let j = JitProgram::compile(&p, &native()).unwrap();
    let mut out = vec![0.0; 4];
    assert!(j.run(&[&[1.0, 2.0, 3.0]], &mut [&mut out]).is_err());
    assert!(j.run(&[], &mut [&mut out]).is_err());
    let mut short = vec![0.0; 3];
    assert!(j.run(&[&[1.0; 4]], &mut [&mut short]).is_err());
    j.run(&[&[1.0, 2.0, 3.0, 4.0]], &mut [&mut out]).unwrap();
    assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn a_call_allocates_nothing() {
    let b = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(10)));
    assert!(allocations() > b, "the counter counts");
    let (p, ins) = rnn(8, 32, 64, Strategy::SparseCsr, true, 3);
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let j = JitProgram::compile(&p, &native()).unwrap();
    let mut y = vec![0.0; 8 * 64];
    let mut h = vec![0.0; 64];
    j.run(&refs, &mut [&mut y, &mut h]).unwrap();
    let before = allocations();
    for _ in 0..10 {
        j.run(&refs, &mut [&mut y, &mut h]).unwrap();
    }
    assert_eq!(allocations(), before, "run allocated");
    let e = everything();
    let x = Rng::new(1).vec(24, 1.0);
    let j = JitProgram::compile(&e, &native()).unwrap();
    let mut outs: Vec<Vec<f32>> = e
        .outputs
        .iter()
        .map(|b| vec![0.0; e.buffers[b.0].len()])
        .collect();
    let mut om: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    j.run(&[&x], &mut om).unwrap();
    let before = allocations();
    j.run(&[&x], &mut om).unwrap();
    assert_eq!(allocations(), before, "run allocated");
}

// ---------- no calls ----------

/// A program with every statement kind, activation and strategy.
fn everything() -> Program {
    let (mut p, _) = rnn(4, 6, 10, Strategy::Dense, false, 77);
    let mut r = Rng::new(78);
    let x = p.inputs[0];
    let acts = all_acts().len();
    let extra = p.add_buffer("E", BufKind::Output(2), &[acts * 24]);
    p.outputs.push(extra);
    let c = p.add_const("K", &[6, 24], r.sparse(144, 0.3));
    for (i, act) in all_acts().into_iter().enumerate() {
        p.body.push(Stmt::Unary {
            op: act,
            out: view(extra, (i * 24) as isize, &[24], &[1], 0),
            x: view(x, 0, &[24], &[1], 0),
        });
    }
    for s in [
        Strategy::Dense,
        Strategy::SparseUnrolled,
        Strategy::SparseCsr,
    ] {
        p.body.push(Stmt::MatMul {
            rows_per_step: None,
            out: view(extra, 0, &[1, 24], &[24, 1], 0),
            a: view(x, 0, &[1, 6], &[6, 1], 0),
            w: Weight::Const(c, s),
        });
    }
    p.body.push(Stmt::Clip {
        out: view(extra, 24, &[24], &[1], 0),
        x: view(x, 0, &[24], &[1], 0),
        min: -0.1,
        max: 0.2,
    });
    for (i, log) in [false, true].into_iter().enumerate() {
        p.body.push(Stmt::Softmax {
            out: view(extra, 48 + 24 * i as isize, &[4, 6], &[6, 1], 0),
            x: view(x, 0, &[4, 6], &[6, 1], 0),
            log,
        });
    }
    p
}

/// CLIF `call`, `call_indirect`, `return_call`, `try_call`...; x64 `call`, `call_known`,
/// `call_unknown`, `return_call_known`... (not "caller").
fn is_call_token(w: &str) -> bool {
    let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    w == "call" || w.starts_with("call_") || w.ends_with("_call") || w.contains("_call_")
}

#[test]
fn call_detector_sees_calls() {
    for w in [
        "call",
        "call_indirect",
        "return_call",
        "try_call",
        "call_known",
        "return_call_known",
    ] {
        assert!(is_call_token(w), "{w}");
    }
    for w in [
        "offset_upward_to_caller_sp:",
        "fcall_like_name_not",
        "scalar",
        "recall",
    ] {
        assert!(!is_call_token(w) || w.contains("_call"), "{w}");
    }
}

#[test]
fn generated_code_calls_nothing() {
    let p = everything();
    let mut r = Rng::new(5);
    check_rel(&p, &[r.vec(24, 2.0)], 2e-6);
    for o in all_opts() {
        let j = JitProgram::compile_opts(&p, &o, true).unwrap();
        let clif = j.clif();
        assert!(clif.contains("fdiv"), "the sample covers the activations");
        for line in clif.lines() {
            assert!(
                !line.split_whitespace().any(is_call_token),
                "{o:?}: a call in the CLIF: {line}"
            );
        }
        // Also after lowering: no libcall crept in (fma without FMA would become fmaf).
        let asm = j.asm().expect("disassembly");
        for line in asm.lines() {
            assert!(
                !line.split_whitespace().any(is_call_token),
                "{o:?}: a call in the machine code: {line}"
            );
        }
    }
}

// ---------- activation accuracy ----------

fn reference(act: Act, x: f64) -> f64 {
    match act {
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::Tanh => x.tanh(),
        Act::Exp => x.exp(),
        Act::Elu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha as f64 * x.exp_m1()
            }
        }
        Act::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        Act::ScaledTanh { alpha, beta } => alpha as f64 * (beta as f64 * x).tanh(),
        Act::Softsign => x / (1.0 + x.abs()),
        _ => unreachable!(),
    }
}

/// Max relative and absolute errors of the JIT's `act` over `xs`, on the vector path (one
/// contiguous statement) and the scalar path (a strided copy of the same).
fn act_errors(act: Act, xs: &[f32], tiny: f64) -> ((f64, f32), (f64, f32)) {
    let n = xs.len();
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[n]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[n]);
    let ys = p.add_buffer("Ys", BufKind::Output(1), &[2 * n]);
    p.inputs = vec![x];
    p.outputs = vec![y, ys];
    p.body = vec![
        Stmt::Unary {
            op: act,
            out: View::whole(y, &[n]),
            x: View::whole(x, &[n]),
        },
        Stmt::Unary {
            op: act,
            out: view(ys, 0, &[n], &[2], 0),
            x: View::whole(x, &[n]),
        },
    ];
    let mut worst = ((0.0f64, 0.0f32), (0.0f64, 0.0f32));
    for o in all_opts() {
        let j = JitProgram::compile(&p, &o).unwrap();
        let mut out = vec![0.0f32; n];
        let mut outs = vec![0.0f32; 2 * n];
        j.run(&[xs], &mut [&mut out, &mut outs]).unwrap();
        for (i, &xv) in xs.iter().enumerate() {
            let want = reference(act, xv as f64);
            for got in [out[i], outs[2 * i]] {
                let err = (got as f64 - want).abs();
                if err > worst.1.0 {
                    worst.1 = (err, xv);
                }
                if want.abs() > tiny {
                    let rel = err / want.abs();
                    if rel > worst.0.0 {
                        worst.0 = (rel, xv);
                    }
                }
            }
        }
    }
    worst
}

fn sweep(lo: f32, hi: f32, step: f32) -> Vec<f32> {
    let n = ((hi - lo) / step) as usize;
    let mut v: Vec<f32> = (0..=n).map(|i| lo + i as f32 * step).collect();
    // and tiny magnitudes
    for e in -40..0 {
        let t = 10f32.powi(e);
        v.push(t);
        v.push(-t);
    }
    v.push(0.0);
    v
}

#[test]
fn activation_accuracy() {
    let xs = sweep(-30.0, 30.0, 1e-4);
    // (act, relative bound (where |f| > tiny), tiny, absolute bound)
    let cases: Vec<(Act, f64, f64, f64)> = vec![
        (Act::Sigmoid, 2.5e-7, 1e-30, 1e-7),
        (Act::Tanh, 2.5e-7, 1e-30, 1e-7),
        (Act::Elu { alpha: 1.0 }, 1e-6, 1e-3, 1.2e-7),
        (Act::Softplus, 2.5e-7, 1e-30, 4e-6),
        (
            Act::ScaledTanh {
                alpha: 1.7159,
                beta: 0.6667,
            },
            3e-7,
            1e-30,
            2.5e-7,
        ),
        (Act::Softsign, 2e-7, 1e-30, 1.2e-7),
    ];
    for (act, rel_bound, tiny, abs_bound) in cases {
        let ((rel, xr), (abs, xa)) = act_errors(act, &xs, tiny);
        println!(
            "{:<12} max relative error {rel:.3e} (x = {xr}), max absolute error {abs:.3e} (x = {xa})",
            act.name()
        );
        assert!(rel <= rel_bound, "{}: relative {rel:e} at {xr}", act.name());
        assert!(abs <= abs_bound, "{}: absolute {abs:e} at {xa}", act.name());
    }
    // exp over its whole normal range (relative), then the underflow and overflow ends.
    let xs = sweep(-87.0, 88.5, 1e-3);
    let ((rel, xr), _) = act_errors(Act::Exp, &xs, 0.0);
    println!("exp          max relative error {rel:.3e} (x = {xr}) on [-87, 88.5]");
    assert!(rel <= 2e-7, "exp: relative {rel:e} at {xr}");
    let ends: Vec<f32> = vec![
        -1000.0, -104.0, -103.0, -100.0, -95.0, -88.0, 88.7, 88.8, 89.0, 100.0,
    ];
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[ends.len()]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[ends.len()]);
    p.inputs = vec![x];
    p.outputs = vec![y];
    p.body = vec![Stmt::Unary {
        op: Act::Exp,
        out: View::whole(y, &[ends.len()]),
        x: View::whole(x, &[ends.len()]),
    }];
    let j = JitProgram::compile(&p, &native()).unwrap();
    let mut out = vec![0.0; ends.len()];
    j.run(&[&ends], &mut [&mut out]).unwrap();
    for (x, got) in ends.iter().zip(&out) {
        let want = x.exp();
        if want.is_infinite() {
            assert!(got.is_infinite(), "exp({x}) = {got}");
        } else {
            assert!(
                (got - want).abs() <= 2e-7 * want.abs() + 1e-44,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
    // NaN stays NaN
    let nan = [f32::NAN; 4];
    let mut out = vec![0.0; 4];
    let mut p2 = p.clone();
    p2.buffers[0].dims = vec![4];
    p2.buffers[1].dims = vec![4];
    for act in all_acts() {
        p2.body = vec![Stmt::Unary {
            op: act,
            out: View::whole(y, &[4]),
            x: View::whole(x, &[4]),
        }];
        let j = JitProgram::compile(&p2, &native()).unwrap();
        j.run(&[&nan], &mut [&mut out]).unwrap();
        // thresholded_relu(NaN) is 0 (NaN > alpha is false), in the interpreter too; so are
        // not_zero(NaN) (|NaN| > 0 is false) and the comparisons with 0.
        let want_nan = !matches!(
            act,
            Act::ThresholdedRelu { .. }
                | Act::NotZero
                | Act::IsZero
                | Act::IsPositive
                | Act::IsNonNegative
        );
        assert!(
            out.iter().all(|v| v.is_nan() == want_nan),
            "{}: {out:?}",
            act.name()
        );
    }
}

// ---------- property tests ----------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matmul_random_shapes_and_sparsity(
        m in 1usize..4,
        k in 0usize..40,
        n in 1usize..40,
        density in 0.0f64..1.0,
        which in 0usize..5,
        a_strided in any::<bool>(),
        out_strided in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let w = strategies()[which];
        let (p, ins) = matmul_program(m, k, n, w, density, a_strided, out_strided, seed);
        check(&p, &ins);
    }

    #[test]
    fn rnn_random_sizes(
        t in 1usize..6,
        d in 1usize..12,
        h in 1usize..20,
        which in 0usize..3,
        reverse in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let s = [Strategy::Dense, Strategy::SparseUnrolled, Strategy::SparseCsr][which];
        let (p, ins) = rnn(t, d, h, s, reverse, seed);
        check(&p, &ins);
    }
}

// ---------- timing (not a test of correctness; run with --ignored --nocapture) ----------

#[test]
#[ignore = "a timing report, not a check: run with --ignored --nocapture when measuring strategies"]
fn timing_matmul_strategies() {
    use std::time::Instant;
    for (k, n, density) in [
        (1024usize, 2048usize, 1.0f64),
        (1024, 2048, 0.03),
        (512, 512, 0.1),
    ] {
        for w in [
            W::Const(Strategy::Dense),
            W::Const(Strategy::SparseUnrolled),
            W::Const(Strategy::SparseCsr),
        ] {
            if density == 1.0 && matches!(w, W::Const(Strategy::SparseUnrolled)) {
                continue;
            }
            let (p, ins) = matmul_program(1, k, n, w, density, false, false, 1);
            let nnz = p.consts[0].nonzeros();
            for opt_level in [OptLevel::None, OptLevel::Speed] {
                let o = CpuOptions {
                    isa: CpuIsa::Native,
                    opt_level,
                };
                let t0 = Instant::now();
                let j = JitProgram::compile(&p, &o).unwrap();
                let ct = t0.elapsed();
                let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
                let mut out = vec![0.0; n];
                for _ in 0..3 {
                    j.run(&refs, &mut [&mut out]).unwrap();
                }
                let reps = 200;
                let t0 = Instant::now();
                for _ in 0..reps {
                    j.run(&refs, &mut [&mut out]).unwrap();
                }
                let dt = t0.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "K={k} N={n} nnz={nnz} {w:?} {opt_level:?}: {:.1} us, {:.2} GFLOP/s (nonzero), compile {:.1} ms, code {} bytes",
                    dt * 1e6,
                    2.0 * nnz as f64 / dt / 1e9,
                    ct.as_secs_f64() * 1e3,
                    j.code_len()
                );
            }
        }
    }
}

#[test]
#[ignore = "prints generated assembly for reading, checks nothing: run with --ignored --nocapture"]
fn print_asm_sample() {
    let (p, _) = matmul_program(
        1,
        16,
        8,
        W::Const(Strategy::SparseUnrolled),
        0.3,
        false,
        false,
        3,
    );
    let j = JitProgram::compile_opts(&p, &native(), true).unwrap();
    println!("{}\n{}", j.clif(), j.asm().unwrap());
}

/// Products by the wide sparse kernel with their epilogues (docs/kernels.md, "Epilogues"): a
/// per-step addend (the hoisted projection's slice), a bias per column and an activation after
/// a sparse product, at row counts that take each of the kernel's row blocks (8, 16, 17, 32,
/// 83 rows), by a constant and a masked run-time weight. The outputs match the interpreter,
/// and have the same bits as the same statements with the chain cut (a second reader of an
/// intermediate keeps it a statement of its own), under every ISA the host has.
#[test]
fn products_with_their_epilogues() {
    for (rows, k, n, seed) in [
        (8, 40, 37, 1),
        (16, 33, 70, 2),
        (17, 64, 9, 3),
        (32, 20, 40, 4),
        (83, 50, 33, 5),
    ] {
        for act in [Act::Sigmoid, Act::Tanh, Act::Relu] {
            for masked in [false, true] {
                // cut: 0 fused whole, 1 the activation apart, 2 nothing fused.
                let outs: Vec<Vec<Vec<f32>>> = (0..3)
                    .map(|cut| {
                        let (p, inputs) = epilogue_program(rows, k, n, seed, act, masked, cut);
                        check_rel(&p, &inputs, 2e-5);
                        let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
                        let j = JitProgram::compile(&p, &native()).unwrap();
                        let want = interp::run(&p, &ins).expect("interpreter");
                        let mut outs: Vec<Vec<f32>> =
                            want.iter().map(|w| vec![0.0; w.len()]).collect();
                        let mut om: Vec<&mut [f32]> =
                            outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                        j.run(&ins, &mut om).unwrap();
                        outs
                    })
                    .collect();
                let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for cut in 1..3 {
                    assert_eq!(
                        bits(&outs[0][0]),
                        bits(&outs[cut][0]),
                        "rows {rows} {act:?} masked {masked}: fused and cut at {cut} differ"
                    );
                }
            }
        }
    }
}

/// `steps` steps of `y_t = act(x_t W + p_t + b)`, the product and the sums in temporaries of
/// the product's layout ([N, rows], rows contiguous), the last value flat; `cut` adds a second
/// reader of the sum (1) or of the product (2), which stops the epilogue there.
fn epilogue_program(
    rows: usize,
    k: usize,
    n: usize,
    seed: u64,
    act: Act,
    masked: bool,
    cut: usize,
) -> (Program, Vec<Vec<f32>>) {
    let steps = 3;
    let mut r = Rng::new(seed);
    let mut p = Program::default();
    let x = p.add_buffer("X", BufKind::Input(0), &[steps, rows, k]);
    let pj = p.add_buffer("P", BufKind::Input(1), &[steps, n, rows]);
    let y = p.add_buffer("Y", BufKind::Output(0), &[steps, n, rows]);
    let z = p.add_buffer("Z", BufKind::Output(1), &[n, rows]);
    let prod = p.add_buffer("prod", BufKind::Temp, &[rows, n]);
    let q = p.add_buffer("q", BufKind::Temp, &[n, rows]);
    let s = p.add_buffer("s", BufKind::Temp, &[n, rows]);
    let wdata = r.sparse(k * n, 0.2);
    let pattern: Vec<f32> = wdata.iter().map(|v| f32::from(*v != 0.0)).collect();
    let bias = p.add_const("b", &[n], r.vec(n, 1.0));
    let mut inputs = vec![r.vec(steps * rows * k, 1.0), r.vec(steps * n * rows, 1.0)];
    let w = if masked {
        let wb = p.add_buffer("W", BufKind::Input(2), &[k, n]);
        inputs.push(wdata);
        let pat = p.add_const("pattern", &[k, n], pattern);
        p.inputs = vec![x, pj, wb];
        Weight::Masked(View::whole(wb, &[k, n]), pat)
    } else {
        p.inputs = vec![x, pj];
        Weight::Const(p.add_const("w", &[k, n], wdata), Strategy::SparseCsr)
    };
    p.outputs = vec![y, z];
    let (ri, ni) = (rows as isize, n as isize);
    let cols_first = |b| view(b, 0, &[n, rows], &[ri, 1], 0);
    let flat = |b| view(b, 0, &[n * rows], &[1], 0);
    let mut body = vec![
        Stmt::MatMul {
            rows_per_step: None,
            out: view(prod, 0, &[rows, n], &[1, ri], 0),
            a: view(x, 0, &[rows, k], &[k as isize, 1], ri * k as isize),
            w,
        },
        Stmt::Binary {
            op: BinOp::Add,
            out: cols_first(q),
            a: view(pj, 0, &[n, rows], &[ri, 1], ni * ri),
            b: cols_first(prod),
        },
        Stmt::Binary {
            op: BinOp::Add,
            out: cols_first(s),
            a: cols_first(q),
            b: cview(bias, 0, &[n, rows], &[1, 0]),
        },
        Stmt::Unary {
            op: act,
            out: view(y, 0, &[n * rows], &[1], ni * ri),
            x: flat(s),
        },
    ];
    if cut > 0 {
        body.push(Stmt::Copy {
            out: flat(z),
            x: flat(if cut == 1 { s } else { prod }),
        });
    }
    p.body = vec![Stmt::Loop {
        run: LoopRun::Fixed,
        trip: steps,
        reverse: false,
        body,
    }];
    (p, inputs)
}
