//! .npy files for the CLI's `-i NAME=FILE` inputs and `-o DIR` outputs (f32, C order).

use npyz::WriterBuilder;
use std::path::Path;

pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(f)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}

/// Reads an f32 .npy file: (shape, data).
pub fn read_f32(path: &Path) -> std::io::Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy.into_vec::<f32>()?;
    Ok((shape, data))
}
