//! The C runtime of a library compiled for several threads (`hlstmc compile --threads N`,
//! docs/c-abi.md): a pool of N - 1 worker threads started with the context, and the barrier
//! the generated code calls between dependent statements, as the JIT's `pool.rs` does in Rust.
//!
//! The generated object calls `NAME_rt_start(&ctx->pool)` from `NAME_context_create`,
//! `NAME_rt_run(pool, inputs, outputs, workspace, steps, resume)` from `NAME_run` and
//! `NAME_step` (the caller's thread runs part 0; the call returns when every part has
//! finished), `NAME_rt_usable(pool)` at the entry of every call (0, or nonzero in a `fork()`ed
//! child: `NAME_ERR_FORKED`), and `NAME_rt_stop(pool)` from `NAME_context_free`. The parts,
//! `NAME_kernel_0` to `NAME_kernel_{N-1}`, call `NAME_barrier(runtime)`. All of these symbols
//! are hidden: global within the object (so the CLI can link this runtime's object with the
//! Cranelift one into `NAME.o`), not exported from `libhlstmc_NAME.so`.
//!
//! Workers sleep on a condition variable between calls, so an idle context costs no CPU; a
//! call wakes them, and each spins (then yields) at barriers and the caller spins for their
//! completion, as a step is far shorter than a sleep. A run allocates nothing.
//!
//! `fork()` copies only the calling thread: a child's copy of a pool has no workers, and its
//! lock may have been copied held. So the pool records the process that started it; in another
//! process the context refuses to run (`NAME_rt_usable`), and `NAME_rt_stop` frees the copy's
//! memory without touching its lock or joining threads that are not there. A context created in
//! the child starts a pool of its own.

/// The C source of the runtime for library `name` (a C identifier) with `threads` parts.
pub fn c_source(name: &str, threads: usize) -> String {
    let kernels: Vec<String> = (0..threads).map(|i| format!("NAME_kernel_{i}")).collect();
    let decls: String = kernels
        .iter()
        .map(|k| format!("extern void {k}(const float *const *, float *const *, float *, int64_t, int64_t, void *) HIDDEN;\n"))
        .collect();
    TEMPLATE
        .replace("@THREADS@", &threads.to_string())
        .replace("@DECLS@", decls.trim_end())
        .replace("@KERNELS@", &kernels.join(", "))
        .replace("NAME_", &format!("{name}_"))
}

const TEMPLATE: &str = r#"/* The thread pool and barrier of a library compiled by hlstmc with --threads @THREADS@.
 * Generated; do not edit. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define HIDDEN __attribute__((visibility("hidden")))
#define THREADS @THREADS@
/* Spins of a waiting thread before it yields its core (as the JIT's pool). */
#define SPIN_LIMIT 2048

typedef void (*kernel_fn)(const float *const *, float *const *, float *, int64_t, int64_t,
                          void *);
@DECLS@
static const kernel_fn KERNELS[THREADS] = {@KERNELS@};

/* What the parts share during a call: the barrier (a count of arrivals and a generation the
 * last arrival bumps). Its address is the `runtime` argument of every part. */
struct barrier {
    atomic_size_t arrived;
    atomic_size_t generation;
};

struct job {
    const float *const *ins;
    float *const *outs;
    float *work;
    int64_t steps, resume;
};

struct worker {
    struct pool *pool;
    int index;
};

struct pool {
    struct barrier barrier;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    uint64_t generation; /* of the job, under `lock` */
    int quit;            /* under `lock` */
    struct job job;      /* under `lock` */
    atomic_size_t finished;
    int started;         /* workers started */
    pid_t pid;           /* the process whose threads these are (fork copies none) */
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
};

static void wait_a_little(unsigned *spins) {
    if (++*spins < SPIN_LIMIT) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

HIDDEN void NAME_barrier(void *rt) {
    struct barrier *b = rt;
    size_t generation = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) + 1 == THREADS) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_acq_rel);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == generation)
        wait_a_little(&spins);
}

static void run_part(struct pool *p, int index, struct job j) {
    KERNELS[index](j.ins, j.outs, j.work, j.steps, j.resume, &p->barrier);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->pool;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->generation == seen && !p->quit) pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        seen = p->generation;
        struct job j = p->job;
        pthread_mutex_unlock(&p->lock);
        run_part(p, w->index, j);
        atomic_fetch_add_explicit(&p->finished, 1, memory_order_release);
    }
}

HIDDEN void NAME_rt_stop(void *pool);

HIDDEN int NAME_rt_start(void **slot) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return 1;
    p->pid = getpid();
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return 1;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return 1;
    }
    for (int i = 1; i < THREADS; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->workers[i]) != 0) {
            NAME_rt_stop(p);
            return 1;
        }
        p->started = i;
    }
    *slot = p;
    return 0;
}

HIDDEN void NAME_rt_run(void *pool, const float *const *ins, float *const *outs, float *work,
                        int64_t steps, int64_t resume) {
    struct pool *p = pool;
    struct job j = {ins, outs, work, steps, resume};
    atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    p->job = j;
    p->generation++;
    pthread_mutex_unlock(&p->lock);
    pthread_cond_broadcast(&p->wake);
    run_part(p, 0, j);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->finished, memory_order_acquire) + 1 < THREADS)
        wait_a_little(&spins);
}

/* 0 when the pool's threads are in this process; 1 in a forked child. */
HIDDEN int NAME_rt_usable(void *pool) {
    const struct pool *p = pool;
    return p->pid != getpid();
}

HIDDEN void NAME_rt_stop(void *pool) {
    struct pool *p = pool;
    if (!p) return;
    if (p->pid != getpid()) {
        /* A forked child's copy: no threads to join, and the lock may be held by a thread
         * that exists only in the parent. Only the memory is this process's. */
        free(p);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_mutex_unlock(&p->lock);
    pthread_cond_broadcast(&p->wake);
    for (int i = 1; i <= p->started; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_parts_and_prefixes_every_symbol() {
        let c = c_source("m1", 3);
        assert!(c.contains(
            "static const kernel_fn KERNELS[THREADS] = {m1_kernel_0, m1_kernel_1, m1_kernel_2};"
        ));
        assert!(c.contains("#define THREADS 3"));
        assert!(c.contains("HIDDEN void m1_barrier(void *rt)"));
        assert!(c.contains("HIDDEN int m1_rt_usable(void *pool)"));
        assert!(!c.contains("NAME_"));
    }
}
