//! hlstmc-fuzz: mutates the fixture models and runs each mutant through import, the default
//! pipeline, the reference interpreter and the JIT in a worker process with a time and memory
//! budget (the fork-server shape of AFL and libFuzzer's fork mode). A crash, a hang, a panic or
//! engines that disagree on a model that imported is a failure: the mutant is saved with the
//! reason, the worker is restarted and the run goes on. See docs/fuzzing.md.

mod minimize;
mod mutate;
mod worker;

use clap::Parser;
use mutate::{Rng, Seed};
use protobuf::Message;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::Verdict;

#[derive(Parser, Debug)]
#[command(
    name = "hlstmc-fuzz",
    about = "Fuzzes hlstmc with mutated ONNX models (docs/fuzzing.md)"
)]
pub(crate) struct Args {
    /// Mutants to run.
    #[arg(long, default_value_t = 1000)]
    cases: usize,
    /// Seed of the mutants: the same seed and case number always give the same mutant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The first case number (to continue a run, or to run one case of a failure report again).
    #[arg(long, default_value_t = 0)]
    start: usize,
    /// Seconds a case may take before the worker is killed and the case counts as a hang (after
    /// one retry with three times as long, which absorbs a loaded machine).
    #[arg(long, default_value_t = 10.0)]
    time_per_case: f64,
    /// Address space of the worker, in MiB (setrlimit RLIMIT_AS).
    #[arg(long, default_value_t = 4096)]
    memory_per_case: u64,
    /// Where failing mutants are written, each with a .txt giving the reason.
    #[arg(long, default_value = "fuzz-failures")]
    save: PathBuf,
    /// Folders of seed models (*.onnx, searched recursively); each folder is drawn equally often.
    /// Default: tests/fixtures/models, tests/fixtures/extra and tests/fixtures/onnx-node.
    #[arg(long)]
    corpus: Vec<PathBuf>,
    /// Workers running at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Runs one saved mutant in a worker under the same budgets and prints its verdict.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Shrinks a saved failing mutant: drops nodes, initializers, inputs, outputs and
    /// attributes while it fails the same way, and writes the result beside it (.min.onnx).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    minimize: Option<PathBuf>,
    /// Runs the same replay in this process (a panic's backtrace, a debugger).
    #[arg(long, requires = "replay")]
    in_process: bool,
    /// Internal: serve cases on standard input.
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mem = args.memory_per_case.saturating_mul(1 << 20);
    if args.worker {
        return match worker::serve(mem) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::from(3)
            }
        };
    }
    let result = match (&args.replay, &args.minimize) {
        (Some(file), _) => replay(&args, file),
        (None, Some(file)) => minimize::minimize(&args, file),
        (None, None) => fuzz(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A worker process and the channel its answers arrive on.
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<Option<String>>,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

/// What a crashed worker left on standard error that is kept for the report.
const TAIL: usize = 2048;

impl Worker {
    fn spawn(memory_mib: u64) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args(["--worker", "--memory-per-case", &memory_mib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("worker pipes missing".into());
        };
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Some(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            // End of the answers: the worker exited or died.
            let _ = tx.send(None);
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut t) = tail.lock() {
                    t.extend(&buf[..n]);
                    let extra = t.len().saturating_sub(TAIL);
                    t.drain(..extra);
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            answers,
            stderr_tail,
            stderr_reader: Some(stderr_reader),
        })
    }

    /// Runs one case: the verdict, or why the worker gave none (it is dead afterwards).
    fn run(&mut self, bytes: &[u8], limit: Duration) -> Result<Verdict, Lost> {
        if let Some(t) = self.stderr_tail.lock().ok().as_mut() {
            t.clear();
        }
        let len = (bytes.len() as u32).to_le_bytes();
        let sent = self
            .stdin
            .write_all(&len)
            .and_then(|_| self.stdin.write_all(bytes));
        let sent = sent.and_then(|_| self.stdin.flush());
        let answer = match sent {
            Ok(()) => self.answers.recv_timeout(limit),
            // A broken pipe: the worker is gone; its status says why.
            Err(_) => Ok(None),
        };
        match answer {
            Ok(Some(line)) => Ok(Verdict::parse(&line)),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => Err(Lost::Crash(self.death())),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(Lost::Timeout)
            }
        }
    }

    /// How the worker died, with the end of what it wrote to standard error.
    fn death(&mut self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait();
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let tail: Vec<u8> = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let how = match status {
            Ok(s) => match s.signal() {
                Some(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
                None => format!("exited with {s}"),
            },
            Err(e) => format!("status unknown: {e}"),
        };
        format!("worker {how}; its last words: {last:?}")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Lost {
    Crash(String),
    Timeout,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT: an abort, such as a failed allocation",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        _ => "other",
    }
}

/// Counts for the summary.
#[derive(Default)]
struct Stats {
    cases: usize,
    imported: usize,
    compared: usize,
    skipped_non_finite: usize,
    slow: usize,
    rejected: BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// A case's mutant: the same (seed, case) gives the same bytes on every machine.
fn case_rng(seed: u64, case: usize) -> Rng {
    Rng::seed_from_u64(seed ^ (case as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Runs a case in `w` (restarting it as needed): its verdict, or the failure it came to.
pub(crate) fn run_one(
    w: &mut Option<Worker>,
    bytes: &[u8],
    args: &Args,
    slow: &mut bool,
) -> Result<Verdict, String> {
    let base = Duration::from_secs_f64(args.time_per_case.max(0.01));
    for (attempt, limit) in [base, base * 3].into_iter().enumerate() {
        if w.is_none() {
            *w = Some(Worker::spawn(args.memory_per_case)?);
        }
        let Some(worker) = w.as_mut() else {
            return Err("no worker".into());
        };
        match worker.run(bytes, limit) {
            Ok(v) => {
                *slow = attempt > 0;
                return Ok(v);
            }
            Err(Lost::Crash(why)) => {
                *w = None;
                return Ok(Verdict::Failure(format!("crash: {why}")));
            }
            Err(Lost::Timeout) => *w = None,
        }
    }
    Ok(Verdict::Failure(format!(
        "hang: no answer within {:.1} s, nor within {:.1} s on a fresh worker",
        base.as_secs_f64(),
        3.0 * base.as_secs_f64()
    )))
}

fn fuzz(args: &Args) -> Result<bool, String> {
    let seeds = Arc::new(load_corpus(args)?);
    let ops = Arc::new(mutate::op_pool(&seeds.iter().flatten().collect::<Vec<_>>()));
    let total: usize = seeds.iter().map(Vec::len).sum();
    eprintln!(
        "hlstmc-fuzz: {} cases from case {}, seed {}, {} seed models in {} folders, {} job(s), {:.1} s and {} MiB per case",
        args.cases,
        args.start,
        args.seed,
        total,
        seeds.len(),
        args.jobs.max(1),
        args.time_per_case,
        args.memory_per_case
    );
    let stats = Arc::new(Mutex::new(Stats::default()));
    let next = Arc::new(AtomicUsize::new(args.start));
    let end = args.start.saturating_add(args.cases);
    let started = Instant::now();
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.max(1) {
            s.spawn(|| {
                let mut w: Option<Worker> = None;
                loop {
                    let case = next.fetch_add(1, Ordering::SeqCst);
                    if case >= end {
                        break;
                    }
                    let mut rng = case_rng(args.seed, case);
                    let m = mutate::mutant(&seeds, &ops, &mut rng);
                    let mut slow = false;
                    let v = match run_one(&mut w, &m.bytes, args, &mut slow) {
                        Ok(v) => v,
                        Err(e) => {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(e);
                            }
                            break;
                        }
                    };
                    if let Verdict::Failure(why) = &v {
                        let saved = save(args, case, &m, why);
                        eprintln!("FAILURE case {case}: {why}\n  {saved}");
                    }
                    let Ok(mut st) = stats.lock() else { break };
                    record(&mut st, case, &v, slow);
                    if st.cases % 500 == 0 {
                        let rate = st.cases as f64 / started.elapsed().as_secs_f64();
                        eprintln!(
                            "  {} cases, {} failures, {rate:.1} cases/s",
                            st.cases,
                            st.failures.len()
                        );
                    }
                }
            });
        }
    });
    if let Some(e) = errors.lock().ok().and_then(|e| e.first().cloned()) {
        return Err(e);
    }
    let st = stats.lock().map_err(|_| "statistics lost".to_string())?;
    summary(&st, started.elapsed());
    Ok(st.failures.is_empty())
}

fn record(st: &mut Stats, case: usize, v: &Verdict, slow: bool) {
    st.cases += 1;
    st.slow += slow as usize;
    match v {
        Verdict::Agree { compared } => {
            st.imported += 1;
            if *compared {
                st.compared += 1;
            } else {
                st.skipped_non_finite += 1;
            }
        }
        Verdict::Rejected(k) => {
            st.imported += !k.starts_with("import") as usize;
            *st.rejected.entry(k.clone()).or_default() += 1;
        }
        Verdict::Failure(why) => {
            st.imported += 1;
            st.failures.push(format!("case {case}: {why}"));
        }
    }
}

fn summary(st: &Stats, took: Duration) {
    let secs = took.as_secs_f64();
    println!("cases:                    {}", st.cases);
    println!("imported:                 {}", st.imported);
    println!("ran and agreed:           {}", st.compared);
    // Not compared: a reference output that is not finite, or constants beyond 1e3 (worker.rs).
    println!("ran, not compared:        {}", st.skipped_non_finite);
    println!(
        "rejected with an error:   {}",
        st.rejected.values().sum::<usize>()
    );
    for (k, n) in &st.rejected {
        println!("  {n:>8}  {k}");
    }
    println!("slow (passed on retry):   {}", st.slow);
    println!("failures:                 {}", st.failures.len());
    for f in &st.failures {
        println!("  {f}");
    }
    println!(
        "time:                     {secs:.1} s ({:.1} cases/s)",
        st.cases as f64 / secs.max(1e-9)
    );
}

/// Writes a failing mutant and its report; returns where, or why it could not.
fn save(args: &Args, case: usize, m: &mutate::Mutant, why: &str) -> String {
    let stem = args.save.join(format!("seed{}-case{case}", args.seed));
    let report = format!(
        "reason: {why}\nseed: {}\ncase: {case}\nseed model: {}\nmutations:\n{}\nreplay: hlstmc-fuzz --replay {}.onnx\n",
        args.seed,
        m.seed_name,
        m.steps
            .iter()
            .map(|s| format!("  {s}\n"))
            .collect::<String>(),
        stem.display()
    );
    let written = std::fs::create_dir_all(&args.save)
        .and_then(|_| std::fs::write(stem.with_extension("onnx"), &m.bytes))
        .and_then(|_| std::fs::write(stem.with_extension("txt"), report));
    match written {
        Ok(()) => format!("saved as {}.onnx", stem.display()),
        Err(e) => format!("could not be saved in {}: {e}", args.save.display()),
    }
}

fn replay(args: &Args, file: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let v = if args.in_process {
        worker::run_case(&bytes)
    } else {
        let mut w = None;
        let mut slow = false;
        run_one(&mut w, &bytes, args, &mut slow)?
    };
    println!("{}", v.line());
    Ok(!matches!(v, Verdict::Failure(_)))
}

/// The seed models, by folder.
fn load_corpus(args: &Args) -> Result<Vec<Vec<Seed>>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs: Vec<PathBuf> = if args.corpus.is_empty() {
        ["models", "extra", "onnx-node"]
            .iter()
            .map(|d| root.join("tests/fixtures").join(d))
            .collect()
    } else {
        args.corpus.clone()
    };
    let mut out = Vec::new();
    for dir in dirs {
        let mut files = Vec::new();
        onnx_files(&dir, &mut files).map_err(|e| format!("corpus {}: {e}", dir.display()))?;
        files.sort();
        let mut seeds = Vec::new();
        for f in files {
            let bytes =
                std::fs::read(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let model = onnx_protobuf::ModelProto::parse_from_bytes(&bytes)
                .map_err(|e| format!("seed {} does not decode: {e}", f.display()))?;
            let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
            seeds.push(Seed { name, bytes, model });
        }
        if seeds.is_empty() {
            return Err(format!("corpus {}: no .onnx files", dir.display()));
        }
        out.push(seeds);
    }
    Ok(out)
}

fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            onnx_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "onnx") {
            out.push(p);
        }
    }
    Ok(())
}
