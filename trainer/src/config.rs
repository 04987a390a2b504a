//! The training config (TOML): data, model, optimizer and schedule, grow and prune, export.
//! Every key is listed in docs/trainer.md. Unknown keys are errors (a typo must not silently
//! train the default), and `check` rejects values out of range with the key named.

use crate::Error;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seeds initialization, masks, shuffling and dropout.
    #[serde(default)]
    pub seed: u64,
    pub data: Data,
    pub model: ModelSection,
    #[serde(default)]
    pub train: Train,
    pub gp: Option<Gp>,
    #[serde(default)]
    pub export: Export,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum Data {
    /// Labelled sequences from a numeric CSV: row = sample.
    Csv {
        path: PathBuf,
        steps: usize,
        features: usize,
        #[serde(default)]
        first_column: usize,
        /// The label's column; negative counts from the end (default -1, the last).
        #[serde(default = "last")]
        label_column: i64,
        #[serde(default = "one")]
        scale: f32,
        split: IndexSplit,
    },
    /// Labelled sequences from .npy: `x` [samples, steps, features], `y` [samples] integers.
    Npy {
        x: PathBuf,
        y: PathBuf,
        #[serde(default = "one")]
        scale: f32,
        split: IndexSplit,
    },
    /// A character-level language model on a text file.
    Text {
        path: PathBuf,
        /// Characters per training window (truncated BPTT length).
        window: usize,
        #[serde(default = "five_percent")]
        validation: f64,
        #[serde(default = "ten_percent")]
        test: f64,
        /// Use only the first this many characters of the file (before splitting).
        max_chars: Option<usize>,
    },
    /// Labelled sequences passed by the library call (`output::train_to_files(.., Some(set),
    /// ..)`, `hlstmc.train(config, out, data=(X, y))` in Python), not read from a file.
    Arrays {
        #[serde(default = "one")]
        scale: f32,
        split: IndexSplit,
    },
}

impl Data {
    /// The `format` key's value.
    pub fn format(&self) -> &'static str {
        match self {
            Data::Csv { .. } => "csv",
            Data::Npy { .. } => "npy",
            Data::Text { .. } => "text",
            Data::Arrays { .. } => "arrays",
        }
    }
}

/// Rows with index i go to test when i % modulus is in `test`, to validation when in
/// `validation`, else to train.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSplit {
    pub modulus: usize,
    pub test: Vec<usize>,
    #[serde(default)]
    pub validation: Vec<usize>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    Lstm,
    Hlstm,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub cell: Cell,
    pub hidden: usize,
    #[serde(default = "one_usize")]
    pub layers: usize,
    /// H-LSTM: hidden layers per gate and their width (default: `hidden`).
    #[serde(default = "one_usize")]
    pub hidden_layers: usize,
    pub hidden_width: Option<usize>,
    /// Text: embedding width.
    #[serde(default = "thirty_two")]
    pub embed: usize,
    /// Dropout probability (0 = none): H-LSTM, after each hidden ReLU layer; stacked LSTM,
    /// on the outputs of every layer but the last.
    #[serde(default)]
    pub dropout: f32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Sgd,
    Adam,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleName {
    Constant,
    Step,
    Cosine,
}

/// What runs the training and evaluation graphs (see `exec`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum EngineName {
    /// The reference interpreter: exact (f64 matmul accumulation), slow.
    Interp,
    /// The interpreter with f32 blocked matrix products.
    Fast,
    /// The graphs lowered to the kernel IR and compiled by Cranelift.
    Jit,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Train {
    pub engine: EngineName,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerName,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    pub clip_norm: f32,
    pub schedule: ScheduleName,
    pub step_every: usize,
    pub step_gamma: f32,
    pub min_lr_fraction: f32,
    /// Recompute each step's cell in the backward pass instead of saving its values.
    pub recompute: bool,
    /// jit engine: multiply masked weight matrices at most 30% dense by compressed kernels
    /// over their masks, compiled again whenever the masks change. On by default since the
    /// digits results were rerun with it (docs/results.md); it changes the rounding of sparse
    /// models' training, so configs trained before pin it off (docs/trainer.md).
    pub sparse_kernels: bool,
    /// Weight gradients of masked matrices computed only at their masks' kept positions (a
    /// sampled product, `exec::sampled`) outside growth epochs, which need the dense gradient.
    /// Default: as `sparse_kernels` (it changes the rounding of sparse models' training too).
    pub sampled_gradients: Option<bool>,
    /// Threads of a training step (jit engine: the compiled program's thread split; the
    /// sampled weight gradients). Results do not depend on it (docs/trainer.md).
    pub threads: usize,
}

impl Train {
    /// Whether masked weight gradients are sampled (`sampled_gradients`, else `sparse_kernels`).
    pub fn sampled(&self) -> bool {
        self.sampled_gradients.unwrap_or(self.sparse_kernels)
    }
}

impl Default for Train {
    fn default() -> Train {
        Train {
            engine: EngineName::Interp,
            epochs: 10,
            batch: 32,
            optimizer: OptimizerName::Adam,
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: 5.0,
            schedule: ScheduleName::Cosine,
            step_every: 10,
            step_gamma: 0.5,
            min_lr_fraction: 0.05,
            recompute: false,
            sparse_kernels: true,
            sampled_gradients: None,
            threads: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    Matrix,
    Global,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gp {
    /// Density of the sparse seed architecture (1 = dense).
    pub seed_density: f64,
    pub scope: ScopeName,
    pub grow_rounds: usize,
    /// Training epochs per growth round; |dL/dw| is accumulated over all their batches.
    pub grow_epochs: usize,
    /// Fraction of the dormant connections activated per growth round.
    pub growth_ratio: f64,
    /// Fraction of the active connections removed per pruning round.
    pub prune_ratio: f64,
    pub target_density: f64,
    pub retrain_epochs: usize,
    pub max_prune_rounds: usize,
    /// How far the validation metric may fall below its value before pruning before a round
    /// is undone and pruning stops (accuracy as a fraction; bits per character for text).
    pub tolerance: f64,
    /// Epochs of fine-tuning after pruning ends.
    pub final_epochs: usize,
    /// Parameters that are never masked (besides biases, which never are).
    pub exclude: Vec<String>,
}

impl Default for Gp {
    fn default() -> Gp {
        Gp {
            seed_density: 1.0,
            scope: ScopeName::Matrix,
            grow_rounds: 0,
            grow_epochs: 1,
            growth_ratio: 0.2,
            prune_ratio: 0.3,
            target_density: 0.1,
            retrain_epochs: 3,
            max_prune_rounds: 20,
            tolerance: 0.0,
            final_epochs: 0,
            exclude: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Export {
    /// A fixed batch size for the exported model's `X` (default: a symbolic `N`).
    pub batch: Option<usize>,
    /// Stacked LSTMs as ONNX `LSTM` ops (else as Scans, like H-LSTMs).
    pub lstm_op: bool,
}

impl Default for Export {
    fn default() -> Export {
        Export {
            batch: None,
            lstm_op: true,
        }
    }
}

fn last() -> i64 {
    -1
}
fn one() -> f32 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn thirty_two() -> usize {
    32
}
fn five_percent() -> f64 {
    0.05
}
fn ten_percent() -> f64 {
    0.1
}

impl Config {
    /// Parses TOML text; relative data paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Error> {
        let mut c: Config = toml::from_str(text).map_err(|e| Error::new(e.to_string()))?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut c.data {
            Data::Csv { path, .. } | Data::Text { path, .. } => fix(path),
            Data::Npy { x, y, .. } => {
                fix(x);
                fix(y);
            }
            Data::Arrays { .. } => {}
        }
        c.check()?;
        Ok(c)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = hlstm_ir::limits::read_text(path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| e.context(&path.display().to_string()))
    }

    /// Range checks, each naming its key.
    pub fn check(&self) -> Result<(), Error> {
        let mut bad = Vec::new();
        let mut need = |ok: bool, msg: &str| {
            if !ok {
                bad.push(msg.to_string());
            }
        };
        let (m, t) = (&self.model, &self.train);
        need(m.hidden > 0, "model.hidden must be at least 1");
        need(m.layers > 0, "model.layers must be at least 1");
        need(
            m.hidden_layers > 0,
            "model.hidden_layers must be at least 1",
        );
        need(
            m.hidden_width != Some(0),
            "model.hidden_width must be at least 1",
        );
        need(m.embed > 0, "model.embed must be at least 1");
        need(
            (0.0..1.0).contains(&m.dropout),
            "model.dropout must be in [0, 1)",
        );
        need(t.batch > 0, "train.batch must be at least 1");
        need(
            self.export.batch != Some(0),
            "export.batch must be at least 1 (or left out for a batch chosen per call)",
        );
        need(m.layers <= 64, "model.layers must be at most 64");
        need(t.lr > 0.0 && t.lr.is_finite(), "train.lr must be positive");
        need(
            (0.0..1.0).contains(&t.momentum),
            "train.momentum must be in [0, 1)",
        );
        need(
            (0.0..1.0).contains(&t.beta1),
            "train.beta1 must be in [0, 1)",
        );
        need(
            (0.0..1.0).contains(&t.beta2),
            "train.beta2 must be in [0, 1)",
        );
        need(t.eps > 0.0, "train.eps must be positive");
        need(
            t.weight_decay >= 0.0,
            "train.weight_decay must be at least 0",
        );
        need(
            t.clip_norm >= 0.0,
            "train.clip_norm must be at least 0 (0: no clipping)",
        );
        need(
            (1..=64).contains(&t.threads),
            "train.threads must be in 1..=64",
        );
        need(t.step_every > 0, "train.step_every must be at least 1");
        need(t.step_gamma > 0.0, "train.step_gamma must be positive");
        need(
            (0.0..=1.0).contains(&t.min_lr_fraction),
            "train.min_lr_fraction must be in [0, 1]",
        );
        match &self.data {
            Data::Csv {
                steps,
                features,
                split,
                ..
            } => {
                need(
                    *steps > 0 && *features > 0,
                    "data.steps and data.features must be at least 1",
                );
                need(split.modulus > 0, "data.split.modulus must be at least 1");
            }
            Data::Npy { split, .. } | Data::Arrays { split, .. } => {
                need(split.modulus > 0, "data.split.modulus must be at least 1")
            }
            Data::Text { window, .. } => need(*window > 0, "data.window must be at least 1"),
        }
        if let Some(g) = &self.gp {
            let frac = |x: f64| x > 0.0 && x <= 1.0;
            need(frac(g.seed_density), "gp.seed_density must be in (0, 1]");
            need(
                frac(g.target_density),
                "gp.target_density must be in (0, 1]",
            );
            need(
                (0.0..=1.0).contains(&g.growth_ratio),
                "gp.growth_ratio must be in [0, 1]",
            );
            need(
                (0.0..1.0).contains(&g.prune_ratio),
                "gp.prune_ratio must be in [0, 1)",
            );
            need(g.grow_epochs > 0, "gp.grow_epochs must be at least 1");
            need(g.tolerance >= 0.0, "gp.tolerance must be at least 0");
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::new(bad.join("; ")))
        }
    }
}
