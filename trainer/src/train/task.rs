//! What is learned: labelled sequences (a classifier on the last step) or a token stream (a
//! next-token language model). A task makes the training batches of an epoch and evaluates a
//! split with the forward graph.

use crate::Error;
use crate::config::{Config, Data};
use crate::data::{self, SeqSet, TextSplit, Vocab};
use crate::exec::Executable;
use crate::rng::Rng;
use hlstm_ir::Tensor;

/// The error of `data.format = "arrays"` without arrays (`hlstmc train` from the command line).
pub const NO_ARRAYS: &str = "data.format = \"arrays\" takes its samples from the library call \
     (hlstmc.train(config, out, data=(X, y)) in Python); a config file for the command line \
     names csv, npy or text";

pub enum Task {
    Classify {
        train: SeqSet,
        validation: SeqSet,
        test: SeqSet,
        classes: usize,
    },
    Lm {
        vocab: Vocab,
        split: TextSplit,
        window: usize,
    },
}

/// One training batch: the data input, the labels, and whether the recurrent state carries
/// over from the previous batch (consecutive windows of a text stream).
pub struct Batch {
    pub data: Tensor,
    pub labels: Tensor,
    pub carry: bool,
}

/// Loss and metric of a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    /// Mean cross-entropy in nats.
    pub loss: f64,
    /// Classification: the fraction right; text: next-character accuracy.
    pub accuracy: f64,
    /// Text only: bits per character.
    pub bpc: Option<f64>,
}

impl Eval {
    /// Higher is better: accuracy for a classifier, minus bits per character for text.
    pub fn score(&self) -> f64 {
        self.bpc.map_or(self.accuracy, |b| -b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Validation,
    Test,
}

impl Task {
    /// The task of a config whose data is a file (csv, npy or text).
    pub fn load(cfg: &Config) -> Result<Task, Error> {
        Task::load_with(cfg, None)
    }

    /// The task of a config; `arrays` are the samples of `data.format = "arrays"`, passed by
    /// the library call instead of read from a file (split and scaled as csv and npy data).
    /// Arrays without that format, or that format without arrays, are errors.
    pub fn load_with(cfg: &Config, arrays: Option<SeqSet>) -> Result<Task, Error> {
        match (&cfg.data, &arrays) {
            (Data::Arrays { .. }, None) => return Err(Error::new(NO_ARRAYS)),
            (Data::Arrays { .. }, Some(_)) | (_, None) => {}
            (other, Some(_)) => {
                return Err(Error::new(format!(
                    "data: samples were passed to the library call (data=(X, y) in Python), \
                     but the config's data.format is \"{}\", which reads them from a file; set \
                     data.format = \"arrays\" (with data.split) to train on the samples passed",
                    other.format()
                )));
            }
        }
        let classify = |set: SeqSet, s: &crate::config::IndexSplit| {
            let sp = data::split_by_index(set.len(), s.modulus, &s.test, &s.validation)?;
            if sp.train.is_empty() || sp.validation.is_empty() || sp.test.is_empty() {
                return Err(Error::new(format!(
                    "data: the split leaves {} train, {} validation and {} test samples; each \
                     needs at least one",
                    sp.train.len(),
                    sp.validation.len(),
                    sp.test.len()
                )));
            }
            Ok(Task::Classify {
                classes: set.classes(),
                train: set.subset(&sp.train),
                validation: set.subset(&sp.validation),
                test: set.subset(&sp.test),
            })
        };
        match &cfg.data {
            Data::Csv {
                path,
                steps,
                features,
                first_column,
                label_column,
                scale,
                split,
            } => {
                let t = data::read_csv(path)?;
                let lc = if *label_column < 0 {
                    t.cols as i64 + label_column
                } else {
                    *label_column
                };
                let lc = usize::try_from(lc).map_err(|_| {
                    Error::new(format!("data.label_column {label_column} is out of range"))
                })?;
                let set = SeqSet::from_table(&t, *steps, *features, *first_column, lc, *scale)
                    .map_err(|e| e.context(&path.display().to_string()))?;
                classify(set, split)
            }
            Data::Npy { x, y, scale, split } => {
                let (xs, xv) = data::read_npy_f32(x)?;
                let (ys, yv) = data::read_npy_i64(y)?;
                if xs.len() != 3 || ys.len() != 1 || xs[0] != ys[0] {
                    return Err(Error::new(format!(
                        "data: x must be [samples, steps, features] and y [samples], got {} and {}",
                        hlstm_ir::dims_text(&xs),
                        hlstm_ir::dims_text(&ys)
                    )));
                }
                let xv = xv.into_iter().map(|v| v * scale).collect();
                classify(SeqSet::new(xs[1], xs[2], xv, yv)?, split)
            }
            Data::Arrays { scale, split } => {
                let mut set = arrays.expect("checked above");
                if *scale != 1.0 {
                    set.x.iter_mut().for_each(|v| *v *= scale);
                }
                classify(set, split)
            }
            Data::Text {
                path,
                window,
                validation,
                test,
                max_chars,
            } => {
                let mut text = data::read_text(path)?;
                data::truncate_chars(&mut text, *max_chars);
                let vocab = Vocab::of(&text);
                let split = data::split_text(&vocab.encode(&text)?, *validation, *test)?;
                if split.train.len() < 2 * window + 2
                    || split.validation.len() < 2
                    || split.test.len() < 2
                {
                    return Err(Error::new(
                        "data: the text is too short for its window and split",
                    ));
                }
                Ok(Task::Lm {
                    vocab,
                    split,
                    window: *window,
                })
            }
        }
    }

    /// The training batches of one epoch, in order.
    pub fn batches(&self, rng: &mut Rng, batch: usize) -> Result<Vec<Batch>, Error> {
        match self {
            Task::Classify { train, .. } => {
                if train.len() < batch {
                    return Err(Error::new(format!(
                        "train.batch is {batch} but the training split has {} samples",
                        train.len()
                    )));
                }
                // A shuffled order; the last partial batch is dropped (the training graph has
                // a fixed batch size), a different one each epoch.
                let mut idx: Vec<usize> = (0..train.len()).collect();
                for i in (1..idx.len()).rev() {
                    idx.swap(i, rng.below(i + 1));
                }
                Ok(idx
                    .chunks_exact(batch)
                    .map(|c| {
                        let (data, labels) = train.batch(c);
                        Batch {
                            data,
                            labels,
                            carry: false,
                        }
                    })
                    .collect())
            }
            Task::Lm { split, window, .. } => {
                // `batch` parallel streams over consecutive slices of the training text, read
                // window by window with the state carried (truncated BPTT).
                let t = &split.train;
                let len = t.len() / batch;
                let windows = len.saturating_sub(1) / window;
                if windows == 0 {
                    return Err(Error::new(
                        "train.batch times data.window exceeds the training text",
                    ));
                }
                Ok((0..windows)
                    .map(|w| {
                        let mut x = Vec::with_capacity(window * batch);
                        let mut y = Vec::with_capacity(window * batch);
                        for s in 0..*window {
                            for b in 0..batch {
                                let at = b * len + w * window + s;
                                x.push(t[at]);
                                y.push(t[at + 1]);
                            }
                        }
                        Batch {
                            data: Tensor::from_i64(&[*window, batch], x).expect("sizes agree"),
                            labels: Tensor::from_i64(&[*window, batch], y).expect("sizes agree"),
                            carry: w > 0,
                        }
                    })
                    .collect())
            }
        }
    }

    /// Evaluates a split with the forward graph `fwd`, whose inputs are the data, the initial
    /// states, then `params` (in model order). `states` gives each state input's width.
    pub fn evaluate(
        &self,
        which: Split,
        fwd: &mut dyn Executable,
        params: &[Tensor],
        states: &[usize],
    ) -> Result<Eval, Error> {
        match self {
            Task::Classify {
                validation, test, ..
            } => {
                let set = if which == Split::Test {
                    test
                } else {
                    validation
                };
                let idx: Vec<usize> = (0..set.len()).collect();
                let (x, labels) = set.batch(&idx);
                let mut inputs = vec![x];
                inputs.extend(states.iter().map(|&w| zeros(&[set.len(), w])));
                inputs.extend(params.iter().cloned());
                let out = fwd.run(&inputs)?;
                let (loss, right, n) =
                    cross_entropy(&out[0], &labels.to_i64_vec().unwrap_or_default())?;
                Ok(Eval {
                    loss: loss / n as f64,
                    accuracy: right as f64 / n as f64,
                    bpc: None,
                })
            }
            Task::Lm { split, window, .. } => {
                let s = if which == Split::Test {
                    &split.test
                } else {
                    &split.validation
                };
                lm_eval(s, *window, fwd, params, states)
            }
        }
    }
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(hlstm_ir::DType::F32, dims)
}

/// Bits per character over the whole slice, batch 1, windows of `window` characters with the
/// state carried from one to the next: the model predicts characters 1.. of the slice from the
/// ones before them (it starts from a zero state at the slice's first character).
fn lm_eval(
    s: &[i64],
    window: usize,
    fwd: &mut dyn Executable,
    params: &[Tensor],
    states: &[usize],
) -> Result<Eval, Error> {
    let mut state: Vec<Tensor> = states.iter().map(|&w| zeros(&[1, w])).collect();
    let (mut loss, mut right, mut n) = (0.0, 0, 0);
    let mut at = 0;
    while at + 1 < s.len() {
        let t = window.min(s.len() - 1 - at);
        let mut inputs =
            vec![Tensor::from_i64(&[t, 1], s[at..at + t].to_vec()).expect("sizes agree")];
        inputs.extend(state.iter().cloned());
        inputs.extend(params.iter().cloned());
        let out = fwd.run(&inputs)?;
        let (l, r, k) = cross_entropy(&out[0], &s[at + 1..at + 1 + t])?;
        (loss, right, n) = (loss + l, right + r, n + k);
        // Outputs: logits, then hT/cT per layer in the same order as the state inputs.
        state = out[1..1 + states.len()].to_vec();
        at += t;
    }
    let nats = loss / n.max(1) as f64;
    Ok(Eval {
        loss: nats,
        accuracy: right as f64 / n.max(1) as f64,
        bpc: Some(nats / std::f64::consts::LN_2),
    })
}

/// Summed cross-entropy (nats, in f64), the number of argmax hits and the count, for logits
/// [..., C] against labels in row order.
pub fn cross_entropy(logits: &Tensor, labels: &[i64]) -> Result<(f64, usize, usize), Error> {
    let a = logits
        .as_f32()
        .ok_or_else(|| Error::new("logits are not f32"))?;
    let c = *a.shape().last().unwrap_or(&0);
    let flat: Vec<f32> = a.iter().copied().collect();
    if c == 0 || flat.len() != labels.len() * c {
        return Err(Error::new(format!(
            "{} logits for {} labels",
            flat.len(),
            labels.len()
        )));
    }
    let (mut loss, mut right) = (0.0, 0);
    for (row, &l) in flat.chunks_exact(c).zip(labels) {
        let l = usize::try_from(l)
            .ok()
            .filter(|&l| l < c)
            .ok_or_else(|| Error::new(format!("label {l} out of range")))?;
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[l] as f64;
        // The first maximum wins ties, as numpy's argmax.
        let best = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        right += usize::from(best == l);
    }
    Ok((loss, right, labels.len()))
}
