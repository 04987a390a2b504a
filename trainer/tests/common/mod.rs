//! Gradient checking against central finite differences, shared by the gradient tests.
//!
//! The reference interpreter computes in f32 (matmuls and softmax accumulate in f64), so the
//! check is in f32 with these tolerances: each parameter element is moved by +-EPS, the two
//! f32 losses are differenced in f64, and the autodiff gradient must satisfy
//! |ad - fd| <= ATOL + RTOL * max(|ad|, |fd|). The truncation error of the central difference is
//! about EPS^2/6 times the third derivative (1e-7 here); the f32 rounding of the loss (a few
//! ulps, relative 1e-7) contributes about |L| * 1e-7 / EPS, 1e-4 for the |L| of 1 to 10 the
//! tests keep. Measured errors stay below 0.35 of the tolerance.
//!
//! A step that crosses a ReLU kink gives a wrong difference, so an element that fails with EPS
//! is tried again with EPS / 4, which rarely crosses it too; it passes if either agrees (a wrong
//! gradient agrees with neither). Most tests keep inputs away from kinks and never need it.
#![allow(dead_code)]

use hlstm_ir::text::{parse_with_weights, print_with_weights};
use hlstm_ir::{DType, Graph, Tensor, TensorType, Value, interp};
use hlstm_trainer::rng::Rng;
use hlstm_trainer::{Builder, Options, training_graph};

pub const EPS: f32 = 1e-3;
pub const ATOL: f64 = 5e-4;
pub const RTOL: f64 = 5e-3;

/// A graph under construction with named random inputs, for op tests.
pub struct Case {
    pub b: Builder,
    pub inputs: Vec<Tensor>,
    pub params: Vec<String>,
    pub rng: Rng,
}

impl Case {
    pub fn new(seed: u64) -> Case {
        Case {
            b: Builder::new(Graph::new()),
            inputs: Vec::new(),
            params: Vec::new(),
            rng: Rng::new(seed),
        }
    }

    /// A parameter input with uniform values in [lo, hi).
    pub fn param(&mut self, name: &str, dims: &[usize], lo: f32, hi: f32) -> Value {
        let n = dims.iter().product();
        let t = Tensor::from_f32(dims, self.rng.vec(n, lo, hi)).unwrap();
        self.params.push(name.to_string());
        self.input(name, t)
    }

    /// A parameter whose values are at least `gap` away from zero (for kinks like relu's).
    pub fn param_away(&mut self, name: &str, dims: &[usize], gap: f32) -> Value {
        let n = dims.iter().product();
        let data = (0..n)
            .map(|_| {
                let m = self.rng.range(gap, 1.5);
                if self.rng.uniform() < 0.5 { -m } else { m }
            })
            .collect();
        self.params.push(name.to_string());
        self.input(name, Tensor::from_f32(dims, data).unwrap())
    }

    /// A non-parameter input (data, labels, masks).
    pub fn input(&mut self, name: &str, t: Tensor) -> Value {
        let v = self.b.g.add_input(name, t.ty());
        self.inputs.push(t);
        v
    }

    /// loss = sum(v * R) for a fixed random R, so that every element's gradient differs.
    pub fn loss(&mut self, v: Value) -> Value {
        let d = self.b.dims(v).unwrap();
        let n = d.iter().product();
        let r = self.b.constant(
            "R",
            Tensor::from_f32(&d, self.rng.vec(n, -1.0, 1.0)).unwrap(),
        );
        let p = self.b.bin("weighted", hlstm_ir::BinOp::Mul, v, r).unwrap();
        let l = self.b.sum_to("loss", p, &[]).unwrap();
        self.b.g.outputs.push(("loss".into(), l));
        l
    }

    pub fn check(self, opts: Options) -> Graph {
        let params: Vec<&str> = self.params.iter().map(String::as_str).collect();
        gradcheck(&self.b.g, "loss", &params, &self.inputs, opts)
    }

    pub fn check_both(self) {
        let Case {
            b, inputs, params, ..
        } = self;
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        for save in [
            hlstm_trainer::SaveMode::Intermediates,
            hlstm_trainer::SaveMode::Recompute,
        ] {
            gradcheck(&b.g, "loss", &params, &inputs, Options { save });
        }
    }
}

fn loss_at(g: &Graph, loss_slot: usize, inputs: &[Tensor]) -> f32 {
    let out = interp::run(g, inputs).unwrap();
    out[loss_slot]
        .as_f32()
        .unwrap()
        .iter()
        .copied()
        .next()
        .unwrap()
}

/// Builds the training graph, checks that it verifies, round-trips through `.hir` and computes
/// the forward outputs unchanged, and compares every gradient element with finite differences.
/// Returns the training graph.
pub fn gradcheck(
    fwd: &Graph,
    loss: &str,
    params: &[&str],
    inputs: &[Tensor],
    opts: Options,
) -> Graph {
    let tg = training_graph(fwd, loss, params, &opts).unwrap_or_else(|e| panic!("{e}"));
    hlstm_ir::verify::verify(&tg).unwrap();
    let (text, store) = print_with_weights(&tg);
    let back = parse_with_weights(&text, &store).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        back == tg,
        "the training graph does not round-trip through .hir"
    );
    let fwd_out = interp::run(fwd, inputs).unwrap();
    let out = interp::run(&tg, inputs).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        &out[..fwd_out.len()],
        &fwd_out[..],
        "forward outputs changed"
    );
    let loss_slot = fwd.outputs.iter().position(|(n, _)| n == loss).unwrap();
    let mut worst = 0.0f64;
    let mut retried = 0;
    for (k, p) in params.iter().enumerate() {
        let pi = fwd
            .inputs
            .iter()
            .position(|&n| fwd.nodes[n].results[0].name == *p)
            .unwrap();
        let grad = out[fwd_out.len() + k].as_f32().unwrap();
        assert_eq!(grad.shape(), inputs[pi].shape(), "gradient shape of {p}");
        let base = inputs[pi].as_f32().unwrap();
        for (e, (&ad, &x)) in grad.iter().zip(base.iter()).enumerate() {
            let at = |delta: f32| {
                let mut ins = inputs.to_vec();
                let Tensor::F32(a) = &mut ins[pi] else {
                    unreachable!()
                };
                *a.iter_mut().nth(e).unwrap() = x + delta;
                loss_at(fwd, loss_slot, &ins) as f64
            };
            let ad = ad as f64;
            let mut fd = 0.0;
            let (mut err, mut tol) = (f64::INFINITY, 0.0);
            for eps in [EPS, EPS / 4.0] {
                fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                err = (ad - fd).abs();
                tol = ATOL + RTOL * ad.abs().max(fd.abs());
                if err <= tol {
                    break;
                }
                retried += 1;
            }
            worst = worst.max(err / tol);
            assert!(
                err <= tol,
                "d{loss}/d{p}[{e}]: autodiff {ad}, finite differences {fd} (error {err:.2e}, \
                 tolerance {tol:.2e})"
            );
        }
    }
    if std::env::var("GRADCHECK_VERBOSE").is_ok() {
        eprintln!("worst error / tolerance: {worst:.3}; {retried} elements retried with EPS/4");
    }
    tg
}

pub fn f32_type(dims: &[usize]) -> TensorType {
    TensorType::known(DType::F32, dims)
}
