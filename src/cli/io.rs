//! Reading and writing tensors: .npy (npyz), .npz (numpy's zip of .npy files, `np.savez`;
//! zip), and serialized ONNX TensorProto (.pb).

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
    read_npy_from(BufReader::new(f), &path.display().to_string())
}

/// The longest .npy header read: numpy writes a few hundred bytes; a length field of 4 GiB in
/// a 13-byte file must not become a 4 GiB allocation.
const MAX_NPY_HEADER: usize = 1 << 20;

/// A .npy array from `reader`; `what` names it in errors (a file, or an array of a .npz).
fn read_npy_from(reader: impl std::io::Read, what: &str) -> Result<Tensor> {
    use std::io::BufRead;
    let mut reader = BufReader::new(reader);
    let head = reader
        .fill_buf()
        .with_context(|| format!("cannot read {what}"))?;
    if head.len() >= 12 && head.starts_with(b"\x93NUMPY") {
        let len = match head[6] {
            1 => u16::from_le_bytes([head[8], head[9]]) as usize,
            _ => u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
        };
        if len > MAX_NPY_HEADER {
            bail!("{what}: a .npy header of {len} bytes (at most {MAX_NPY_HEADER})");
        }
    }
    let npy = npyz::NpyFile::new(reader).with_context(|| format!("{}: not a .npy file", what))?;
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with C order",
            what
        );
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    hlstm_ir::interp::kernels::check_size(&shape).map_err(|e| anyhow!("{}: {e}", what))?;
    let descr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        _ => bail!(
            "{}: a structured (record) dtype is not supported: save one plain array",
            what
        ),
    };
    let ctx = || format!("{}: bad data", what);
    let arr = |v| ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| anyhow!("{}: {e}", what));
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
            what
        ),
    })
}

/// Writes a tensor as .npy into `f` (`path` names it in errors).
pub fn write_npy(f: &File, path: &Path, t: &Tensor) -> Result<()> {
    write_npy_to(std::io::BufWriter::new(f), t)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The arrays of a .npz file (`np.savez`, `np.savez_compressed`), by name, in the archive's
/// order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{}: not a .npz file (a zip of .npy files)", path.display()))?;
    let mut arrays = Vec::new();
    for k in 0..zip.len() {
        let entry = zip
            .by_index(k)
            .with_context(|| format!("{}: cannot read member {k}", path.display()))?;
        let member = entry
            .name()
            .with_context(|| format!("{}: member {k} has no valid name", path.display()))?
            .to_string();
        let Some(name) = member.strip_suffix(".npy") else {
            bail!("{}: member '{member}' is not a .npy array", path.display());
        };
        let what = format!("{}: array '{name}'", path.display());
        arrays.push((
            name.to_string(),
            read_npy_from(BufReader::new(entry), &what)?,
        ));
    }
    Ok(arrays)
}

/// A new file under a random name in `path`'s folder, created exclusively (`O_EXCL`), so that
/// a link planted at a predictable name cannot redirect the write; [`persist`] renames it onto
/// `path`, and dropped it is removed.
pub fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(".hlstmc-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// Renames a file made by [`temp_beside`] onto `path`.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Writes named tensors as one .npz file (uncompressed, as `np.savez`), read back by
/// `np.load(path)[name]`, into `f` (`path` names it in errors).
pub fn write_npz(f: &File, path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let cannot = || format!("cannot write {}", path.display());
    for (name, t) in tensors {
        zip.start_file(format!("{name}.npy"), options)
            .with_context(cannot)?;
        write_npy_to(&mut zip, t).with_context(cannot)?;
    }
    zip.finish().with_context(cannot)?;
    Ok(())
}

/// A tensor as .npy into `w`.
fn write_npy_to(w: impl std::io::Write, t: &Tensor) -> Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
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

/// A shape as the IR's types print it (`f32[8,1,32]`): `[8,1,32]`, not Rust's `[8, 1, 32]`, so
/// that every shape in a message reads alike.
pub fn dims(shape: &[usize]) -> String {
    hlstm_ir::dims_text(shape)
}

/// Creates the folder a file is to be written in, if it has one and it is missing: `-o
/// out/model.hir` works as `-o out/` does for the commands that write a folder.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display())),
        None => Ok(()),
    }
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
