//! Times training steps of `hlstmc train`'s trainer, for bench/train_speed.py:
//!
//!     cargo run --release -p hlstm-trainer --example train_step_time -- CONFIG.toml [STEPS]
//!
//! Builds the session of CONFIG (data, training graph, masks) with its engine, runs one epoch
//! and records the wall time of every batch (the training graph's forward and backward pass,
//! clipping, the optimizer step and the masks: everything `hlstmc train` does per batch). The
//! first two batches are warm-up. Prints one JSON line: the median and mean seconds per step of
//! the rest, and samples (classification: sequences; text: characters) per step. Keep the epoch
//! short (text: `data.max_chars`); STEPS (default 20) stops timing after that many steps.
use hlstm_trainer::config::{Config, Data};
use hlstm_trainer::exec;
use hlstm_trainer::train::Session;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: train_step_time CONFIG.toml [STEPS]");
        std::process::exit(2);
    };
    let steps: usize = args
        .get(2)
        .map_or(20, |s| s.parse().expect("STEPS is a number"));
    let cfg = Config::load(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut s = Session::new(&cfg, exec::engine(cfg.train.engine)).expect("session");
    let per_step = match &cfg.data {
        Data::Text { window, .. } => cfg.train.batch * window,
        _ => cfg.train.batch,
    };
    let mut times = Vec::new();
    let mut last = Instant::now();
    s.epoch(cfg.train.lr, None, &mut |k, _, _| {
        let now = Instant::now();
        if k > 2 && times.len() < steps {
            times.push(now.duration_since(last).as_secs_f64());
        }
        last = now;
        true
    })
    .expect("epoch");
    assert!(!times.is_empty(), "the epoch has fewer than 3 batches");
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"steps\":{},\"median_s\":{median},\"mean_s\":{mean},\"samples_per_step\":{per_step}}}",
        times.len()
    );
}
