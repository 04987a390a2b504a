//! hlstm-passes: the pass manager, its instrumentation (dumps, timing, statistics, per-pass
//! verification), and the passes that optimize the graph IR.

pub mod canonicalize;
pub mod dce;
pub mod fold;
pub mod fuse;
pub mod hoist;
pub mod lower;
pub mod manager;
pub mod normalize;
pub mod pass;
pub mod prune_inputs;
pub mod registry;
pub mod reroll;
pub mod saturate;
pub mod simplify;
pub mod verify_each;

pub use manager::{Instrumentation, PassManager, PipelineLog};
pub use pass::{Pass, PassOptions, PassReport};
pub use registry::{DEFAULT_PIPELINE, lookup, pass_names};
