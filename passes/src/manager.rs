//! The pass manager: runs named passes in order, with the instrumentation LLVM and MLIR users
//! know: --print-before/--print-after/--print-after-all, --dump-dir, --time-passes, --stats and
//! --verify-each.

use crate::pass::{Pass, PassOptions, PassReport};
use hlstm_ir::Graph;
use hlstm_ir::stats::graph_stats;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which instrumentation to apply; the defaults print nothing.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    pub print_before: Vec<String>,
    pub print_after: Vec<String>,
    pub print_after_all: bool,
    pub dump_dir: Option<PathBuf>,
    pub time_passes: bool,
    pub stats: bool,
    pub verify_each: bool,
    /// Write each saturation run's e-graph as Graphviz text into the dump folder.
    pub dump_egraph: bool,
    /// Limits for equality saturation (the defaults when None).
    pub saturate_limits: Option<crate::saturate::Limits>,
    /// Tolerances for --verify-each (the same rule as `run --test-data`).
    pub rtol: f64,
    pub atol: f64,
}

/// Size and cost of a graph, before and after each pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub nodes: usize,
    pub weights: usize,
    pub nonzeros: usize,
    pub macs_nonzero: f64,
}

impl Snapshot {
    pub fn of(g: &Graph) -> Snapshot {
        let st = graph_stats(g);
        let mut nodes = 0;
        g.walk(&mut |_, _, _| nodes += 1);
        Snapshot {
            nodes,
            weights: st.params_dense,
            nonzeros: st.params_nonzero,
            macs_nonzero: st.macs_per_step_nonzero,
        }
    }
}

/// One pass's entry in the log.
#[derive(Clone, Debug)]
pub struct PassRun {
    pub name: String,
    pub time: Duration,
    /// Size and cost before and after the pass (zero unless statistics were asked for).
    pub before: Snapshot,
    pub after: Snapshot,
    pub report: PassReport,
}

#[derive(Clone, Debug, Default)]
pub struct PipelineLog {
    pub runs: Vec<PassRun>,
}

pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    pub inst: Instrumentation,
}

impl PassManager {
    /// A manager for the named passes, in order; unknown names are an error listing the known.
    pub fn new(names: &[&str], inst: Instrumentation) -> Result<PassManager, String> {
        let mut passes = Vec::new();
        for n in names {
            let mut p = crate::registry::lookup(n).ok_or_else(|| {
                format!(
                    "unknown pass '{n}'; the passes are: {}",
                    crate::registry::pass_names().join(", ")
                )
            })?;
            p.configure(&PassOptions {
                dump_egraph: inst.dump_egraph,
                saturate_limits: inst.saturate_limits.clone(),
            });
            passes.push(p);
        }
        for p in inst.print_before.iter().chain(&inst.print_after) {
            if crate::registry::lookup(p).is_none() {
                return Err(format!(
                    "unknown pass '{p}' in a --print-before/--print-after flag"
                ));
            }
        }
        Ok(PassManager { passes, inst })
    }

    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs the pipeline; dumps go to `err` (stderr in the CLI) and to the dump folder.
    pub fn run(&self, g: &mut Graph, err: &mut dyn Write) -> Result<PipelineLog, String> {
        let mut log = PipelineLog::default();
        if let Some(dir) = &self.inst.dump_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write_file(dir, "00-input.hir", &hlstm_ir::text::print(g))?;
        }
        for (i, pass) in self.passes.iter().enumerate() {
            let name = pass.name();
            if self.inst.print_before.iter().any(|p| p == name) {
                dump(err, &format!("IR Dump Before {name}"), g);
            }
            // Statistics cost a walk over every weight: only when asked for.
            let before = if self.inst.stats {
                Snapshot::of(g)
            } else {
                Snapshot::default()
            };
            let reference = if self.inst.verify_each {
                Some(g.clone())
            } else {
                None
            };
            let start = Instant::now();
            let report = pass
                .run(g)
                .map_err(|e| format!("pass '{name}' failed: {e}"))?;
            let time = start.elapsed();
            if hlstm_ir::timing::recording() {
                hlstm_ir::timing::add(format!("optimize/{name}"), time);
            }
            if let Some(reference) = reference {
                hlstm_ir::verify::verify(g).map_err(|e| {
                    format!("--verify-each: after pass '{name}' the graph is ill-formed: {e}")
                })?;
                crate::verify_each::same_numbers(&reference, g, self.inst.rtol, self.inst.atol)
                    .map_err(|e| {
                        format!("--verify-each: pass '{name}' changed the numbers: {e}")
                    })?;
            }
            if self.inst.print_after_all || self.inst.print_after.iter().any(|p| p == name) {
                dump(err, &format!("IR Dump After {name}"), g);
            }
            if let Some(dir) = &self.inst.dump_dir {
                write_file(
                    dir,
                    &format!("{:02}-{name}.hir", i + 1),
                    &hlstm_ir::text::print(g),
                )?;
                for (suffix, text) in &report.artifacts {
                    let file = format!("{:02}-{name}.{suffix}", i + 1);
                    write_file(dir, &file, text)?;
                    if suffix.ends_with(".dot") {
                        render_svg(&dir.join(&file), err);
                    }
                }
            }
            let after = if self.inst.stats {
                Snapshot::of(g)
            } else {
                Snapshot::default()
            };
            log.runs.push(PassRun {
                name: name.to_string(),
                time,
                before,
                after,
                report,
            });
        }
        if self.inst.time_passes {
            let _ = err.write_all(time_table(&log).as_bytes());
        }
        if self.inst.stats {
            let _ = err.write_all(stats_table(&log).as_bytes());
        }
        Ok(log)
    }
}

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Renders a Graphviz file to SVG beside it when the `dot` program is installed; says so once
/// when it is not.
fn render_svg(dot_file: &std::path::Path, err: &mut dyn Write) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let svg = dot_file.with_extension("svg");
    match std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(dot_file)
        .arg("-o")
        .arg(&svg)
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => {
            let _ = writeln!(err, "warning: dot failed ({s}) on {}", dot_file.display());
        }
        Err(_) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                let _ = writeln!(
                    err,
                    "note: the `dot` program (Graphviz) is not installed; e-graphs are written as .dot only"
                );
            }
        }
    }
}

fn dump(err: &mut dyn Write, title: &str, g: &Graph) {
    let _ = writeln!(err, "// *** {title} ***");
    let _ = err.write_all(hlstm_ir::text::print(g).as_bytes());
    let _ = writeln!(err);
}

pub fn time_table(log: &PipelineLog) -> String {
    let total: Duration = log.runs.iter().map(|r| r.time).sum();
    let mut s = String::from(
        "===-------------------------------------------------------------------------===\n",
    );
    let _ = writeln!(s, "                         Pass execution timing report");
    let _ = writeln!(s, "  Total: {:.3} ms", total.as_secs_f64() * 1e3);
    let _ = writeln!(s, "  {:>10}  {:>6}  pass", "time (ms)", "%");
    for r in &log.runs {
        let pct = if total.is_zero() {
            0.0
        } else {
            100.0 * r.time.as_secs_f64() / total.as_secs_f64()
        };
        let _ = writeln!(
            s,
            "  {:>10.3}  {:>5.1}%  {}",
            r.time.as_secs_f64() * 1e3,
            pct,
            r.name
        );
    }
    s
}

pub fn stats_table(log: &PipelineLog) -> String {
    let mut s = String::from("Pass statistics (before -> after):\n");
    let _ = writeln!(
        s,
        "  {:<22} {:>15} {:>19} {:>19} {:>21}",
        "pass", "nodes", "weights", "nonzeros", "macs/step nonzero"
    );
    for r in &log.runs {
        let (b, a) = (r.before, r.after);
        let _ = writeln!(
            s,
            "  {:<22} {:>7}->{:<7} {:>9}->{:<9} {:>9}->{:<9} {:>10}->{:<10}",
            r.name,
            b.nodes,
            a.nodes,
            b.weights,
            a.weights,
            b.nonzeros,
            a.nonzeros,
            b.macs_nonzero.round(),
            a.macs_nonzero.round()
        );
        for (k, v) in &r.report.counters {
            let _ = writeln!(s, "      {k}: {v}");
        }
        for n in &r.report.notes {
            let _ = writeln!(s, "      {n}");
        }
    }
    s
}
