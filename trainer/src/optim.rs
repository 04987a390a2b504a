//! Optimizers (SGD with momentum, Adam), learning-rate schedules and gradient clipping by global
//! norm. Parameters and gradients are flat f32 vectors, one per parameter, in the model's
//! parameter order. Updates are computed in f32 in a fixed order, so a run is bit-reproducible.

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// v = momentum * v + g; w -= lr * v (or, with Nesterov, w -= lr * (g + momentum * v)).
    Sgd { momentum: f32, nesterov: bool },
    /// Adam (Kingma and Ba) with bias correction.
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

/// How the learning rate moves within one training phase (see docs/trainer.md: every phase of
/// the grow-and-prune schedule restarts it, so retraining after a pruning round starts hot).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// lr * gamma^(epoch / every).
    Step {
        every: usize,
        gamma: f32,
    },
    /// From lr down to lr * min_fraction along half a cosine over the phase's epochs.
    Cosine {
        min_fraction: f32,
    },
}

impl Schedule {
    /// The learning rate of epoch `epoch` (0-based) of a phase of `epochs` epochs.
    pub fn lr(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { min_fraction } => {
                if epochs <= 1 {
                    return base;
                }
                let p = epoch as f64 / (epochs - 1) as f64;
                let f = min_fraction as f64
                    + (1.0 - min_fraction as f64) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
                (base as f64 * f) as f32
            }
        }
    }
}

/// Per-parameter state: momentum (SGD) or first and second moments (Adam).
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub rule: Rule,
    /// L2 penalty added to the gradient (coupled weight decay); 0 for none.
    pub weight_decay: f32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl Optimizer {
    /// State for parameters of the given sizes.
    pub fn new(rule: Rule, weight_decay: f32, sizes: &[usize]) -> Optimizer {
        let zeros = || sizes.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        let v = match rule {
            Rule::Adam { .. } => zeros(),
            Rule::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            rule,
            weight_decay,
            m: zeros(),
            v,
            step: 0,
        }
    }

    /// One update of every parameter with learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f32) {
        self.step = self.step.saturating_add(1);
        let wd = self.weight_decay;
        for (i, (w, g)) in params.iter_mut().zip(grads).enumerate() {
            let m = &mut self.m[i];
            match self.rule {
                Rule::Sgd { momentum, nesterov } => {
                    for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                        let g = g + wd * *w;
                        *m = momentum * *m + g;
                        let d = if nesterov { g + momentum * *m } else { *m };
                        *w -= lr * d;
                    }
                }
                Rule::Adam { beta1, beta2, eps } => {
                    let c1 = 1.0 - beta1.powi(self.step);
                    let c2 = 1.0 - beta2.powi(self.step);
                    let v = &mut self.v[i];
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v) {
                        let g = g + wd * *w;
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
        }
    }

    /// Forgets the state of parameter `i` where `keep` is false (pruned or regrown connections
    /// start without momentum).
    pub fn reset(&mut self, i: usize, keep: &[bool]) {
        for s in [&mut self.m, &mut self.v] {
            if let Some(s) = s.get_mut(i) {
                for (x, &k) in s.iter_mut().zip(keep) {
                    if !k {
                        *x = 0.0;
                    }
                }
            }
        }
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm` (when `max_norm` is
/// positive); returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let sq: f64 = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum();
    let norm = sq.sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / norm;
        for x in grads.iter_mut().flat_map(|g| g.iter_mut()) {
            *x *= s;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimizes f(w) = sum (w - 3)^2 and checks each rule gets there.
    fn converges(rule: Rule, lr: f32, steps: usize) -> f32 {
        let mut w = vec![vec![0.0f32, 10.0], vec![-4.0]];
        let mut opt = Optimizer::new(rule, 0.0, &[2, 1]);
        for _ in 0..steps {
            let g: Vec<Vec<f32>> = w
                .iter()
                .map(|p| p.iter().map(|x| 2.0 * (x - 3.0)).collect())
                .collect();
            opt.step(&mut w, &g, lr);
        }
        w.iter()
            .flatten()
            .map(|x| (x - 3.0).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn rules_converge() {
        let sgd = Rule::Sgd {
            momentum: 0.0,
            nesterov: false,
        };
        assert!(converges(sgd, 0.1, 200) < 1e-4);
        let mom = Rule::Sgd {
            momentum: 0.9,
            nesterov: false,
        };
        assert!(converges(mom, 0.02, 400) < 1e-3);
        let nest = Rule::Sgd {
            momentum: 0.9,
            nesterov: true,
        };
        assert!(converges(nest, 0.02, 400) < 1e-3);
        let adam = Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        assert!(converges(adam, 0.1, 2000) < 1e-2);
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let rule = Rule::Sgd {
            momentum: 0.5,
            nesterov: false,
        };
        let mut opt = Optimizer::new(rule, 0.0, &[1]);
        let mut w = vec![vec![1.0f32]];
        opt.step(&mut w, &[vec![2.0]], 0.1); // v = 2, w = 0.8
        opt.step(&mut w, &[vec![2.0]], 0.1); // v = 3, w = 0.5
        assert!((w[0][0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let rule = Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let mut opt = Optimizer::new(rule, 0.0, &[2]);
        let mut w = vec![vec![0.0f32, 0.0]];
        opt.step(&mut w, &[vec![5.0, -0.01]], 0.1);
        assert!((w[0][0] + 0.1).abs() < 1e-5 && (w[0][1] - 0.1).abs() < 1e-5);
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 7, 10), 0.1);
        let s = Schedule::Step {
            every: 3,
            gamma: 0.5,
        };
        assert_eq!(
            (0..7).map(|e| s.lr(1.0, e, 7)).collect::<Vec<_>>(),
            [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
        );
        let c = Schedule::Cosine { min_fraction: 0.1 };
        assert_eq!(c.lr(1.0, 0, 11), 1.0);
        assert!((c.lr(1.0, 5, 11) - 0.55).abs() < 1e-6);
        assert!((c.lr(1.0, 10, 11) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn clipping_scales_to_the_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
        let mut h = vec![vec![0.3f32, 0.4]];
        assert!((clip_global_norm(&mut h, 1.0) - 0.5).abs() < 1e-6);
        assert_eq!(h, [vec![0.3, 0.4]]);
        let mut z = vec![vec![3.0f32, 4.0]];
        clip_global_norm(&mut z, 0.0); // 0: no clipping
        assert_eq!(z, [vec![3.0, 4.0]]);
    }
}
