//! Reading and writing tensors: .npy (npyz) and serialized ONNX TensorProto (.pb).

use anyhow::{Context, Result, anyhow, bail};
use hlstm_ir::Tensor;
use ndarray::{ArrayD, IxDyn};
use npyz::WriterBuilder;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Reads a tensor from a .npy or .pb file (by extension).
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("pb") => Ok(hlstm_frontends::onnx::tensor::read_pb(path)
            .map_err(|e| anyhow!(e))?
            .1),
        _ => bail!(
            "{}: unknown tensor file type (use .npy or .pb)",
            path.display()
        ),
    }
}

fn read_npy(path: &Path) -> Result<Tensor> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(f))
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with C order",
            path.display()
        );
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    hlstm_ir::interp::kernels::check_size(&shape)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let descr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => bail!("{}: unsupported dtype {other:?}", path.display()),
    };
    let ctx = || format!("{}: bad data", path.display());
    let arr = |v| {
        ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| anyhow!("{}: {e}", path.display()))
    };
    Ok(match descr.as_str() {
        "<f4" => Tensor::F32(arr(npy.into_vec::<f32>().with_context(ctx)?)?),
        "<f8" => Tensor::F32(arr(npy
            .into_vec::<f64>()
            .with_context(ctx)?
            .into_iter()
            .map(|v| v as f32)
            .collect())?),
        "<i8" => Tensor::I64(ArrayD::from_shape_vec(
            IxDyn(&shape),
            npy.into_vec::<i64>().with_context(ctx)?,
        )?),
        "<i4" => Tensor::I32(ArrayD::from_shape_vec(
            IxDyn(&shape),
            npy.into_vec::<i32>().with_context(ctx)?,
        )?),
        "|b1" => Tensor::Bool(ArrayD::from_shape_vec(
            IxDyn(&shape),
            npy.into_vec::<bool>().with_context(ctx)?,
        )?),
        d => bail!(
            "{}: unsupported dtype {d} (use float32, int64, int32 or bool)",
            path.display()
        ),
    })
}

/// Writes a tensor as .npy.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let w = std::io::BufWriter::new(f);
    macro_rules! write_all {
        ($a:expr) => {{
            let mut wr = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend($a.iter().copied())?;
            wr.finish()?;
        }};
    }
    match t {
        Tensor::F32(a) => write_all!(a),
        Tensor::I64(a) => write_all!(a),
        Tensor::I32(a) => write_all!(a),
        Tensor::Bool(a) => write_all!(a),
    }
    Ok(())
}

/// An output name made safe for a file name.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
