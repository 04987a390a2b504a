//! Grow and prune (Dai, Yin and Jha): a binary mask per weight matrix. The trainer feeds
//! W * mask as the parameter, so the gradient it gets back is the dense dL/dW, dormant
//! connections included: that is what growth ranks.
//!
//! - `seed`: a sparse start, each masked matrix at a given density, connections drawn at random.
//! - `grow`: activates the dormant connections whose accumulated |dL/dw| is in the top fraction
//!   of the dormant ones, per matrix or over all matrices together.
//! - `prune`: removes the active connections with the smallest |w| (the lowest `ratio` of them),
//!   never taking a matrix (per matrix) or the whole model (global) below a floor density.
//!
//! Ties are broken by position so the result never depends on sort stability or platform.

use crate::rng::Rng;

/// Whether growth and pruning rank each matrix on its own or all matrices together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Matrix,
    Global,
}

/// A mask per parameter; `None` for parameters that are never masked (biases).
pub type Masks = Vec<Option<Vec<bool>>>;

/// (active, total) connections over the masked parameters.
pub fn density(masks: &Masks) -> (usize, usize) {
    masks.iter().flatten().fold((0, 0), |(a, t), m| {
        (a + m.iter().filter(|&&b| b).count(), t + m.len())
    })
}

/// Masks with `round(density * n)` active connections (at least one) in each masked parameter,
/// chosen uniformly at random; `sizes[i]` is None for an unmasked parameter.
pub fn seed(rng: &mut Rng, sizes: &[Option<usize>], density: f64) -> Masks {
    sizes
        .iter()
        .map(|s| {
            s.map(|n| {
                let k = ((density * n as f64).round() as usize).clamp(1.min(n), n);
                // Partial Fisher-Yates: the first k of a random permutation.
                let mut idx: Vec<usize> = (0..n).collect();
                for i in 0..k {
                    let j = i + rng.below(n - i);
                    idx.swap(i, j);
                }
                let mut m = vec![false; n];
                for &i in &idx[..k] {
                    m[i] = true;
                }
                m
            })
        })
        .collect()
}

/// Sets weights outside their mask to zero.
pub fn apply(masks: &Masks, params: &mut [Vec<f32>]) {
    for (m, w) in masks.iter().zip(params) {
        if let Some(m) = m {
            for (x, &on) in w.iter_mut().zip(m) {
                if !on {
                    *x = 0.0;
                }
            }
        }
    }
}

/// The `k` candidates with the largest (or smallest) key; ties go to the lower position.
fn select(mut cand: Vec<(f32, usize, usize)>, k: usize, largest: bool) -> Vec<(usize, usize)> {
    cand.sort_by(|a, b| {
        let o = if largest {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        o.then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    cand.into_iter().take(k).map(|(_, i, j)| (i, j)).collect()
}

/// Activates the dormant connections whose `score` (accumulated |dL/dw|) is in the top `ratio`
/// of the dormant ones (rounded to the nearest count), per matrix or globally. A connection
/// whose score is zero never grows: no gradient says it would help. Returns the connections
/// grown, as (parameter, element).
pub fn grow(
    masks: &mut Masks,
    score: &[Vec<f32>],
    ratio: f64,
    scope: Scope,
) -> Vec<(usize, usize)> {
    let dormant = |i: usize, m: &[bool]| -> Vec<(f32, usize, usize)> {
        m.iter()
            .enumerate()
            .filter(|(_, on)| !**on)
            .map(|(j, _)| (score[i][j], i, j))
            .collect()
    };
    let pick = |c: Vec<(f32, usize, usize)>| {
        let k = (ratio * c.len() as f64).round() as usize;
        let c: Vec<_> = c.into_iter().filter(|x| x.0 > 0.0).collect();
        select(c, k, true)
    };
    let chosen: Vec<(usize, usize)> = match scope {
        Scope::Matrix => masks
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| pick(dormant(i, m))))
            .flatten()
            .collect(),
        Scope::Global => pick(
            masks
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.as_ref().map(|m| dormant(i, m)))
                .flatten()
                .collect(),
        ),
    };
    for &(i, j) in &chosen {
        if let Some(m) = &mut masks[i] {
            m[j] = true;
        }
    }
    chosen
}

/// Removes the active connections whose |w| is below the `ratio` quantile of the active ones
/// (the `round(ratio * active)` smallest), per matrix or globally, but never leaves fewer than
/// `ceil(floor * size)` active in a matrix (per matrix) or in all of them (global). Pruned
/// weights are set to zero. Returns the connections pruned.
pub fn prune(
    masks: &mut Masks,
    params: &mut [Vec<f32>],
    ratio: f64,
    floor: f64,
    scope: Scope,
) -> Vec<(usize, usize)> {
    let active = |i: usize, m: &[bool]| -> Vec<(f32, usize, usize)> {
        m.iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(j, _)| (params[i][j].abs(), i, j))
            .collect()
    };
    let pick = |c: Vec<(f32, usize, usize)>, size: usize| {
        let keep = (floor * size as f64).ceil() as usize;
        let k = ((ratio * c.len() as f64).round() as usize).min(c.len().saturating_sub(keep));
        select(c, k, false)
    };
    let chosen: Vec<(usize, usize)> = match scope {
        Scope::Matrix => masks
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| pick(active(i, m), m.len())))
            .flatten()
            .collect(),
        Scope::Global => {
            let total = density(masks).1;
            let all = masks
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.as_ref().map(|m| active(i, m)))
                .flatten()
                .collect();
            pick(all, total)
        }
    };
    for &(i, j) in &chosen {
        if let Some(m) = &mut masks[i] {
            m[j] = false;
        }
        params[i][j] = 0.0;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_density_is_exact_and_reproducible() {
        let sizes = [Some(100), None, Some(7)];
        let a = seed(&mut Rng::new(3), &sizes, 0.3);
        assert_eq!(a, seed(&mut Rng::new(3), &sizes, 0.3));
        assert_eq!(a[0].as_ref().unwrap().iter().filter(|&&b| b).count(), 30);
        assert!(a[1].is_none());
        assert_eq!(a[2].as_ref().unwrap().iter().filter(|&&b| b).count(), 2);
        assert_eq!(density(&a), (32, 107));
        let tiny = seed(&mut Rng::new(3), &[Some(10)], 0.0);
        assert_eq!(density(&tiny), (1, 10));
    }

    #[test]
    fn grow_takes_the_largest_dormant_scores() {
        let mut m: Masks = vec![Some(vec![true, false, false, false, false]), None];
        let score = vec![vec![9.0, 1.0, 5.0, 0.0, 3.0], vec![100.0]];
        let g = grow(&mut m, &score, 0.5, Scope::Matrix);
        assert_eq!(g, [(0, 2), (0, 4)]);
        assert_eq!(m[0].as_ref().unwrap(), &[true, false, true, false, true]);
        // Zero scores never grow even when the ratio asks for them.
        let g = grow(&mut m, &score, 1.0, Scope::Matrix);
        assert_eq!(g, [(0, 1)]);
    }

    #[test]
    fn global_growth_ranks_across_matrices() {
        let mut m: Masks = vec![Some(vec![false; 3]), Some(vec![false; 3])];
        let score = vec![vec![1.0, 2.0, 3.0], vec![6.0, 5.0, 4.0]];
        assert_eq!(
            grow(&mut m, &score, 0.5, Scope::Global),
            [(1, 0), (1, 1), (1, 2)]
        );
    }

    #[test]
    fn prune_stops_at_the_floor() {
        let mut m: Masks = vec![Some(vec![true; 10])];
        let mut w = vec![
            (1..=10)
                .map(|v| v as f32 * if v % 2 == 0 { -1.0 } else { 1.0 })
                .collect(),
        ];
        let p = prune(&mut m, &mut w, 0.3, 0.5, Scope::Matrix);
        assert_eq!(p, [(0, 0), (0, 1), (0, 2)]);
        assert_eq!(&w[0][..4], &[0.0, 0.0, 0.0, -4.0]);
        let p = prune(&mut m, &mut w, 0.9, 0.5, Scope::Matrix);
        assert_eq!(p.len(), 2); // 7 active, floor 5
        assert_eq!(density(&m), (5, 10));
        assert!(prune(&mut m, &mut w, 0.9, 0.5, Scope::Matrix).is_empty());
    }
}
