//! Text for character-level language models: the characters of a file, a vocabulary of the
//! distinct characters (sorted, so ids do not depend on the order they first appear), and the
//! split by fractions of characters from the end (test last, validation before it).

use super::read_bytes;
use crate::Error;
use std::path::Path;

/// A file's text (UTF-8; gzipped when the name ends in `.gz`).
pub fn read_text(path: &Path) -> Result<String, Error> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|_| Error::new(format!("{}: not UTF-8 text", path.display())))
}

/// The characters a model knows, id = position.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub chars: Vec<char>,
}

impl Vocab {
    pub fn of(text: &str) -> Vocab {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocab { chars }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Token ids of `text`; a character outside the vocabulary is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, Error> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map(|i| i as i64)
                    .map_err(|_| Error::new(format!("character {c:?} is not in the vocabulary")))
            })
            .collect()
    }
}

/// Token streams of the three splits.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSplit {
    pub train: Vec<i64>,
    pub validation: Vec<i64>,
    pub test: Vec<i64>,
}

/// The last `test` fraction of the tokens is the test slice, the `validation` fraction before
/// it validation, the rest train (sizes rounded down).
pub fn split_text(tokens: &[i64], validation: f64, test: f64) -> Result<TextSplit, Error> {
    if !(0.0..1.0).contains(&validation) || !(0.0..1.0).contains(&test) || validation + test >= 1.0
    {
        return Err(Error::new(format!(
            "text split: fractions {validation} and {test} must be in [0, 1) and sum below 1"
        )));
    }
    let n = tokens.len();
    let nt = (n as f64 * test) as usize;
    let nv = (n as f64 * validation) as usize;
    let (a, b) = (n - nt - nv, n - nt);
    Ok(TextSplit {
        train: tokens[..a].to_vec(),
        validation: tokens[a..b].to_vec(),
        test: tokens[b..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_and_split() {
        let v = Vocab::of("hello world");
        assert_eq!(v.chars, [' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']);
        assert_eq!(v.encode("hole").unwrap(), [3, 5, 4, 2]);
        assert!(v.encode("x").is_err());
        let t: Vec<i64> = (0..100).collect();
        let s = split_text(&t, 0.05, 0.1).unwrap();
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (85, 5, 10)
        );
        assert_eq!(s.test[0], 90);
        assert!(split_text(&t, 0.5, 0.5).is_err());
    }
}
