//! Random H-LSTM weights from a spec: sizes, per-gate hidden layers, density (magnitude or random
//! pruning), whole hidden neurons cut, and input features no gate reads.
//!
//! The cell, for each of the four gates in the order f, i, o, g:
//! `a_0 = z_t = [x_t, h_{t-1}]`, `a_{l+1} = relu(a_l · W_l + b_l)` for the hidden layers, and
//! `gate = act(a_L · W_L + b_L)` with act = sigmoid (tanh for g); then
//! `c_t = f * c_{t-1} + i * g` and `h_t = o * tanh(c_t)`, with `h_0 = c_0 = 0`.

use crate::rng::Rng;

/// The gates in the order every form writes them; the last one (g) uses tanh.
pub const GATES: [&str; 4] = ["f", "i", "o", "g"];

/// One linear layer: `y = x · w + b`, `w` row-major `[n_in, n_out]` (the MatMul orientation).
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub n_in: usize,
    pub n_out: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Layer {
    pub fn new(n_in: usize, n_out: usize, w: Vec<f32>, b: Vec<f32>) -> Layer {
        assert_eq!(w.len(), n_in * n_out, "weight size");
        assert_eq!(b.len(), n_out, "bias size");
        Layer { n_in, n_out, w, b }
    }

    /// The weight from input `i` to output `j`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.w[i * self.n_out + j]
    }

    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        self.w[i * self.n_out + j] = v;
    }

    /// The weight as `[n_out, n_in]` row-major (what `torch.nn.Linear` stores, Gemm transB=1).
    pub fn transposed(&self) -> Vec<f32> {
        let mut t = vec![0.0; self.w.len()];
        for i in 0..self.n_in {
            for j in 0..self.n_out {
                t[j * self.n_in + i] = self.at(i, j);
            }
        }
        t
    }

    pub fn nonzeros(&self) -> usize {
        self.w.iter().filter(|v| **v != 0.0).count()
    }
}

/// An H-LSTM cell's weights: for each gate, its hidden layers then its output layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Hlstm {
    pub inputs: usize,
    pub hidden: usize,
    pub gates: [Vec<Layer>; 4],
}

impl Hlstm {
    /// Checks that the layers chain from `[x, h]` (X + H features) to H outputs.
    pub fn new(inputs: usize, hidden: usize, gates: [Vec<Layer>; 4]) -> Hlstm {
        for (g, layers) in gates.iter().enumerate() {
            assert!(!layers.is_empty(), "gate {g} has no layers");
            let mut n = inputs + hidden;
            for (l, layer) in layers.iter().enumerate() {
                assert_eq!(layer.n_in, n, "gate {g} layer {l}: inputs");
                n = layer.n_out;
            }
            assert_eq!(n, hidden, "gate {g}: outputs");
        }
        Hlstm {
            inputs,
            hidden,
            gates,
        }
    }

    /// Hidden layer widths per gate.
    pub fn widths(&self) -> [Vec<usize>; 4] {
        std::array::from_fn(|g| {
            let l = &self.gates[g];
            l[..l.len() - 1].iter().map(|x| x.n_out).collect()
        })
    }

    /// Weights (not biases), dense and nonzero.
    pub fn weight_counts(&self) -> (usize, usize) {
        let layers = self.gates.iter().flatten();
        let dense = layers.clone().map(|l| l.w.len()).sum();
        let nonzero = layers.map(|l| l.nonzeros()).sum();
        (dense, nonzero)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pruning {
    /// Keep the largest weights of each matrix.
    Magnitude,
    /// Keep a random subset of each matrix.
    Random,
}

/// What to generate. `widths[g]` lists gate g's hidden layer widths (1 to 3 layers).
#[derive(Clone, Debug, PartialEq)]
pub struct HlstmSpec {
    /// X: input features.
    pub inputs: usize,
    /// H: hidden units.
    pub hidden: usize,
    /// T: time steps of the generated models.
    pub steps: usize,
    /// B: batch rows of the generated models.
    pub batch: usize,
    pub widths: [Vec<usize>; 4],
    /// Fraction of each weight matrix left nonzero by pruning (1.0: dense).
    pub density: f64,
    pub pruning: Pruning,
    /// Hidden neurons cut whole after pruning: all incoming weights zeroed (the neuron becomes a
    /// constant) or all outgoing weights zeroed (it becomes dead). Some cuts also isolate a
    /// neighbour in the adjacent hidden layer, so that removal cascades across layers.
    pub cut_neurons: usize,
    /// Input features whose rows are zero in every gate's first layer.
    pub unused_inputs: usize,
    pub seed: u64,
}

impl HlstmSpec {
    /// A dense spec with the same hidden widths in every gate.
    pub fn dense(
        inputs: usize,
        hidden: usize,
        steps: usize,
        batch: usize,
        widths: &[usize],
    ) -> Self {
        HlstmSpec {
            inputs,
            hidden,
            steps,
            batch,
            widths: std::array::from_fn(|_| widths.to_vec()),
            density: 1.0,
            pruning: Pruning::Magnitude,
            cut_neurons: 0,
            unused_inputs: 0,
            seed: 0,
        }
    }

    /// A random spec: X and H in 2..=max_dim, every width in max_dim/3..=max_dim, 1..=max_steps steps,
    /// 1..=max_batch rows, 1 to 3 hidden layers (the same in every gate or not), a density from
    /// dense to 5%, either pruning, some neurons cut and some inputs unused.
    pub fn random(seed: u64, max_dim: usize, max_steps: usize, max_batch: usize) -> Self {
        assert!(max_dim >= 2 && max_steps >= 1 && max_batch >= 1);
        let mut r = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5);
        let inputs = r.range(2, max_dim);
        let hidden = r.range(2, max_dim);
        let steps = r.range(1, max_steps);
        let batch = r.range(1, max_batch);
        let shared = r.coin(0.5);
        let min_width = (max_dim / 3).max(1);
        let one = |r: &mut Rng| -> Vec<usize> {
            let depth = r.range(1, 3);
            (0..depth).map(|_| r.range(min_width, max_dim)).collect()
        };
        let first = one(&mut r);
        let widths: [Vec<usize>; 4] = std::array::from_fn(|g| {
            if shared || g == 0 {
                first.clone()
            } else {
                one(&mut r)
            }
        });
        let density = match r.range(0, 5) {
            0 => 1.0,
            1 => 0.5,
            2 => 0.3,
            3 => 0.15,
            4 => 0.05,
            _ => 0.05 + 0.95 * r.unit(),
        };
        let pruning = if r.coin(0.5) {
            Pruning::Magnitude
        } else {
            Pruning::Random
        };
        let neurons: usize = widths.iter().flatten().sum();
        let cut_neurons = r.range(0, (neurons / 4).min(8));
        let unused_inputs = r.range(0, inputs / 2);
        HlstmSpec {
            inputs,
            hidden,
            steps,
            batch,
            widths,
            density,
            pruning,
            cut_neurons,
            unused_inputs,
            seed,
        }
    }
}

fn nonzero(r: &mut Rng, scale: f64) -> f32 {
    let v = r.sym(scale) as f32;
    if v == 0.0 { scale as f32 * 0.5 } else { v }
}

/// Keeps `round(density * n)` entries of `w`, the largest or a random subset.
fn prune(w: &mut [f32], density: f64, how: Pruning, r: &mut Rng) {
    if density >= 1.0 {
        return;
    }
    let n = w.len();
    let keep = ((density * n as f64).round() as usize).min(n);
    let order: Vec<usize> = match how {
        Pruning::Magnitude => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
            idx
        }
        Pruning::Random => r.choose(n, n),
    };
    for &i in &order[keep..] {
        w[i] = 0.0;
    }
}

/// Generates the weights a spec describes (deterministic in the spec).
pub fn generate(spec: &HlstmSpec) -> Hlstm {
    assert!(
        spec.inputs >= 1 && spec.hidden >= 1,
        "X and H must be positive"
    );
    assert!(
        spec.unused_inputs <= spec.inputs,
        "more unused inputs than inputs"
    );
    assert!(
        spec.density > 0.0 && spec.density <= 1.0,
        "density must be in (0, 1]"
    );
    let mut r = Rng::new(spec.seed);
    let nz = spec.inputs + spec.hidden;
    let mut gates: [Vec<Layer>; 4] = std::array::from_fn(|g| {
        let widths = &spec.widths[g];
        assert!(
            (1..=3).contains(&widths.len()),
            "gate {g}: 1 to 3 hidden layers"
        );
        assert!(
            widths.iter().all(|&w| w > 0),
            "gate {g}: widths must be positive"
        );
        let mut layers = Vec::new();
        let mut n_in = nz;
        for &n_out in widths.iter().chain(std::iter::once(&spec.hidden)) {
            let scale = (3.0 / (spec.density * n_in as f64).max(1.0)).sqrt();
            let mut w: Vec<f32> = (0..n_in * n_out).map(|_| nonzero(&mut r, scale)).collect();
            prune(&mut w, spec.density, spec.pruning, &mut r);
            let b: Vec<f32> = (0..n_out).map(|_| r.sym(0.5) as f32).collect();
            layers.push(Layer::new(n_in, n_out, w, b));
            n_in = n_out;
        }
        layers
    });

    // Unused inputs: their rows of every gate's first layer are zero.
    for i in r.choose(spec.inputs, spec.unused_inputs) {
        for layers in gates.iter_mut() {
            for j in 0..layers[0].n_out {
                layers[0].set(i, j, 0.0);
            }
        }
    }

    // Whole neurons cut.
    let mut cands = Vec::new();
    for (g, layers) in gates.iter().enumerate() {
        for (l, layer) in layers[..layers.len() - 1].iter().enumerate() {
            for j in 0..layer.n_out {
                cands.push((g, l, j));
            }
        }
    }
    let picks = r.choose(cands.len(), spec.cut_neurons.min(cands.len()));
    for p in picks {
        let (g, l, j) = cands[p];
        let layers = &mut gates[g];
        let n_hidden = layers.len() - 1;
        if r.coin(0.5) {
            // No incoming weight: a constant.
            for i in 0..layers[l].n_in {
                layers[l].set(i, j, 0.0);
            }
            if l + 1 < n_hidden && r.coin(0.5) {
                // Cascade: a neuron of the next layer fed only by this one is constant too,
                // once this one is folded away.
                let next = &mut layers[l + 1];
                let k = r.range(0, next.n_out - 1);
                let scale = (3.0 / next.n_in as f64).sqrt();
                for i in 0..next.n_in {
                    next.set(i, k, 0.0);
                }
                let v = nonzero(&mut r, scale);
                next.set(j, k, v);
            }
        } else {
            // No outgoing weight: dead.
            let next = &mut layers[l + 1];
            for k in 0..next.n_out {
                next.set(j, k, 0.0);
            }
            if l >= 1 && r.coin(0.5) {
                // Cascade: a neuron of the previous layer that feeds only this one is dead too,
                // once this one is removed.
                let this = &mut layers[l];
                let k = r.range(0, this.n_in - 1);
                let scale = (3.0 / this.n_in as f64).sqrt();
                for jj in 0..this.n_out {
                    this.set(k, jj, 0.0);
                }
                let v = nonzero(&mut r, scale);
                this.set(k, j, v);
            }
        }
    }
    Hlstm::new(spec.inputs, spec.hidden, gates)
}

/// A random input `X` of shape `[steps, batch, inputs]`, uniform in [-1, 1).
pub fn random_input(seed: u64, steps: usize, batch: usize, inputs: usize) -> Vec<f32> {
    let mut r = Rng::new(seed ^ 0x1234_5678_9ABC_DEF0);
    (0..steps * batch * inputs)
        .map(|_| r.sym(1.0) as f32)
        .collect()
}

/// A one-layer, one-direction LSTM's weights in the layout of the ONNX `LSTM` op (gate order i,
/// o, f, c): `w` `[4H, X]` (the input weights), `r` `[4H, H]` (the recurrent weights), `b`
/// `[8H]` (the input biases, then the recurrent biases), all row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm {
    pub inputs: usize,
    pub hidden: usize,
    pub w: Vec<f32>,
    pub r: Vec<f32>,
    pub b: Vec<f32>,
}

impl Lstm {
    /// Weights (not biases): dense, and nonzero in `w` and in `r`.
    pub fn weight_counts(&self) -> (usize, usize, usize) {
        let nz = |v: &[f32]| v.iter().filter(|x| **x != 0.0).count();
        (self.w.len() + self.r.len(), nz(&self.w), nz(&self.r))
    }
}

/// Random LSTM weights: `w` and `r` drawn independently, uniform with a scale that keeps the
/// gate pre-activations near unit variance, then each pruned on its own (as the H-LSTM's
/// matrices are) to keep `round(density * n)` entries, the largest or a random subset; biases
/// uniform in [-0.5, 0.5). Deterministic in the arguments.
pub fn generate_lstm(
    inputs: usize,
    hidden: usize,
    density: f64,
    pruning: Pruning,
    seed: u64,
) -> Lstm {
    assert!(inputs >= 1 && hidden >= 1, "X and H must be positive");
    assert!(density > 0.0 && density <= 1.0, "density must be in (0, 1]");
    let mut r = Rng::new(seed ^ 0x4C53_544D);
    let scale = (3.0 / (density * (inputs + hidden) as f64).max(1.0)).sqrt();
    let mut w: Vec<f32> = (0..4 * hidden * inputs)
        .map(|_| nonzero(&mut r, scale))
        .collect();
    let mut rr: Vec<f32> = (0..4 * hidden * hidden)
        .map(|_| nonzero(&mut r, scale))
        .collect();
    prune(&mut w, density, pruning, &mut r);
    prune(&mut rr, density, pruning, &mut r);
    let b: Vec<f32> = (0..8 * hidden).map(|_| r.sym(0.5) as f32).collect();
    Lstm {
        inputs,
        hidden,
        w,
        r: rr,
        b,
    }
}
