//! The benchmark models' random numbers: the project's generator (`hlstm_ir::rng`, SplitMix64)
//! seeded apart from the trainer's (the seed is mixed with a constant, so that a seed names the
//! same model as it always has), with the draws the model generator needs.

#[derive(Clone, Debug)]
pub struct Rng(hlstm_ir::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(hlstm_ir::rng::Rng::new(seed ^ 0x5DEE_CE66_D1CE_4E5B))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0.uniform()
    }

    /// Uniform in [-a, a).
    pub fn sym(&mut self, a: f64) -> f64 {
        (2.0 * self.unit() - 1.0) * a
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        self.0.int_in(lo, hi)
    }

    pub fn coin(&mut self, p: f64) -> bool {
        self.0.coin(p)
    }

    /// `k` distinct indices from 0..n, in random order (partial Fisher-Yates).
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "cannot choose {k} of {n}");
        let mut v: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = self.range(i, n - 1);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}
