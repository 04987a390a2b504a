//! Decoding ONNX TensorProto data: raw_data, the typed fields, or an external file. Sizes are
//! checked against the bytes present before anything is allocated.

use hlstm_ir::interp::kernels::check_size;
use hlstm_ir::{DType, StoredType, Tensor, dims_text};
use onnx_protobuf::TensorProto;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// ONNX TensorProto.DataType codes.
pub const FLOAT: i32 = 1;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;
pub const BFLOAT16: i32 = 16;

/// The float type an ONNX element type is stored in (f32 for every other type).
pub fn stored_of(code: i32) -> StoredType {
    StoredType::from_onnx(code).unwrap_or_default()
}

pub fn onnx_dtype_name(code: i32) -> &'static str {
    match code {
        0 => "undefined",
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "an unknown type",
    }
}

/// The IR type of an ONNX element type: float16, bfloat16 and float64 are computed in f32
/// ([`stored_of`] keeps what they were; docs/precision.md).
pub fn dtype_of(code: i32) -> Result<DType, String> {
    match code {
        FLOAT | FLOAT16 | DOUBLE | BFLOAT16 => Ok(DType::F32),
        INT32 => Ok(DType::I32),
        INT64 => Ok(DType::I64),
        BOOL => Ok(DType::Bool),
        c => Err(format!(
            "element type {} is not supported (hlstmc computes in f32, with i64, i32 and bool for shapes, indices and masks)",
            onnx_dtype_name(c)
        )),
    }
}

fn dims_of(t: &TensorProto) -> Result<Vec<usize>, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    check_size(&dims)?;
    Ok(dims)
}

/// Reads the bytes of an external-data tensor: `location` must stay inside `model_dir`, and
/// `offset`/`length` must lie inside the file.
fn external_bytes(
    t: &TensorProto,
    model_dir: Option<&Path>,
    want: usize,
) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .parse()
                    .map_err(|_| format!("bad external offset '{}'", kv.value))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .parse::<u64>()
                        .map_err(|_| format!("bad external length '{}'", kv.value))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or("external data without a location")?;
    let dir = model_dir
        .ok_or("external data needs the model's folder, and the model was not read from a file")?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(format!(
            "external data location '{location}' leaves the model's folder"
        ));
    }
    let path = dir.join(rel);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let canon = path
        .canonicalize()
        .map_err(|e| format!("external data file '{}': {e}", path.display()))?;
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "external data location '{location}' leaves the model's folder"
        ));
    }
    let mut f =
        File::open(&canon).map_err(|e| format!("external data file '{}': {e}", path.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let len = length.unwrap_or(want as u64);
    if len != want as u64 {
        return Err(format!(
            "external data length {len} does not match the tensor's {want} bytes"
        ));
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!(
            "external data offset {offset} + length {len} is beyond the end of '{location}' ({size} bytes)"
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

fn from_le<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// Decodes a TensorProto into a tensor; float16, bfloat16 and float64 data become f32.
pub fn decode(t: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor, String> {
    let dtype = dtype_of(t.data_type)?;
    let stored = stored_of(t.data_type);
    let dims = dims_of(t)?;
    let count: usize = dims.iter().product();
    let want = count
        * match stored {
            StoredType::F32 => dtype.size_bytes(),
            s => s.size_bytes(),
        };
    let external = t.data_location.value() == 1 || !t.external_data.is_empty();
    let raw: Option<std::borrow::Cow<[u8]>> = if external {
        Some(std::borrow::Cow::Owned(external_bytes(t, model_dir, want)?))
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != want {
            return Err(format!(
                "raw_data has {} bytes, the shape {} needs {want}",
                t.raw_data.len(),
                dims_text(&dims)
            ));
        }
        Some(std::borrow::Cow::Borrowed(&t.raw_data[..]))
    } else {
        None
    };
    let wrong = |n: usize| {
        format!(
            "holds {n} values, the shape {} needs {count}",
            dims_text(&dims)
        )
    };
    if stored != StoredType::F32 {
        let values = match raw {
            Some(b) => stored.decode_le(&b),
            // float64 travels in double_data; float16 and bfloat16 as 16-bit patterns in
            // int32_data (ONNX's TensorProto layout).
            None if stored == StoredType::F64 => {
                if t.double_data.len() != count {
                    return Err(wrong(t.double_data.len()));
                }
                t.double_data.iter().map(|&v| v as f32).collect()
            }
            None => {
                if t.int32_data.len() != count {
                    return Err(wrong(t.int32_data.len()));
                }
                let bits = |v: i32| {
                    u16::try_from(v).map_err(|_| {
                        format!("int32_data holds {v}, which is not a 16-bit {stored} pattern")
                    })
                };
                t.int32_data
                    .iter()
                    .map(|&v| Ok(stored.from_bits(bits(v)?)))
                    .collect::<Result<_, String>>()?
            }
        };
        return Tensor::from_f32(&dims, values)
            .ok_or_else(|| format!("data does not fit the shape {}", dims_text(&dims)));
    }
    let tensor = match (dtype, raw) {
        (DType::F32, Some(b)) => Tensor::from_f32(&dims, from_le(&b, f32::from_le_bytes)),
        (DType::I64, Some(b)) => Tensor::from_i64(&dims, from_le(&b, i64::from_le_bytes)),
        (DType::I32, Some(b)) => Some(Tensor::I32(shaped(&dims, from_le(&b, i32::from_le_bytes))?)),
        (DType::Bool, Some(b)) => Some(Tensor::Bool(shaped(
            &dims,
            b.iter().map(|&v| v != 0).collect(),
        )?)),
        (DType::F32, None) => {
            if t.float_data.len() != count {
                return Err(wrong(t.float_data.len()));
            }
            Tensor::from_f32(&dims, t.float_data.clone())
        }
        (DType::I64, None) => {
            if t.int64_data.len() != count {
                return Err(wrong(t.int64_data.len()));
            }
            Tensor::from_i64(&dims, t.int64_data.clone())
        }
        // int32 and bool travel in int32_data.
        (DType::I32, None) => {
            if t.int32_data.len() != count {
                return Err(wrong(t.int32_data.len()));
            }
            Some(Tensor::I32(shaped(&dims, t.int32_data.clone())?))
        }
        (DType::Bool, None) => {
            if t.int32_data.len() != count {
                return Err(wrong(t.int32_data.len()));
            }
            Some(Tensor::Bool(shaped(
                &dims,
                t.int32_data.iter().map(|&v| v != 0).collect(),
            )?))
        }
    };
    tensor.ok_or_else(|| format!("data does not fit the shape {}", dims_text(&dims)))
}

fn shaped<T>(dims: &[usize], v: Vec<T>) -> Result<ndarray::ArrayD<T>, String> {
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(dims), v).map_err(|e| e.to_string())
}

/// Encodes a tensor as a TensorProto with raw_data (what `run -o` and tests write).
pub fn encode(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto::new();
    p.name = name.to_string();
    p.dims = t.shape().iter().map(|&d| d as i64).collect();
    let (code, bytes): (i32, Vec<u8>) = match t {
        Tensor::F32(a) => (FLOAT, a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Tensor::I64(a) => (INT64, a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Tensor::I32(a) => (INT32, a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Tensor::Bool(a) => (BOOL, a.iter().map(|&v| v as u8).collect()),
    };
    p.data_type = code;
    p.raw_data = bytes;
    p
}

/// [`encode`] with an f32 tensor written as `stored` (rounded to nearest for f16 and bf16):
/// outputs in their declared type.
pub fn encode_as(name: &str, t: &Tensor, stored: StoredType) -> TensorProto {
    let mut p = encode(name, t);
    if let (Tensor::F32(a), false) = (t, stored == StoredType::F32) {
        let v: Vec<f32> = a.iter().copied().collect();
        p.data_type = stored.onnx_code();
        p.raw_data = stored.encode_le(&v);
    }
    p
}

/// Reads a serialized TensorProto (a `.pb` file of the ONNX test-data layout).
pub fn read_pb(path: &Path) -> Result<(String, Tensor), String> {
    read_pb_stored(path).map(|(n, t, _)| (n, t))
}

/// [`read_pb`], with the float type the file stores (f32 for non-float tensors).
pub fn read_pb_stored(path: &Path) -> Result<(String, Tensor, StoredType), String> {
    use protobuf::Message;
    let bytes = hlstm_ir::limits::read_file(path, |_| Ok(()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t = TensorProto::parse_from_bytes(&bytes)
        .map_err(|e| format!("{}: not a serialized TensorProto: {e}", path.display()))?;
    let v = decode(&t, path.parent()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((t.name.clone(), v, stored_of(t.data_type)))
}
