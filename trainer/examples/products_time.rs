//! Times the trainer's weight-gradient products (`exec::products`) on the text H-LSTM's shapes
//! (3,200 rows; per gate [x, h] 288 -> 256 and 256 -> 256; the head 256 -> 95), masked to
//! DENSITY (default 0.1), on THREADS (default 1):
//!
//!     cargo run --release -p hlstm-trainer --example products_time -- [DENSITY] [THREADS]
//!
//! Prints the median of 20 runs of the sampled products of all nine matrices together and of
//! the dense products one by one.
use hlstm_trainer::exec::products::{self, Path, Pattern, Sampled};
use hlstm_trainer::rng::Rng;
use std::time::Instant;

fn median(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..20)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[10]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let density: f32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let r = 3200;
    let mut rng = Rng::new(1);
    let z = rng.vec(r * 288, -1.0, 1.0);
    let mut shapes = Vec::new();
    for _ in 0..4 {
        shapes.push((true, 288, 256));
        shapes.push((false, 256, 256));
    }
    shapes.push((false, 256, 95));
    let own: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(_, k, _)| rng.vec(r * k, -1.0, 1.0))
        .collect();
    let gs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(_, _, m)| rng.vec(r * m, -1.0, 1.0))
        .collect();
    let ps: Vec<Pattern> = shapes
        .iter()
        .map(|&(_, k, m)| {
            let mask: Vec<bool> = rng
                .vec(k * m, 0.0, 1.0)
                .iter()
                .map(|v| *v < density)
                .collect();
            Pattern::from_mask(&mask, k, m)
        })
        .collect();
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k, m)| vec![0f32; k * m]).collect();
    let a = |i: usize| -> &[f32] { if shapes[i].0 { &z } else { &own[i] } };
    let nnz: usize = ps.iter().map(Pattern::nnz).sum();
    let sampled = median(|| {
        let mut jobs: Vec<Sampled> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, o)| Sampled {
                a: a(i),
                g: &gs[i],
                p: &ps[i],
                out: o,
            })
            .collect();
        products::sampled_all(Path::Auto, r, &mut jobs, threads);
    });
    let dense = median(|| {
        for (i, &(_, k, m)) in shapes.iter().enumerate() {
            products::dense(a(i), &gs[i], r, k, m, &mut outs[i], threads);
        }
    });
    let all: usize = shapes.iter().map(|&(_, k, m)| k * m).sum();
    println!(
        "sampled: {:.2} ms ({nnz} kept, {:.1} GFLOP/s); dense: {:.2} ms ({:.1} GFLOP/s)",
        sampled * 1e3,
        2.0 * (nnz * r) as f64 / sampled / 1e9,
        dense * 1e3,
        2.0 * (all * r) as f64 / dense / 1e9
    );
}
