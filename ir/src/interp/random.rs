//! Random inputs for a graph, for checks that run it (`--verify-each`, rule and golden tests,
//! `hlstmc bench`): one definition, from the project's generator.

use crate::rng::Rng;
use crate::{DType, Dim, Graph, Tensor};

/// Inputs for every graph input, from `seed`: f32 uniform in [-1, 1) drawn in input order;
/// integers 0 (a valid index, and a valid length); bools true. Symbolic or unknown dims take 2.
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    g.inputs
        .iter()
        .map(|&i| {
            let ty = &g.nodes[i].results[0].ty;
            let dims: Vec<usize> = ty
                .shape
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|d| if let Dim::Known(n) = d { *n } else { 2 })
                .collect();
            let n: usize = dims.iter().product();
            match ty.dtype {
                DType::F32 => Tensor::F32(
                    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), rng.vec(n, -1.0, 1.0))
                        .unwrap_or_else(|_| unreachable!("n is the product of the dims")),
                ),
                DType::Bool => {
                    Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&dims), true))
                }
                d => Tensor::zeros(d, &dims),
            }
        })
        .collect()
}
