//! Writes one random H-LSTM spec (the tests' generator) to a folder, to reproduce a failure of
//! `tests/random_hlstm.rs`: every form as `<form>.onnx`, the input `X.npy`, and the reference
//! outputs `Y.npy`, `Y_h.npy`; prints the spec and the independent live multiply-add count.
//!
//! ```text
//! cargo run -p hlstm-bench --bin gen_hlstm -- SEED OUT_DIR [MAX_DIM MAX_STEPS MAX_BATCH]
//! ```
//!
//! SEED is what the test prints (`seed 0x51ed0006`, decimal or 0x hex); the maxima default to
//! the test's (24, 5, 3).

use hlstm_bench::{ALL_FORMS, HlstmSpec, evaluate, generate, live_macs, model_bytes, npy};
use std::path::PathBuf;

fn number(s: &str) -> u64 {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.unwrap_or_else(|_| {
        eprintln!("gen_hlstm: not a number: {s}");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && args.len() != 5 {
        eprintln!("usage: gen_hlstm SEED OUT_DIR [MAX_DIM MAX_STEPS MAX_BATCH]");
        std::process::exit(2);
    }
    let seed = number(&args[0]);
    let dir = PathBuf::from(&args[1]);
    let (max_dim, max_steps, max_batch) = if args.len() == 5 {
        (
            number(&args[2]) as usize,
            number(&args[3]) as usize,
            number(&args[4]) as usize,
        )
    } else {
        (24, 5, 3)
    };
    let spec = HlstmSpec::random(seed, max_dim, max_steps, max_batch);
    let m = generate(&spec);
    std::fs::create_dir_all(&dir).expect("creates the output folder");
    let x = hlstm_bench::random_input(spec.seed, spec.steps, spec.batch, spec.inputs);
    let out = evaluate(&m, &x, spec.steps, spec.batch);
    let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
    let (t, b, nx, nh) = (spec.steps, spec.batch, spec.inputs, spec.hidden);
    npy::write_f32(&dir.join("X.npy"), &[t, b, nx], &x).expect("writes X");
    npy::write_f32(&dir.join("Y.npy"), &[t, b, nh], &f32s(&out.y)).expect("writes Y");
    npy::write_f32(&dir.join("Y_h.npy"), &[b, nh], &f32s(&out.y_h)).expect("writes Y_h");
    for form in ALL_FORMS {
        let p = dir.join(format!("{}.onnx", form.name()));
        std::fs::write(&p, model_bytes(&m, t, b, form)).expect("writes the model");
    }
    println!("{spec:?}");
    println!("{:?}", live_macs(&m));
}
