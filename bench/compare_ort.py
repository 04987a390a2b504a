#!/usr/bin/env python3
"""Times hlstmc's JIT, ONNX Runtime and (where installed) tract on the same model files, side by
side in the same run, with one thread each and two threads each.

    cargo build --release
    cargo run --release -p hlstm-bench --bin gen_bench_models -- target/bench-models
    python3 bench/compare_ort.py target/bench-models [--rounds 5] [--only REGEX] [--no-write]

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
- tract (the `tract` command of the crate tract-cli), one thread, only when it is on PATH:
  `tract MODEL -O --machine-friendly bench --warmup-loops 3 --max-time MS`, which prints the mean
  time per call over its own loop on its own random input; that mean is tract's measurement.

Distance from the machine's limit, per model: the limit time is
    recurrent nonzero multiply-adds x 2 / SCALAR_FMA_GFLOPS + other nonzero multiply-adds x 2 / SIMD_FMA_GFLOPS
for one whole sequence, where "recurrent" are the multiply-adds inside the time loop that depend
on h (an LSTM op's R; an H-LSTM Scan body's matmuls on h and on anything computed from h: the h
rows of each gate's first layer and all of its later layers), and "other" are the rest, the
input projections that can be hoisted out of the loop (an LSTM's W; the x rows of the first
layers). They are counted from the weights in the ONNX file (nonzero entries only); the
distance is hlstmc's one-thread median / the limit time.

The section "## Run time: hlstmc JIT vs ONNX Runtime" of BENCHMARKS.md is replaced (or
appended) unless --no-write is given; writing needs at least 5 rounds.

Needs numpy, onnx and onnxruntime; not part of `cargo test` or CI.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

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

NOT_SUPPORTED = "n/a (not supported yet)"


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
    per_seq = steps * batch
    return (work.recurrent * 2 * per_seq / (SCALAR_FMA_GFLOPS * 1e9)
            + work.other * 2 * per_seq / (SIMD_FMA_GFLOPS * 1e9))


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
    """tract-cli's `tract`, one thread."""

    def __init__(self, exe, path, budget):
        self.exe, self.path = exe, path
        self.max_ms = str(max(1, int(budget * 1e3)))
        self.limits = True

    def command(self):
        cmd = [self.exe, self.path, "-O", "--machine-friendly", "bench"]
        if self.limits:
            cmd += ["--warmup-loops", str(WARMUP), "--max-time", self.max_ms]
        return cmd

    def measure(self):
        p = subprocess.run(self.command(), capture_output=True, text=True, timeout=600)
        if p.returncode != 0 and self.limits:
            # An older tract without these bench options: its defaults.
            self.limits = False
            p = subprocess.run(self.command(), capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("tract: " + last_line(p))
        m = re.search(r"real:\s*([0-9.eE+-]+)", p.stdout)
        if m:
            return float(m.group(1))
        m = re.search(r"Bench ran \d+ times,\s*([0-9.]+)\s*(ms|us|µs|s)", p.stdout)
        if m:
            return float(m.group(1)) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}[m.group(2)]
        raise RuntimeError("tract: no time in its output: " + last_line(p))


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="folder of .onnx models (gen_bench_models writes them)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (at least 5 to write BENCHMARKS.md)")
    ap.add_argument("--budget", type=float, default=0.2, help="seconds of timed calls per measurement")
    ap.add_argument("--only", help="time only the models whose file name matches this regex")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if a.rounds < 5 and not a.no_write:
        ap.error("writing BENCHMARKS.md needs --rounds 5 or more (or use --no-write)")
    command = "python3 " + " ".join(shlex.quote(x) for x in [os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    models = sorted(
        (f for f in os.listdir(a.dir) if f.endswith(".onnx") and (not a.only or re.search(a.only, f))),
        key=lambda f: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", f)],
    )
    if not models:
        ap.error("no .onnx model in %s%s" % (a.dir, " matches --only" if a.only else ""))
    tract_exe = shutil.which("tract")
    tract_version = sh([tract_exe, "--version"]) if tract_exe else None
    if not tract_exe:
        print("tract: not installed (no `tract` on PATH); its column is left out", flush=True)
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"

    results = []
    for f in models:
        path = os.path.join(a.dir, f)
        steps, batch, work = model_work(path)
        sess = {t: ort_session(path, t) for t in (1, 2)}
        ins = sess[1].get_inputs()
        feed = dict(zip([i.name for i in ins], bench_inputs([i.shape for i in ins])))
        hl = {t: Hlstmc(path, t, a.budget) for t in (1, 2)}
        s = {k: Series() for k in ("ort1", "hl1", "ort2", "hl2", "tract")}
        for t in (1, 2):
            if hl[t].error:
                s["hl%d" % t].note = NOT_SUPPORTED if hl[t].unsupported and not hl[1].error else "error: " + hl[t].error.replace("|", "\\|")
        tr = Tract(tract_exe, path, a.budget) if tract_exe else None
        for _ in range(a.rounds):
            s["ort1"].run(lambda: ort_measure(sess[1], feed, a.budget))
            s["hl1"].run(hl[1].measure)
            s["ort2"].run(lambda: ort_measure(sess[2], feed, a.budget))
            s["hl2"].run(hl[2].measure)
            if tr:
                s["tract"].run(tr.measure)
        del sess
        r = dict(model=f, steps=steps, batch=batch, work=work, s=s, hl_info=hl[1].info, hl2_note=hl[2].error)
        results.append(r)
        print("%s: hlstmc %s / %s ms, ORT %s / %s ms (1 / 2 threads)%s" % (
            f, s["hl1"].cell(), s["hl2"].cell(), s["ort1"].cell(), s["ort2"].cell(),
            (", tract " + s["tract"].cell() + " ms") if tr else ""), flush=True)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "?"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if sh(["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    hl2_unsupported = any(r["s"]["hl2"].note == NOT_SUPPORTED for r in results)
    lines = [
        SECTION,
        "",
        "Wall time of one call on a whole sequence (batch 1): `hlstmc bench --engine jit` (the model "
        "imported, optimized with the default pipeline, lowered and compiled with Cranelift once; "
        "compile time not included) against ONNX Runtime %s on the same file and the same random input "
        "(inter_op_num_threads=1, sequential execution, default graph optimizations)%s, with one "
        "thread each and two threads each (ONNX Runtime intra_op_num_threads=2, hlstmc `--threads 2`)." % (
            ort.__version__,
            (" and tract (%s, one thread, its own random input; its time is the mean over its own bench loop)" % tract_version)
            if tract_exe else ""),
        "Models (`gen_bench_models`): H-LSTMs in the Scan form, one ReLU hidden layer of width H per gate, "
        "and LSTMs (one ONNX LSTM op); dense or magnitude-pruned per matrix to 90%% (sp90) and 97%% (sp97) zeros. "
        "%d interleaved rounds per model (ONNX Runtime 1 thread, hlstmc 1 thread, ONNX Runtime 2 threads, "
        "hlstmc 2 threads%s); in each round every engine makes %d untimed calls and then single timed calls "
        "for about %g s (at least %d) and reports their median. The tables give the median over rounds "
        "of these medians; speedup = ONNX Runtime / hlstmc; spread = (max - min) / median over rounds." % (
            a.rounds, ", tract" if tract_exe else "", WARMUP, a.budget, MIN_CALLS),
        "",
        "- command: `cargo build --release`; `cargo run --release -p hlstm-bench --bin gen_bench_models -- %s`; `%s`" % (a.dir, command),
        "- machine: %s, `nproc` = %d (%s)" % (cpu, os.cpu_count(), platform.machine()),
        "- date: %s" % now,
        "- source: commit %s%s" % (commit, dirty),
        "- load average when the run began: %s" % loadavg,
        "- tract: %s" % (tract_version or "not installed"),
        "",
        "| model | nonzero weights | hlstmc 1T (ms) | ORT 1T (ms) | speedup 1T | hlstmc 2T (ms) | ORT 2T (ms) | speedup 2T |%s spread hlstmc / ORT, 1T; 2T |" % (
            " tract 1T (ms) | tract / hlstmc 1T |" if tract_exe else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|%s---|" % ("---:|---:|" if tract_exe else ""),
    ]
    for r in results:
        s = r["s"]
        row = [r["model"], r["work"].weights, s["hl1"].cell(), s["ort1"].cell(), ratio(s["ort1"].median(), s["hl1"].median()),
               s["hl2"].cell(), s["ort2"].cell(), ratio(s["ort2"].median(), s["hl2"].median())]
        if tract_exe:
            row += [s["tract"].cell(), ratio(s["tract"].median(), s["hl1"].median())]
        row.append("%s / %s; %s / %s" % (s["hl1"].spread_cell(), s["ort1"].spread_cell(), s["hl2"].spread_cell(), s["ort2"].spread_cell()))
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if hl2_unsupported:
        note = next(r["hl2_note"] for r in results if r["s"]["hl2"].note == NOT_SUPPORTED)
        lines += ["", "hlstmc 2T: this build refuses `--threads 2` (`%s`), so only ONNX Runtime was timed with two threads." % note]
    if not tract_exe:
        lines += ["", "tract: not installed (no `tract` command on PATH), so it was not timed."]

    lines += [
        "",
        "Distance from the machine's limit (one thread): limit = recurrent multiply-adds x 2 / %.1f GFLOP/s "
        "(the scalar FMA rate of one core of a 2-core Zen 4 machine like CI's) + other multiply-adds x 2 / "
        "%.0f GFLOP/s (its 128-bit FMA peak), for a whole sequence of T steps; distance = hlstmc 1T median / "
        "limit. Recurrent: the multiply-adds inside the time loop that depend on h (an LSTM's R; an H-LSTM's "
        "h rows of each gate's first layer and all of its second layer); other: the input projections that "
        "can be hoisted out of the loop (an LSTM's W; the x rows of the first layers). Nonzero weights only, "
        "counted in the ONNX file, per step and batch row. hlstmc GFLOP/s = 2 x the nonzero "
        "multiply-adds `hlstmc bench` counts on the optimized graph (`macs_nonzero_per_call`) / hlstmc's "
        "1T median; compile = hlstmc's lowering and code generation (`compile_ms`). For a dense model the recurrent work could run at the "
        "SIMD rate too, so its limit here is a loose one." % (SCALAR_FMA_GFLOPS, SIMD_FMA_GFLOPS),
        "",
        "| model | T | recurrent MACs / step | other MACs / step | limit (ms) | hlstmc 1T (ms) | distance | hlstmc GFLOP/s | compile (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        w, h = r["work"], r["s"]["hl1"].median()
        lim = limit_seconds(r["steps"], r["batch"], w)
        info = r["hl_info"] or {}
        unknown = " (unclassified: %s)" % "; ".join(w.unknown) if w.unknown else ""
        gfl = 2 * info.get("macs_nonzero_per_call", 0) / h / 1e9 if h and info else None
        lines.append("| %s | %d | %d | %d | %s | %s | %s | %s | %s |" % (
            r["model"] + unknown, r["steps"], w.recurrent, w.other, ms(lim),
            r["s"]["hl1"].cell(), "%.1fx" % (h / lim) if h and lim > 0 else "-",
            "%.2f" % gfl if gfl is not None else "-",
            "%.1f" % info["compile_ms"] if "compile_ms" in info else "-"))

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

    text = "\n".join(lines) + "\n"
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


if __name__ == "__main__":
    sys.exit(main())
