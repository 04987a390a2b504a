//! The threads of a program split across threads (`--threads`): a pool started with the
//! compiled program, and the barrier the generated code calls between dependent statements
//! (docs/kernels.md, "Threads").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A generated program function (`codegen::program_signature`).
pub(crate) type Entry =
    unsafe extern "C" fn(*const *const f32, *const *mut f32, *mut f32, i64, i64, *const Runtime);

/// Spins of a waiting thread before it yields its core: long enough to cover a step's
/// imbalance between threads, short enough not to starve a thread it waits for when the
/// machine has fewer free cores than threads.
const SPIN_LIMIT: u32 = 1 << 11;

/// What the threads of one program share at run time: a sense-free barrier (a count of
/// arrivals and a generation number that the last arrival bumps).
#[repr(C)]
pub struct Runtime {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    threads: usize,
}

impl Runtime {
    /// The runtime of a single-threaded program (which has no barrier to call).
    pub(crate) fn single() -> Runtime {
        Runtime {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            threads: 1,
        }
    }
}

/// The barrier the generated code calls (`codegen::BARRIER_SYMBOL`): spins until every thread
/// of the program has arrived. The release/acquire pair orders each thread's writes before the
/// barrier with every thread's reads after it.
pub(crate) extern "C" fn hlstm_barrier(rt: *const Runtime) {
    // SAFETY: the generated code passes the pointer it was called with: the program's
    // Runtime, alive for the whole call.
    let rt = unsafe { &*rt };
    let generation = rt.generation.load(Ordering::Acquire);
    if rt.arrived.fetch_add(1, Ordering::AcqRel) + 1 == rt.threads {
        rt.arrived.store(0, Ordering::Relaxed);
        rt.generation.fetch_add(1, Ordering::AcqRel);
        return;
    }
    let mut spins = 0u32;
    while rt.generation.load(Ordering::Acquire) == generation {
        spins += 1;
        if spins < SPIN_LIMIT {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// One call, as the workers see it (pointers as integers: they are only dereferenced by the
/// generated code during the call, which the caller waits for).
#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub ins: usize,
    pub outs: usize,
    pub work: usize,
    pub steps: i64,
    pub resume: i64,
}

struct Dispatch {
    generation: u64,
    job: Option<Job>,
    quit: bool,
}

/// The worker threads of a multi-threaded program (thread 0 is the caller).
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Shared {
    dispatch: Mutex<Dispatch>,
    wake: Condvar,
    finished: AtomicUsize,
    runtime: Runtime,
    entries: Vec<Entry>,
}

impl Pool {
    pub(crate) fn new(entries: Vec<Entry>) -> Pool {
        let threads = entries.len();
        let shared = Arc::new(Shared {
            dispatch: Mutex::new(Dispatch {
                generation: 0,
                job: None,
                quit: false,
            }),
            wake: Condvar::new(),
            finished: AtomicUsize::new(0),
            runtime: Runtime {
                arrived: AtomicUsize::new(0),
                generation: AtomicUsize::new(0),
                threads,
            },
            entries,
        });
        let workers = (1..threads)
            .map(|tid| {
                let sh = Arc::clone(&shared);
                std::thread::spawn(move || worker(&sh, tid))
            })
            .collect();
        Pool { shared, workers }
    }

    /// Runs `job` on every thread; returns when all have finished.
    pub(crate) fn run(&self, job: Job) {
        let sh = &self.shared;
        sh.finished.store(0, Ordering::Relaxed);
        {
            let mut d = sh.dispatch.lock().unwrap_or_else(|e| e.into_inner());
            d.generation += 1;
            d.job = Some(job);
        }
        sh.wake.notify_all();
        // SAFETY: as in `JitProgram::run_steps` (the pointers are live for this call).
        unsafe { call(sh.entries[0], job, &sh.runtime) };
        let mut spins = 0u32;
        while sh.finished.load(Ordering::Acquire) + 1 < sh.entries.len() {
            spins += 1;
            if spins < SPIN_LIMIT {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut d = self
                .shared
                .dispatch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            d.quit = true;
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(sh: &Shared, tid: usize) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut d = sh.dispatch.lock().unwrap_or_else(|e| e.into_inner());
            while d.generation == seen && !d.quit {
                d = sh.wake.wait(d).unwrap_or_else(|e| e.into_inner());
            }
            if d.quit {
                return;
            }
            seen = d.generation;
            d.job
        };
        if let Some(job) = job {
            // SAFETY: the caller of `Pool::run` keeps the job's pointers alive until every
            // worker has counted itself finished.
            unsafe { call(sh.entries[tid], job, &sh.runtime) };
        }
        sh.finished.fetch_add(1, Ordering::Release);
    }
}

/// Calls one thread's program on a job.
///
/// # Safety
/// The job's pointers must be valid for the program, as `JitProgram::run_steps` checks.
pub(crate) unsafe fn call(entry: Entry, job: Job, rt: &Runtime) {
    unsafe {
        entry(
            job.ins as *const *const f32,
            job.outs as *const *mut f32,
            job.work as *mut f32,
            job.steps,
            job.resume,
            rt,
        )
    }
}
