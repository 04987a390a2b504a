//! What `bench` prints: a text report, or one JSON object for tools.

use super::timing::{Plan, Summary};
use std::path::Path;
use std::time::Duration;

/// One benchmark's results.
pub struct Report<'a> {
    pub model: &'a Path,
    pub engine: &'static str,
    pub device: Option<&'a str>,
    pub threads: usize,
    pub test_data: bool,
    pub import: Duration,
    pub optimize: Duration,
    pub compile: Duration,
    /// The named phases of the three (`hlstm_ir::timing`).
    pub phases: &'a crate::cli::setup_time::Phases,
    /// With --cache-dir: `hit PATH`, `miss PATH`, `rebuilt PATH` or `not cached: why`.
    pub cache: Option<String>,
    pub plan: Plan,
    pub warmup: u64,
    pub runs: u64,
    pub iters: u64,
    pub summary: Summary,
    pub steps: Option<usize>,
    pub batch: usize,
    pub macs_per_call: f64,
}

impl Report<'_> {
    fn per_step(&self, us: f64) -> Option<f64> {
        self.steps.map(|t| us / t.max(1) as f64)
    }

    /// Nonzero GFLOP/s at the median: 2 flops per multiply-add.
    fn gflops(&self) -> f64 {
        2.0 * self.macs_per_call / (self.summary.median * 1e-6) / 1e9
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    pub fn print_json(&self) -> anyhow::Result<()> {
        let s = &self.summary;
        let mode = match self.plan {
            Plan::Runs(_) => "runs",
            Plan::Rounds { .. } => "rounds",
        };
        let mut obj = serde_json::json!({
            "model": self.model.display().to_string(),
            "engine": self.engine,
            "threads": self.threads,
            "inputs": if self.test_data { "test-data" } else { "random" },
            "import_ms": Self::ms(self.import),
            "optimize_ms": Self::ms(self.optimize),
            "compile_ms": Self::ms(self.compile),
            "setup_ms": Self::ms(self.import + self.optimize + self.compile),
            "phases": crate::cli::setup_time::json(self.phases),
            "mode": mode,
            "warmup": self.warmup,
            "runs": self.runs,
            "rounds": self.runs,
            "iters": self.iters,
            "median_us": s.median,
            "min_us": s.min,
            "p90_us": s.p90,
            "max_us": s.max,
            "steps": self.steps,
            "batch": self.batch,
            "median_us_per_step": self.per_step(s.median),
            "min_us_per_step": self.per_step(s.min),
            "p90_us_per_step": self.per_step(s.p90),
            "macs_nonzero_per_call": self.macs_per_call.round() as u64,
            "gflops": self.gflops(),
        });
        if let Some(d) = self.device {
            obj["device"] = serde_json::json!(d);
        }
        if let Some(c) = &self.cache {
            let (what, path) = c.split_once(' ').unwrap_or((c, ""));
            match what {
                "hit" | "miss" | "rebuilt" => {
                    obj["cache"] = serde_json::json!(what);
                    obj["cache_file"] = serde_json::json!(path);
                }
                _ => obj["cache"] = serde_json::json!(c),
            }
        }
        outln!("{obj}");
        Ok(())
    }

    pub fn print_text(&self) -> anyhow::Result<()> {
        let s = &self.summary;
        let step = |us: f64| match self.per_step(us) {
            Some(v) => format!("{v:.3}"),
            None => "n/a".to_string(),
        };
        let (engine, threads) = (self.engine, self.threads);
        outln!("model:    {}", self.model.display());
        let plural = if threads == 1 { "" } else { "s" };
        match self.device {
            Some(d) => outln!("engine:   {engine} on {d}"),
            None => outln!("engine:   {engine} ({threads} thread{plural})"),
        }
        outln!(
            "import:   {:.2} ms, optimize {:.2} ms",
            Self::ms(self.import),
            Self::ms(self.optimize)
        );
        outln!(
            "compile:  {:.2} ms (lowering and code generation)",
            Self::ms(self.compile)
        );
        if let Some(c) = &self.cache {
            outln!("cache:    {c}");
        }
        let (runs, warmup, iters) = (self.runs, self.warmup, self.iters);
        match self.plan {
            Plan::Runs(_) => outln!("timed:    {runs} calls after {warmup} warm-up calls"),
            Plan::Rounds { .. } => {
                outln!("timed:    {runs} rounds x {iters} calls after {warmup} warm-up calls")
            }
        }
        outln!(
            "per sequence: median {:.2} us  min {:.2}  p90 {:.2}  max {:.2}",
            s.median,
            s.min,
            s.p90,
            s.max
        );
        match self.steps {
            Some(t) => outln!(
                "per step (T={t}): median {} us  min {}  p90 {}",
                step(s.median),
                step(s.min),
                step(s.p90)
            ),
            None => outln!("per step: n/a (sequence length unknown)"),
        }
        outln!(
            "nonzero:  {:.0} multiply-adds per call, {:.3} GFLOP/s at the median",
            self.macs_per_call,
            self.gflops()
        );
        Ok(())
    }
}
