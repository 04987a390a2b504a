//! Inline math for elementwise statements, on scalars (`f32`) or vectors (`f32x4`) alike. No
//! calls: exp, sigmoid, tanh, expm1 and log1p are range reductions and polynomials.
//!
//! Largest errors against f64, measured by `backends/tests/jit.rs` (`activation_accuracy`) over
//! every 1e-4 step of [-30, 30] plus ±10^-40..±10^-1 (and every 1e-3 of [-87, 88.5] for exp), on
//! the f32x4 and the scalar path, with FMA (native) and without (x86-64-v2). Relative errors are
//! over |f(x)| > 1e-30 (elu: > 1e-3). The test asserts the bound column.
//!
//! | function | method | measured | bound |
//! |---|---|---|---|
//! | exp | Cody-Waite reduction x = n ln2 + r, degree-5 polynomial (Cephes expf), 2^n built in the exponent bits in two halves (the whole range: denormals, 0 below -103.9, inf above 88.72) | rel 8.2e-8 | rel 2e-7 |
//! | sigmoid | 1 / (1 + exp(-x)), the exp argument clamped to [-87, 88] (for x < -87: absolute error below 1e-37) | rel 1.5e-7, abs 8.9e-8 | rel 2.5e-7, abs 1e-7 |
//! | tanh | \|x\| < 0.625: x + x^3 P(x^2) (Cephes tanhf); else sign(x) (1 - 2 / (exp(2\|x\|) + 1)) | rel 1.4e-7, abs 7.6e-8 | rel 2.5e-7, abs 1e-7 |
//! | scaled_tanh (1.7159, 0.6667) | alpha tanh(beta x) | rel 1.9e-7, abs 1.9e-7 | rel 3e-7, abs 2.5e-7 |
//! | elu (alpha 1) | expm1(x) = 2^n (exp(r) - 1) + (2^n - 1) from the same reduction: no cancellation near 0 | rel 8.0e-8, abs 4.2e-8 | rel 1e-6, abs 1.2e-7 |
//! | softplus | max(x, 0) + log1p(exp(-\|x\|)), log1p(u) = 2 atanh(u / (2 + u)) by its odd series to s^13 (s <= 1/3) | rel 2.1e-7, abs 4.8e-7 (at 14.6: half an ulp) | rel 2.5e-7, abs 4e-6 |
//! | softsign | x / (1 + \|x\|) | rel 9.1e-8 | rel 2e-7 |
//! | relu, leaky_relu, hard_sigmoid, affine, thresholded_relu, neg, clip | the f32 formula (mul then add, as the interpreter) | exact | |
//!
//! NaN propagates through every function (the clamps keep a NaN operand), except
//! thresholded_relu (NaN > alpha is false: 0, as in the interpreter). relu(NaN) is NaN where the
//! interpreter's `f32::max` gives 0.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{ConstantData, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use hlstm_ir::BinOp;
use hlstm_ir::op::Act;

/// An arithmetic emitter for one value type (F32 or F32X4).
pub struct Fx<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    pub ty: Type,
    pub fma: bool,
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
/// ln 2 in two parts (Cephes): C1 has 9 significant bits, so n * C1 is exact.
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;
/// (The coefficients as Cephes prints them.)
/// exp(r) = 1 + r + r^2 P(r) on [-ln2/2, ln2/2] (Cephes expf), highest degree first.
#[allow(clippy::excessive_precision)]
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// tanh(x) = x + x^3 P(x^2) for |x| < 0.625 (Cephes tanhf), highest degree first.
#[allow(clippy::excessive_precision)]
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];

impl<'a, 'f> Fx<'a, 'f> {
    pub fn new(b: &'a mut FunctionBuilder<'f>, ty: Type, fma: bool) -> Self {
        Fx { b, ty, fma }
    }

    fn vector(&self) -> bool {
        self.ty.is_vector()
    }

    fn ity(&self) -> Type {
        if self.vector() { I32X4 } else { I32 }
    }

    /// A float constant of this type.
    pub fn c(&mut self, x: f32) -> Value {
        if self.vector() {
            let bytes: Vec<u8> = (0..4).flat_map(|_| x.to_le_bytes()).collect();
            let h = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
            self.b.ins().vconst(F32X4, h)
        } else {
            self.b.ins().f32const(x)
        }
    }

    fn ci(&mut self, x: i32) -> Value {
        if self.vector() {
            let bytes: Vec<u8> = (0..4).flat_map(|_| x.to_le_bytes()).collect();
            let h = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
            self.b.ins().vconst(I32X4, h)
        } else {
            self.b.ins().iconst(I32, x as i64)
        }
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }

    /// a * b + c: one fused instruction when the target has FMA, else multiply then add.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    fn mul_add_c(&mut self, a: Value, b: f32, c: f32) -> Value {
        let (b, c) = (self.c(b), self.c(c));
        self.mul_add(a, b, c)
    }

    fn int_bits(&mut self, x: Value) -> Value {
        let ity = self.ity();
        self.b.ins().bitcast(ity, MemFlagsData::new(), x)
    }

    fn float_bits(&mut self, x: Value) -> Value {
        let ty = self.ty;
        self.b.ins().bitcast(ty, MemFlagsData::new(), x)
    }

    /// `a < b ? x : y`. The shapes `x < lo ? lo : x` and `hi < x ? hi : x` become single
    /// maxps/minps (maxss/minss) instructions.
    pub fn sel_lt(&mut self, a: Value, b: Value, x: Value, y: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        if self.vector() {
            let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), c);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().select(c, x, y)
        }
    }

    /// `x cc 0 ? 1 : 0`.
    fn mask_cmp(&mut self, cc: FloatCC, x: Value) -> Value {
        let (zero, one) = (self.c(0.0), self.c(1.0));
        let c = self.b.ins().fcmp(cc, x, zero);
        if self.vector() {
            let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), c);
            self.b.ins().bitselect(m, one, zero)
        } else {
            self.b.ins().select(c, one, zero)
        }
    }

    /// max(x, lo), keeping a NaN x.
    pub fn max_keep(&mut self, x: Value, lo: f32) -> Value {
        let lo = self.c(lo);
        self.sel_lt(x, lo, lo, x)
    }

    /// min(x, hi), keeping a NaN x.
    pub fn min_keep(&mut self, x: Value, hi: f32) -> Value {
        let hi = self.c(hi);
        self.sel_lt(hi, x, hi, x)
    }

    /// Range reduction x = n ln2 + r, |r| <= ln2/2 (for |x| < 2^21): returns (exp(r) - 1, n as
    /// a 32-bit integer).
    fn exp_reduce(&mut self, x: Value) -> (Value, Value) {
        let t = self.mul_add_c(x, LOG2E, MAGIC);
        let magic = self.c(MAGIC);
        let nf = self.sub(t, magic);
        let ti = self.int_bits(t);
        let mi = self.ci(MAGIC.to_bits() as i32);
        let ni = self.b.ins().isub(ti, mi);
        let c1 = self.c(-C1);
        let r = self.mul_add(nf, c1, x);
        let c2 = self.c(-C2);
        let r = self.mul_add(nf, c2, r);
        let mut p = self.c(EXP_P[0]);
        for &k in &EXP_P[1..] {
            let kc = self.c(k);
            p = self.mul_add(p, r, kc);
        }
        let r2 = self.mul(r, r);
        let em1 = self.mul_add(p, r2, r);
        (em1, ni)
    }

    /// 2^n for an integer n in [-126, 127].
    fn pow2(&mut self, n: Value) -> Value {
        let bias = self.ci(127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        self.float_bits(e)
    }

    /// exp(x) for x clamped to [-87, 88] (one power of two suffices there).
    pub fn exp_bounded(&mut self, x: Value) -> Value {
        let x = self.min_keep(x, 88.0);
        let x = self.max_keep(x, -87.0);
        let (em1, n) = self.exp_reduce(x);
        let s = self.pow2(n);
        self.mul_add(em1, s, s)
    }

    /// exp(x) over the whole f32 range: 0 below about -103.9 (denormals above), inf above
    /// about 88.72, NaN for NaN.
    pub fn exp(&mut self, x: Value) -> Value {
        let x = self.min_keep(x, 89.0);
        let x = self.max_keep(x, -104.0);
        let (em1, n) = self.exp_reduce(x);
        // 2^n as 2^n1 * 2^n2 with both halves normal (n is in [-150, 129]).
        let n1 = self.b.ins().sshr_imm_u(n, 1);
        let n2 = self.b.ins().isub(n, n1);
        let s1 = self.pow2(n1);
        let s2 = self.pow2(n2);
        let y = self.mul_add(em1, s1, s1);
        self.mul(y, s2)
    }

    /// exp(x) - 1 for x <= 0 (clamped to [-87, 0]), accurate near 0.
    fn expm1_neg(&mut self, x: Value) -> Value {
        let x = self.min_keep(x, 0.0);
        let x = self.max_keep(x, -87.0);
        let (em1, n) = self.exp_reduce(x);
        let s = self.pow2(n);
        let one = self.c(1.0);
        let sm1 = self.sub(s, one);
        self.mul_add(s, em1, sm1)
    }

    pub fn sigmoid(&mut self, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.exp_bounded(nx);
        let one = self.c(1.0);
        let d = self.add(one, e);
        self.div(one, d)
    }

    pub fn tanh(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        // |x| >= 0.625: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
        let two_ax = self.add(ax, ax);
        let e = self.exp_bounded(two_ax);
        let one = self.c(1.0);
        let two = self.c(2.0);
        let d = self.add(e, one);
        let q = self.div(two, d);
        let yl = self.sub(one, q);
        let yi = self.int_bits(yl);
        let xi = self.int_bits(x);
        let sign = self.ci(i32::MIN);
        let sx = self.b.ins().band(xi, sign);
        let yi = self.b.ins().bor(yi, sx);
        let yl = self.float_bits(yi);
        // |x| < 0.625: x + x^3 P(x^2).
        let z = self.mul(x, x);
        let mut p = self.c(TANH_P[0]);
        for &k in &TANH_P[1..] {
            let kc = self.c(k);
            p = self.mul_add(p, z, kc);
        }
        let pz = self.mul(p, z);
        let ys = self.mul_add(pz, x, x);
        let lim = self.c(0.625);
        self.sel_lt(ax, lim, ys, yl)
    }

    /// log1p(u) = 2 atanh(s), s = u / (2 + u), by the odd series of atanh to s^13 (for
    /// |s| <= 1/3: u in [-1/2, 1]).
    fn log1p_series(&mut self, u: Value) -> Value {
        let two = self.c(2.0);
        let d = self.add(two, u);
        let s = self.div(u, d);
        let z = self.mul(s, s);
        let mut q = self.c(1.0 / 13.0);
        for k in [11.0f32, 9.0, 7.0, 5.0, 3.0] {
            let kc = self.c(1.0 / k);
            q = self.mul_add(q, z, kc);
        }
        let s2 = self.add(s, s);
        let s2z = self.mul(s2, z);
        self.mul_add(s2z, q, s2)
    }

    /// log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)).
    pub fn softplus(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let nax = self.b.ins().fneg(ax);
        let u = self.exp_bounded(nax);
        let l = self.log1p_series(u);
        let m = self.max_keep(x, 0.0);
        self.add(m, l)
    }

    /// ln(x) for a positive normal x: x = 2^e m with m in [sqrt(1/2), sqrt(2)), ln x = e ln2 +
    /// log1p(m - 1) (|s| <= 0.172 in the series); e ln2 in the two parts of `exp_reduce`.
    pub fn ln(&mut self, x: Value) -> Value {
        let bits = self.int_bits(x);
        let e = self.b.ins().ushr_imm_u(bits, 23);
        let bias = self.ci(127);
        let e = self.b.ins().isub(e, bias);
        let mant = self.ci(0x007f_ffff);
        let one_bits = self.ci(1.0f32.to_bits() as i32);
        let m = self.b.ins().band(bits, mant);
        let m = self.b.ins().bor(m, one_bits);
        let m = self.float_bits(m);
        let ef = self.b.ins().fcvt_from_sint(self.ty, e);
        // m >= sqrt 2: halve it and count one more in the exponent.
        let sqrt2 = self.c(std::f32::consts::SQRT_2);
        let half = self.c(0.5);
        let mh = self.mul(m, half);
        let m = self.sel_lt(m, sqrt2, m, mh);
        let one = self.c(1.0);
        let e1 = self.add(ef, one);
        let ef = self.sel_lt(m, one, e1, ef);
        let u = self.sub(m, one);
        let l = self.log1p_series(u);
        let c2 = self.c(C2);
        let l = self.mul_add(ef, c2, l);
        let c1 = self.c(C1);
        self.mul_add(ef, c1, l)
    }

    pub fn act(&mut self, op: Act, x: Value) -> Value {
        match op {
            Act::Sigmoid => self.sigmoid(x),
            Act::Tanh => self.tanh(x),
            Act::Relu => self.max_keep(x, 0.0),
            Act::Exp => self.exp(x),
            Act::Neg => self.b.ins().fneg(x),
            Act::LeakyRelu { alpha } => {
                let a = self.c(alpha);
                let ax = self.mul(a, x);
                let zero = self.c(0.0);
                self.sel_lt(x, zero, ax, x)
            }
            Act::HardSigmoid { alpha, beta } => {
                let (a, bb) = (self.c(alpha), self.c(beta));
                let y = self.mul(a, x);
                let y = self.add(y, bb);
                let y = self.max_keep(y, 0.0);
                self.min_keep(y, 1.0)
            }
            Act::Affine { alpha, beta } => {
                let (a, bb) = (self.c(alpha), self.c(beta));
                let y = self.mul(a, x);
                self.add(y, bb)
            }
            Act::ThresholdedRelu { alpha } => {
                let a = self.c(alpha);
                let zero = self.c(0.0);
                self.sel_lt(a, x, x, zero)
            }
            Act::ScaledTanh { alpha, beta } => {
                let (a, bb) = (self.c(alpha), self.c(beta));
                let y = self.mul(bb, x);
                let y = self.tanh(y);
                self.mul(a, y)
            }
            Act::Elu { alpha } => {
                let e = self.expm1_neg(x);
                let a = self.c(alpha);
                let ae = self.mul(a, e);
                let zero = self.c(0.0);
                self.sel_lt(x, zero, ae, x)
            }
            Act::Softsign => {
                let ax = self.b.ins().fabs(x);
                let one = self.c(1.0);
                let d = self.add(one, ax);
                self.div(x, d)
            }
            Act::Softplus => self.softplus(x),
            Act::NotZero => {
                let ax = self.b.ins().fabs(x);
                let (zero, one) = (self.c(0.0), self.c(1.0));
                self.sel_lt(zero, ax, one, zero)
            }
            // Ordered comparisons (NaN gives 0) with the operand first and as `==`, `<`, `<=`:
            // Cranelift 0.135's x64 backend swaps the operands of a vector `>`/`>=`, and with
            // the operand second it folded an unaligned load into `cmpps` (a crash at run
            // time, found by backends/tests/jit.rs on a view at offset 3). x > 0 is -x < 0.
            Act::IsZero => self.mask_cmp(FloatCC::Equal, x),
            Act::IsPositive => {
                let n = self.b.ins().fneg(x);
                self.mask_cmp(FloatCC::LessThan, n)
            }
            Act::IsNonNegative => {
                let n = self.b.ins().fneg(x);
                self.mask_cmp(FloatCC::LessThanOrEqual, n)
            }
        }
    }

    pub fn bin(&mut self, op: BinOp, a: Value, b: Value) -> Value {
        match op {
            BinOp::Add => self.add(a, b),
            BinOp::Sub => self.sub(a, b),
            BinOp::Mul => self.mul(a, b),
            BinOp::Div => self.div(a, b),
        }
    }

    /// clamp(x, lo, hi) as the interpreter does it (x < lo -> lo, else x > hi -> hi, else x).
    pub fn clip(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        if lo <= hi {
            let y = self.max_keep(x, lo);
            self.min_keep(y, hi)
        } else {
            let h = self.c(hi);
            let y = self.sel_lt(h, x, h, x);
            let l = self.c(lo);
            self.sel_lt(x, l, l, y)
        }
    }
}

/// The f32x4 type and the f32 type, for callers.
pub const VEC: Type = F32X4;
pub const SCALAR: Type = F32;
