//! Every pass by name, and the default pipeline.

use crate::pass::Pass;

/// The default pipeline, in order (`hlstmc passes` lists it).
pub const DEFAULT_PIPELINE: &[&str] = &[
    "canonicalize",
    "fold-constants",
    "simplify",
    "reroll",
    "saturate",
    "fuse-gates",
    "normalize-gates",
    "hoist",
    "prune-inputs",
    "dce",
];

fn all() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(crate::canonicalize::Canonicalize),
        Box::new(crate::fold::FoldConstants),
        Box::new(crate::simplify::Simplify),
        Box::new(crate::reroll::Reroll),
        Box::new(crate::saturate::Saturate::default()),
        Box::new(crate::fuse::FuseGates),
        Box::new(crate::normalize::NormalizeGates),
        Box::new(crate::hoist::Hoist),
        Box::new(crate::prune_inputs::PruneInputs),
        Box::new(crate::dce::Dce),
    ]
}

pub fn lookup(name: &str) -> Option<Box<dyn Pass>> {
    all().into_iter().find(|p| p.name() == name)
}

pub fn pass_names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

/// (name, description) of every pass, for `hlstmc passes`.
pub fn describe() -> Vec<(&'static str, &'static str)> {
    all().iter().map(|p| (p.name(), p.description())).collect()
}
