#!/usr/bin/env python3
"""Times hlstmc's JIT, ONNX Runtime and tract on the same model files, side by side in the
same run, with one thread each (and two threads each for hlstmc and ONNX Runtime), at each batch
size the model folder holds.

    cargo build --release
    cargo run --release -p hlstm-bench --bin gen_bench_models -- target/bench-models
    python3 bench/compare_ort.py target/bench-models [--rounds 5] [--only REGEX] [--batches 1,16]
        [--threads 1,2] [--no-write]

Model files are `NAME.onnx` (batch 1) and `NAME_B{B}.onnx` (batch B, the same weights), as
gen_bench_models writes them; --only keeps the files whose name matches REGEX, --batches the
batch sizes listed, --threads 1 skips the two-thread columns. A quick run of the issue-18
target models:

    cargo run --release -p hlstm-bench --bin gen_bench_models -- target/bench-models --batches 1,16
    python3 bench/compare_ort.py target/bench-models --only 'hlstm_X(512|256)_H(512|800)_T(16|50)_sp97|lstm_X512_H512_T16_dense' --batches 1,16 --threads 1 --rounds 3 --no-write

For each model, in interleaved rounds (each round: ONNX Runtime 1 thread, hlstmc 1 thread, ONNX
Runtime 2 threads, hlstmc 2 threads, tract), every engine makes one measurement per round: a
few untimed warm-up calls, then single timed calls for about --budget seconds (at least 5), and
the median per-call time of those. The tables give the median over rounds of these medians, the
spread over rounds ((max - min) / median), and the ratios.

- ONNX Runtime: intra_op_num_threads = 1 or 2, inter_op_num_threads = 1, sequential execution,
  default graph optimizations, on the same random input hlstmc generates (the same SplitMix64
  generator and seed as `hlstmc bench`).
- hlstmc: `target/release/hlstmc bench MODEL --engine jit --threads N --warmup 3 --runs R --json`
  (the model imported, optimized, lowered and compiled once per call of the command; compile time
  is reported separately and not included). If hlstmc refuses `--threads 2` (non-zero exit), its
  two-thread column says "n/a (not supported yet)".
- tract: the Python package `tract` (PyPI; `pip install tract`), `tract.onnx().load(MODEL)
  .into_model().into_runnable()`, timed like ONNX Runtime on the same input. It has no thread
  pool: it runs on the calling thread (the script reports the CPU time / wall time of its timed
  calls to show it). Left out, with a note, when the package is not installed.

Distance from the machine's limit, per model: the limit time is
    recurrent nonzero multiply-adds x 2 / SCALAR_FMA_GFLOPS + other nonzero multiply-adds x 2 / SIMD_FMA_GFLOPS
for one whole sequence at batch 1, where "recurrent" are the multiply-adds inside the time loop
that depend on h (an LSTM op's R; an H-LSTM Scan body's matmuls on h and on anything computed
from h: the h rows of each gate's first layer and all of its later layers), and "other" are the
rest, the input projections that can be hoisted out of the loop (an LSTM's W; the x rows of the
first layers). At a batch B > 1 every nonzero weight meets B rows, which can share one broadcast
of it in a SIMD vector, so the limit is all multiply-adds x B x 2 / SIMD_FMA_GFLOPS. They are
counted from the weights in the ONNX file (nonzero entries only); the distance is hlstmc's
one-thread median / the limit time.

The section "## Run time: hlstmc JIT vs ONNX Runtime" of BENCHMARKS.md is replaced (or
appended) unless --no-write is given; writing needs at least 5 rounds.

Needs numpy, onnx and onnxruntime (and tract for its column); not part of `cargo test` or CI.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

try:
    import tract
except ImportError:  # its column is left out, with a note
    tract = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HLSTMC = os.path.join(ROOT, "target", "release", "hlstmc")
SECTION = "## Run time: hlstmc JIT vs ONNX Runtime"
MASK = (1 << 64) - 1

# The machine's limit (issue 4), for one core of a 2-core Zen 4 machine like CI's: the recurrent
# sparse work at the scalar FMA rate (2 FMA pipes x 2 flops x about 3.7 GHz), everything else at
# the 128-bit FMA peak (4 f32 lanes times that). Change these two for another machine.
SCALAR_FMA_GFLOPS = 14.7
SIMD_FMA_GFLOPS = 59.0

# Untimed calls before each measurement, and the fewest timed calls in one.
WARMUP = 3
MIN_CALLS = 5

# Issue 4's targets, one thread, batch 1, per whole sequence.
TARGETS = [
    # (model file, text, check on (hlstmc seconds, ORT seconds))
    ("hlstm_X512_H512_T16_sp97.onnx", "97%-pruned H-LSTM at 512: >= 10x faster than ONNX Runtime",
     lambda h, o: o / h >= 10.0),
    ("hlstm_X256_H800_T50_sp97.onnx", "97%-pruned H-LSTM at 800: >= 15x faster than ONNX Runtime",
     lambda h, o: o / h >= 15.0),
    ("lstm_X512_H512_T16_dense.onnx", "dense LSTM at 512: within 1.5x of ONNX Runtime (hlstmc / ORT <= 1.5)",
     lambda h, o: h / o <= 1.5),
]

# Issue 18's targets at batch 16, one thread: (model name without the batch suffix, text, check on
# (hlstmc b16 s, ORT b16 s, hlstmc b1 s)).
BATCH_TARGETS = [
    ("hlstm_X512_H512_T16_sp97", "97%-pruned H-LSTM 512, batch 16: >= 10x faster than ONNX Runtime",
     lambda h, o, h1: o / h >= 10.0),
    ("hlstm_X512_H512_T16_sp97", "97%-pruned H-LSTM 512: batch-16 time <= 4x batch-1 time",
     lambda h, o, h1: h1 is not None and h / h1 <= 4.0),
    ("hlstm_X256_H800_T50_sp97", "97%-pruned H-LSTM 800, batch 16: >= 8x faster than ONNX Runtime",
     lambda h, o, h1: o / h >= 8.0),
    ("hlstm_X256_H800_T50_sp97", "97%-pruned H-LSTM 800: batch-16 time <= 4x batch-1 time",
     lambda h, o, h1: h1 is not None and h / h1 <= 4.0),
    ("lstm_X512_H512_T16_dense", "dense LSTM 512, batch 16: within 1.5x of ONNX Runtime (hlstmc / ORT <= 1.5)",
     lambda h, o, h1: h / o <= 1.5),
]

NOT_SUPPORTED = "n/a (not supported yet)"
BATCH_RE = re.compile(r"^(.*?)(?:_B(\d+))?\.onnx$")


def split_name(f):
    """(name without the batch suffix, batch) of a gen_bench_models file name."""
    m = BATCH_RE.match(f)
    return m.group(1), int(m.group(2) or 1)


def natural(s):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def bench_inputs(shapes):
    """The values `hlstmc bench` feeds: hlstm_ir::interp::random_inputs with bench's seed, the
    project's SplitMix64 generator (ir/src/rng.rs), f32 uniform in [-1, 1) in input order."""
    state = 0x9E3779B97F4A7C15
    out = []
    for shape in shapes:
        n = int(np.prod(shape)) if shape else 1
        vals = np.empty(n, dtype=np.float32)
        for i in range(n):
            state = (state + 0x9E3779B97F4A7C15) & MASK
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            z ^= z >> 31
            u = np.float32((z >> 11) * (1.0 / (1 << 53)))
            vals[i] = np.float32(-1.0) + np.float32(2.0) * u
        out.append(vals.reshape(shape))
    return out


# ---------------------------------------------------------------------------------------------
# Work: nonzero multiply-adds per time step and batch row, recurrent and other.


def nnz(a):
    return int(np.count_nonzero(a))


def dims_of(vi):
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


class Work:
    def __init__(self):
        self.recurrent = 0  # nonzero multiply-adds per step and batch row that depend on h
        self.other = 0  # the rest (hoistable input projections)
        self.weights = 0  # nonzero weights counted
        self.unknown = []  # what could not be classified

    def add(self, w, recurrent):
        n = nnz(w)
        self.weights += n
        if recurrent:
            self.recurrent += n
        else:
            self.other += n


def scan_body_work(node, scope, work):
    """Classifies the matmuls of a Scan body by whether their data operand depends on a state."""
    body = next(a.g for a in node.attribute if a.name == "body")
    nscan = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
    scope = dict(scope)
    scope.update({t.name: numpy_helper.to_array(t) for t in body.initializer})
    states = [i.name for i in body.input[: len(body.input) - nscan]]
    widths = {i.name: (dims_of(i) or [None])[-1] for i in list(body.input) + list(body.value_info)}
    dep = set(states)
    producer = {}
    for n in body.node:
        for o in n.output:
            producer[o] = n
        if any(i in dep for i in n.input):
            dep.update(n.output)
    for n in body.node:
        if n.op_type == "MatMul" and n.input[1] in scope:
            w, a = scope[n.input[1]], n.input[0]
        elif n.op_type == "Gemm" and n.input[1] in scope:
            w, a = scope[n.input[1]], n.input[0]
            if any(at.name == "transB" and at.i for at in n.attribute):
                w = w.T
        elif n.op_type in ("MatMul", "Gemm"):
            work.unknown.append("%s %s: run-time weight" % (n.op_type, n.name))
            continue
        else:
            continue
        cat = producer.get(a)
        parts = list(cat.input) if cat is not None and cat.op_type == "Concat" else None
        if parts and all(widths.get(p) for p in parts) and sum(widths[p] for p in parts) == w.shape[0]:
            row = 0
            for p in parts:
                work.add(w[row: row + widths[p]], p in dep)
                row += widths[p]
        else:
            work.add(w, a in dep)


def model_work(path):
    """(T, B, Work) for the model file; T and B from its first input (time-major)."""
    m = onnx.load(path)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in inits]
    d = dims_of(real_inputs[0]) if real_inputs else []
    steps, batch = (d[0] or 1) if d else 1, (d[1] or 1) if len(d) > 1 else 1
    work = Work()
    for n in g.node:
        if n.op_type in ("LSTM", "GRU", "RNN"):
            if any(a.name == "layout" and a.i == 1 for a in n.attribute) and len(d) > 1:
                steps, batch = d[1] or 1, d[0] or 1
            if n.input[1] in inits and n.input[2] in inits:
                work.add(inits[n.input[1]], False)
                work.add(inits[n.input[2]], True)
            else:
                work.unknown.append("%s %s: run-time weights" % (n.op_type, n.name))
        elif n.op_type == "Scan":
            scan_body_work(n, inits, work)
        elif n.op_type in ("MatMul", "Gemm", "Loop"):
            work.unknown.append("%s %s outside a recurrence" % (n.op_type, n.name))
    return steps, batch, work


def limit_seconds(steps, batch, work):
    """One call's limit time: at batch 1 the recurrent work at the scalar rate; at batch B > 1
    all work at the SIMD rate (the B rows share each broadcast weight)."""
    if batch > 1:
        return (work.recurrent + work.other) * 2 * steps * batch / (SIMD_FMA_GFLOPS * 1e9)
    return (work.recurrent * 2 * steps / (SCALAR_FMA_GFLOPS * 1e9)
            + work.other * 2 * steps / (SIMD_FMA_GFLOPS * 1e9))


# ---------------------------------------------------------------------------------------------
# Engines. Each measurement returns the median per-call seconds, or raises RuntimeError.


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def calls_for(per_call, budget):
    return max(MIN_CALLS, int(budget / max(per_call, 1e-9) + 0.999))


def ort_measure(sess, feed, budget):
    for _ in range(WARMUP):
        t = time.perf_counter()
        sess.run(None, feed)
        one = time.perf_counter() - t
    times = []
    for _ in range(calls_for(one, budget)):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def last_line(p):
    return (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["exit %d" % p.returncode])[-1]


def hlstmc_bench(path, threads, runs, warmup=WARMUP):
    """The JSON of one `hlstmc bench` call; (None, message) if it exits non-zero."""
    cmd = [HLSTMC, "bench", path, "--engine", "jit", "--threads", str(threads),
           "--warmup", str(warmup), "--runs", str(runs), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, last_line(p)
    return json.loads(p.stdout.strip().splitlines()[-1]), None


class Hlstmc:
    """hlstmc with `threads` threads on one model: sized by a first call that also tells whether
    this build takes that many threads."""

    def __init__(self, path, threads, budget):
        self.path, self.threads = path, threads
        v, err = hlstmc_bench(path, threads, runs=3, warmup=1)
        self.error = err
        self.unsupported = err is not None and threads > 1
        self.info = v
        self.runs = calls_for(v["median_us"] * 1e-6, budget) if v else 0

    def measure(self):
        v, err = hlstmc_bench(self.path, self.threads, self.runs)
        if err:
            raise RuntimeError(err)
        return v["median_us"] * 1e-6


class Tract:
    """tract's Python package, on the calling thread, on the same feed as ONNX Runtime."""

    def __init__(self, path, feed_list):
        self.feed = feed_list
        self.cpu_wall = []  # CPU time / wall time of each measurement's timed calls
        try:
            self.runnable = tract.onnx().load(path).into_model().into_runnable()
        except Exception as e:  # tract.TractError and ctypes errors: noted in its column
            self.runnable, self.error = None, "tract: %s" % str(e).splitlines()[0][:200]
        else:
            self.error = None

    def outputs(self):
        return [o.to_numpy() for o in self.runnable.run(self.feed)]

    def measure(self, budget):
        if self.runnable is None:
            raise RuntimeError(self.error)
        try:
            for _ in range(WARMUP):
                t = time.perf_counter()
                self.runnable.run(self.feed)
                one = time.perf_counter() - t
            times = []
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls_for(one, budget)):
                t = time.perf_counter()
                self.runnable.run(self.feed)
                times.append(time.perf_counter() - t)
            self.cpu_wall.append((time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9))
        except Exception as e:
            raise RuntimeError("tract: %s" % str(e).splitlines()[0][:200])
        return statistics.median(times)


# ---------------------------------------------------------------------------------------------


def spread(xs):
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m * 100 if m > 0 else float("nan")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "?"


def ms(x):
    """Milliseconds, 4 significant digits."""
    return "%.4g" % (x * 1e3)


class Series:
    """One engine's measurements on one model over the rounds, or why there are none."""

    def __init__(self):
        self.times = []
        self.note = None

    def run(self, f):
        if self.note is not None:
            return
        try:
            self.times.append(f())
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.note = "error: " + str(e).replace("|", "\\|")

    def median(self):
        return statistics.median(self.times) if self.times and self.note is None else None

    def cell(self):
        m = self.median()
        return ms(m) if m is not None else (self.note or "-")

    def spread_cell(self):
        return "%.0f%%" % spread(self.times) if self.median() is not None else "-"


def ratio(a, b):
    return "%.2fx" % (a / b) if a is not None and b is not None and b > 0 else "-"


def parse_ints(text, what):
    try:
        v = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or any(x < 1 for x in v):
        raise argparse.ArgumentTypeError("%s: give a comma-separated list of integers >= 1" % what)
    return v


def output_check(tr, sess, feed):
    """A note when tract's outputs differ from ONNX Runtime's on the same input (None if equal
    within 1e-3 relative to the largest value, or not comparable)."""
    try:
        got = tr.outputs()
        want = sess.run(None, feed)
    except Exception as e:
        return "tract: %s" % str(e).splitlines()[0][:200]
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return "tract output shape %s, ONNX Runtime %s" % (g.shape, w.shape)
        scale = max(1.0, float(np.max(np.abs(w))) if w.size else 1.0)
        if w.size and float(np.max(np.abs(g - w))) > 1e-3 * scale:
            return "tract output differs from ONNX Runtime's by %.3g" % float(np.max(np.abs(g - w)))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="folder of .onnx models (gen_bench_models writes them)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (at least 5 to write BENCHMARKS.md)")
    ap.add_argument("--budget", type=float, default=0.2, help="seconds of timed calls per measurement")
    ap.add_argument("--only", help="time only the models whose file name matches this regex")
    ap.add_argument("--batches", type=lambda t: parse_ints(t, "--batches"),
                    help="time only these batch sizes (comma-separated; default: every file)")
    ap.add_argument("--threads", type=lambda t: parse_ints(t, "--threads"), default=[1, 2],
                    help="thread counts for hlstmc and ONNX Runtime: 1,2 (default) or 1")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not set(a.threads) <= {1, 2} or 1 not in a.threads:
        ap.error("--threads takes 1 or 1,2")
    if a.rounds < 5 and not a.no_write:
        ap.error("writing BENCHMARKS.md needs --rounds 5 or more (or use --no-write)")
    if not os.path.isdir(a.dir):
        ap.error("%s is not a folder (make it with gen_bench_models)" % a.dir)
    if not os.path.exists(HLSTMC):
        ap.error("%s does not exist: run `cargo build --release` first" % HLSTMC)
    two = 2 in a.threads
    command = "python3 " + " ".join(shlex.quote(x) for x in [os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    models = sorted(
        (f for f in os.listdir(a.dir)
         if f.endswith(".onnx") and (not a.only or re.search(a.only, f))
         and (not a.batches or split_name(f)[1] in a.batches)),
        key=lambda f: (natural(split_name(f)[0]), split_name(f)[1]),
    )
    if not models:
        ap.error("no .onnx model in %s%s" % (a.dir, " matches --only/--batches" if a.only or a.batches else ""))
    tract_version = tract.version() if tract else None
    if not tract:
        print("tract: the Python package is not installed (pip install tract); its column is left out", flush=True)
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"

    results = []
    for f in models:
        path = os.path.join(a.dir, f)
        base, fbatch = split_name(f)
        steps, batch, work = model_work(path)
        sess = {t: ort_session(path, t) for t in a.threads}
        ins = sess[1].get_inputs()
        feed = dict(zip([i.name for i in ins], bench_inputs([i.shape for i in ins])))
        hl = {t: Hlstmc(path, t, a.budget) for t in a.threads}
        s = {k: Series() for k in ("ort1", "hl1", "ort2", "hl2", "tract")}
        for t in a.threads:
            if hl[t].error:
                s["hl%d" % t].note = NOT_SUPPORTED if hl[t].unsupported and not hl[1].error else "error: " + hl[t].error.replace("|", "\\|")
        tr = Tract(path, [feed[i.name] for i in ins]) if tract else None
        if tr and tr.error is None:
            bad = output_check(tr, sess[1], feed)
            if bad:
                s["tract"].note = "error: " + bad.replace("|", "\\|")
        for _ in range(a.rounds):
            s["ort1"].run(lambda: ort_measure(sess[1], feed, a.budget))
            s["hl1"].run(hl[1].measure)
            if two:
                s["ort2"].run(lambda: ort_measure(sess[2], feed, a.budget))
                s["hl2"].run(hl[2].measure)
            if tr:
                s["tract"].run(lambda: tr.measure(a.budget))
        del sess
        r = dict(model=f, base=base, batch=batch, file_batch=fbatch, steps=steps, work=work, s=s,
                 hl_info=hl[1].info, hl2_note=hl[2].error if two else None,
                 tract_cpu=max(tr.cpu_wall) if tr and tr.cpu_wall else None)
        del tr
        results.append(r)
        print("%s: hlstmc %s%s ms, ORT %s%s ms (%s)%s" % (
            f, s["hl1"].cell(), (" / " + s["hl2"].cell()) if two else "",
            s["ort1"].cell(), (" / " + s["ort2"].cell()) if two else "",
            "1 / 2 threads" if two else "1 thread",
            (", tract " + s["tract"].cell() + " ms") if tract else ""), flush=True)

    text = report(a, results, command, loadavg, tract_version, two)
    if a.no_write:
        print()
        print(text)
        return
    bm = os.path.join(ROOT, "BENCHMARKS.md")
    old = open(bm).read() if os.path.exists(bm) else "# Benchmarks\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        rest = old[nxt + 1:] if nxt >= 0 else ""
        new = old[:start] + text + ("\n" + rest if rest else "")
    open(bm, "w").write(new)
    print("wrote", bm)


def report(a, results, command, loadavg, tract_version, two):
    """The BENCHMARKS.md section, as text."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "?"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if sh(["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    hl2_unsupported = two and any(r["s"]["hl2"].note == NOT_SUPPORTED for r in results)
    has_tract = tract_version is not None
    batches = sorted({r["batch"] for r in results})
    tract_cpu = [r["tract_cpu"] for r in results if r["tract_cpu"] is not None]
    lines = [
        SECTION,
        "",
        "Wall time of one call on a whole sequence (T steps, all B batch rows): `hlstmc bench --engine jit` (the model "
        "imported, optimized with the default pipeline, lowered and compiled with Cranelift once; "
        "compile time not included) against ONNX Runtime %s on the same file and the same random input "
        "(inter_op_num_threads=1, sequential execution, default graph optimizations)%s, with one "
        "thread each%s." % (
            ort.__version__,
            (" and tract %s (its Python package, which runs on the calling thread; same input)" % tract_version)
            if has_tract else "",
            " and two threads each (ONNX Runtime intra_op_num_threads=2, hlstmc `--threads 2`)" if two else ""),
        "Models (`gen_bench_models`): H-LSTMs in the Scan form, one ReLU hidden layer of width H per gate, "
        "and LSTMs (one ONNX LSTM op); dense or magnitude-pruned per matrix to 90%% (sp90) and 97%% (sp97) zeros; "
        "batch 1 (no suffix) and batch B (`_B{B}`) with the same weights. "
        "%d interleaved rounds per model (ONNX Runtime 1 thread, hlstmc 1 thread%s%s); in each round every engine makes %d "
        "untimed calls and then single timed calls "
        "for about %g s (at least %d) and reports their median. The tables give the median over rounds "
        "of these medians; speedup = other engine / hlstmc; spread = (max - min) / median over rounds." % (
            a.rounds, ", ONNX Runtime 2 threads, hlstmc 2 threads" if two else "", ", tract" if has_tract else "",
            WARMUP, a.budget, MIN_CALLS),
        "",
        "- command: `cargo build --release`; `cargo run --release -p hlstm-bench --bin gen_bench_models -- %s%s`; `%s`" % (
            a.dir, " --batches " + ",".join(map(str, batches)) if batches != [1, 16, 64] else "", command),
        "- machine: %s, `nproc` = %d (%s)" % (cpu, os.cpu_count(), platform.machine()),
        "- date: %s" % now,
        "- source: commit %s%s" % (commit, dirty),
        "- load average when the run began: %s" % loadavg,
        "- tract: %s" % (("%s (Python package; CPU time / wall time of its timed calls at most %.2f, i.e. one thread)" % (
            tract_version, max(tract_cpu))) if tract_cpu else (tract_version or "not installed")),
        "",
    ]
    head = "| model | nonzero weights | hlstmc 1T (ms) | ORT 1T (ms) | speedup 1T |"
    rule = "|---|---:|---:|---:|---:|"
    if two:
        head += " hlstmc 2T (ms) | ORT 2T (ms) | speedup 2T |"
        rule += "---:|---:|---:|"
    if has_tract:
        head += " tract 1T (ms) | speedup vs tract 1T |"
        rule += "---:|---:|"
    head += " spread hlstmc / ORT, 1T%s |" % ("; 2T" if two else "")
    rule += "---|"
    lines += [head, rule]
    for r in results:
        s = r["s"]
        row = [r["model"], r["work"].weights, s["hl1"].cell(), s["ort1"].cell(), ratio(s["ort1"].median(), s["hl1"].median())]
        if two:
            row += [s["hl2"].cell(), s["ort2"].cell(), ratio(s["ort2"].median(), s["hl2"].median())]
        if has_tract:
            row += [s["tract"].cell(), ratio(s["tract"].median(), s["hl1"].median())]
        sp = "%s / %s" % (s["hl1"].spread_cell(), s["ort1"].spread_cell())
        if two:
            sp += "; %s / %s" % (s["hl2"].spread_cell(), s["ort2"].spread_cell())
        row.append(sp)
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if hl2_unsupported:
        note = next(r["hl2_note"] for r in results if r["s"]["hl2"].note == NOT_SUPPORTED)
        lines += ["", "hlstmc 2T: this build refuses `--threads 2` (`%s`), so only ONNX Runtime was timed with two threads." % note]
    if not has_tract:
        lines += ["", "tract: its Python package is not installed (`pip install tract`), so it was not timed."]

    # Batches: per model and batch, one thread.
    by_key = {(r["base"], r["batch"]): r for r in results}
    bases = sorted({r["base"] for r in results}, key=natural)
    if len(batches) > 1 or batches != [1]:
        lines += [
            "",
            "Batches (one thread): per call = one whole sequence of T steps for all B rows; per row = per call / B; "
            "x batch 1 = this batch's per-call time / the same engine's batch-1 per-call time (B would be no gain "
            "from batching, 1 perfect); speedup = ONNX Runtime (or tract) / hlstmc at the same batch.",
            "",
            "| model | B | hlstmc per call (ms) | hlstmc per row (ms) | hlstmc x batch 1 | ORT per call (ms) | ORT per row (ms) | ORT x batch 1 | speedup vs ORT |%s" % (
                " tract per call (ms) | tract x batch 1 | speedup vs tract |" if has_tract else ""),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|%s" % ("---:|---:|---:|" if has_tract else ""),
        ]
        for b in bases:
            one = by_key.get((b, 1))
            for B in batches:
                r = by_key.get((b, B))
                if r is None:
                    continue
                s = r["s"]
                h, o = s["hl1"].median(), s["ort1"].median()
                h1 = one["s"]["hl1"].median() if one else None
                o1 = one["s"]["ort1"].median() if one else None
                row = [b, B, s["hl1"].cell(), ms(h / B) if h else "-", ratio(h, h1),
                       s["ort1"].cell(), ms(o / B) if o else "-", ratio(o, o1), ratio(o, h)]
                if has_tract:
                    t = s["tract"].median()
                    t1 = one["s"]["tract"].median() if one else None
                    row += [s["tract"].cell(), ratio(t, t1), ratio(t, h)]
                lines.append("| " + " | ".join(str(c) for c in row) + " |")

    lines += [
        "",
        "Distance from the machine's limit (one thread): at batch 1, limit = recurrent multiply-adds x 2 / %.1f GFLOP/s "
        "(the scalar FMA rate of one core of a 2-core Zen 4 machine like CI's) + other multiply-adds x 2 / "
        "%.0f GFLOP/s (its 128-bit FMA peak), for a whole sequence of T steps; at a batch B > 1, limit = all "
        "multiply-adds x B x 2 / %.0f GFLOP/s (the B rows can share each broadcast weight in a vector); distance = "
        "hlstmc 1T median / limit. Recurrent: the multiply-adds inside the time loop that depend on h (an LSTM's R; an H-LSTM's "
        "h rows of each gate's first layer and all of its second layer); other: the input projections that "
        "can be hoisted out of the loop (an LSTM's W; the x rows of the first layers). Nonzero weights only, "
        "counted in the ONNX file, per step and batch row. hlstmc GFLOP/s = 2 x the nonzero "
        "multiply-adds `hlstmc bench` counts on the optimized graph (`macs_nonzero_per_call`) / hlstmc's "
        "1T median; compile = hlstmc's lowering and code generation (`compile_ms`); setup = import + optimize + "
        "compile (`setup_ms`). For a dense model at batch 1 the recurrent work could run at the "
        "SIMD rate too, so its limit there is a loose one." % (SCALAR_FMA_GFLOPS, SIMD_FMA_GFLOPS, SIMD_FMA_GFLOPS),
        "",
        "| model | T | B | recurrent MACs / step | other MACs / step | limit (ms) | hlstmc 1T (ms) | distance | hlstmc GFLOP/s | compile (ms) | setup (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    dist = {}
    for r in results:
        w, h = r["work"], r["s"]["hl1"].median()
        lim = limit_seconds(r["steps"], r["batch"], w)
        info = r["hl_info"] or {}
        unknown = " (unclassified: %s)" % "; ".join(w.unknown) if w.unknown else ""
        gfl = 2 * info.get("macs_nonzero_per_call", 0) / h / 1e9 if h and info else None
        dist[(r["base"], r["batch"])] = "%.1fx" % (h / lim) if h and lim > 0 else "-"
        lines.append("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
            r["model"] + unknown, r["steps"], r["batch"], w.recurrent, w.other, ms(lim),
            r["s"]["hl1"].cell(), dist[(r["base"], r["batch"])],
            "%.2f" % gfl if gfl is not None else "-",
            "%.1f" % info["compile_ms"] if "compile_ms" in info else "-",
            "%.1f" % info["setup_ms"] if "setup_ms" in info else "-"))
    if len(batches) > 1:
        lines += ["", "Distance at each batch, side by side:", "",
                  "| model | " + " | ".join("distance B=%d" % B for B in batches) + " |",
                  "|---|" + "---:|" * len(batches)]
        for b in bases:
            lines.append("| %s | %s |" % (b, " | ".join(dist.get((b, B), "-") for B in batches)))

    lines += ["", "Targets (issue 4; one thread, batch 1, per whole sequence):", "",
              "| target | model | hlstmc 1T / ORT 1T (ms) | speedup | met? |", "|---|---|---|---:|---|"]
    by_name = {r["model"]: r for r in results}
    for model, text, check in TARGETS:
        r = by_name.get(model)
        h = r["s"]["hl1"].median() if r else None
        o = r["s"]["ort1"].median() if r else None
        if h is None or o is None:
            lines.append("| %s | %s | not measured in this run | - | - |" % (text, model))
        else:
            lines.append("| %s | %s | %s / %s | %s | %s |" % (text, model, ms(h), ms(o), ratio(o, h), "yes" if check(h, o) else "no"))
    lines += ["", "Targets (issue 18; one thread, batch 16, per call):", "",
              "| target | model | hlstmc B16 / ORT B16 / hlstmc B1 (ms) | met? |", "|---|---|---|---|"]
    for base, text, check in BATCH_TARGETS:
        r, one = by_key.get((base, 16)), by_key.get((base, 1))
        h = r["s"]["hl1"].median() if r else None
        o = r["s"]["ort1"].median() if r else None
        h1 = one["s"]["hl1"].median() if one else None
        if h is None or o is None:
            lines.append("| %s | %s_B16 | not measured in this run | - |" % (text, base))
        else:
            ok = "yes" if check(h, o, h1) else ("no" if h1 is not None or "batch-1" not in text else "batch 1 not measured")
            lines.append("| %s | %s_B16 | %s / %s / %s | %s |" % (
                text, base, ms(h), ms(o), ms(h1) if h1 else "-", ok))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
