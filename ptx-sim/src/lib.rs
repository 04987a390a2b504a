//! An interpreter for the subset of PTX that hlstmc's PTX backend emits, to check without a GPU
//! what the generated code computes (docs/ptx.md). It shares no code or tables with the
//! emitter: the parser and the semantics are written from the PTX ISA manual.
//!
//! ```ignore
//! let module = hlstm_ptx_sim::parse(&ptx_text)?;
//! let mut dev = hlstm_ptx_sim::Device::new(module)?;
//! let x = dev.alloc_f32(&input);
//! let y = dev.alloc_zeroed(4 * n);
//! let cfg = LaunchConfig { grid: 2, block: 128, seed: 7, ..Default::default() };
//! dev.launch("kernel", &cfg, &[Arg::U64(x), Arg::U64(y), Arg::U32(8)])?;
//! let out = dev.read_f32(y, n)?;
//! ```
//!
//! Many blocks of many threads run under a seeded scheduler that picks a random ready thread
//! and runs a random short burst of its instructions, so threads of different blocks (and of
//! one block) interleave arbitrarily between barriers. Global memory is weak (see [`exec`]):
//! a missing fence, release or acquire shows up as stale reads.

pub mod exec;
pub mod parse;

pub use exec::{Arg, Device, LaunchConfig, Stats};
pub use parse::{Module, parse};
