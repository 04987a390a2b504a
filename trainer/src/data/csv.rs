//! Numeric CSV: comma-separated numbers, one row per line; a first line that is not numeric is
//! taken as a header and skipped. Errors name the file, line and column.

use super::read_bytes;
use crate::Error;
use std::path::Path;

/// A dense table of numbers, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
    /// Column names, when the file had a header.
    pub header: Option<Vec<String>>,
}

impl Table {
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Reads a CSV file (gzipped when it ends in `.gz`).
pub fn read_csv(path: &Path) -> Result<Table, Error> {
    let bytes = read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::new(format!("{}: not UTF-8 text", path.display())))?;
    parse_csv(&text).map_err(|e| e.context(&path.display().to_string()))
}

/// Parses CSV text.
pub fn parse_csv(text: &str) -> Result<Table, Error> {
    let mut data = Vec::new();
    let mut cols = None;
    let mut header = None;
    let mut rows = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f64>, usize> = fields
            .iter()
            .enumerate()
            .map(|(c, f)| f.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or(c))
            .collect();
        match parsed {
            Ok(vals) => {
                let n = *cols.get_or_insert(vals.len());
                if vals.len() != n {
                    return Err(Error::new(format!(
                        "line {}: {} columns, the first row has {n}",
                        i + 1,
                        vals.len()
                    )));
                }
                data.extend(vals);
                rows += 1;
            }
            Err(_) if rows == 0 && header.is_none() => {
                cols = Some(fields.len());
                header = Some(fields.iter().map(|s| s.to_string()).collect());
            }
            Err(c) => {
                return Err(Error::new(format!(
                    "line {}, column {}: '{}' is not a number",
                    i + 1,
                    c + 1,
                    fields[c]
                )));
            }
        }
    }
    if rows == 0 {
        return Err(Error::new("no rows of numbers"));
    }
    Ok(Table {
        rows,
        cols: cols.unwrap_or(0),
        data,
        header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_header() {
        let t = parse_csv("a,b\n1, 2\n3,4.5\n\n").unwrap();
        assert_eq!((t.rows, t.cols), (2, 2));
        assert_eq!(t.row(1), [3.0, 4.5]);
        assert_eq!(t.header.unwrap(), ["a", "b"]);
        let t = parse_csv("1,2,3\n").unwrap();
        assert_eq!((t.rows, t.cols, t.header), (1, 3, None));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_csv("1,2\n3\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_csv("1,2\n3,x\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 2") && e.contains("'x'"), "{e}");
        assert!(parse_csv("").is_err());
        assert!(parse_csv("1,nan\n").is_err());
    }
}
