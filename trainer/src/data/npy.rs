//! .npy arrays (C order; gzipped when the name ends in `.gz`): features as f32 (from f4, f8 or
//! integers), labels and tokens as i64 (from any integer type).

use super::read_bytes;
use crate::Error;
use npyz::NpyFile;
use std::path::Path;

fn open(path: &Path) -> Result<(Vec<u8>, String, Vec<usize>), Error> {
    let bytes = read_bytes(path)?;
    let e = |m: String| Error::new(format!("{}: {m}", path.display()));
    let npy = NpyFile::new(&bytes[..]).map_err(|err| e(format!("not a .npy file: {err}")))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(e(
            "Fortran-ordered arrays are not supported; save with C order".into(),
        ));
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        _ => {
            return Err(e(
                "a structured (record) dtype is not supported: save one plain array".into(),
            ));
        }
    };
    Ok((bytes, descr, shape))
}

fn bad(path: &Path, descr: &str, want: &str) -> Error {
    Error::new(format!(
        "{}: dtype {descr} cannot be read as {want}",
        path.display()
    ))
}

/// (shape, values as f32).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let (bytes, descr, shape) = open(path)?;
    let npy = NpyFile::new(&bytes[..]).map_err(|e| Error::new(e.to_string()))?;
    let e = |err: std::io::Error| Error::new(format!("{}: bad data: {err}", path.display()));
    let v: Vec<f32> = match &descr[1..] {
        "f4" => npy.into_vec::<f32>().map_err(e)?,
        "f8" => npy
            .into_vec::<f64>()
            .map_err(e)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u1" => npy
            .into_vec::<u8>()
            .map_err(e)?
            .into_iter()
            .map(f32::from)
            .collect(),
        "i4" => npy
            .into_vec::<i32>()
            .map_err(e)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i8" => npy
            .into_vec::<i64>()
            .map_err(e)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => return Err(bad(path, &descr, "f32")),
    };
    Ok((shape, v))
}

/// (shape, values as i64).
pub fn read_npy_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>), Error> {
    let (bytes, descr, shape) = open(path)?;
    let npy = NpyFile::new(&bytes[..]).map_err(|e| Error::new(e.to_string()))?;
    let e = |err: std::io::Error| Error::new(format!("{}: bad data: {err}", path.display()));
    let v: Vec<i64> = match &descr[1..] {
        "i8" => npy.into_vec::<i64>().map_err(e)?,
        "i4" => npy
            .into_vec::<i32>()
            .map_err(e)?
            .into_iter()
            .map(i64::from)
            .collect(),
        "u1" => npy
            .into_vec::<u8>()
            .map_err(e)?
            .into_iter()
            .map(i64::from)
            .collect(),
        "i1" => npy
            .into_vec::<i8>()
            .map_err(e)?
            .into_iter()
            .map(i64::from)
            .collect(),
        _ => return Err(bad(path, &descr, "an integer")),
    };
    Ok((shape, v))
}
