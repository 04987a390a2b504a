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

    /// Token ids of `text`; a character outside the vocabulary is an error naming it and its
    /// place (character offset from 0, line and column from 1).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, Error> {
        self.encode_range(text, 0..usize::MAX)
    }

    /// Token ids of the characters of `text` at the character offsets `range` (the rest is not
    /// looked up); an error names a character outside the vocabulary and its place in `text`.
    pub fn encode_range(
        &self,
        text: &str,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<i64>, Error> {
        let mut ids = Vec::with_capacity(range.end.saturating_sub(range.start).min(text.len()));
        let (mut line, mut col) = (1, 1);
        for (k, c) in text.chars().enumerate().take_while(|&(k, _)| k < range.end) {
            if k >= range.start {
                match self.chars.binary_search(&c) {
                    Ok(i) => ids.push(i as i64),
                    Err(_) => {
                        return Err(Error::new(format!(
                            "character {c:?} (U+{:04X}) at character {k} (line {line}, column \
                             {col}) is not in the vocabulary",
                            c as u32
                        )));
                    }
                }
            }
            if c == '\n' {
                (line, col) = (line + 1, 1);
            } else {
                col += 1;
            }
        }
        Ok(ids)
    }

    /// The vocabulary of characters in id order (`chars` as a string); [`Vocab::from_chars`]
    /// reads it back.
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// A vocabulary of characters in id order: they must be sorted and distinct, as
    /// [`Vocab::of`] makes them.
    pub fn from_chars(chars: &str) -> Result<Vocab, Error> {
        let chars: Vec<char> = chars.chars().collect();
        if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::new(
                "a vocabulary is a non-empty string of sorted, distinct characters",
            ));
        }
        Ok(Vocab { chars })
    }
}

/// Keeps only the first `max` characters of `text` (`data.max_chars`).
pub fn truncate_chars(text: &mut String, max: Option<usize>) {
    if let Some(n) = max
        && let Some((i, _)) = text.char_indices().nth(n)
    {
        text.truncate(i);
    }
}

/// Where [`split_text`] cuts `n` tokens: validation is `a..b`, test `b..n`, train `..a`.
pub fn split_bounds(n: usize, validation: f64, test: f64) -> Result<(usize, usize), Error> {
    if !(0.0..1.0).contains(&validation) || !(0.0..1.0).contains(&test) || validation + test >= 1.0
    {
        return Err(Error::new(format!(
            "text split: fractions {validation} and {test} must be in [0, 1) and sum below 1"
        )));
    }
    let nt = (n as f64 * test) as usize;
    let nv = (n as f64 * validation) as usize;
    Ok((n - nt - nv, n - nt))
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
    let (a, b) = split_bounds(tokens.len(), validation, test)?;
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
        let v2 = Vocab::of("hello\nworld");
        let e = v2.encode("he\nlxo").unwrap_err().to_string();
        assert!(
            e.contains("'x' (U+0078) at character 4 (line 2, column 2)"),
            "{e}"
        );
        assert_eq!(v2.encode_range("he\nlxo", 1..4).unwrap(), [2, 0, 4]);
        assert_eq!(Vocab::from_chars(&v.as_string()).unwrap(), v);
        assert!(Vocab::from_chars("ba").is_err() && Vocab::from_chars("").is_err());
        let mut t = String::from("héllo");
        truncate_chars(&mut t, Some(2));
        assert_eq!(t, "hé");
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
