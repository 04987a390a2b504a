//! Every rule of the saturation rule table (`saturate::rules::rule_table()`), checked on random
//! tensors.
//!
//! For each rule name there is a property test that builds a small graph on which the rule
//! applies (random sizes, random nonzero weights, and zeros exactly where the rule needs them:
//! a zero weight block, zero columns of W1, zero rows of W2, ...), runs the `saturate` pass alone
//! and checks that
//!
//! - the rule fired (its counter in the pass report is positive),
//! - the verifier accepts the result,
//! - the reference interpreter gives the same outputs before and after on several random
//!   inputs, within 1e-5 absolute plus 1e-5 relative.
//!
//! `every_rule_in_the_table_has_a_test` keeps the list of covered rules equal to the table, so a
//! new rule cannot be added without a test here.

use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{
    Act, BinOp, DType, Graph, Op, Recurrence, Tensor, TensorType, Value, ValueInfo, text, verify,
};
use hlstm_passes::saturate::rules::rule_table;
use hlstm_passes::{Instrumentation, PassManager, PipelineLog};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Largest difference allowed: |after - before| <= ATOL + RTOL * |before|.
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-5;
/// Random input sets the outputs are compared on, per graph.
const INPUT_SETS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Random numbers

/// The project's generator (`hlstm_ir::rng`) with the draws these tests need.
struct Rng(hlstm_ir::rng::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(hlstm_ir::rng::Rng::new(seed))
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        self.0.uniform() as f32
    }
    /// A weight: never zero, magnitude in [0.1, 1).
    fn weight(&mut self) -> f32 {
        let v = 0.1 + 0.9 * self.unit();
        if self.next_u64() & 1 == 0 { v } else { -v }
    }
    fn weights(&mut self, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_f32(dims, (0..n).map(|_| self.weight()).collect()).expect("sized")
    }
    /// A nonempty proper subset of 0..n (n >= 2) as flags.
    fn proper_subset(&mut self, n: usize) -> Vec<bool> {
        assert!(n >= 2);
        loop {
            let s: Vec<bool> = (0..n).map(|_| self.next_u64() & 1 == 1).collect();
            if s.iter().any(|b| *b) && !s.iter().all(|b| *b) {
                return s;
            }
        }
    }
}

fn filled(dims: &[usize], v: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_f32(dims, vec![v; n]).expect("sized")
}

fn f32_data(t: &mut Tensor) -> &mut ndarray::ArrayD<f32> {
    match t {
        Tensor::F32(a) => a,
        _ => unreachable!("weights are f32"),
    }
}

// ---------------------------------------------------------------------------------------------
// Building graphs

/// A graph builder that types every node by shape inference.
#[derive(Default)]
struct Builder {
    g: Graph,
    fresh: usize,
}

impl Builder {
    fn input(&mut self, name: &str, dims: &[usize]) -> Value {
        self.g.add_input(name, TensorType::known(DType::F32, dims))
    }
    fn constant(&mut self, name: &str, t: Tensor) -> Value {
        self.g.add_const(name, t)
    }
    fn op(&mut self, op: Op, args: &[Value]) -> Value {
        let known: Vec<(TensorType, Option<Tensor>)> = args
            .iter()
            .map(|v| {
                (
                    self.g.value_type(*v).clone(),
                    self.g.constant(*v).map(|c| (*c.value).clone()),
                )
            })
            .collect();
        let operands: Vec<Option<Operand>> = known
            .iter()
            .map(|(ty, value)| {
                Some(Operand {
                    ty,
                    value: value.as_ref(),
                })
            })
            .collect();
        let types = infer(&op, &operands).unwrap_or_else(|e| panic!("{}: {e}", op.kind()));
        self.fresh += 1;
        let name = format!("{}_{}", op.kind(), self.fresh);
        let results = types
            .into_iter()
            .map(|ty| ValueInfo {
                name: name.clone(),
                ty,
            })
            .collect();
        let operands: Vec<Option<Value>> = args.iter().copied().map(Some).collect();
        let n = self.g.add_node(&name, op, &operands, results);
        Value { node: n, slot: 0 }
    }
    fn matmul(&mut self, a: Value, b: Value) -> Value {
        self.op(Op::MatMul, &[a, b])
    }
    fn binary(&mut self, op: BinOp, a: Value, b: Value) -> Value {
        self.op(Op::Binary(op), &[a, b])
    }
    fn add(&mut self, a: Value, b: Value) -> Value {
        self.binary(BinOp::Add, a, b)
    }
    fn act(&mut self, act: Act, x: Value) -> Value {
        self.op(Op::Unary(act), &[x])
    }
    fn concat(&mut self, axis: i64, parts: &[Value]) -> Value {
        self.op(Op::Concat { axis }, parts)
    }
    fn output(&mut self, name: &str, v: Value) {
        self.g.outputs.push((name.to_string(), v));
    }
    fn finish(self) -> Graph {
        self.g
    }
}

/// Random sizes and a seed for the weights; `variant` picks among shapes of the same rule.
#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    /// Rows (batch).
    b: usize,
    /// Inner dimension of the first matmul.
    k: usize,
    /// Hidden neurons per gate (>= 2, so that some can be dead and some alive).
    n: usize,
    /// Outputs of the second matmul.
    m: usize,
    /// Gates of a batched layer.
    g: usize,
    variant: usize,
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        1..=3usize,
        1..=5usize,
        2..=6usize,
        1..=5usize,
        1..=4usize,
        0..8usize,
    )
        .prop_map(|(seed, b, k, n, m, g, variant)| Params {
            seed,
            b,
            k,
            n,
            m,
            g,
            variant,
        })
}

/// Shapes a broadcast operand of an elementwise op on a [b, n] value may take without changing
/// the result's shape.
fn operand_dims(p: &Params, pick: usize) -> Vec<usize> {
    match pick % 4 {
        0 => vec![p.n],
        1 => vec![p.b, p.n],
        2 => vec![1],
        _ => vec![],
    }
}

/// `y = other(x) (+) binop(x, c)` where c is a constant of a broadcastable shape and either the
/// left or the right operand; the result goes through tanh or straight to the output.
fn elementwise_case(p: &Params, op: BinOp, c_value: f32, c_left: bool) -> Graph {
    let mut b = Builder::default();
    let x = b.input("x", &[p.b, p.n]);
    let c = b.constant("c", filled(&operand_dims(p, p.variant), c_value));
    let y = if c_left {
        b.binary(op, c, x)
    } else {
        b.binary(op, x, c)
    };
    let y = if p.variant & 4 == 0 {
        b.act(Act::Tanh, y)
    } else {
        y
    };
    b.output("y", y);
    b.finish()
}

/// A zero times something, next to live work: `tanh(x) + x * 0` (or `0 * x`).
fn mul_zero_case(p: &Params, zero_left: bool) -> Graph {
    let mut b = Builder::default();
    let x = b.input("x", &[p.b, p.n]);
    let z = b.constant("zeros", filled(&operand_dims(p, p.variant), 0.0));
    let prod = if zero_left {
        b.binary(BinOp::Mul, z, x)
    } else {
        b.binary(BinOp::Mul, x, z)
    };
    let t = b.act(Act::Tanh, x);
    let y = b.add(t, prod);
    b.output("y", y);
    b.finish()
}

/// `x·W + h·0`: a pruned (all-zero) block on h; or, with variant & 1, the same weights stacked
/// into one `[x, h]·[W; 0]` whose split leaves the zero block alone. x is rank 2 or 3.
fn matmul_zero_weight_case(p: &Params) -> Graph {
    let mut rng = Rng::new(p.seed);
    let mut b = Builder::default();
    let lead: Vec<usize> = if p.variant & 2 == 0 {
        vec![p.b]
    } else {
        vec![2, p.b]
    };
    let dims = |last: usize| {
        let mut d = lead.clone();
        d.push(last);
        d
    };
    let x = b.input("x", &dims(p.k));
    let h = b.input("h", &dims(p.m));
    let y = if p.variant & 1 == 0 {
        let w = b.constant("W", rng.weights(&[p.k, p.n]));
        let z = b.constant("Z", filled(&[p.m, p.n], 0.0));
        let xw = b.matmul(x, w);
        let hz = b.matmul(h, z);
        b.add(xw, hz)
    } else {
        let mut w = rng.weights(&[p.k + p.m, p.n]);
        for r in p.k..p.k + p.m {
            f32_data(&mut w)
                .index_axis_mut(ndarray::Axis(0), r)
                .fill(0.0);
        }
        let w = b.constant("W", w);
        let xh = b.concat(-1, &[x, h]);
        b.matmul(xh, w)
    };
    let bias = b.constant("bias", rng.weights(&[p.n]));
    let y = b.add(y, bias);
    b.output("y", y);
    b.finish()
}

/// `A·x + 0·x` with x [k, n] or [2, k, n] at run time.
fn matmul_zero_left_case(p: &Params) -> Graph {
    let mut rng = Rng::new(p.seed);
    let mut b = Builder::default();
    let x = if p.variant & 1 == 0 {
        b.input("x", &[p.k, p.n])
    } else {
        b.input("x", &[2, p.k, p.n])
    };
    let a = b.constant("A", rng.weights(&[p.m, p.k]));
    let z = b.constant("Z", filled(&[p.m, p.k], 0.0));
    let ax = b.matmul(a, x);
    let zx = b.matmul(z, x);
    let y = b.add(ax, zx);
    b.output("y", y);
    b.finish()
}

/// `(x + c1) + c2` with nonzero constants of broadcastable shapes.
fn add_constants_case(p: &Params) -> Graph {
    let mut rng = Rng::new(p.seed);
    let mut b = Builder::default();
    let x = b.input("x", &[p.b, p.n]);
    let c1 = b.constant("c1", rng.weights(&operand_dims(p, p.variant)));
    let c2 = b.constant("c2", rng.weights(&operand_dims(p, p.variant / 2 + p.k)));
    let s = b.add(x, c1);
    let y = b.add(s, c2);
    let y = if p.variant & 4 == 0 {
        b.act(Act::Sigmoid, y)
    } else {
        y
    };
    b.output("y", y);
    b.finish()
}

/// `[x, h]·W (+ bias)` with the concat on axis 1 (rank 2) or -1 (rank 2 or 3). With variant & 1
/// it is the cell of a recurrence (h carried, x scanned), where the split lets the input part
/// leave the loop; otherwise a plain graph.
fn split_concat_case(p: &Params, axis: i64) -> Graph {
    let mut rng = Rng::new(p.seed);
    let (kx, kh) = (p.k, p.n);
    let rank3 = axis == -1 && p.variant & 2 == 2;
    let lead: Vec<usize> = if rank3 { vec![2, p.b] } else { vec![p.b] };
    let dims = |last: usize| {
        let mut d = lead.clone();
        d.push(last);
        d
    };
    let cell = |b: &mut Builder, x: Value, h: Value, out: usize, rng: &mut Rng| {
        let w = b.constant("W", rng.weights(&[kx + kh, out]));
        let xh = b.concat(axis, &[x, h]);
        let y = b.matmul(xh, w);
        let bias = b.constant("bias", rng.weights(&[out]));
        let y = b.add(y, bias);
        b.act(Act::Tanh, y)
    };
    if p.variant & 1 == 0 {
        let mut b = Builder::default();
        let x = b.input("x", &dims(kx));
        let h = b.input("h", &dims(kh));
        let y = cell(&mut b, x, h, p.m, &mut rng);
        b.output("y", y);
        return b.finish();
    }
    // A recurrence: h' = tanh([x_t, h]·W + bias), T = m steps.
    let mut body = Builder::default();
    let h = body.input("h", &dims(kh));
    let xt = body.input("x_t", &dims(kx));
    let h1 = cell(&mut body, xt, h, kh, &mut rng);
    body.output("h_next", h1);
    body.output("y", h1);
    let body = body.finish();
    let mut b = Builder::default();
    let h0 = b.input("h0", &dims(kh));
    let mut seq = vec![p.m];
    seq.extend(dims(kx));
    let xs = b.input("xs", &seq);
    let mut stacked = vec![p.m];
    stacked.extend(dims(kh));
    let op = Op::Recurrence(Recurrence {
        body: Box::new(body),
        num_carried: 1,
        num_scanned: 1,
        num_invariant: 0,
        reverse: false,
        has_seq_lens: false,
    });
    let results = vec![
        ValueInfo {
            name: "h_T".into(),
            ty: TensorType::known(DType::F32, &dims(kh)),
        },
        ValueInfo {
            name: "ys".into(),
            ty: TensorType::known(DType::F32, &stacked),
        },
    ];
    let n = b.g.add_node("loop", op, &[Some(h0), Some(xs)], results);
    b.output("h_T", Value { node: n, slot: 0 });
    b.output("ys", Value { node: n, slot: 1 });
    b.finish()
}

/// The activation of a hidden layer, by the suffix of a neuron rule's name.
fn layer_act(name: &str) -> Option<Act> {
    match name {
        "relu" => Some(Act::Relu),
        "sigmoid" => Some(Act::Sigmoid),
        "tanh" => Some(Act::Tanh),
        "linear" => None,
        other => panic!("unknown layer kind '{other}'"),
    }
}

/// `act(x·W1 + b1)·W2 (+ b2)` with n hidden neurons, some of them dead: zero columns of W1
/// (incoming) or zero rows of W2 (outgoing). x is [b, k] or [2, b, k]; b1 is [n] or [1, n].
fn dead_neuron_case(p: &Params, act: Option<Act>, incoming: bool) -> Graph {
    let mut rng = Rng::new(p.seed);
    let mut b = Builder::default();
    let x = if p.variant & 1 == 0 {
        b.input("x", &[p.b, p.k])
    } else {
        b.input("x", &[2, p.b, p.k])
    };
    let dead = rng.proper_subset(p.n);
    let mut w1 = rng.weights(&[p.k, p.n]);
    let mut w2 = rng.weights(&[p.n, p.m]);
    for j in (0..p.n).filter(|&j| dead[j]) {
        if incoming {
            f32_data(&mut w1)
                .index_axis_mut(ndarray::Axis(1), j)
                .fill(0.0);
        } else {
            f32_data(&mut w2)
                .index_axis_mut(ndarray::Axis(0), j)
                .fill(0.0);
        }
    }
    let b1_dims = if p.variant & 2 == 0 {
        vec![p.n]
    } else {
        vec![1, p.n]
    };
    let w1 = b.constant("W1", w1);
    let b1 = b.constant("b1", rng.weights(&b1_dims));
    let w2 = b.constant("W2", w2);
    let mm = b.matmul(x, w1);
    let pre = b.add(mm, b1);
    let a = match act {
        Some(act) => b.act(act, pre),
        None => pre,
    };
    let mut y = b.matmul(a, w2);
    if p.variant & 4 == 0 {
        let b2 = b.constant("b2", rng.weights(&[p.m]));
        y = b.add(y, b2);
    }
    b.output("y", y);
    b.finish()
}

/// The batched form of the gate networks' first layer: `act(x·W1 + b1)` with x [1, k] and
/// W1 [k, G·n], reshaped to [G, 1, n] and multiplied by a [G, n, m] weight, with some of the G·n
/// neurons dead (zero columns of W1, or zero rows W2[g, j, :]).
fn dead_neuron_batched_case(p: &Params, act: Option<Act>, incoming: bool) -> Graph {
    let mut rng = Rng::new(p.seed);
    let (g, n, m) = (p.g, p.n, p.m);
    let mut b = Builder::default();
    let x = b.input("x", &[1, p.k]);
    let dead = rng.proper_subset(g * n);
    let mut w1 = rng.weights(&[p.k, g * n]);
    let mut w2 = rng.weights(&[g, n, m]);
    for j in (0..g * n).filter(|&j| dead[j]) {
        if incoming {
            f32_data(&mut w1)
                .index_axis_mut(ndarray::Axis(1), j)
                .fill(0.0);
        } else {
            f32_data(&mut w2)
                .index_axis_mut(ndarray::Axis(0), j / n)
                .index_axis_mut(ndarray::Axis(0), j % n)
                .fill(0.0);
        }
    }
    let b1_dims = if p.variant & 2 == 0 {
        vec![g * n]
    } else {
        vec![1, g * n]
    };
    let w1 = b.constant("W1", w1);
    let b1 = b.constant("b1", rng.weights(&b1_dims));
    let shape = b.constant(
        "shape_G_1_n",
        Tensor::from_i64(&[3], vec![g as i64, 1, n as i64]).expect("sized"),
    );
    let w2 = b.constant("W2", w2);
    let mm = b.matmul(x, w1);
    let pre = b.add(mm, b1);
    let a = match act {
        Some(act) => b.act(act, pre),
        None => pre,
    };
    let r = b.op(Op::Reshape { allowzero: false }, &[a, shape]);
    let mut y = b.matmul(r, w2);
    if p.variant & 4 == 0 {
        let b2 = b.constant("b2", rng.weights(&[g, 1, m]));
        y = b.add(y, b2);
    }
    b.output("y", y);
    b.finish()
}

/// A graph on which `rule` applies.
fn build(rule: &str, p: &Params) -> Graph {
    if let Some(rest) = rule.strip_prefix("dead-neuron-") {
        let (kind, layer) = rest.split_once('/').expect("dead-neuron-<dir>/<layer>");
        let act = layer_act(layer);
        return match kind {
            "in" => dead_neuron_case(p, act, true),
            "out" => dead_neuron_case(p, act, false),
            "in-batched" => dead_neuron_batched_case(p, act, true),
            "out-batched" => dead_neuron_batched_case(p, act, false),
            other => panic!("unknown neuron rule kind '{other}'"),
        };
    }
    match rule {
        "matmul-zero-weight" => matmul_zero_weight_case(p),
        "matmul-zero-left" => matmul_zero_left_case(p),
        "mul-zero" => mul_zero_case(p, false),
        "mul-zero-left" => mul_zero_case(p, true),
        "add-zero" => elementwise_case(p, BinOp::Add, 0.0, false),
        "add-zero-left" => elementwise_case(p, BinOp::Add, 0.0, true),
        "sub-zero" => elementwise_case(p, BinOp::Sub, 0.0, false),
        "mul-one" => elementwise_case(p, BinOp::Mul, 1.0, false),
        "mul-one-left" => elementwise_case(p, BinOp::Mul, 1.0, true),
        "split-concat-matmul" => split_concat_case(p, 1),
        "split-concat-matmul-neg" => split_concat_case(p, -1),
        "add-constants" => add_constants_case(p),
        other => panic!("no test graph for rule '{other}'"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checking

fn saturate(g: &mut Graph) -> Result<PipelineLog, String> {
    let pm = PassManager::new(&["saturate"], Instrumentation::default())?;
    pm.run(g, &mut std::io::sink())
}

/// The project's random inputs (`hlstm_ir::interp::random_inputs`, in [-1, 1)) scaled to
/// [-2, 2), so that activations leave their linear range.
fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    hlstm_ir::interp::random_inputs(g, seed)
        .into_iter()
        .map(|t| match t {
            Tensor::F32(a) => Tensor::F32(a.mapv(|v| 2.0 * v)),
            t => t,
        })
        .collect()
}

/// Runs both graphs on the same random inputs and compares every output.
fn same_outputs(before: &Graph, after: &Graph, seed: u64) -> Result<(), String> {
    for set in 0..INPUT_SETS {
        let inputs = random_inputs(before, seed ^ 0x5eed ^ (set << 32));
        let want = hlstm_ir::interp::run(before, &inputs)
            .map_err(|e| format!("the input graph fails to run: {e}"))?;
        let got = hlstm_ir::interp::run(after, &inputs)
            .map_err(|e| format!("the saturated graph fails to run: {e}"))?;
        if want.len() != got.len() {
            return Err(format!("{} outputs, expected {}", got.len(), want.len()));
        }
        for ((name, _), (w, g)) in before.outputs.iter().zip(want.iter().zip(&got)) {
            if w.shape() != g.shape() {
                return Err(format!(
                    "input set {set}: output '{name}' has shape {:?}, expected {:?}",
                    g.shape(),
                    w.shape()
                ));
            }
            let (wa, ga) = (w.as_f32().expect("f32"), g.as_f32().expect("f32"));
            for (i, (x, y)) in ga.iter().zip(wa.iter()).enumerate() {
                let d = (*x as f64 - *y as f64).abs();
                if d.is_nan() || d > ATOL + RTOL * (*y as f64).abs() {
                    return Err(format!(
                        "input set {set}: output '{name}' element {i} is {x}, expected {y}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Saturates the rule's test graph; the rule must fire, the result verify and compute the same.
fn check(rule: &str, p: &Params) -> Result<(), TestCaseError> {
    let before = build(rule, p);
    verify::verify(&before)
        .map_err(|e| TestCaseError::fail(format!("the test graph is ill-formed: {e}")))?;
    let mut after = before.clone();
    let log = saturate(&mut after).map_err(TestCaseError::fail)?;
    let shown = || {
        format!(
            "before:\n{}\nafter:\n{}",
            text::print(&before),
            text::print(&after)
        )
    };
    let counters = &log.runs[0].report.counters;
    let fired = counters.get(rule).copied().unwrap_or(0);
    prop_assert!(
        fired > 0,
        "rule '{rule}' did not fire (rules that fired: {counters:?})\n{}",
        shown()
    );
    verify::verify(&after).map_err(|e| {
        TestCaseError::fail(format!(
            "after '{rule}' the verifier rejects the graph: {e}\n{}",
            shown()
        ))
    })?;
    same_outputs(&before, &after, p.seed).map_err(|e| {
        TestCaseError::fail(format!("'{rule}' changed the numbers: {e}\n{}", shown()))
    })?;
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One property test per rule; `COVERED` lists the rules they check.
macro_rules! rule_tests {
    ($($test:ident: $rule:literal),* $(,)?) => {
        const COVERED: &[&str] = &[$($rule),*];
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $test(p in params()) {
                    check($rule, &p)?;
                }
            )*
        }
    };
}

rule_tests! {
    matmul_zero_weight: "matmul-zero-weight",
    matmul_zero_left: "matmul-zero-left",
    mul_zero: "mul-zero",
    mul_zero_left: "mul-zero-left",
    add_zero: "add-zero",
    add_zero_left: "add-zero-left",
    sub_zero: "sub-zero",
    mul_one: "mul-one",
    mul_one_left: "mul-one-left",
    split_concat_matmul: "split-concat-matmul",
    split_concat_matmul_neg: "split-concat-matmul-neg",
    add_constants: "add-constants",
    dead_neuron_in_relu: "dead-neuron-in/relu",
    dead_neuron_in_sigmoid: "dead-neuron-in/sigmoid",
    dead_neuron_in_tanh: "dead-neuron-in/tanh",
    dead_neuron_in_linear: "dead-neuron-in/linear",
    dead_neuron_out_relu: "dead-neuron-out/relu",
    dead_neuron_out_sigmoid: "dead-neuron-out/sigmoid",
    dead_neuron_out_tanh: "dead-neuron-out/tanh",
    dead_neuron_out_linear: "dead-neuron-out/linear",
    dead_neuron_in_batched_relu: "dead-neuron-in-batched/relu",
    dead_neuron_in_batched_sigmoid: "dead-neuron-in-batched/sigmoid",
    dead_neuron_in_batched_tanh: "dead-neuron-in-batched/tanh",
    dead_neuron_in_batched_linear: "dead-neuron-in-batched/linear",
    dead_neuron_out_batched_relu: "dead-neuron-out-batched/relu",
    dead_neuron_out_batched_sigmoid: "dead-neuron-out-batched/sigmoid",
    dead_neuron_out_batched_tanh: "dead-neuron-out-batched/tanh",
    dead_neuron_out_batched_linear: "dead-neuron-out-batched/linear",
}

#[test]
fn every_rule_in_the_table_has_a_test() {
    let mut table: Vec<String> = rule_table().into_iter().map(|r| r.name).collect();
    let n = table.len();
    table.sort();
    table.dedup();
    assert_eq!(table.len(), n, "the rule table repeats a name");
    let mut covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    covered.sort();
    let missing: Vec<&String> = table.iter().filter(|r| !covered.contains(r)).collect();
    let stale: Vec<&String> = covered.iter().filter(|r| !table.contains(r)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "rules without a random-tensor test: {missing:?}; tests of rules not in the table: {stale:?}"
    );
}

/// The rule names the egg rewrites carry are the table's names (what `--stats` reports).
#[test]
fn rewrite_names_are_the_table_names() {
    for r in rule_table() {
        assert_eq!(r.rewrite.name.as_str(), r.name);
        assert!(
            !r.description.is_empty(),
            "rule '{}' has no description",
            r.name
        );
    }
}

/// The identities must not apply where dropping the operand would change the result's shape
/// (x [n] + zeros [b, n] is [b, n], not x) or where nothing is zero or one.
#[test]
fn identities_that_would_change_the_shape_do_not_apply() {
    let cases: [(BinOp, f32, bool, &[&str]); 6] = [
        (BinOp::Add, 0.0, false, &["add-zero"]),
        (BinOp::Add, 0.0, true, &["add-zero-left"]),
        (BinOp::Sub, 0.0, false, &["sub-zero"]),
        (BinOp::Mul, 1.0, false, &["mul-one"]),
        (BinOp::Mul, 1.0, true, &["mul-one-left"]),
        (BinOp::Mul, 0.5, false, &["mul-one", "mul-zero"]),
    ];
    for (op, c, c_left, rules) in cases {
        let mut b = Builder::default();
        let x = b.input("x", &[3]);
        let k = b.constant("c", filled(&[2, 3], c));
        let y = if c_left {
            b.binary(op, k, x)
        } else {
            b.binary(op, x, k)
        };
        b.output("y", y);
        let before = b.finish();
        let mut after = before.clone();
        let log = saturate(&mut after).expect("saturates");
        for rule in rules {
            assert_eq!(
                log.runs[0].report.counters.get(*rule),
                None,
                "'{rule}' fired on {op:?} with a [2, 3] constant {c}"
            );
        }
        verify::verify(&after).expect("verifies");
        same_outputs(&before, &after, 7).expect("same numbers");
    }
}

/// A layer whose neurons are all alive, or all dead, is left to the other rules (nothing to
/// compact; all dead is constant folding's business): the neuron rules must not fire.
#[test]
fn neuron_rules_need_a_proper_subset_of_dead_neurons() {
    for all_dead in [false, true] {
        let mut rng = Rng::new(11);
        let mut b = Builder::default();
        let x = b.input("x", &[2, 3]);
        let w1 = if all_dead {
            filled(&[3, 4], 0.0)
        } else {
            rng.weights(&[3, 4])
        };
        let w1 = b.constant("W1", w1);
        let b1 = b.constant("b1", rng.weights(&[4]));
        let w2 = b.constant("W2", rng.weights(&[4, 2]));
        let mm = b.matmul(x, w1);
        let pre = b.add(mm, b1);
        let a = b.act(Act::Relu, pre);
        let y = b.matmul(a, w2);
        b.output("y", y);
        let before = b.finish();
        let mut after = before.clone();
        let log = saturate(&mut after).expect("saturates");
        let fired: Vec<&String> = log.runs[0]
            .report
            .counters
            .keys()
            .filter(|k| k.starts_with("dead-neuron"))
            .collect();
        assert!(fired.is_empty(), "all_dead={all_dead}: {fired:?} fired");
        verify::verify(&after).expect("verifies");
        same_outputs(&before, &after, 3).expect("same numbers");
    }
}
