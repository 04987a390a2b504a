//! Benchmark (not a test): how long the default pipeline takes to optimize a large H-LSTM.
//!
//! Generates H-LSTMs with X=256, H=800, one hidden layer of width 800 per gate, T=50, batch 1,
//! dense and 97% pruned (magnitude), in the Scan, unrolled and torch-Gemm forms; imports each
//! with `hlstm_frontends::onnx::import_bytes`; runs the default pipeline several times on fresh
//! copies of the imported graph; prints the median time, the time of each pass, the saturation
//! stop reasons and the multiply-adds before and after; and writes the table into the
//! "Optimization time" section of BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p hlstm-bench --bin opt_time [-- --runs N --steps T --forms scan,unrolled,gemm --no-write --out FILE]
//! ```

use hlstm_bench::{
    Form, HlstmSpec, Pruning, ScanWeights, XSlicing, generate, live_macs, model_bytes,
};
use hlstm_passes::{DEFAULT_PIPELINE, Instrumentation, PassManager, PipelineLog};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const COMMAND: &str = "cargo run --release -p hlstm-bench --bin opt_time";
const SECTION: &str = "## Optimization time";

struct Options {
    runs: usize,
    steps: usize,
    forms: Vec<Form>,
    write: bool,
    out: PathBuf,
    /// /proc/loadavg when the benchmark started: other work on the machine skews the times.
    load: String,
}

fn parse_args() -> Options {
    let mut o = Options {
        runs: 3,
        steps: 50,
        forms: vec![
            Form::Scan(ScanWeights::Outer),
            Form::Unrolled(XSlicing::Gather),
            Form::TorchGemm,
        ],
        write: true,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md"),
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| usage("--runs N")),
            "--steps" => o.steps = value().parse().unwrap_or_else(|_| usage("--steps T")),
            "--forms" => {
                o.forms = value()
                    .split(',')
                    .map(|f| match f {
                        "scan" => Form::Scan(ScanWeights::Outer),
                        "unrolled" => Form::Unrolled(XSlicing::Gather),
                        "gemm" => Form::TorchGemm,
                        _ => usage("--forms takes scan, unrolled, gemm"),
                    })
                    .collect()
            }
            "--no-write" => o.write = false,
            "--out" => o.out = PathBuf::from(value()),
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if o.runs == 0 || o.steps == 0 {
        usage("--runs and --steps must be positive");
    }
    o
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("opt_time: {msg}");
    }
    eprintln!(
        "usage: {COMMAND} [-- --runs N] [--steps T] [--forms scan,unrolled,gemm] [--no-write] [--out FILE]"
    );
    std::process::exit(2)
}

/// One benchmark row.
struct Row {
    model: String,
    form: &'static str,
    params_nonzero: usize,
    independent: usize,
    macs_before: f64,
    macs_after: f64,
    import: Duration,
    times: Vec<Duration>,
    /// Per pass: (name, median time over the runs).
    passes: Vec<(String, Duration)>,
    /// The saturation notes of the last run (scope: stop reason, iterations, e-nodes).
    stops: Vec<String>,
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn bench(name: &str, spec: &HlstmSpec, form: Form, runs: usize) -> Row {
    let m = generate(spec);
    let count = live_macs(&m);
    let bytes = model_bytes(&m, spec.steps, spec.batch, form);
    let t0 = Instant::now();
    let graph = hlstm_frontends::onnx::import_bytes(&bytes, None)
        .unwrap_or_else(|e| panic!("{name} {}: import failed: {e}", form.name()));
    let import = t0.elapsed();
    let macs_before = hlstm_ir::stats::graph_stats(&graph).macs_per_step_nonzero;
    let mut optimized = graph.clone();
    let mut times = Vec::new();
    let mut logs: Vec<PipelineLog> = Vec::new();
    for _ in 0..runs {
        let pm = PassManager::new(DEFAULT_PIPELINE, Instrumentation::default())
            .expect("the default pipeline exists");
        let mut g = graph.clone();
        let mut sink = std::io::sink();
        let t = Instant::now();
        let log = pm
            .run(&mut g, &mut sink)
            .unwrap_or_else(|e| panic!("{name} {}: pipeline failed: {e}", form.name()));
        times.push(t.elapsed());
        logs.push(log);
        optimized = g;
    }
    let macs_after = hlstm_ir::stats::graph_stats(&optimized).macs_per_step_nonzero;
    let last = logs.last().expect("at least one run");
    let passes = last
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let t: Vec<Duration> = logs.iter().map(|l| l.runs[i].time).collect();
            (r.name.clone(), median(&t))
        })
        .collect();
    let stops = last
        .runs
        .iter()
        .filter(|r| r.name == "saturate")
        .flat_map(|r| r.report.notes.iter().cloned())
        .collect();
    Row {
        model: name.to_string(),
        form: form.name(),
        params_nonzero: count.nonzero_weights,
        independent: count.live_macs,
        macs_before,
        macs_after,
        import,
        times,
        passes,
        stops,
    }
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn machine() -> String {
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, `nproc` = {nproc}")
}

/// The commit measured, and whether the compiler's sources had uncommitted changes.
fn source() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let head = command_output("git", &["-C", root, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown commit".into());
    let dirty = command_output(
        "git",
        &[
            "-C",
            root,
            "status",
            "--porcelain",
            "--",
            "ir",
            "frontends",
            "passes",
            "src",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("commit {head} with uncommitted changes in the compiler's sources")
    } else {
        format!("commit {head}")
    }
}

fn section(rows: &[Row], o: &Options) -> String {
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    let _ = writeln!(
        s,
        "Time for the default pipeline (`{}`) to optimize an H-LSTM with X=256 inputs, H=800 hidden \
         units, one ReLU hidden layer of width 800 in each gate, T={} steps, batch 1: dense, and \
         magnitude-pruned to 3% nonzero weights. Each model is imported once \
         (`hlstm_frontends::onnx::import_bytes`); the pipeline then runs {} times, each on a fresh \
         copy of the imported graph, and the table gives the median wall time of \
         `PassManager::run` (min and max in brackets), and how much of it the passes themselves \
         took (the rest is the pass manager's own work between passes). Multiply-adds are per time \
         step and batch row, from `graph_stats` on the imported and the optimized graph; the \
         independent count is `hlstm_bench::live_macs` on the weight arrays.\n",
        DEFAULT_PIPELINE.join(","),
        o.steps,
        o.runs
    );
    let _ = writeln!(s, "- command: `{COMMAND}`");
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(s, "- date: {date}");
    let _ = writeln!(s, "- source: {}", source());
    let _ = writeln!(s, "- load average when the run began: {}\n", o.load);
    let _ = writeln!(
        s,
        "| model | form | nonzero weights | nonzero macs/step before | after | independent count | import (ms) | optimize (ms), median [min, max] | of which in passes (ms) | slowest pass (ms) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|---:|---|");
    for r in rows {
        let min = r.times.iter().min().copied().unwrap_or_default();
        let max = r.times.iter().max().copied().unwrap_or_default();
        let slow = r
            .passes
            .iter()
            .max_by_key(|(_, t)| *t)
            .map(|(n, t)| format!("{n} {}", ms(*t)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} [{}, {}] | {} | {} |",
            r.model,
            r.form,
            r.params_nonzero,
            r.macs_before,
            r.macs_after,
            r.independent,
            ms(r.import),
            ms(median(&r.times)),
            ms(min),
            ms(max),
            ms(r.passes.iter().map(|(_, t)| *t).sum()),
            slow
        );
    }
    let _ = writeln!(s, "\nPer pass (median ms):\n");
    let names: Vec<&str> = rows
        .first()
        .map(|r| r.passes.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(s, "| model | form | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(names.len()));
    for r in rows {
        let cells: Vec<String> = r.passes.iter().map(|(_, t)| ms(*t)).collect();
        let _ = writeln!(s, "| {} | {} | {} |", r.model, r.form, cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\nSaturation stop reasons (one line per saturated graph level):\n"
    );
    for r in rows {
        for n in &r.stops {
            let _ = writeln!(s, "- {} {}: {n}", r.model, r.form);
        }
    }
    let _ = writeln!(s);
    let second = Duration::from_secs(1);
    let mut verdicts = Vec::new();
    for r in rows {
        let wall = median(&r.times);
        let in_passes: Duration = r.passes.iter().map(|(_, t)| *t).sum();
        let slow: Vec<String> = r
            .passes
            .iter()
            .filter(|(_, t)| *t * 10 >= second)
            .map(|(n, t)| format!("{n} {} ms", ms(*t)))
            .collect();
        if wall > second {
            verdicts.push(format!(
                "- **{} {}: over a second**: `PassManager::run` {} ms, of which the passes {} ms \
                 (passes over 100 ms: {}) and the pass manager's statistics snapshots the \
                 remaining {} ms.",
                r.model,
                r.form,
                ms(wall),
                ms(in_passes),
                if slow.is_empty() {
                    "none".to_string()
                } else {
                    slow.join(", ")
                },
                ms(wall.saturating_sub(in_passes))
            ));
        }
        if r.stops.iter().any(|n| n.contains("time limit")) {
            verdicts.push(format!(
                "- **{} {}: a saturation run stopped at the time limit** (see the stop reasons \
                 above).",
                r.model, r.form
            ));
        }
    }
    if verdicts.is_empty() {
        let _ = writeln!(
            s,
            "Every model optimizes in under a second, and every saturation run stops by \
             saturation or the iteration limit, never the time limit."
        );
    } else {
        for v in verdicts {
            let _ = writeln!(s, "{v}");
        }
        if !rows
            .iter()
            .any(|r| r.stops.iter().any(|n| n.contains("time limit")))
        {
            let _ = writeln!(s, "\nNo saturation run stopped at the time limit.");
        }
    }
    s
}

/// Replaces the section in BENCHMARKS.md (up to the next `## ` heading), or appends it; creates
/// the file with a title when it does not exist.
fn write_section(path: &PathBuf, text: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nNumbers measured on a real machine; each section names the command that \
         produced it. Rerun the command to update its section.\n"
            .to_string()
    });
    let new = match old.find(SECTION) {
        Some(start) => {
            let after = start + SECTION.len();
            let end = old[after..]
                .find("\n## ")
                .map_or(old.len(), |e| after + e + 1);
            format!("{}{}{}", &old[..start], text, &old[end..])
        }
        None => format!(
            "{}\n{}",
            old.trim_end_matches('\n').to_string() + "\n",
            text
        ),
    };
    std::fs::write(path, new)
}

fn main() {
    let o = parse_args();
    let mut rows = Vec::new();
    for (name, density) in [("dense", 1.0), ("97% pruned", 0.03)] {
        let spec = HlstmSpec {
            inputs: 256,
            hidden: 800,
            steps: o.steps,
            batch: 1,
            widths: std::array::from_fn(|_| vec![800]),
            density,
            pruning: Pruning::Magnitude,
            cut_neurons: 0,
            unused_inputs: 0,
            seed: 1,
        };
        for &form in &o.forms {
            eprintln!("opt_time: {name} {} ...", form.name());
            let r = bench(name, &spec, form, o.runs);
            eprintln!(
                "opt_time: {name} {}: median {} ms over {} runs; macs/step {:.0} -> {:.0} \
                 (independent count {}); passes: {}",
                form.name(),
                ms(median(&r.times)),
                r.times.len(),
                r.macs_before,
                r.macs_after,
                r.independent,
                r.passes
                    .iter()
                    .map(|(n, t)| format!("{n} {}", ms(*t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for n in &r.stops {
                eprintln!("opt_time:   saturate {n}");
            }
            rows.push(r);
        }
    }
    let text = section(&rows, &o);
    println!("{text}");
    if o.write {
        match write_section(&o.out, &text) {
            Ok(()) => eprintln!("opt_time: wrote the section to {}", o.out.display()),
            Err(e) => {
                eprintln!("opt_time: cannot write {}: {e}", o.out.display());
                std::process::exit(1);
            }
        }
    }
}
