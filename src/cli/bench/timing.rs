//! How `bench` times calls: warm-up, then single timed calls or rounds of calls, summarized
//! by median, minimum, 90th percentile and maximum.

use anyhow::Result;
use std::time::{Duration, Instant};

/// Default runs: timed calls until they add up to this, within [MIN_RUNS, MAX_RUNS].
pub const RUNS_BUDGET: Duration = Duration::from_secs(1);
pub const MIN_RUNS: u64 = 10;
pub const MAX_RUNS: u64 = 100_000;
/// Default --iters: calls for about this much time per round.
pub const ROUND_BUDGET: Duration = Duration::from_millis(200);
/// Default --rounds when --iters is given alone.
pub const DEFAULT_ROUNDS: u64 = 5;

/// How the timed calls are grouped into measurements.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// Each call is one measurement; None: until RUNS_BUDGET, within [MIN_RUNS, MAX_RUNS].
    Runs(Option<u64>),
    /// Rounds of `iters` calls (None: sized from the last warm-up call).
    Rounds { rounds: u64, iters: Option<u64> },
}

/// Median, min, p90 (nearest rank) and max of a non-empty list.
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub p90: f64,
    pub max: f64,
}

pub fn summarize(mut xs: Vec<f64>) -> Summary {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    let p90 = xs[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Summary {
        median,
        min: xs[0],
        p90,
        max: xs[n - 1],
    }
}

/// Runs the warm-up and the timed calls; returns the per-call microseconds of each measurement,
/// and the calls per measurement.
pub fn measure(
    call: &mut dyn FnMut() -> Result<()>,
    warmup: u64,
    plan: Plan,
) -> Result<(Vec<f64>, u64)> {
    let mut last = None;
    // Rounds sized from a call need at least one untimed call.
    let sizing = matches!(plan, Plan::Rounds { iters: None, .. });
    let warmup = if sizing { warmup.max(1) } else { warmup };
    for _ in 0..warmup {
        let t = Instant::now();
        call()?;
        last = Some(t.elapsed());
    }
    match plan {
        Plan::Runs(n) => {
            let mut us = Vec::new();
            let mut total = Duration::ZERO;
            loop {
                let done = us.len() as u64;
                let more = match n {
                    Some(n) => done < n,
                    None => done < MIN_RUNS || (total < RUNS_BUDGET && done < MAX_RUNS),
                };
                if !more {
                    break;
                }
                let t = Instant::now();
                call()?;
                let d = t.elapsed();
                total += d;
                us.push(d.as_secs_f64() * 1e6);
            }
            Ok((us, 1))
        }
        Plan::Rounds { rounds, iters } => {
            let iters = iters
                .unwrap_or_else(|| {
                    let one = last.unwrap_or_default().max(Duration::from_nanos(1));
                    (ROUND_BUDGET.as_secs_f64() / one.as_secs_f64()).ceil() as u64
                })
                .max(1);
            let mut us = Vec::with_capacity(rounds as usize);
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..iters {
                    call()?;
                }
                us.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
            }
            Ok((us, iters))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank_p90() {
        let s = summarize((1..=10).rev().map(f64::from).collect());
        assert_eq!((s.min, s.median, s.p90, s.max), (1.0, 5.5, 9.0, 10.0));
        let s = summarize(vec![3.0]);
        assert_eq!((s.min, s.median, s.p90, s.max), (3.0, 3.0, 3.0, 3.0));
    }
}
