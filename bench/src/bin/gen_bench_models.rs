//! Writes the benchmark models, batch 1, at (X, H, T) = (32, 64, 8), (512, 512, 16) and
//! (256, 800, 50); dense and magnitude-pruned per matrix to 90% and 97% zeros:
//!
//! - H-LSTMs in the Scan form (weights as outer initializers), one ReLU hidden layer of width H
//!   in each gate: `hlstm_X{X}_H{H}_T{T}_{dense,sp90,sp97}.onnx`;
//! - LSTMs, one ONNX `LSTM` op (X -> H; `W` `[1, 4H, X]`, `R` `[1, 4H, H]`, `B` `[1, 8H]`; input
//!   `X` `[T, 1, X]`; outputs `Y` and `Y_h`), `W` and `R` drawn independently and each pruned on
//!   its own: `lstm_X{X}_H{H}_T{T}_{dense,sp90,sp97}.onnx`.
//!
//! ```text
//! cargo run --release -p hlstm-bench --bin gen_bench_models -- OUT_DIR
//! ```
//!
//! Prints each file and its number of nonzero weights.

use hlstm_bench::forms::lstm_model_bytes;
use hlstm_bench::modelgen::generate_lstm;
use hlstm_bench::{Form, HlstmSpec, Pruning, ScanWeights, generate, model_bytes};
use std::path::PathBuf;

const SIZES: [(usize, usize, usize); 3] = [(32, 64, 8), (512, 512, 16), (256, 800, 50)];
const DENSITIES: [(&str, f64); 3] = [("dense", 1.0), ("sp90", 0.10), ("sp97", 0.03)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 1 {
        eprintln!("usage: gen_bench_models OUT_DIR");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    std::fs::create_dir_all(&dir).expect("creates the output folder");
    for (x, h, t) in SIZES {
        for (tag, density) in DENSITIES {
            let mut spec = HlstmSpec::dense(x, h, t, 1, &[h]);
            spec.density = density;
            spec.pruning = Pruning::Magnitude;
            spec.seed = 0x5eed_0000 + (x * 1_000_000 + h * 1000 + t) as u64;
            let m = generate(&spec);
            let path = dir.join(format!("hlstm_X{x}_H{h}_T{t}_{tag}.onnx"));
            std::fs::write(&path, model_bytes(&m, t, 1, Form::Scan(ScanWeights::Outer)))
                .expect("writes the model");
            let (_, nonzero) = m.weight_counts();
            println!("{} {nonzero}", path.display());

            let seed = 0x157a_0000 + (x * 1_000_000 + h * 1000 + t) as u64;
            let m = generate_lstm(x, h, density, Pruning::Magnitude, seed);
            let path = dir.join(format!("lstm_X{x}_H{h}_T{t}_{tag}.onnx"));
            std::fs::write(&path, lstm_model_bytes(&m, t, 1)).expect("writes the model");
            let (_, nz_w, nz_r) = m.weight_counts();
            println!("{} {}", path.display(), nz_w + nz_r);
        }
    }
}
