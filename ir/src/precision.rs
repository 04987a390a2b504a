//! Float types hlstmc reads and writes but does not compute in. float16, bfloat16 and float64
//! weights and inputs become f32 at import and at a run's inputs, and outputs go back to their
//! declared type at a run's end (docs/precision.md). Every IR value stays f32; a graph records,
//! per input, output and weight, the type it was stored in ([`StoredTypes`]).

use crate::tensor::Tensor;
use half::{bf16, f16};
use std::collections::BTreeMap;

/// The element type a float tensor has outside the computation: in the ONNX file, in input and
/// output files, in Python arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoredType {
    #[default]
    F32,
    F16,
    BF16,
    F64,
}

impl StoredType {
    pub const ALL: [StoredType; 4] = [
        StoredType::F32,
        StoredType::F16,
        StoredType::BF16,
        StoredType::F64,
    ];

    /// The name types print with (`f16[8,1,32]`), in the style of the IR's `f32`.
    pub fn name(self) -> &'static str {
        match self {
            StoredType::F32 => "f32",
            StoredType::F16 => "f16",
            StoredType::BF16 => "bf16",
            StoredType::F64 => "f64",
        }
    }

    pub fn from_name(s: &str) -> Option<StoredType> {
        StoredType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The ONNX TensorProto.DataType code.
    pub fn onnx_code(self) -> i32 {
        match self {
            StoredType::F32 => 1,
            StoredType::F16 => 10,
            StoredType::F64 => 11,
            StoredType::BF16 => 16,
        }
    }

    pub fn from_onnx(code: i32) -> Option<StoredType> {
        StoredType::ALL.into_iter().find(|t| t.onnx_code() == code)
    }

    pub fn size_bytes(self) -> usize {
        match self {
            StoredType::F16 | StoredType::BF16 => 2,
            StoredType::F32 => 4,
            StoredType::F64 => 8,
        }
    }

    /// The spacing of values just above 1 in the precision results carry: 2^-10 for f16, 2^-7
    /// for bf16, f32's for f32 and f64 (f64 is computed in f32).
    pub fn epsilon(self) -> f64 {
        match self {
            StoredType::F16 => f64::from(f16::EPSILON),
            StoredType::BF16 => f64::from(bf16::EPSILON),
            StoredType::F32 | StoredType::F64 => f64::from(f32::EPSILON),
        }
    }

    /// Of two types, the one whose results are the less precise (it sets tolerances).
    pub fn narrowest(self, other: StoredType) -> StoredType {
        if other.epsilon() > self.epsilon() {
            other
        } else {
            self
        }
    }

    /// The default (rtol, atol) with which outputs of this precision are compared with a
    /// reference computed by another runtime: f32's (1e-3, 1e-4) for f32 and f64; for f16 and
    /// bf16 a few units of their epsilon, since the reference may round every intermediate
    /// result while hlstmc rounds once, at the output (docs/precision.md has the measurements).
    pub fn tolerances(self) -> (f64, f64) {
        match self {
            StoredType::F32 | StoredType::F64 => (1e-3, 1e-4),
            StoredType::F16 => (4e-3, 1e-3),
            StoredType::BF16 => (3e-2, 8e-3),
        }
    }

    /// The nearest value of this type to `v` (ties to even, as numpy and ONNX Runtime round);
    /// f32 and f64 hold every f32.
    pub fn round_f32(self, v: f32) -> f32 {
        match self {
            StoredType::F16 => f16::from_f32(v).to_f32(),
            StoredType::BF16 => bf16::from_f32(v).to_f32(),
            StoredType::F32 | StoredType::F64 => v,
        }
    }

    /// An f32 tensor with every element rounded to this type; other tensors are returned as
    /// they are.
    pub fn round(self, t: Tensor) -> Tensor {
        match (self, t) {
            (StoredType::F16 | StoredType::BF16, Tensor::F32(a)) => {
                Tensor::F32(a.mapv(|v| self.round_f32(v)))
            }
            (_, t) => t,
        }
    }

    /// A 16-bit pattern of this type (f16 or bf16), as ONNX stores them in `int32_data` and
    /// numpy as uint16, as f32. Exact.
    pub fn from_bits(self, bits: u16) -> f32 {
        match self {
            StoredType::BF16 => bf16::from_bits(bits).to_f32(),
            _ => f16::from_bits(bits).to_f32(),
        }
    }

    /// The 16-bit pattern of the nearest f16 or bf16 value to `v`.
    pub fn to_bits(self, v: f32) -> u16 {
        match self {
            StoredType::BF16 => bf16::from_f32(v).to_bits(),
            _ => f16::from_f32(v).to_bits(),
        }
    }

    /// Little-endian values of this type as f32: exact for f16 and bf16, rounded to nearest
    /// for f64. `bytes.len()` must be a multiple of [`StoredType::size_bytes`].
    pub fn decode_le(self, bytes: &[u8]) -> Vec<f32> {
        let n = self.size_bytes();
        bytes
            .chunks_exact(n)
            .map(|c| match self {
                StoredType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                StoredType::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
                _ => self.from_bits(u16::from_le_bytes([c[0], c[1]])),
            })
            .collect()
    }

    /// f32 values as little-endian values of this type (rounded to nearest for f16 and bf16).
    pub fn encode_le(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size_bytes());
        for &v in values {
            match self {
                StoredType::F32 => out.extend(v.to_le_bytes()),
                StoredType::F64 => out.extend(f64::from(v).to_le_bytes()),
                _ => out.extend(self.to_bits(v).to_le_bytes()),
            }
        }
        out
    }
}

impl std::fmt::Display for StoredType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The stored type of each graph input, graph output and weight (constant, by name) that is not
/// f32, recorded at import. Absent names are f32, so an f32 model records nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredTypes {
    pub inputs: BTreeMap<String, StoredType>,
    pub outputs: BTreeMap<String, StoredType>,
    pub weights: BTreeMap<String, StoredType>,
}

fn get(map: &BTreeMap<String, StoredType>, name: &str) -> StoredType {
    map.get(name).copied().unwrap_or_default()
}

fn set(map: &mut BTreeMap<String, StoredType>, name: &str, t: StoredType) {
    if t == StoredType::F32 {
        map.remove(name);
    } else {
        map.insert(name.to_string(), t);
    }
}

impl StoredTypes {
    pub fn input(&self, name: &str) -> StoredType {
        get(&self.inputs, name)
    }
    pub fn output(&self, name: &str) -> StoredType {
        get(&self.outputs, name)
    }
    pub fn weight(&self, name: &str) -> StoredType {
        get(&self.weights, name)
    }
    pub fn set_input(&mut self, name: &str, t: StoredType) {
        set(&mut self.inputs, name, t)
    }
    pub fn set_output(&mut self, name: &str, t: StoredType) {
        set(&mut self.outputs, name, t)
    }
    pub fn set_weight(&mut self, name: &str, t: StoredType) {
        set(&mut self.weights, name, t)
    }
    /// Whether every input, output and weight is f32.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty() && self.weights.is_empty()
    }
    /// The least precise type among the graph's inputs and outputs: what the results of a
    /// run can be held to (an f16 input limits every output computed from it).
    pub fn narrowest_io(&self) -> StoredType {
        self.inputs
            .values()
            .chain(self.outputs.values())
            .fold(StoredType::F32, |a, &b| a.narrowest(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-11 lies halfway between two f16 values: ties go to the even one (1.0).
        let half_ulp = 1.0 + 2f32.powi(-11);
        assert_eq!(StoredType::F16.round_f32(half_ulp), 1.0);
        assert_eq!(
            StoredType::F16.round_f32(1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2f32.powi(-9)
        );
        assert_eq!(StoredType::BF16.round_f32(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(StoredType::F16.round_f32(70000.0), f32::INFINITY);
        assert!(StoredType::F16.round_f32(f32::NAN).is_nan());
        assert_eq!(StoredType::F64.round_f32(0.1), 0.1);
    }

    #[test]
    fn bytes_round_trip() {
        let v = [1.5f32, -0.25, 3.0e-5, 1024.0];
        for t in StoredType::ALL {
            let back = t.decode_le(&t.encode_le(&v));
            let want: Vec<f32> = v.iter().map(|&x| t.round_f32(x)).collect();
            assert_eq!(back, want, "{t}");
        }
        assert_eq!(StoredType::F16.from_bits(0x3c00), 1.0);
        assert_eq!(StoredType::BF16.from_bits(0x3f80), 1.0);
        assert_eq!(
            StoredType::F64.decode_le(&0.1f64.to_le_bytes()),
            vec![0.1f32]
        );
    }

    #[test]
    fn only_non_f32_types_are_recorded() {
        let mut s = StoredTypes::default();
        s.set_input("x", StoredType::F32);
        assert!(s.is_empty());
        s.set_input("x", StoredType::BF16);
        s.set_output("y", StoredType::F16);
        assert_eq!(s.input("x"), StoredType::BF16);
        assert_eq!(s.input("other"), StoredType::F32);
        assert_eq!(s.narrowest_io(), StoredType::BF16);
        for t in StoredType::ALL {
            assert_eq!(StoredType::from_onnx(t.onnx_code()), Some(t));
            assert_eq!(StoredType::from_name(t.name()), Some(t));
        }
    }
}
