//! Training: a `Session` holds the model, its weights and masks, the optimizer and the two
//! executables (the training graph at a fixed batch, the forward graph for evaluation at any
//! batch); `schedule::run` drives it through the grow-and-prune schedule.
//!
//! Reproducibility: one seeded generator drives masks, shuffling and dropout in a fixed order,
//! the interpreter is deterministic and the updates are done in a fixed order, so the same
//! config and seed give a bit-identical log.

mod schedule;
pub mod task;

pub use schedule::{Observer, Record, Summary, planned_epochs, run};
pub use task::{Eval, Split, Task};

use crate::config::{Cell, Config, Data, OptimizerName, ScheduleName};
use crate::data::SeqSet;
use crate::exec::factored::{self, Plan};
use crate::exec::{Engine, Executable};
use crate::gp::{self, Masks};
use crate::models::{self, CellKind, Dims, Head, InputKind, Model, ModelConfig};
use crate::optim::{self, Optimizer, Rule};
use crate::rng::Rng;
use crate::{Error, Options, SaveMode};
use hlstm_ir::{Dim, Tensor};

/// The model config a training config describes (`classes` from the data).
pub fn model_config(cfg: &Config, task: &Task) -> ModelConfig {
    let m = &cfg.model;
    let (input, head) = match (task, &cfg.data) {
        (Task::Lm { vocab, .. }, _) => (
            InputKind::Tokens {
                vocab: vocab.len(),
                embed: m.embed,
            },
            Head::NextToken { vocab: vocab.len() },
        ),
        (Task::Classify { train, classes, .. }, _) => (
            InputKind::Features {
                size: train.features,
            },
            Head::Classifier { classes: *classes },
        ),
    };
    let cell = match m.cell {
        Cell::Lstm => CellKind::Lstm,
        Cell::Hlstm => CellKind::Hlstm {
            hidden_layers: m.hidden_layers,
            hidden_width: m.hidden_width.unwrap_or(m.hidden),
        },
    };
    ModelConfig {
        cell,
        input,
        head,
        layers: m.layers,
        hidden: m.hidden,
        dropout: m.dropout > 0.0,
    }
}

/// The error of a run its observer stopped ([`Observer::interrupted`]).
pub const INTERRUPTED: &str = "interrupted";

/// Training state: everything a run changes.
pub struct Session {
    pub cfg: Config,
    pub task: Task,
    /// The training model (static shapes, loss, dropout masks when configured).
    pub model: Model,
    /// The forward model for evaluation and export: symbolic batch, no loss, no dropout.
    pub forward: Model,
    train_exec: Box<dyn Executable>,
    eval_exec: Box<dyn Executable>,
    /// With `train.sampled_gradients`: how the weight gradients the training graph leaves to
    /// the trainer are made (`exec::factored`).
    grads: Option<Plan>,
    /// The training graph's outputs of the last step (as the engine gives them, and as the
    /// original training graph has them), kept for their memory.
    raw: Vec<Tensor>,
    out: Vec<Tensor>,
    /// Weights in `model.params` order, flat; zero outside their masks.
    pub params: Vec<Vec<f32>>,
    pub masks: Masks,
    pub opt: Optimizer,
    pub rng: Rng,
}

/// Averages over one epoch's batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochStats {
    pub loss: f64,
    pub accuracy: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
}

impl Session {
    /// A session on the config's data file (see `with_arrays` for `data.format = "arrays"`).
    pub fn new(cfg: &Config, engine: &dyn Engine) -> Result<Session, Error> {
        Session::with_arrays(cfg, engine, None)
    }

    /// A session whose samples are `arrays` when the config's data is `format = "arrays"`
    /// (`Task::load_with`: arrays with another format, or that format without them, are errors).
    pub fn with_arrays(
        cfg: &Config,
        engine: &dyn Engine,
        arrays: Option<SeqSet>,
    ) -> Result<Session, Error> {
        let task = Task::load_with(cfg, arrays)?;
        let mc = model_config(cfg, &task);
        let steps = match (&task, &cfg.data) {
            (Task::Classify { train, .. }, _) => train.steps,
            (_, Data::Text { window, .. }) => *window,
            _ => unreachable!("text data makes a language-model task"),
        };
        // A size typo (hidden = 100000, or a label of 1e9 making as many classes) must be an
        // error here, not an allocation failure later: one batch's activations of a layer and
        // the parameter set are each bounded by the `elements` limit (hlstm_ir::limits).
        let limit = |what: &str, n: Option<u64>| {
            hlstm_ir::limits::check_elements(|| what.to_string(), n)
                .map_err(|e| Error::new(e.to_string()))
        };
        let count = |dims: &[usize]| dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        limit(
            "one layer's activations (steps x batch x hidden)",
            count(&[steps, cfg.train.batch, mc.hidden.max(1)]),
        )?;
        let model = models::build(&mc, &Dims::known(steps, cfg.train.batch), true)?;
        let total = model
            .params
            .iter()
            .try_fold(0u64, |a, p| count(&p.dims).and_then(|n| a.checked_add(n)));
        limit("the model's parameters", total)?;
        let eval_steps = match task {
            Task::Classify { .. } => Dim::Known(steps),
            Task::Lm { .. } => Dim::Sym("T".into()),
        };
        let dims = Dims {
            steps: eval_steps,
            batch: Dim::Sym("N".into()),
        };
        let forward = models::build(
            &ModelConfig {
                dropout: false,
                ..mc
            },
            &dims,
            false,
        )?;
        let save = if cfg.train.recompute {
            SaveMode::Recompute
        } else {
            SaveMode::Intermediates
        };
        let tg = model.training_graph(&Options { save })?;
        let exclude = cfg
            .gp
            .as_ref()
            .map(|g| g.exclude.clone())
            .unwrap_or_default();
        for name in &exclude {
            if !model.params.iter().any(|p| &p.name == name) {
                return Err(Error::new(format!(
                    "gp.exclude: the model has no parameter '{name}'"
                )));
            }
        }
        // Every weight matrix is masked (biases never are): with gp absent, all on.
        let sizes: Vec<Option<usize>> = model
            .params
            .iter()
            .map(|p| {
                (p.dims.len() == 2 && !exclude.contains(&p.name)).then(|| p.dims.iter().product())
            })
            .collect();
        let threads = cfg.train.threads;
        let (train_exec, grads) = if cfg.train.sampled() {
            // The masked matrices' gradients: the last outputs, in parameter order.
            let first = tg.outputs.len() - sizes.len();
            let which: Vec<(usize, usize)> = (0..sizes.len())
                .filter(|&i| sizes[i].is_some())
                .map(|i| (first + i, i))
                .collect();
            let f = factored::factor(&tg, &which);
            (
                engine.load_threads(&f.graph, threads)?,
                Some(Plan::new(&f, threads)),
            )
        } else {
            (engine.load_threads(&tg, threads)?, None)
        };
        let eval_exec = engine.load_threads(&forward.graph, threads)?;
        let mut rng = Rng::new(cfg.seed);
        let params: Vec<Vec<f32>> = model
            .init_params(rng.next_u64())
            .iter()
            .map(|t| {
                t.as_f32()
                    .expect("parameters are f32")
                    .iter()
                    .copied()
                    .collect()
            })
            .collect();
        let density = cfg.gp.as_ref().map_or(1.0, |g| g.seed_density);
        let masks = gp::seed(&mut rng, &sizes, density);
        let t = &cfg.train;
        let rule = match t.optimizer {
            OptimizerName::Sgd => Rule::Sgd {
                momentum: t.momentum,
                nesterov: t.nesterov,
            },
            OptimizerName::Adam => Rule::Adam {
                beta1: t.beta1,
                beta2: t.beta2,
                eps: t.eps,
            },
        };
        let lens: Vec<usize> = params.iter().map(Vec::len).collect();
        let mut s = Session {
            cfg: cfg.clone(),
            task,
            model,
            forward,
            train_exec,
            eval_exec,
            grads,
            raw: Vec::new(),
            out: Vec::new(),
            params,
            masks,
            opt: Optimizer::new(rule, t.weight_decay, &lens),
            rng,
        };
        gp::apply(&s.masks, &mut s.params);
        Ok(s)
    }

    pub fn schedule(&self) -> optim::Schedule {
        let t = &self.cfg.train;
        match t.schedule {
            ScheduleName::Constant => optim::Schedule::Constant,
            ScheduleName::Step => optim::Schedule::Step {
                every: t.step_every,
                gamma: t.step_gamma,
            },
            ScheduleName::Cosine => optim::Schedule::Cosine {
                min_fraction: t.min_lr_fraction,
            },
        }
    }

    /// The current weights as tensors, in parameter order.
    pub fn param_tensors(&self) -> Vec<Tensor> {
        self.model
            .params
            .iter()
            .zip(&self.params)
            .map(|(p, w)| Tensor::from_f32(&p.dims, w.clone()).expect("sizes agree"))
            .collect()
    }

    fn state_widths(&self) -> Vec<usize> {
        self.model
            .states
            .iter()
            .map(|(_, d)| d[1].known().unwrap_or(0))
            .collect()
    }

    /// One epoch at learning rate `lr`. With `scores`, |dL/dw| of every masked parameter is
    /// added to it after each batch (growth ranks the dormant ones). `on_batch` is told of each
    /// batch done and returns whether to go on: false stops the epoch with an error
    /// ([`INTERRUPTED`]), the weights as the last whole batch left them.
    pub fn epoch(
        &mut self,
        lr: f32,
        scores: Option<&mut Vec<Vec<f32>>>,
        on_batch: &mut dyn FnMut(usize, usize, f64) -> bool,
    ) -> Result<EpochStats, Error> {
        if self.cfg.train.sparse_kernels {
            self.train_exec.set_masks(&self.masks);
        }
        if let Some(p) = &mut self.grads {
            // Growth ranks dormant connections by |dL/dw|: its epochs need the dense products.
            p.set_masks(&self.masks, scores.is_some());
        }
        let (mut raw, mut out) = (std::mem::take(&mut self.raw), std::mem::take(&mut self.out));
        let result = self.epoch_with(lr, scores, on_batch, &mut raw, &mut out);
        (self.raw, self.out) = (raw, out);
        result
    }

    /// [`Session::epoch`] with the buffers of the training graph's outputs.
    fn epoch_with(
        &mut self,
        lr: f32,
        mut scores: Option<&mut Vec<Vec<f32>>>,
        on_batch: &mut dyn FnMut(usize, usize, f64) -> bool,
        raw: &mut Vec<Tensor>,
        out: &mut Vec<Tensor>,
    ) -> Result<EpochStats, Error> {
        let batch = self.cfg.train.batch;
        let batches = self.task.batches(&mut self.rng, batch)?;
        let nstates = self.model.states.len();
        let mut state: Vec<Tensor> = Vec::new();
        let mut st = EpochStats::default();
        let (mut right, mut count) = (0usize, 0usize);
        for (k, b) in batches.iter().enumerate() {
            let mut inputs = vec![b.data.clone(), b.labels.clone()];
            if b.carry && state.len() == nstates {
                inputs.append(&mut state);
            } else {
                inputs.extend(
                    self.state_widths()
                        .iter()
                        .map(|&w| Tensor::zeros(hlstm_ir::DType::F32, &[batch, w])),
                );
            }
            let p = self.cfg.model.dropout;
            for (_, d) in &self.model.masks {
                let dims: Vec<usize> = d.iter().map(|d| d.known().unwrap_or(0)).collect();
                inputs.push(models::dropout_mask(&mut self.rng, &dims, p));
            }
            inputs.extend(self.param_tensors());
            match &self.grads {
                Some(plan) => {
                    self.train_exec.run_into(&inputs, raw)?;
                    plan.finish(raw, out)?;
                }
                None => self.train_exec.run_into(&inputs, out)?,
            }
            let loss = out[1]
                .as_f32()
                .and_then(|a| a.iter().next().copied())
                .unwrap_or(f32::NAN);
            if !loss.is_finite() {
                return Err(Error::new(format!(
                    "the loss is {loss} at batch {k}; lower train.lr or set train.clip_norm"
                )));
            }
            let labels = b.labels.to_i64_vec().unwrap_or_default();
            let (_, r, n) = task::cross_entropy(&out[0], &labels)?;
            (right, count) = (right + r, count + n);
            state = out[2..2 + nstates].to_vec();
            let mut grads: Vec<Vec<f32>> = out[2 + nstates..]
                .iter()
                .map(|t| {
                    t.as_f32()
                        .map(|a| a.iter().copied().collect())
                        .unwrap_or_default()
                })
                .collect();
            if let Some(s) = scores.as_deref_mut() {
                for ((acc, g), m) in s.iter_mut().zip(&grads).zip(&self.masks) {
                    if m.is_some() {
                        acc.iter_mut().zip(g).for_each(|(a, g)| *a += g.abs());
                    }
                }
            }
            // Dormant connections do not move: only the active part of dL/dW is applied.
            gp::apply(&self.masks, &mut grads);
            st.grad_norm += optim::clip_global_norm(&mut grads, self.cfg.train.clip_norm) as f64;
            self.opt.step(&mut self.params, &grads, lr);
            gp::apply(&self.masks, &mut self.params);
            st.loss += loss as f64;
            if !on_batch(k + 1, batches.len(), loss as f64) {
                return Err(Error::new(INTERRUPTED));
            }
        }
        let n = batches.len().max(1) as f64;
        st.loss /= n;
        st.grad_norm /= n;
        st.accuracy = right as f64 / count.max(1) as f64;
        Ok(st)
    }

    /// Loss and metric of a split with the current weights.
    pub fn evaluate(&mut self, which: Split) -> Result<Eval, Error> {
        let params = self.param_tensors();
        let widths = self.state_widths();
        if self.cfg.train.sparse_kernels {
            self.eval_exec.set_masks(&self.masks);
        }
        self.task
            .evaluate(which, self.eval_exec.as_mut(), &params, &widths)
    }

    /// Nonzero weights: (in weight matrices, in all parameters).
    pub fn nonzeros(&self) -> (usize, usize) {
        let nz = |w: &Vec<f32>| w.iter().filter(|v| **v != 0.0).count();
        let all = self.params.iter().map(nz).sum();
        let mats = self
            .model
            .params
            .iter()
            .zip(&self.params)
            .filter(|(p, _)| p.dims.len() == 2)
            .map(|(_, w)| nz(w))
            .sum();
        (mats, all)
    }
}
