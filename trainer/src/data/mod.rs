//! Data sets: generic loaders (CSV, .npy, text; gzip by extension) and the two shapes of data
//! the trainer trains on: labelled sequences (a classifier) and a token stream (a language
//! model). Nothing here knows a particular file: the config says which columns, steps and
//! scale to use, and how to split.

mod csv;
mod npy;
mod text;

pub use csv::{Table, parse_csv, read_csv};
pub use npy::{read_npy_f32, read_npy_i64};
pub use text::{TextSplit, Vocab, read_text, split_bounds, split_text, truncate_chars};

use crate::Error;
use hlstm_ir::Tensor;
use std::path::Path;

/// A file's bytes, gunzipped when the name ends in `.gz`; both the file and what it
/// decompresses to are bounded by the `bytes` limit ([`hlstm_ir::limits`]), so a gzip bomb
/// stops at the limit.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    let raw = hlstm_ir::limits::read_file(path, |_| Ok(()))
        .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let what = format!("{} decompressed", path.display());
        return hlstm_ir::limits::read_bounded(
            flate2::read::GzDecoder::new(&raw[..]),
            &what,
            |_| Ok(()),
        )
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData if e.to_string().contains("--limit") => {
                Error::new(e.to_string())
            }
            _ => Error::new(format!("{}: not a valid gzip file: {e}", path.display())),
        });
    }
    Ok(raw)
}

/// Labelled sequences: sample k's step t is `x[(k * steps + t) * features ..][..features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqSet {
    pub steps: usize,
    pub features: usize,
    pub x: Vec<f32>,
    pub y: Vec<i64>,
}

impl SeqSet {
    /// Checks the sizes agree (`x` holds `samples * steps * features` values, `y` one label a
    /// sample) and the labels are non-negative; never panics.
    pub fn new(steps: usize, features: usize, x: Vec<f32>, y: Vec<i64>) -> Result<SeqSet, Error> {
        if steps == 0 || features == 0 {
            return Err(Error::new(format!(
                "sequences need at least one step and one feature, not {steps} steps of \
                 {features} features"
            )));
        }
        let want = y
            .len()
            .checked_mul(steps)
            .and_then(|n| n.checked_mul(features));
        if want != Some(x.len()) {
            return Err(Error::new(format!(
                "{} values do not make {} samples of {steps} steps of {features} features \
                 ({} values)",
                x.len(),
                y.len(),
                want.map_or("too many".into(), |n| n.to_string())
            )));
        }
        if let Some((k, l)) = y.iter().enumerate().find(|&(_, &l)| l < 0) {
            return Err(Error::new(format!(
                "label {l} of sample {k} is negative; labels are class indices 0, 1, ..."
            )));
        }
        Ok(SeqSet {
            steps,
            features,
            x,
            y,
        })
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// One more than the largest label.
    pub fn classes(&self) -> usize {
        self.y.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> SeqSet {
        let w = self.steps * self.features;
        let x = idx
            .iter()
            .flat_map(|&k| &self.x[k * w..(k + 1) * w])
            .copied()
            .collect();
        let y = idx.iter().map(|&k| self.y[k]).collect();
        SeqSet { x, y, ..*self }
    }

    /// The samples at `idx` as time-major `X` [T, n, F] and `labels` [n].
    pub fn batch(&self, idx: &[usize]) -> (Tensor, Tensor) {
        let (t, f, n) = (self.steps, self.features, idx.len());
        let mut x = vec![0.0; t * n * f];
        for (j, &k) in idx.iter().enumerate() {
            for s in 0..t {
                let src = &self.x[(k * t + s) * f..][..f];
                x[(s * n + j) * f..][..f].copy_from_slice(src);
            }
        }
        let labels = idx.iter().map(|&k| self.y[k]).collect();
        (
            Tensor::from_f32(&[t, n, f], x).expect("sizes agree"),
            Tensor::from_i64(&[n], labels).expect("sizes agree"),
        )
    }

    /// Sequences from a table's rows: `steps * features` value columns starting at
    /// `first_column` (each multiplied by `scale`), and the label in `label_column`.
    pub fn from_table(
        t: &Table,
        steps: usize,
        features: usize,
        first_column: usize,
        label_column: usize,
        scale: f32,
    ) -> Result<SeqSet, Error> {
        let w = steps * features;
        if first_column + w > t.cols || label_column >= t.cols {
            return Err(Error::new(format!(
                "the table has {} columns: {steps} steps x {features} features from column \
                 {first_column} and the label in column {label_column} do not fit",
                t.cols
            )));
        }
        let mut x = Vec::with_capacity(t.rows * w);
        let mut y = Vec::with_capacity(t.rows);
        for r in 0..t.rows {
            let row = t.row(r);
            x.extend(
                row[first_column..first_column + w]
                    .iter()
                    .map(|&v| v as f32 * scale),
            );
            let l = row[label_column];
            if l.fract() != 0.0 || l < 0.0 {
                return Err(Error::new(format!(
                    "row {}: label {l} is not a non-negative integer",
                    r + 1
                )));
            }
            y.push(l as i64);
        }
        SeqSet::new(steps, features, x, y)
    }
}

/// Train, validation and test indices.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// Splits 0..n by index: i % modulus in `test` -> test, in `validation` -> validation, else
/// train (the digits split is modulus 5, test [4], validation [3]).
pub fn split_by_index(
    n: usize,
    modulus: usize,
    test: &[usize],
    validation: &[usize],
) -> Result<Split, Error> {
    if modulus == 0 || test.iter().chain(validation).any(|&r| r >= modulus) {
        return Err(Error::new(format!(
            "split: residues must be below the modulus {modulus}"
        )));
    }
    if test.iter().any(|r| validation.contains(r)) {
        return Err(Error::new("split: a residue is both test and validation"));
    }
    let mut s = Split::default();
    for i in 0..n {
        let r = i % modulus;
        if test.contains(&r) {
            s.test.push(i);
        } else if validation.contains(&r) {
            s.validation.push(i);
        } else {
            s.train.push(i);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_time_major() {
        // Two samples of 2 steps x 3 features: sample k step s feature f = 100k + 10s + f.
        let x: Vec<f32> = (0..2)
            .flat_map(|k| {
                (0..2).flat_map(move |s| (0..3).map(move |f| (100 * k + 10 * s + f) as f32))
            })
            .collect();
        let set = SeqSet::new(2, 3, x, vec![1, 0]).unwrap();
        let (bx, by) = set.batch(&[1, 0]);
        assert_eq!(bx.shape(), &[2, 2, 3]);
        let a = bx.as_f32().unwrap();
        assert_eq!(a[[1, 0, 2]], 112.0); // step 1, first row of the batch = sample 1, feature 2
        assert_eq!(a[[0, 1, 1]], 1.0);
        assert_eq!(by.to_i64_vec().unwrap(), [0, 1]);
        assert!(SeqSet::new(2, 3, vec![0.0; 5], vec![0]).is_err());
    }

    #[test]
    fn seq_set_sizes_are_checked_without_panics() {
        let msg = |r: Result<SeqSet, Error>| r.unwrap_err().to_string();
        assert!(msg(SeqSet::new(0, 3, vec![], vec![])).contains("at least one step"));
        assert!(msg(SeqSet::new(2, 0, vec![], vec![])).contains("at least one step"));
        let m = msg(SeqSet::new(2, 3, vec![0.0; 7], vec![0]));
        assert!(
            m.contains("7 values do not make 1 samples") && m.contains("(6 values)"),
            "{m}"
        );
        let m = msg(SeqSet::new(usize::MAX, 2, vec![0.0; 4], vec![0, 1]));
        assert!(m.contains("too many"), "{m}");
        let m = msg(SeqSet::new(1, 1, vec![0.0; 3], vec![0, -2, 1]));
        assert!(m.contains("label -2 of sample 1 is negative"), "{m}");
        assert_eq!(SeqSet::new(1, 1, vec![], vec![]).unwrap().len(), 0);
    }

    #[test]
    fn split_by_residue() {
        let s = split_by_index(12, 5, &[4], &[3]).unwrap();
        assert_eq!(s.test, [4, 9]);
        assert_eq!(s.validation, [3, 8]);
        assert_eq!(s.train.len(), 8);
        assert!(split_by_index(10, 5, &[5], &[]).is_err());
        assert!(split_by_index(10, 5, &[3], &[3]).is_err());
    }
}
