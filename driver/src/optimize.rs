//! Optimization options: the level or an explicit pass list, and the pass manager's
//! instrumentation (printing, dumps, timing, statistics, verification after each pass).

use crate::{Error, Result};
use hlstm_passes::{DEFAULT_PIPELINE, Instrumentation, PassManager};

/// What [`crate::Model::optimize`] runs.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    /// 0 runs no pass; 1 or more runs [`DEFAULT_PIPELINE`].
    pub level: u8,
    /// These passes, in this order, instead of the level's pipeline (see
    /// [`hlstm_passes::pass_names`]).
    pub passes: Option<Vec<String>>,
    /// Printing, dumps, timing, statistics and `verify_each`; their text goes to the writer
    /// given to [`crate::Model::optimize_logged`] (standard error for
    /// [`crate::Model::optimize`]).
    pub instrumentation: Instrumentation,
}

impl Default for OptimizeOptions {
    /// Level 1, no instrumentation; `verify_each` (when turned on) compares with the tolerances
    /// of `hlstmc run --test-data` (rtol 1e-3, atol 1e-4).
    fn default() -> Self {
        OptimizeOptions {
            level: 1,
            passes: None,
            instrumentation: Instrumentation {
                rtol: 1e-3,
                atol: 1e-4,
                ..Instrumentation::default()
            },
        }
    }
}

impl OptimizeOptions {
    /// Options that run no pass (`-O0`).
    pub fn none() -> Self {
        OptimizeOptions {
            level: 0,
            ..Self::default()
        }
    }

    /// The pass names these options select, in order.
    pub fn pipeline(&self) -> Vec<String> {
        match (&self.passes, self.level) {
            (Some(p), _) => p.clone(),
            (None, 0) => Vec::new(),
            (None, _) => DEFAULT_PIPELINE.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The pass manager for these options; an unknown pass name is an error here, before any
    /// model is touched.
    pub fn pass_manager(&self) -> Result<PassManager> {
        let names = self.pipeline();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        PassManager::new(&refs, self.instrumentation.clone()).map_err(Error::Options)
    }
}
