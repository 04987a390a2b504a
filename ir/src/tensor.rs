//! Tensors: f32 for computation; i64, i32 and bool where ONNX carries shapes, indices, lengths
//! or masks. Shapes in types may be symbolic (batch, sequence length).

use ndarray::{ArrayD, IxDyn};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I64,
    I32,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
    pub fn from_name(s: &str) -> Option<DType> {
        Some(match s {
            "f32" => DType::F32,
            "i64" => DType::I64,
            "i32" => DType::I32,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dims as every message prints them: `[8,1,32]`, the style of a type's `f32[8,1,32]`.
pub fn dims_text<T: fmt::Display>(dims: &[T]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(","))
}

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    /// Known only at run time (batch, sequence length); the name comes from the model.
    Sym(String),
    /// Not inferred (a shape computed from run-time values).
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A tensor type: element type and shape. `shape == None` means the rank is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Option<Vec<Dim>>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        TensorType {
            dtype,
            shape: Some(shape),
        }
    }
    pub fn known(dtype: DType, dims: &[usize]) -> Self {
        TensorType::new(dtype, dims.iter().map(|&d| Dim::Known(d)).collect())
    }
    pub fn unranked(dtype: DType) -> Self {
        TensorType { dtype, shape: None }
    }
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }
    /// The concrete dims, when every dim is known.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }
    /// Does a run-time shape fit this type? Symbolic and unknown dims fit anything.
    pub fn accepts(&self, dtype: DType, dims: &[usize]) -> bool {
        if dtype != self.dtype {
            return false;
        }
        match &self.shape {
            None => true,
            Some(s) => {
                s.len() == dims.len()
                    && s.iter().zip(dims).all(|(d, &n)| match d {
                        Dim::Known(k) => *k == n,
                        _ => true,
                    })
            }
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dtype)?;
        match &self.shape {
            None => f.write_str("[*]"),
            Some(s) => {
                f.write_str("[")?;
                for (i, d) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A concrete tensor value.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the inner array of a tensor, binding it to `$a`, and wraps an array result
/// back into the same variant.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($body),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($body),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($body),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($body),
        }
    };
}

/// Applies `$body` to the inner array, for results that are not tensors.
#[macro_export]
macro_rules! with_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::Bool($a) => $body,
        }
    };
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::Bool(_) => DType::Bool,
        }
    }
    pub fn shape(&self) -> &[usize] {
        with_tensor!(self, a => a.shape())
    }
    pub fn len(&self) -> usize {
        with_tensor!(self, a => a.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn ty(&self) -> TensorType {
        TensorType::known(self.dtype(), self.shape())
    }
    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .ok()
            .map(Tensor::F32)
    }
    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .ok()
            .map(Tensor::I64)
    }
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(IxDyn(shape))),
            DType::I64 => Tensor::I64(ArrayD::zeros(IxDyn(shape))),
            DType::I32 => Tensor::I32(ArrayD::zeros(IxDyn(shape))),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(IxDyn(shape), false)),
        }
    }
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }
    /// Integer contents (i64 or i32) widened to i64, for shape-like operands.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::I32(a) => Some(a.iter().map(|&v| v as i64).collect()),
            _ => None,
        }
    }
    /// Number of elements that are not zero (false for bool).
    pub fn nonzeros(&self) -> usize {
        match self {
            Tensor::F32(a) => match a.as_slice() {
                Some(s) => s.iter().filter(|v| **v != 0.0).count(),
                None => a.iter().filter(|v| **v != 0.0).count(),
            },
            Tensor::I64(a) => a.iter().filter(|v| **v != 0).count(),
            Tensor::I32(a) => a.iter().filter(|v| **v != 0).count(),
            Tensor::Bool(a) => a.iter().filter(|v| **v).count(),
        }
    }
    /// Converts to another element type (ONNX Cast semantics for the types we carry).
    pub fn cast(&self, to: DType) -> Tensor {
        fn conv<A: Copy, B>(a: &ArrayD<A>, f: impl Fn(A) -> B) -> ArrayD<B> {
            a.mapv(f)
        }
        match (self, to) {
            (Tensor::F32(a), DType::F32) => Tensor::F32(a.clone()),
            (Tensor::F32(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::F32(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (Tensor::F32(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0.0)),
            (Tensor::I64(a), DType::F32) => Tensor::F32(conv(a, |v| v as f32)),
            (Tensor::I64(a), DType::I64) => Tensor::I64(a.clone()),
            (Tensor::I64(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (Tensor::I64(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0)),
            (Tensor::I32(a), DType::F32) => Tensor::F32(conv(a, |v| v as f32)),
            (Tensor::I32(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::I32(a), DType::I32) => Tensor::I32(a.clone()),
            (Tensor::I32(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0)),
            (Tensor::Bool(a), DType::F32) => Tensor::F32(conv(a, |v| v as u8 as f32)),
            (Tensor::Bool(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::Bool(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (Tensor::Bool(a), DType::Bool) => Tensor::Bool(a.clone()),
        }
    }
}
