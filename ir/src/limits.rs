//! Resource limits: one policy for everything hlstmc reads from outside (models, external
//! data, `.npy`/`.pb`/`.npz` inputs, training data and configs, text IR, benchmark counts).
//!
//! A file from outside must not be able to make hlstmc allocate without bound: a 13-byte
//! `.npy` header declaring 4 GiB, a gzip bomb, `/dev/zero` given as a model. Every reader
//! checks a size here *before* it allocates, and the check's error names the limit and how to
//! raise it. The limits are process-wide (like protobuf's recursion limit or ONNX Runtime's
//! session options, but set once): the command line's `--limit KEY=VALUE`, the Python
//! package's `hlstmc.set_limits`, or [`set`] in a Rust program.
//!
//! Limits that the code itself imposes (a kernel's 32-bit indexing, the generated code's
//! sizes) are not policy and stay where they are checked.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bounds on what is read from outside. `Limits::default()` is the policy a command
/// starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Elements of one tensor (weights, inputs, activations, training arrays): 2^28 by
    /// default, 1 GiB of f32.
    pub elements: u64,
    /// Bytes of one file as read (after decompression for `.gz`): 1 GiB by default. ONNX's
    /// own protobuf limit is 2 GiB; larger weights belong in external data, which is bounded
    /// per tensor by `elements`.
    pub bytes: u64,
    /// Depth of nested bodies (Scan/Loop subgraphs, `.hir` regions, kernel blocks): 64.
    pub nesting: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The deepest nesting `--limit nesting` may allow.
pub const MAX_NESTING: u64 = 1024;

/// The names `--limit` accepts, with what each bounds.
pub const KEYS: [(&str, &str); 3] = [
    ("elements", "elements of one tensor"),
    ("bytes", "bytes of one file as read"),
    ("nesting", "depth of nested graph bodies"),
];

impl Limits {
    pub const DEFAULT: Limits = Limits {
        elements: 1 << 28,
        bytes: 1 << 30,
        nesting: 64,
    };

    /// Sets `key` (one of [`KEYS`]) from `value`: a number, `2^N`, or a byte size with a
    /// binary suffix (`512M`, `4G`).
    pub fn set_key(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = parse_amount(value).ok_or_else(|| {
            format!("--limit {key}={value}: '{value}' is not a count (e.g. 1000000, 2^30, 4G)")
        })?;
        if v == 0 {
            return Err(format!("--limit {key}=0: a limit must be at least 1"));
        }
        match key {
            "elements" => self.elements = v,
            "bytes" => self.bytes = v,
            // Parsers recurse on bodies: deeper than this would overflow the main thread's
            // stack, which is an abort, not an error.
            "nesting" if v > MAX_NESTING => {
                return Err(format!(
                    "--limit nesting={value}: at most {MAX_NESTING} (parsers recurse on bodies)"
                ));
            }
            "nesting" => self.nesting = v,
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "--limit {key}={value}: unknown limit '{key}' (known: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Parses `KEY=VALUE` items (the command line's repeated `--limit`) over the defaults.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Limits, String> {
        let mut limits = Limits::DEFAULT;
        for item in items {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("--limit {item}: expected KEY=VALUE, e.g. elements=2^30"))?;
            limits.set_key(key.trim(), value.trim())?;
        }
        Ok(limits)
    }
}

fn parse_amount(s: &str) -> Option<u64> {
    if let Some((base, exp)) = s.split_once('^') {
        let base: u64 = base.trim().parse().ok()?;
        let exp: u32 = exp.trim().parse().ok()?;
        return base.checked_pow(exp);
    }
    let (digits, scale) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(scale)
}

static ELEMENTS: AtomicU64 = AtomicU64::new(Limits::DEFAULT.elements);
static BYTES: AtomicU64 = AtomicU64::new(Limits::DEFAULT.bytes);
static NESTING: AtomicU64 = AtomicU64::new(Limits::DEFAULT.nesting);

/// The limits in force.
pub fn current() -> Limits {
    Limits {
        elements: ELEMENTS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        nesting: NESTING.load(Ordering::Relaxed),
    }
}

/// Puts `limits` in force for the whole process.
pub fn set(limits: Limits) {
    ELEMENTS.store(limits.elements, Ordering::Relaxed);
    BYTES.store(limits.bytes, Ordering::Relaxed);
    NESTING.store(limits.nesting, Ordering::Relaxed);
}

/// A size over a limit: says what, how much, the limit, and the flag that raises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub what: String,
    pub key: &'static str,
    /// `None` where the amount does not fit a u64 (a product of dims that overflows).
    pub amount: Option<u64>,
    pub limit: u64,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let unit = if self.key == "bytes" { " bytes" } else { "" };
        let amount = match (self.amount, self.key) {
            (Some(n), "nesting") => format!("is nested {n} deep"),
            (Some(n), "elements") => format!("has {n} elements"),
            (Some(n), _) => format!("has {n}{unit}"),
            // A stream read past the limit: how much more is unknown.
            (None, "bytes") => "has more bytes".to_string(),
            (None, _) => "is larger than any count".to_string(),
        };
        write!(
            f,
            "{} {amount}, over the limit of {}{unit} (raise it with --limit {}=N)",
            self.what, self.limit, self.key
        )
    }
}

impl std::error::Error for Exceeded {}

/// The element count of `dims`, or why it is over the limit (a product that overflows is).
pub fn check_dims(what: impl FnOnce() -> String, dims: &[usize]) -> Result<usize, Exceeded> {
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::try_from(d).ok()?));
    check_elements(what, n)
}

/// `count` elements (`None`: more than a u64 holds) against the `elements` limit.
pub fn check_elements(
    what: impl FnOnce() -> String,
    count: Option<u64>,
) -> Result<usize, Exceeded> {
    let limit = current().elements;
    match count.and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n as u64 <= limit => Ok(n),
        _ => Err(Exceeded {
            what: what(),
            key: "elements",
            amount: count,
            limit,
        }),
    }
}

/// `bytes` against the `bytes` limit.
pub fn check_bytes(what: impl FnOnce() -> String, bytes: u64) -> Result<(), Exceeded> {
    let limit = current().bytes;
    if bytes <= limit {
        Ok(())
    } else {
        Err(Exceeded {
            what: what(),
            key: "bytes",
            amount: Some(bytes),
            limit,
        })
    }
}

/// A body nested `depth` deep against the `nesting` limit.
pub fn check_nesting(what: impl FnOnce() -> String, depth: usize) -> Result<(), Exceeded> {
    let limit = current().nesting;
    if depth as u64 <= limit {
        Ok(())
    } else {
        Err(Exceeded {
            what: what(),
            key: "nesting",
            amount: Some(depth as u64),
            limit,
        })
    }
}

/// Reads all of `reader` (named `what` in errors), failing as soon as it passes the `bytes`
/// limit, so a stream without end (`/dev/zero`, a gzip bomb) costs at most the limit.
/// `head` sees the first bytes read (up to 64 KiB, or all if fewer) and may reject them
/// before the rest is read: a model reader refuses bytes that cannot start its format.
/// Errors: `FileTooLarge` over the limit, `InvalidData` from `head`, else the reader's.
pub fn read_bounded(
    reader: impl Read,
    what: &str,
    head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> std::io::Result<Vec<u8>> {
    read_bounded_into(Vec::new(), reader, what, head)
}

/// [`read_bounded`] into `out`, whose capacity may be the expected size: a vector grown by
/// doubling ends at up to twice the size read (64 MiB for a model of 33 MB).
fn read_bounded_into(
    mut out: Vec<u8>,
    mut reader: impl Read,
    what: &str,
    head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> std::io::Result<Vec<u8>> {
    const HEAD: usize = 64 << 10;
    let limit = current().bytes;
    (&mut reader)
        .take((HEAD as u64).min(limit.saturating_add(1)))
        .read_to_end(&mut out)?;
    head(&out).map_err(|msg| std::io::Error::new(std::io::ErrorKind::InvalidData, msg))?;
    // One byte past the limit tells a file of exactly the limit from a longer one.
    let rest = limit.saturating_add(1).saturating_sub(out.len() as u64);
    reader.take(rest).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            Exceeded {
                what: what.to_string(),
                key: "bytes",
                amount: None,
                limit,
            }
            .to_string(),
        ));
    }
    Ok(out)
}

/// Reads the file at `path` within the `bytes` limit: a regular file's size is checked before
/// anything is read; a device or pipe is read up to the limit. `head` as in [`read_bounded`].
pub fn read_file(
    path: &Path,
    head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let what = path.display().to_string();
    let mut out = Vec::new();
    if meta.is_file() {
        check_bytes(|| what.clone(), meta.len())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::FileTooLarge, e.to_string()))?;
        out.reserve_exact(usize::try_from(meta.len()).unwrap_or(0));
    }
    read_bounded_into(out, file, &what, head)
}

/// A UTF-8 text file (a config, `.hir` text) read as [`read_file`] reads.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_file(path, |_| Ok(()))?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_with_powers_and_suffixes() {
        assert_eq!(parse_amount("1000"), Some(1000));
        assert_eq!(parse_amount("2^30"), Some(1 << 30));
        assert_eq!(parse_amount("4G"), Some(4 << 30));
        assert_eq!(parse_amount("512M"), Some(512 << 20));
        assert_eq!(parse_amount("2^64"), None);
        assert_eq!(parse_amount("x"), None);
        assert_eq!(parse_amount(""), None);
    }

    #[test]
    fn parse_names_the_bad_item() {
        let l = Limits::parse(["elements=2^30", "nesting=8"]).unwrap();
        assert_eq!(l.elements, 1 << 30);
        assert_eq!(l.nesting, 8);
        assert_eq!(l.bytes, Limits::DEFAULT.bytes);
        let e = Limits::parse(["memory=1G"]).unwrap_err();
        assert!(
            e.contains("unknown limit 'memory'") && e.contains("elements"),
            "{e}"
        );
        assert!(Limits::parse(["bytes"]).unwrap_err().contains("KEY=VALUE"));
        assert!(
            Limits::parse(["bytes=0"])
                .unwrap_err()
                .contains("at least 1")
        );
    }

    #[test]
    fn an_endless_stream_is_refused_by_its_head() {
        // The default policy: 1 GiB. A reader of endless zeros must fail, not grow without
        // bound; a head check can refuse it after 64 KiB.
        let zeros = std::io::repeat(0);
        let err = read_bounded(zeros, "zeros", |h| {
            if h.first() == Some(&0) {
                Err("starts with a zero byte".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("zero byte"), "{err}");
    }

    #[test]
    fn overflowing_dims_are_over_the_limit() {
        let e = check_dims(|| "x".into(), &[1 << 40, 1 << 40]).unwrap_err();
        assert!(e.to_string().contains("larger than any count"), "{e}");
        let e = check_dims(|| "weight 'W'".into(), &[1 << 20, 1 << 10]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "weight 'W' has 1073741824 elements, over the limit of 268435456 (raise it with --limit elements=N)"
        );
        assert_eq!(check_dims(|| "x".into(), &[3, 4]), Ok(12));
    }
}
