//! The trainer draws from the project's one generator (`hlstm_ir::rng`, SplitMix64): weight
//! initialization, dropout masks and data splits are reproducible from a seed.

pub use hlstm_ir::rng::Rng;
