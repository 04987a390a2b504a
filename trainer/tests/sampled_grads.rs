//! `train.sampled_gradients`: the weight-gradient products the trainer makes itself
//! (`exec::products`), against each other and an f64 reference, over shapes, masks, batch
//! sizes and thread counts; and the training graph without its weight-gradient products
//! (`exec::factored`) against the whole one.

use hlstm_trainer::exec::products::{self, Path, Pattern};
use proptest::prelude::*;

/// xorshift values in [-1, 1), some exactly zero (as ReLU outputs are).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if s.is_multiple_of(7) {
                0.0
            } else {
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            }
        })
        .collect()
}

fn mask(seed: u64, n: usize, density: f64) -> Vec<bool> {
    values(seed ^ 0x9e37_79b9, n)
        .iter()
        .map(|v| ((v + 1.0) / 2.0) < density as f32)
        .collect()
}

/// aᵀ·g in f64, and Σ_r |a·g| per element (the scale of a reordered f32 sum's error).
fn reference(a: &[f32], g: &[f32], r: usize, k: usize, m: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut exact, mut scale) = (vec![0f64; k * m], vec![0f64; k * m]);
    for row in 0..r {
        for i in 0..k {
            let x = a[row * k + i] as f64;
            for j in 0..m {
                let p = x * g[row * m + j] as f64;
                exact[i * m + j] += p;
                scale[i * m + j] += p.abs();
            }
        }
    }
    (exact, scale)
}

/// Within the bound of an f32 sum of r products in any order: r·2⁻²³·Σ|a·g| (twice the
/// textbook (r-1)·u, u = 2⁻²⁴, for the products' own rounding).
fn close(got: f32, want: f64, scale: f64, r: usize) -> bool {
    (got as f64 - want).abs() <= (r as f64 + 1.0) * f32::EPSILON as f64 * scale + 1e-30
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The sampled product equals the dense product masked, up to the order of the sum (both
    /// against f64), on shapes with ragged edges (rows not a multiple of the panel or of 8,
    /// columns not a multiple of the tiles), densities from empty to full, and 1 to 3 threads;
    /// the thread count and the scalar path change no bit.
    #[test]
    fn sampled_equals_masked_dense(
        steps in 1usize..=12, batch in 1usize..=40, k in 1usize..=40, m in 1usize..=40,
        density in prop::sample::select(vec![0.0, 0.05, 0.1, 0.3, 0.7, 1.0]),
        threads in 1usize..=3, seed in any::<u64>(),
    ) {
        let r = steps * batch;
        let (a, g) = (values(seed, r * k), values(seed.wrapping_add(1), r * m));
        let keep = mask(seed, k * m, density);
        let p = Pattern::from_mask(&keep, k, m);
        let (exact, scale) = reference(&a, &g, r, k, m);

        let mut dense = vec![f32::NAN; k * m];
        products::dense(&a, &g, r, k, m, &mut dense, 1);
        let mut sampled = vec![f32::NAN; k * m];
        products::sampled(&a, &g, r, &p, &mut sampled, 1);
        for i in 0..k * m {
            prop_assert!(close(dense[i], exact[i], scale[i], r), "dense [{i}] {} vs {}", dense[i], exact[i]);
            if keep[i] {
                prop_assert!(close(sampled[i], exact[i], scale[i], r), "sampled [{i}] {} vs {}", sampled[i], exact[i]);
                let both = (sampled[i] - dense[i]).abs() as f64;
                prop_assert!(both <= 2.0 * (r as f64 + 1.0) * f32::EPSILON as f64 * scale[i] + 1e-30);
            } else {
                prop_assert_eq!(sampled[i], 0.0);
            }
        }

        for path in [Path::Auto, Path::Scalar] {
            let mut d = vec![0f32; k * m];
            products::dense_on(path, &a, &g, r, k, m, &mut d, threads);
            prop_assert_eq!(bits(&d), bits(&dense), "dense, {:?}, {} threads", path, threads);
            let mut s = vec![0f32; k * m];
            let mut jobs = [products::Sampled { a: &a, g: &g, p: &p, out: &mut s }];
            products::sampled_all(path, r, &mut jobs, threads);
            prop_assert_eq!(bits(&s), bits(&sampled), "sampled, {:?}, {} threads", path, threads);
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Several sampled products at once (sharing `a`, as the gates do) give each product's bits
/// alone, on rows spanning several panels.
#[test]
fn sampled_products_together_equal_each_alone() {
    let (r, k) = (2 * products::PANEL + 37, 19);
    let a = values(1, r * k);
    let shapes = [(k, 23), (k, 16), (k, 5)];
    let gs: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, (_, m))| values(10 + i as u64, r * m))
        .collect();
    let ps: Vec<Pattern> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(k, m))| Pattern::from_mask(&mask(20 + i as u64, k * m, 0.2), k, m))
        .collect();
    let alone: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(k, m))| {
            let mut o = vec![0f32; k * m];
            products::sampled(&a, &gs[i], r, &ps[i], &mut o, 1);
            o
        })
        .collect();
    for threads in [1, 2, 4] {
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|(k, m)| vec![0f32; k * m]).collect();
        let mut jobs: Vec<products::Sampled> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, o)| products::Sampled {
                a: &a,
                g: &gs[i],
                p: &ps[i],
                out: o,
            })
            .collect();
        products::sampled_all(Path::Auto, r, &mut jobs, threads);
        for (o, want) in outs.iter().zip(&alone) {
            assert_eq!(bits(o), bits(want), "{threads} threads");
        }
    }
}
