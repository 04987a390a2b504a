//! What a pass is: the trait every pass implements and the report it returns. It depends on no
//! other module of the crate, so passes, the registry and the manager all point here and none
//! of them back at each other.

use hlstm_ir::Graph;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub changed: bool,
    /// Counters the pass wants reported (for saturation: rule name -> times it fired).
    pub counters: BTreeMap<String, usize>,
    /// Free-form lines for --stats (for saturation: the stop reason and limits).
    pub notes: Vec<String>,
    /// Extra files for --dump-dir: (file suffix, contents), e.g. ("egraph.dot", ...).
    pub artifacts: Vec<(String, String)>,
}

/// The options a pass may take from the pipeline's instrumentation.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Write each saturation run's e-graph as Graphviz text into the dump folder.
    pub dump_egraph: bool,
    /// Limits for equality saturation (the defaults when None).
    pub saturate_limits: Option<SaturationLimits>,
}

/// Limits of one equality-saturation run (`saturate::Limits`).
#[derive(Clone, Debug)]
pub struct SaturationLimits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for SaturationLimits {
    fn default() -> Self {
        SaturationLimits {
            iterations: 20,
            nodes: 20_000,
            time: Duration::from_secs(10),
        }
    }
}

pub trait Pass {
    fn name(&self) -> &'static str;
    /// One line for `hlstmc passes`.
    fn description(&self) -> &'static str;
    fn run(&self, g: &mut Graph) -> Result<PassReport, String>;
    /// Takes options from the instrumentation (for example, whether to dump e-graphs).
    fn configure(&mut self, _opts: &PassOptions) {}
}
