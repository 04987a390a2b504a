//! Values between Python and the library: a model given as a path or as bytes, numpy arrays
//! and tensors.

use crate::errors::invalid;
use hlstmc::{DType, Model, StoredType, Tensor, TensorInfo};
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyModule, PyString};
use std::path::PathBuf;

/// Where a model comes from: a file (str or os.PathLike) or the bytes of one.
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    pub fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Source::Bytes(b.as_bytes().to_vec()));
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
            return Ok(Source::Path(obj.extract::<PathBuf>()?));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Source::Bytes(b.to_vec()));
        }
        Err(PyTypeError::new_err(format!(
            "a model is a path (str or os.PathLike) or the bytes of an ONNX file, not {}",
            obj.get_type().name()?
        )))
    }

    /// Reads and imports the model (without the GIL: call inside `py.detach`).
    pub fn load(&self) -> hlstmc::Result<Model> {
        match self {
            Source::Path(p) => Model::load(p),
            Source::Bytes(b) => Model::from_bytes(b, None),
        }
    }

    /// How the model is named in reports and messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes(b) => format!("<{} bytes>", b.len()),
        }
    }
}

/// ONNX Runtime's spelling of an element type: `tensor(float)`; a float the model declares
/// float16, bfloat16 or float64 (`stored`) is spelled as declared: `tensor(float16)`,
/// `tensor(bfloat16)`, `tensor(double)`.
pub fn onnx_type_name(d: DType, stored: StoredType) -> &'static str {
    match (d, stored) {
        (DType::F32, StoredType::F32) => "tensor(float)",
        (DType::F32, StoredType::F16) => "tensor(float16)",
        (DType::F32, StoredType::BF16) => "tensor(bfloat16)",
        (DType::F32, StoredType::F64) => "tensor(double)",
        (DType::I64, _) => "tensor(int64)",
        (DType::I32, _) => "tensor(int32)",
        (DType::Bool, _) => "tensor(bool)",
    }
}

/// The type of an input as messages show it: `f16[5,3,16]` for a float declared float16.
fn declared_text(info: &TensorInfo, stored: StoredType) -> String {
    let text = info.ty.to_string();
    match (info.ty.dtype, stored) {
        (DType::F32, s) if s != StoredType::F32 => {
            format!("{}{}", s.name(), &text[DType::F32.name().len()..])
        }
        _ => text,
    }
}

/// The numpy dtype name for an element type.
fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::Bool => "bool",
    }
}

/// A C-contiguous copy (or the array itself) of `arr` as the numpy dtype `dtype`.
fn contiguous<'py>(
    np: &Bound<'py, PyModule>,
    arr: &Bound<'py, PyAny>,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = pyo3::types::PyDict::new(np.py());
    kwargs.set_item("dtype", dtype)?;
    np.getattr("ascontiguousarray")?.call((arr,), Some(&kwargs))
}

/// `value` (a numpy array, or anything `numpy.asarray` takes) as a tensor of the input's
/// element type. Other float types convert to float32 and integer types to the input's
/// integer type; a non-contiguous array is copied; any other kind is an error naming the input.
///
/// An input the model declares float16, bfloat16 or float64 (`stored`) takes float arrays of
/// any precision, as f32; the built model rounds them to the declared type, as the CLI does
/// (docs/precision.md). A bfloat16 input also takes uint16 arrays as bfloat16 bit patterns
/// (numpy has no bfloat16) and ml_dtypes.bfloat16 arrays; any float input takes the latter.
pub fn to_tensor(
    py: Python<'_>,
    info: &TensorInfo,
    stored: StoredType,
    value: &Bound<'_, PyAny>,
) -> PyResult<Tensor> {
    // The common case without a call into numpy: a C-contiguous float32 array.
    if info.ty.dtype == DType::F32
        && let Ok(a) = value.cast::<PyArrayDyn<f32>>()
        && a.is_c_contiguous()
    {
        return Ok(Tensor::F32(a.readonly().as_array().to_owned()));
    }
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (value,))?;
    let untyped = arr.cast::<PyUntypedArray>()?;
    let dtype = untyped.dtype();
    let kind = dtype.kind() as char;
    let got = dtype.str()?.to_string();
    if info.ty.dtype == DType::F32 {
        // bfloat16 values as 16-bit patterns: uint16 for a bfloat16 input, or an
        // ml_dtypes.bfloat16 array (numpy kind 'V', named bfloat16) for any float input.
        let is_ml_bf16 = kind == 'V'
            && dtype.itemsize() == 2
            && dtype.getattr("name")?.extract::<String>()? == "bfloat16";
        let is_u16 = kind == 'u' && dtype.itemsize() == 2;
        if is_ml_bf16 || (is_u16 && stored == StoredType::BF16) {
            let bits = contiguous(&np, &arr.call_method1("view", ("uint16",))?, "uint16")?;
            let bits = bits.cast::<PyArrayDyn<u16>>()?.readonly();
            return Ok(Tensor::F32(
                bits.as_array().mapv(|b| StoredType::BF16.from_bits(b)),
            ));
        }
        if is_u16 {
            return Err(invalid(format!(
                "input '{}' expects {}, got a numpy array of dtype {got}: uint16 arrays are read as bfloat16 bit patterns, for inputs declared bfloat16 only (convert it with .astype(numpy.{}))",
                info.name,
                declared_text(info, stored),
                match stored {
                    StoredType::F16 => "float16",
                    StoredType::F64 => "float64",
                    _ => "float32",
                }
            )));
        }
    }
    let fits = match info.ty.dtype {
        DType::F32 => kind == 'f',
        DType::I64 | DType::I32 => matches!(kind, 'i' | 'u'),
        DType::Bool => kind == 'b',
    };
    if !fits {
        let hint = match (info.ty.dtype, stored) {
            (DType::F32, StoredType::F32) => " (convert it with .astype(numpy.float32))",
            (DType::F32, StoredType::F16) => " (convert it with .astype(numpy.float16))",
            (DType::F32, StoredType::F64) => " (convert it with .astype(numpy.float64))",
            (DType::F32, StoredType::BF16) => {
                " (a float array, or bfloat16 bit patterns as a uint16 array)"
            }
            (DType::I64 | DType::I32, _) => " (an integer array)",
            (DType::Bool, _) => "",
        };
        return Err(invalid(format!(
            "input '{}' expects {}, got a numpy array of dtype {got}{hint}",
            info.name,
            declared_text(info, stored)
        )));
    }
    let c = contiguous(&np, &arr, numpy_name(info.ty.dtype))?;
    Ok(match info.ty.dtype {
        DType::F32 => Tensor::F32(
            c.cast::<PyArrayDyn<f32>>()?
                .readonly()
                .as_array()
                .to_owned(),
        ),
        DType::I64 => Tensor::I64(
            c.cast::<PyArrayDyn<i64>>()?
                .readonly()
                .as_array()
                .to_owned(),
        ),
        DType::I32 => Tensor::I32(
            c.cast::<PyArrayDyn<i32>>()?
                .readonly()
                .as_array()
                .to_owned(),
        ),
        DType::Bool => Tensor::Bool(
            c.cast::<PyArrayDyn<bool>>()?
                .readonly()
                .as_array()
                .to_owned(),
        ),
    })
}

/// A tensor as a numpy array (an f32 buffer moves into numpy; nothing is copied). A float
/// output the model declares float16 or float64 (`stored`) comes back as a float16 or
/// float64 array, one declared bfloat16 as a uint16 array of bfloat16 bit patterns (numpy has
/// no bfloat16), as the CLI writes them; the run has rounded its values to the type already.
pub fn to_numpy(py: Python<'_>, t: Tensor, stored: StoredType) -> PyResult<Py<PyAny>> {
    Ok(match (t, stored) {
        (Tensor::F32(a), StoredType::F16) => a
            .mapv(|v| StoredType::F16.to_bits(v))
            .into_pyarray(py)
            .call_method1("view", ("float16",))?
            .unbind(),
        (Tensor::F32(a), StoredType::BF16) => a
            .mapv(|v| StoredType::BF16.to_bits(v))
            .into_pyarray(py)
            .into_any()
            .unbind(),
        (Tensor::F32(a), StoredType::F64) => a.mapv(f64::from).into_pyarray(py).into_any().unbind(),
        (Tensor::F32(a), _) => a.into_pyarray(py).into_any().unbind(),
        (Tensor::I64(a), _) => a.into_pyarray(py).into_any().unbind(),
        (Tensor::I32(a), _) => a.into_pyarray(py).into_any().unbind(),
        (Tensor::Bool(a), _) => a.into_pyarray(py).into_any().unbind(),
    })
}

/// A shape as ONNX Runtime's `NodeArg.shape` gives it: known dims as ints, symbolic dims by
/// name, unknown dims as None; None for an unknown rank.
pub fn shape_list(py: Python<'_>, ty: &hlstmc::TensorType) -> PyResult<Py<PyAny>> {
    let Some(dims) = &ty.shape else {
        return Ok(py.None());
    };
    let items: Vec<Py<PyAny>> = dims
        .iter()
        .map(|d| -> PyResult<Py<PyAny>> {
            Ok(match d {
                hlstmc::Dim::Known(n) => n.into_pyobject(py)?.into_any().unbind(),
                hlstmc::Dim::Sym(s) => s.into_pyobject(py)?.into_any().unbind(),
                hlstmc::Dim::Unknown => py.None(),
            })
        })
        .collect::<PyResult<_>>()?;
    Ok(pyo3::types::PyList::new(py, items)?.into_any().unbind())
}

/// A serializable value as the Python object `json.loads` makes of its JSON text.
pub fn json_to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}
