//! saturate: equality saturation with egg over each graph level (the top-level graph and every
//! recurrence body), then deterministic extraction by the analytic cost model.
//!
//! Limits on iterations, e-nodes and time are always set. The node limit is checked only between
//! iterations, so a run can overshoot it; the defaults leave room for that. The stop reason of
//! every run is reported (`--stats`), and with `--dump-egraph` each e-graph is written as
//! Graphviz text for the dump folder.

pub mod analysis;
pub mod convert;
pub mod cost;
mod extract;
pub mod lang;
pub mod neurons;
pub mod rules;

use crate::pass::{Pass, PassOptions, PassReport};
use egg::{Runner, StopReason};
use hlstm_ir::{Graph, Op};

pub use crate::pass::SaturationLimits as Limits;

#[derive(Default)]
pub struct Saturate {
    pub limits: Limits,
    pub dump_egraph: bool,
}

/// What one saturation run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub scope: String,
    pub stop: String,
    pub iterations: usize,
    pub nodes: usize,
    pub classes: usize,
    pub applied: Vec<(String, usize)>,
}

pub fn stop_reason_name(r: &Option<StopReason>) -> String {
    match r {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.3} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    }
}

impl Saturate {
    /// Saturates one graph level; returns the new graph and a summary.
    pub fn saturate_level(
        &self,
        g: &Graph,
        carried: Option<usize>,
        scope: &str,
        dots: &mut Vec<(String, String)>,
    ) -> Result<(Graph, RunSummary), String> {
        let (eg, root) = convert::to_egraph(g, carried.unwrap_or(0), 1 << 20)?;
        let rules: Vec<_> = rules::rule_table().into_iter().map(|r| r.rewrite).collect();
        let runner = Runner::default()
            .with_egraph(eg)
            .with_iter_limit(self.limits.iterations)
            .with_node_limit(self.limits.nodes)
            .with_time_limit(self.limits.time)
            .run(&rules);
        let mut applied: std::collections::BTreeMap<String, usize> = Default::default();
        for it in &runner.iterations {
            for (k, v) in &it.applied {
                *applied.entry(k.to_string()).or_default() += v;
            }
        }
        let summary = RunSummary {
            scope: scope.to_string(),
            stop: stop_reason_name(&runner.stop_reason),
            iterations: runner.iterations.len(),
            nodes: runner.egraph.total_number_of_nodes(),
            classes: runner.egraph.number_of_classes(),
            applied: applied.into_iter().collect(),
        };
        if self.dump_egraph {
            dots.push((
                format!("{}.egraph.dot", sanitize(scope)),
                runner.egraph.dot().to_string(),
            ));
        }
        let root = runner.egraph.find(root);
        let extracted = extract::Extracted::new(
            &runner.egraph,
            cost::TensorCost {
                egraph: &runner.egraph,
                in_body: carried.is_some(),
            },
        );
        let (_, best) = extracted
            .find_best(&runner.egraph, root)
            .ok_or_else(|| format!("{scope}: no finite-cost term to extract"))?;
        let out = convert::from_expr(&best, &runner.egraph, g)?;
        Ok((out, summary))
    }

    /// Saturates every body (innermost first), then the graph itself.
    fn saturate_graph(
        &self,
        g: &mut Graph,
        carried: Option<usize>,
        scope: &str,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let recs: Vec<_> = g
            .nodes
            .node_indices()
            .filter(|&n| matches!(g.nodes[n].op, Op::Recurrence(_)))
            .collect();
        for n in recs {
            let name = format!("{scope}/{}", g.nodes[n].name);
            if let Op::Recurrence(r) = &mut g.nodes[n].op {
                let nc = r.num_carried;
                self.saturate_graph(&mut r.body, Some(nc), &name, report)?;
            }
        }
        let (new, summary) = self.saturate_level(g, carried, scope, &mut report.artifacts)?;
        report.notes.push(format!(
            "{}: {} after {} iterations, {} e-nodes in {} classes",
            summary.scope, summary.stop, summary.iterations, summary.nodes, summary.classes
        ));
        for (rule, n) in summary.applied {
            *report.counters.entry(rule).or_default() += n;
        }
        report.changed |= *g != new;
        *g = new;
        Ok(())
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Pass for Saturate {
    fn name(&self) -> &'static str {
        "saturate"
    }
    fn description(&self) -> &'static str {
        "equality saturation (egg) over each graph and body with the named rule table; cost-based extraction"
    }
    fn configure(&mut self, inst: &PassOptions) {
        self.dump_egraph = inst.dump_egraph;
        if let Some(l) = &inst.saturate_limits {
            self.limits = l.clone();
        }
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, String> {
        let mut report = PassReport::default();
        self.saturate_graph(g, None, "graph", &mut report)?;
        Ok(report)
    }
}
