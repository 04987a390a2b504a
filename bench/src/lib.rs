//! hlstm-bench: a random H-LSTM generator, an independent count of the multiply-adds a pruned
//! H-LSTM really needs, a plain reference evaluator, and the benchmarks built on them
//! (`src/bin/opt_time.rs`). The tests in `tests/random_hlstm.rs` use the same generator.
//!
//! ```no_run
//! use hlstm_bench::{HlstmSpec, Form, ScanWeights, generate, live_macs, model_bytes};
//! let mut spec = HlstmSpec::dense(16, 24, 5, 2, &[32, 32]);
//! spec.density = 0.1;
//! spec.cut_neurons = 4;
//! let m = generate(&spec);
//! let bytes = model_bytes(&m, spec.steps, spec.batch, Form::Scan(ScanWeights::Outer));
//! println!("{} live multiply-adds per step", live_macs(&m).live_macs);
//! ```

pub mod count;
pub mod forms;
pub mod modelgen;
pub mod npy;
pub mod reference;
pub mod rng;

pub use count::{LiveCount, live_macs};
pub use forms::{Form, ScanWeights, XSlicing, model, model_bytes};
pub use modelgen::{GATES, Hlstm, HlstmSpec, Layer, Pruning, generate, random_input};
pub use reference::{Outputs, evaluate};

/// Every form, in a fixed order.
pub const ALL_FORMS: [Form; 5] = [
    Form::Scan(ScanWeights::Outer),
    Form::Scan(ScanWeights::Body),
    Form::Unrolled(XSlicing::Gather),
    Form::Unrolled(XSlicing::SplitSqueeze),
    Form::TorchGemm,
];
