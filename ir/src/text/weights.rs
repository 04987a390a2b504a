//! The weight store: constants printed by content hash, and their side file.
//!
//! Side file format (all integers little-endian):
//!
//! ```text
//! magic   8 bytes  "HIRWGT01"
//! count   u64
//! count entries:
//!   hash  32 bytes   sha256 of the rest of the entry (dtype .. data)
//!   dtype u8         0 f32, 1 i64, 2 i32, 3 bool
//!   rank  u32
//!   dims  rank x u64
//!   data  product(dims) elements: f32 as IEEE bits, i64, i32, bool as one byte 0 or 1
//! ```
//!
//! The hash printed in the text is the same sha256, so it names the dtype and shape too.

use crate::tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"HIRWGT01";

/// Content hashes of large constants, mapped to their tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightStore {
    map: BTreeMap<[u8; 32], Tensor>,
}

/// Loading a side file failed.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read the weight file: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad weight file at byte {offset}: {message}")]
    Format { offset: usize, message: String },
}

/// The side file beside a `.hir` file: `model.hir` -> `model.hir.weights`.
pub fn side_file_path(hir: &Path) -> PathBuf {
    let mut s = hir.as_os_str().to_owned();
    s.push(".weights");
    PathBuf::from(s)
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F32 => 0,
        DType::I64 => 1,
        DType::I32 => 2,
        DType::Bool => 3,
    }
}

/// Appends the entry body (dtype, rank, dims, data) of a tensor.
fn encode(t: &Tensor, out: &mut Vec<u8>) {
    out.push(dtype_code(t.dtype()));
    out.extend_from_slice(&(t.shape().len() as u32).to_le_bytes());
    for &d in t.shape() {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    match t {
        Tensor::F32(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_bits().to_le_bytes())),
        Tensor::I64(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Tensor::I32(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Tensor::Bool(a) => a.iter().for_each(|v| out.push(*v as u8)),
    }
}

/// The content hash of a tensor (dtype, shape and data), as printed after `sha256:`.
pub fn tensor_hash(t: &Tensor) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(t.len() * t.dtype().size_bytes() + 16);
    encode(t, &mut bytes);
    Sha256::digest(&bytes).into()
}

pub(crate) fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(h)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> WeightsError {
        WeightsError::Format {
            offset: self.pos,
            message: message.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WeightsError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err(format!("truncated: {what} needs {n} bytes")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, WeightsError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WeightsError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// Reads one entry body; returns the tensor.
fn decode(r: &mut Reader) -> Result<Tensor, WeightsError> {
    let dtype = match r.take(1, "a dtype")?[0] {
        0 => DType::F32,
        1 => DType::I64,
        2 => DType::I32,
        3 => DType::Bool,
        c => return Err(r.err(format!("unknown dtype code {c}"))),
    };
    let rank = r.u32("a rank")? as usize;
    // Each dim takes 8 bytes: a rank beyond the file's length is caught before allocating.
    if rank > (r.buf.len() - r.pos) / 8 {
        return Err(r.err(format!(
            "truncated: rank {rank} needs more bytes than are left"
        )));
    }
    let mut dims = Vec::with_capacity(rank);
    let mut count: usize = 1;
    for _ in 0..rank {
        let d = usize::try_from(r.u64("a dimension")?).map_err(|_| r.err("dimension too large"))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| r.err("element count overflows"))?;
        dims.push(d);
    }
    let nbytes = count
        .checked_mul(dtype.size_bytes())
        .ok_or_else(|| r.err("data size overflows"))?;
    let data = r.take(nbytes, "the tensor data")?;
    let shape = IxDyn(&dims);
    let t = match dtype {
        DType::F32 => ArrayD::from_shape_vec(
            shape,
            chunks::<4>(data)
                .map(|b| f32::from_bits(u32::from_le_bytes(b)))
                .collect(),
        )
        .map(Tensor::F32),
        DType::I64 => {
            ArrayD::from_shape_vec(shape, chunks::<8>(data).map(i64::from_le_bytes).collect())
                .map(Tensor::I64)
        }
        DType::I32 => {
            ArrayD::from_shape_vec(shape, chunks::<4>(data).map(i32::from_le_bytes).collect())
                .map(Tensor::I32)
        }
        DType::Bool => {
            if data.iter().any(|&b| b > 1) {
                return Err(r.err("a bool element is neither 0 nor 1"));
            }
            ArrayD::from_shape_vec(shape, data.iter().map(|&b| b == 1).collect()).map(Tensor::Bool)
        }
    };
    t.map_err(|e| r.err(format!("bad shape: {e}")))
}

impl WeightStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Adds a tensor; returns its hash.
    pub fn insert(&mut self, t: Tensor) -> [u8; 32] {
        let h = tensor_hash(&t);
        self.map.insert(h, t);
        h
    }
    pub fn get(&self, hash: &[u8; 32]) -> Option<&Tensor> {
        self.map.get(hash)
    }
    /// The tensor of a hash given as 64 hex digits.
    pub fn get_hex(&self, hash: &str) -> Option<&Tensor> {
        self.map.get(&unhex(hash)?)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &Tensor)> {
        self.map.iter()
    }

    /// The side file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (h, t) in &self.map {
            out.extend_from_slice(h);
            encode(t, &mut out);
        }
        out
    }

    /// Reads a side file's bytes. Checks every bound and every entry's hash; never panics.
    pub fn from_bytes(buf: &[u8]) -> Result<WeightStore, WeightsError> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(8, "the magic")? != MAGIC {
            return Err(WeightsError::Format {
                offset: 0,
                message: "not a weight file (bad magic)".into(),
            });
        }
        let count = r.u64("the entry count")?;
        let mut store = WeightStore::new();
        for i in 0..count {
            let mut h = [0u8; 32];
            h.copy_from_slice(r.take(32, "a hash")?);
            let start = r.pos;
            let t = decode(&mut r).map_err(|e| match e {
                WeightsError::Format { offset, message } => WeightsError::Format {
                    offset,
                    message: format!("entry {i}: {message}"),
                },
                e => e,
            })?;
            let got: [u8; 32] = Sha256::digest(&buf[start..r.pos]).into();
            if got != h {
                return Err(WeightsError::Format {
                    offset: start,
                    message: format!("entry {i}: content does not match its hash"),
                });
            }
            store.map.insert(h, t);
        }
        if r.pos != buf.len() {
            return Err(r.err(format!("{} bytes after the last entry", buf.len() - r.pos)));
        }
        Ok(store)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    pub fn load(path: &Path) -> Result<WeightStore, WeightsError> {
        WeightStore::from_bytes(&crate::limits::read_file(path, |_| Ok(()))?)
    }
}
