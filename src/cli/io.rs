//! Reading and writing tensors: .npy (npyz), .npz (numpy's zip of .npy files, `np.savez`;
//! zip), and serialized ONNX TensorProto (.pb).

use anyhow::{Context, Result, anyhow, bail};
use hlstm_ir::{StoredType, Tensor};
use ndarray::{ArrayD, IxDyn};
use npyz::WriterBuilder;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Reads a tensor from a .npy or .pb file (by extension), with the float type the file stores: float16, bfloat16 and float64 data
/// arrive as f32 (exact, or rounded for float64). A `<u2` (uint16) .npy array is bfloat16 bit
/// patterns, numpy having no bfloat16: it arrives as i32 patterns marked bf16, which
/// [`declared_input`] decodes for a bfloat16 input only.
pub fn read_tensor_stored(path: &Path) -> Result<(Tensor, StoredType)> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("pb") => {
            let (_, t, s) =
                hlstm_frontends::onnx::tensor::read_pb_stored(path).map_err(|e| anyhow!(e))?;
            Ok((t, s))
        }
        _ => bail!(
            "{}: unknown tensor file type (use .npy or .pb)",
            path.display()
        ),
    }
}

fn read_npy(path: &Path) -> Result<(Tensor, StoredType)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_npy_from(BufReader::new(f), &path.display().to_string())
}

/// The longest .npy header read: numpy writes a few hundred bytes; a length field of 4 GiB in
/// a 13-byte file must not become a 4 GiB allocation.
const MAX_NPY_HEADER: usize = 1 << 20;

/// A .npy array from `reader`; `what` names it in errors (a file, or an array of a .npz).
fn read_npy_from(reader: impl std::io::Read, what: &str) -> Result<(Tensor, StoredType)> {
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
    let stored = match descr.as_str() {
        "<f2" => StoredType::F16,
        "<f8" => StoredType::F64,
        "<u2" => StoredType::BF16,
        _ => StoredType::F32,
    };
    let tensor = match descr.as_str() {
        "<f4" => Tensor::F32(arr(npy.into_vec::<f32>().with_context(ctx)?)?),
        "<f2" => Tensor::F32(arr(npy
            .into_vec::<half::f16>()
            .with_context(ctx)?
            .into_iter()
            .map(f32::from)
            .collect())?),
        "<u2" => Tensor::I32(ArrayD::from_shape_vec(
            IxDyn(&shape),
            npy.into_vec::<u16>()
                .with_context(ctx)?
                .into_iter()
                .map(i32::from)
                .collect(),
        )?),
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
            "{}: unsupported dtype {d} (use float32, float16, float64, uint16 bfloat16 patterns, int64, int32 or bool)",
            what
        ),
    };
    Ok((tensor, stored))
}

/// A tensor read from a file, as input `name` of declared type `declared` takes it: uint16
/// bfloat16 patterns are decoded for a bfloat16 input and refused for any other; float data of
/// any float type is taken as it is (the run rounds it to the declared type).
pub fn declared_input(
    name: &str,
    t: Tensor,
    file: StoredType,
    declared: StoredType,
    what: &str,
) -> Result<Tensor> {
    match (&t, file, declared) {
        (Tensor::I32(a), StoredType::BF16, StoredType::BF16) => Ok(Tensor::F32(
            a.mapv(|v| StoredType::BF16.from_bits(v as u16)),
        )),
        (Tensor::I32(_), StoredType::BF16, d) => bail!(
            "{what}: a uint16 array is read as bfloat16 bit patterns, but input '{name}' is {}",
            match d {
                StoredType::F32 => "f32 (or not a float)",
                d => d.name(),
            }
        ),
        _ => Ok(t),
    }
}

/// Writes a tensor as .npy into `f` (`path` names it in errors).
pub fn write_npy(f: &File, path: &Path, t: &Tensor, stored: StoredType) -> Result<()> {
    write_npy_to(std::io::BufWriter::new(f), t, stored)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The arrays of a .npz file (`np.savez`, `np.savez_compressed`), by name, in the archive's
/// order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor, StoredType)>> {
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
        let (t, stored) = read_npy_from(BufReader::new(entry), &what)?;
        arrays.push((name.to_string(), t, stored));
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
pub fn write_npz(f: &File, path: &Path, tensors: &[(&str, &Tensor, StoredType)]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let cannot = || format!("cannot write {}", path.display());
    for (name, t, stored) in tensors {
        zip.start_file(format!("{name}.npy"), options)
            .with_context(cannot)?;
        write_npy_to(&mut zip, t, *stored).with_context(cannot)?;
    }
    zip.finish().with_context(cannot)?;
    Ok(())
}

/// A tensor as .npy into `w`; an f32 tensor of an output declared float16, float64 or
/// bfloat16 as `<f2`, `<f8` or `<u2` (bfloat16 bit patterns: numpy has no bfloat16).
fn write_npy_to(w: impl std::io::Write, t: &Tensor, stored: StoredType) -> Result<()> {
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
        Tensor::F32(a) if stored == StoredType::F16 => {
            write_all!(a.mapv(half::f16::from_f32))
        }
        Tensor::F32(a) if stored == StoredType::F64 => write_all!(a.mapv(f64::from)),
        Tensor::F32(a) if stored == StoredType::BF16 => {
            write_all!(a.mapv(|v| StoredType::BF16.to_bits(v)))
        }
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
