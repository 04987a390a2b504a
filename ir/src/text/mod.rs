//! The `.hir` text form of the graph IR: a printer and a parser that round-trip exactly.
//!
//! ```text
//! graph (%X: f32[T,1,3]) -> (Y = %y) {
//!   %W = const f32[3,2] [1.0, 0.0, 0.5, 2.0, -1.0, 0.25]
//!   %xw = matmul(%X, %W) "MatMul_0" : f32[T,1,2]
//!   %y = tanh(%xw) "Tanh_1" : f32[T,1,2]
//! }
//! ```
//!
//! `parse(&print(g))` gives a graph equal to `g` (the structural `PartialEq` of [`Graph`]).
//! Constants of more than [`INLINE_LIMIT`] elements are printed by content hash
//! (`sha256:...`); [`print_with_weights`] also returns their data in a [`WeightStore`], which
//! [`parse_with_weights`] reads back and which saves to a side file (`model.hir.weights`).
//! The grammar is documented in `docs/hir.md`.

mod lex;
mod ops;
mod parse;
mod print;
mod weights;

pub use weights::{WeightStore, WeightsError, side_file_path, tensor_hash};
pub(crate) use weights::{hex, unhex};

use crate::graph::Graph;
use std::fmt;

/// Constants with at most this many elements are printed inline; larger ones by hash.
pub const INLINE_LIMIT: usize = 16;

/// A parse error: where (1-based line and column, in characters) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.col, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Prints a graph. Constants larger than [`INLINE_LIMIT`] elements appear by hash only, so
/// text with such constants parses back only with the store of [`print_with_weights`].
pub fn print(g: &Graph) -> String {
    print::print_graph(g, None)
}

/// Prints a graph and collects the data of every constant printed by hash.
pub fn print_with_weights(g: &Graph) -> (String, WeightStore) {
    let mut store = WeightStore::new();
    let text = print::print_graph(g, Some(&mut store));
    (text, store)
}

/// Parses `.hir` text. A constant given by hash is an error here; use [`parse_with_weights`].
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    parse::parse_graph(text, None)
}

/// Parses `.hir` text, reading constants given by hash from `store`.
pub fn parse_with_weights(text: &str, store: &WeightStore) -> Result<Graph, ParseError> {
    parse::parse_graph(text, Some(store))
}

/// Can `s` be printed without quotes after `%` (a value reference)?
pub(crate) fn is_ref_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Can `s` be printed without quotes as a name (a graph output, a symbolic dimension)?
pub(crate) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string literal with escapes: `\"`, `\\`, `\n`, `\t`, `\r`, `\u{..}` for other controls.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An f32 that parses back bit for bit: `{:?}` when finite, else the bits as `0x7fc00000`.
pub(crate) fn fmt_f32(v: f32) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else {
        format!("0x{:08x}", v.to_bits())
    }
}
