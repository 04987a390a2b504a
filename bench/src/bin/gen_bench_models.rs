//! Writes the benchmark models at (X, H, T) = (32, 64, 8), (512, 512, 16) and (256, 800, 50);
//! dense and magnitude-pruned per matrix to 90% and 97% zeros; each at batch 1, 16 and 64 with
//! the same weights (only the declared input and output shapes differ):
//!
//! - H-LSTMs in the Scan form (weights as outer initializers), one ReLU hidden layer of width H
//!   in each gate: `hlstm_X{X}_H{H}_T{T}_{dense,sp90,sp97}[_B{B}].onnx`;
//! - LSTMs, one ONNX `LSTM` op (X -> H; `W` `[1, 4H, X]`, `R` `[1, 4H, H]`, `B` `[1, 8H]`; input
//!   `X` `[T, B, X]`; outputs `Y` and `Y_h`), `W` and `R` drawn independently and each pruned on
//!   its own: `lstm_X{X}_H{H}_T{T}_{dense,sp90,sp97}[_B{B}].onnx`.
//!
//! Batch 1 has no suffix (the file names of earlier runs); batch B > 1 ends in `_B{B}`.
//!
//! ```text
//! cargo run --release -p hlstm-bench --bin gen_bench_models -- OUT_DIR [--batches 1,16,64] [--only SUBSTRING] [--size X,H,T]...
//! ```
//!
//! `--size X,H,T` (repeatable) writes the models of these sizes instead of the three above, e.g.
//! `--size 1024,1024,16 --only lstm_X1024_H1024_T16_sp97 --batches 1` for the 32 MB LSTM of
//! BENCHMARKS.md's "Memory" section.
//! `--batches` picks the batch sizes (default 1,16,64); `--only S` writes only the models whose
//! file name (without the batch suffix) contains S, e.g. `--only hlstm_X512_H512_T16_sp97`.
//! Prints each file and its number of nonzero weights.

use hlstm_bench::forms::lstm_model_bytes;
use hlstm_bench::modelgen::generate_lstm;
use hlstm_bench::{Form, HlstmSpec, Pruning, ScanWeights, generate, model_bytes};
use std::path::{Path, PathBuf};

const SIZES: [(usize, usize, usize); 3] = [(32, 64, 8), (512, 512, 16), (256, 800, 50)];
const DENSITIES: [(&str, f64); 3] = [("dense", 1.0), ("sp90", 0.10), ("sp97", 0.03)];
const DEFAULT_BATCHES: [usize; 3] = [1, 16, 64];
const USAGE: &str =
    "usage: gen_bench_models OUT_DIR [--batches B,B,...] [--only SUBSTRING] [--size X,H,T]...";

/// The file name of a model at batch `b`: no suffix at batch 1.
fn file_name(stem: &str, b: usize) -> String {
    if b == 1 {
        format!("{stem}.onnx")
    } else {
        format!("{stem}_B{b}.onnx")
    }
}

struct Args {
    dir: PathBuf,
    batches: Vec<usize>,
    only: Option<String>,
    sizes: Vec<(usize, usize, usize)>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut dir, mut batches, mut only) = (None, DEFAULT_BATCHES.to_vec(), None);
    let mut sizes = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batches" => {
                let v = it.next().ok_or("--batches needs a list, e.g. 1,16")?;
                batches = v
                    .split(',')
                    .map(|s| match s.trim().parse::<usize>() {
                        Ok(b) if b >= 1 => Ok(b),
                        _ => Err(format!("--batches: '{s}' is not a batch size >= 1")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--only" => only = Some(it.next().ok_or("--only needs a substring")?),
            "--size" => {
                let v = it.next().ok_or("--size needs X,H,T, e.g. 1024,1024,16")?;
                let n: Vec<usize> = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().ok().filter(|&n| n >= 1))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--size: '{v}' is not X,H,T of sizes >= 1"))?;
                match n[..] {
                    [x, h, t] => sizes.push((x, h, t)),
                    _ => return Err(format!("--size: '{v}' is not X,H,T")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    Ok(Args {
        dir: dir.ok_or("no OUT_DIR given")?,
        batches,
        only,
        sizes: if sizes.is_empty() {
            SIZES.to_vec()
        } else {
            sizes
        },
    })
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        eprintln!("gen_bench_models: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("gen_bench_models: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&a.dir) {
        eprintln!("gen_bench_models: cannot create {}: {e}", a.dir.display());
        std::process::exit(1);
    }
    let wanted = |stem: &str| a.only.as_deref().is_none_or(|s| stem.contains(s));
    for &(x, h, t) in &a.sizes {
        for (tag, density) in DENSITIES {
            let stem = format!("hlstm_X{x}_H{h}_T{t}_{tag}");
            if wanted(&stem) {
                let mut spec = HlstmSpec::dense(x, h, t, 1, &[h]);
                spec.density = density;
                spec.pruning = Pruning::Magnitude;
                spec.seed = 0x5eed_0000 + (x * 1_000_000 + h * 1000 + t) as u64;
                let m = generate(&spec);
                let (_, nonzero) = m.weight_counts();
                for &b in &a.batches {
                    let path = a.dir.join(file_name(&stem, b));
                    write(
                        &path,
                        &model_bytes(&m, t, b, Form::Scan(ScanWeights::Outer)),
                    );
                    println!("{} {nonzero}", path.display());
                }
            }

            let stem = format!("lstm_X{x}_H{h}_T{t}_{tag}");
            if wanted(&stem) {
                let seed = 0x157a_0000 + (x * 1_000_000 + h * 1000 + t) as u64;
                let m = generate_lstm(x, h, density, Pruning::Magnitude, seed);
                let (_, nz_w, nz_r) = m.weight_counts();
                for &b in &a.batches {
                    let path = a.dir.join(file_name(&stem, b));
                    write(&path, &lstm_model_bytes(&m, t, b));
                    println!("{} {}", path.display(), nz_w + nz_r);
                }
            }
        }
    }
}
