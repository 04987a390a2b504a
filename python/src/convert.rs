//! Values between Python and the library: a model given as a path or as bytes, numpy arrays
//! and tensors.

use crate::errors::invalid;
use hlstmc::{DType, Model, Tensor, TensorInfo};
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
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

/// ONNX Runtime's spelling of an element type: `tensor(float)`.
pub fn onnx_type_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "tensor(float)",
        DType::I64 => "tensor(int64)",
        DType::I32 => "tensor(int32)",
        DType::Bool => "tensor(bool)",
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

/// `value` (a numpy array, or anything `numpy.asarray` takes) as a tensor of the input's
/// element type. Other float types convert to float32 and integer types to the input's
/// integer type; a non-contiguous array is copied; any other kind is an error naming the input.
pub fn to_tensor(py: Python<'_>, info: &TensorInfo, value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
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
    let fits = match info.ty.dtype {
        DType::F32 => kind == 'f',
        DType::I64 | DType::I32 => matches!(kind, 'i' | 'u'),
        DType::Bool => kind == 'b',
    };
    if !fits {
        let got = dtype.str()?.to_string();
        let hint = match info.ty.dtype {
            DType::F32 => " (convert it with .astype(numpy.float32))",
            DType::I64 | DType::I32 => " (an integer array)",
            DType::Bool => "",
        };
        return Err(invalid(format!(
            "input '{}' expects {}, got a numpy array of dtype {got}{hint}",
            info.name, info.ty
        )));
    }
    let want = numpy_name(info.ty.dtype);
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("dtype", want)?;
    let c = np
        .getattr("ascontiguousarray")?
        .call((arr,), Some(&kwargs))?;
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

/// A tensor as a numpy array (its buffer moves into numpy; nothing is copied).
pub fn to_numpy(py: Python<'_>, t: Tensor) -> Py<PyAny> {
    match t {
        Tensor::F32(a) => a.into_pyarray(py).into_any().unbind(),
        Tensor::I64(a) => a.into_pyarray(py).into_any().unbind(),
        Tensor::I32(a) => a.into_pyarray(py).into_any().unbind(),
        Tensor::Bool(a) => a.into_pyarray(py).into_any().unbind(),
    }
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
