//! The grow-and-prune schedule, phase by phase (docs/trainer.md):
//!
//! 1. `train`: `train.epochs` epochs at the seed density.
//! 2. `grow`, `gp.grow_rounds` rounds: `gp.grow_epochs` epochs accumulating |dL/dw| over every
//!    batch, then the top `gp.growth_ratio` of the dormant connections are activated.
//! 3. `prune`, rounds until `gp.target_density`: remove the `gp.prune_ratio` smallest |w| (never
//!    below the target), retrain `gp.retrain_epochs` epochs, validate. A round that leaves the
//!    validation metric more than `gp.tolerance` below its value before pruning is undone and
//!    pruning stops.
//! 4. `final`: `gp.final_epochs` epochs of fine-tuning.
//!
//! Each phase restarts the learning-rate schedule over its own epochs (warm restarts), so
//! retraining after a pruning round starts at the full rate. The test split is evaluated once,
//! at the end; no decision reads it.

use super::{EpochStats, Session, Split};
use crate::Error;
use crate::gp::{self, Scope};
use serde::Serialize;

/// One line of the JSONL log. Nothing in it depends on time, so a rerun with the same seed
/// writes the same bytes.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Epoch {
        epoch: usize,
        phase: &'static str,
        round: usize,
        lr: f32,
        loss: f64,
        accuracy: f64,
        grad_norm: f64,
        val_loss: f64,
        val_accuracy: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        val_bpc: Option<f64>,
        density: f64,
        nonzeros: usize,
    },
    Grow {
        round: usize,
        grown: usize,
        density: f64,
    },
    Prune {
        round: usize,
        pruned: usize,
        density: f64,
    },
    /// A pruning round undone: the validation metric fell too far.
    Revert {
        round: usize,
        val_score: f64,
        floor: f64,
        density: f64,
    },
    Test {
        loss: f64,
        accuracy: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        bpc: Option<f64>,
        density: f64,
        nonzero_weights: usize,
        nonzero_params: usize,
    },
}

impl Record {
    /// The line `hlstmc train` (and the Python package's `train`) prints for the record; None
    /// for the test record, which the final summary reports.
    pub fn line(&self) -> Option<String> {
        Some(match self {
            Record::Epoch {
                epoch,
                phase,
                loss,
                val_accuracy,
                val_bpc,
                density,
                ..
            } => {
                let metric = match val_bpc {
                    Some(b) => format!("val bpc {b:.3}"),
                    None => format!("val acc {:.2}%", 100.0 * val_accuracy),
                };
                format!(
                    "epoch {epoch:3} {phase:5}  loss {loss:.4}  {metric}  density {:.1}%",
                    100.0 * density
                )
            }
            Record::Grow {
                round,
                grown,
                density,
            } => format!(
                "grow round {round}: +{grown} connections, density {:.1}%",
                100.0 * density
            ),
            Record::Prune {
                round,
                pruned,
                density,
            } => format!(
                "prune round {round}: -{pruned} connections, density {:.1}%",
                100.0 * density
            ),
            Record::Revert { round, density, .. } => format!(
                "prune round {round} undone (validation fell); density {:.1}%",
                100.0 * density
            ),
            Record::Test { .. } => return None,
        })
    }
}

/// How many epochs the schedule of `cfg` runs when no pruning round is undone, starting from
/// weight density `density`: dense training, growth, the pruning rounds it takes to reach the
/// target (each removes `prune_ratio` of the kept connections, as `gp::prune` does, at most
/// `max_prune_rounds`), and final training. A progress display's denominator; a round that
/// is undone ends the schedule sooner.
pub fn planned_epochs(cfg: &crate::config::Config, density: f64) -> usize {
    let mut total = cfg.train.epochs;
    let Some(g) = &cfg.gp else { return total };
    let mut d = density;
    for _ in 0..g.grow_rounds {
        total += g.grow_epochs;
        d += (1.0 - d) * g.growth_ratio;
    }
    let mut rounds = 0;
    while rounds < g.max_prune_rounds && d > g.target_density + 1e-12 && g.prune_ratio > 0.0 {
        d = (d * (1.0 - g.prune_ratio)).max(g.target_density);
        rounds += 1;
    }
    total + rounds * g.retrain_epochs + g.final_epochs
}

/// Told of progress: each batch (for a progress bar) and each log record.
pub trait Observer {
    /// Training begins: about `planned` epochs (see [`planned_epochs`]) from weight density
    /// `density`.
    fn start(&mut self, _planned: usize, _density: f64) {}
    /// An epoch of a phase begins.
    fn epoch(&mut self, _phase: &str, _round: usize, _epoch: usize, _epochs: usize) {}
    fn batch(&mut self, _done: usize, _total: usize, _loss: f64) {}
    fn record(&mut self, _r: &Record) {}
    /// Asked after each batch: true stops the run (an error, [`super::INTERRUPTED`]) and
    /// nothing is written (a caller's Ctrl-C, say).
    fn interrupted(&mut self) -> bool {
        false
    }
}

/// Ignores everything.
impl Observer for () {}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub log: Vec<Record>,
    pub test: super::Eval,
    pub density: f64,
    pub nonzero_weights: usize,
    pub nonzero_params: usize,
    pub epochs: usize,
}

fn density(s: &Session) -> f64 {
    let (a, t) = gp::density(&s.masks);
    if t == 0 { 1.0 } else { a as f64 / t as f64 }
}

struct Driver<'a> {
    s: &'a mut Session,
    obs: &'a mut dyn Observer,
    log: Vec<Record>,
    epoch: usize,
}

impl Driver<'_> {
    fn emit(&mut self, r: Record) {
        self.obs.record(&r);
        self.log.push(r);
    }

    /// Runs a phase of `epochs` epochs; returns the last validation score (None for 0 epochs).
    fn phase(
        &mut self,
        name: &'static str,
        round: usize,
        epochs: usize,
        mut scores: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Option<f64>, Error> {
        let sched = self.s.schedule();
        let base = self.s.cfg.train.lr;
        let mut last = None;
        for e in 0..epochs {
            let lr = sched.lr(base, e, epochs);
            self.obs.epoch(name, round, e, epochs);
            let obs = &mut *self.obs;
            let st: EpochStats = self.s.epoch(lr, scores.as_deref_mut(), &mut |d, t, l| {
                obs.batch(d, t, l);
                !obs.interrupted()
            })?;
            let v = self.s.evaluate(Split::Validation)?;
            last = Some(v.score());
            // Epochs count from 1, in the log as on the screen.
            self.epoch += 1;
            let r = Record::Epoch {
                epoch: self.epoch,
                phase: name,
                round,
                lr,
                loss: st.loss,
                accuracy: st.accuracy,
                grad_norm: st.grad_norm,
                val_loss: v.loss,
                val_accuracy: v.accuracy,
                val_bpc: v.bpc,
                density: density(self.s),
                nonzeros: self.s.nonzeros().0,
            };
            self.emit(r);
        }
        Ok(last)
    }
}

/// Runs the whole schedule of the session's config.
pub fn run(s: &mut Session, obs: &mut dyn Observer) -> Result<Summary, Error> {
    let mut d = Driver {
        s,
        obs,
        log: Vec::new(),
        epoch: 0,
    };
    let epochs = d.s.cfg.train.epochs;
    let start = density(d.s);
    d.obs.start(planned_epochs(&d.s.cfg, start), start);
    let mut score = d.phase("train", 0, epochs, None)?;
    if let Some(g) = d.s.cfg.gp.clone() {
        let scope = match g.scope {
            crate::config::ScopeName::Matrix => Scope::Matrix,
            crate::config::ScopeName::Global => Scope::Global,
        };
        for r in 0..g.grow_rounds {
            let mut acc: Vec<Vec<f32>> = d.s.params.iter().map(|p| vec![0.0; p.len()]).collect();
            // Rounds count from 1, as epochs do (0: a phase without rounds).
            score = d.phase("grow", r + 1, g.grow_epochs, Some(&mut acc))?;
            let grown = gp::grow(&mut d.s.masks, &acc, g.growth_ratio, scope);
            // A grown connection starts from zero and without optimizer state: the next
            // batch's gradient moves it.
            d.emit(Record::Grow {
                round: r + 1,
                grown: grown.len(),
                density: density(d.s),
            });
        }
        let reference = match score {
            Some(v) => v,
            None => d.s.evaluate(Split::Validation)?.score(),
        };
        let floor = reference - g.tolerance;
        for r in 0..g.max_prune_rounds {
            if density(d.s) <= g.target_density + 1e-12 {
                break;
            }
            let saved = (d.s.params.clone(), d.s.masks.clone(), d.s.opt.clone());
            let pruned = gp::prune(
                &mut d.s.masks,
                &mut d.s.params,
                g.prune_ratio,
                g.target_density,
                scope,
            );
            if pruned.is_empty() {
                break;
            }
            for (i, m) in d.s.masks.clone().iter().enumerate() {
                if let Some(m) = m {
                    d.s.opt.reset(i, m);
                }
            }
            d.emit(Record::Prune {
                round: r + 1,
                pruned: pruned.len(),
                density: density(d.s),
            });
            let v = match d.phase("prune", r + 1, g.retrain_epochs, None)? {
                Some(v) => v,
                None => d.s.evaluate(Split::Validation)?.score(),
            };
            if v < floor {
                (d.s.params, d.s.masks, d.s.opt) = saved;
                d.emit(Record::Revert {
                    round: r + 1,
                    val_score: v,
                    floor,
                    density: density(d.s),
                });
                break;
            }
        }
        d.phase("final", 0, g.final_epochs, None)?;
    }
    let test = d.s.evaluate(Split::Test)?;
    let (nonzero_weights, nonzero_params) = d.s.nonzeros();
    let dens = density(d.s);
    d.emit(Record::Test {
        loss: test.loss,
        accuracy: test.accuracy,
        bpc: test.bpc,
        density: dens,
        nonzero_weights,
        nonzero_params,
    });
    Ok(Summary {
        epochs: d.epoch,
        log: d.log,
        test,
        density: dens,
        nonzero_weights,
        nonzero_params,
    })
}
