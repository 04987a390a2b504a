#!/usr/bin/env python3
"""Times `hlstmc bench --engine jit` against ONNX Runtime (one thread) on the same model files.

    cargo build --release
    cargo run --release -p hlstm-bench --bin gen_bench_models -- target/bench-models
    python3 bench/compare_ort.py target/bench-models [--rounds 5] [--no-write]

For each model, in interleaved rounds (ONNX Runtime, then hlstmc, then the next round), ONNX
Runtime runs with intra_op_num_threads=1, inter_op_num_threads=1 and sequential execution, on the
same random input hlstmc generates (the same xorshift generator and seed), for about 0.2 s per
round; hlstmc runs as `target/release/hlstmc bench MODEL --engine jit --json --rounds 1` (its own
~0.2 s round). The table gives the median over rounds of the per-call time. The section
"## Run time: hlstmc JIT vs ONNX Runtime" of BENCHMARKS.md is replaced (or appended).

Needs numpy, onnx and onnxruntime; not part of `cargo test` or CI.
"""

import argparse
import datetime
import json
import os
import platform
import re
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


def xorshift_inputs(shapes):
    """The values `hlstmc bench` feeds (src/cli/bench.rs: Rng)."""
    s = 0x9E3779B97F4A7C15
    out = []
    for shape in shapes:
        n = int(np.prod(shape)) if shape else 1
        vals = np.empty(n, dtype=np.float32)
        for i in range(n):
            s ^= (s << 13) & MASK
            s ^= s >> 7
            s ^= (s << 17) & MASK
            vals[i] = np.float32(np.float32(s >> 40) / np.float32(1 << 24)) * np.float32(2.0) - np.float32(1.0)
        out.append(vals.reshape(shape))
    return out


def nonzero_weights(path):
    """Nonzero entries of every initializer of rank 2 (the weight matrices), main graph and subgraphs."""
    m = onnx.load(path)
    total = 0

    def visit(g):
        nonlocal total
        for t in g.initializer:
            if len(t.dims) == 2:
                total += int(np.count_nonzero(numpy_helper.to_array(t)))
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g)
                for sg in a.graphs:
                    visit(sg)

    visit(m.graph)
    return total


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_round(sess, feed, budget=0.2):
    """Per-call seconds over one round of about `budget` seconds."""
    t = time.perf_counter()
    sess.run(None, feed)
    one = max(time.perf_counter() - t, 1e-9)
    iters = max(1, int(budget / one + 0.999))
    t = time.perf_counter()
    for _ in range(iters):
        sess.run(None, feed)
    return (time.perf_counter() - t) / iters


def hlstmc_round(path):
    p = subprocess.run(
        [HLSTMC, "bench", path, "--engine", "jit", "--json", "--rounds", "1"],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        raise RuntimeError(msg)
    return json.loads(p.stdout)["median_us"] * 1e-6


def spread(xs):
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m * 100 if m > 0 else float("nan")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    models = sorted(
        (f for f in os.listdir(a.dir) if f.endswith(".onnx")),
        key=lambda f: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", f)],
    )
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    rows = []
    for f in models:
        path = os.path.join(a.dir, f)
        nz = nonzero_weights(path)
        sess = ort_session(path)
        ins = sess.get_inputs()
        feed = dict(zip([i.name for i in ins], xorshift_inputs([i.shape for i in ins])))
        ort_t, hl_t, err = [], [], None
        for _ in range(a.rounds):
            ort_t.append(ort_round(sess, feed))
            if err is None:
                try:
                    hl_t.append(hlstmc_round(path))
                except RuntimeError as e:
                    err = str(e)
        o = statistics.median(ort_t)
        if err is None:
            h = statistics.median(hl_t)
            row = (f, nz, "%.3f" % (h * 1e3), "%.3f" % (o * 1e3), "%.2fx" % (o / h),
                   "%.0f%% / %.0f%%" % (spread(hl_t), spread(ort_t)))
        else:
            row = (f, nz, "error: " + err.replace("|", "\\|"), "%.3f" % (o * 1e3), "-",
                   "- / %.0f%%" % spread(ort_t))
        print(" | ".join(str(c) for c in row), flush=True)
        rows.append(row)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "?"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if sh(["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    lines = [
        SECTION,
        "",
        "Per-call wall time of a whole sequence (batch 1), one thread each: `hlstmc bench --engine jit` "
        "(the model imported, optimized with the default pipeline, lowered and compiled with Cranelift "
        "once; compile time not included) against ONNX Runtime %s on the same file and the same random "
        "input (intra_op_num_threads=1, inter_op_num_threads=1, sequential execution, default graph "
        "optimizations). Models: H-LSTMs in the Scan form, one ReLU hidden layer of width H per gate, "
        "dense or magnitude-pruned per matrix (`gen_bench_models`). %d interleaved rounds per model "
        "(ONNX Runtime, then hlstmc), each about 0.2 s of calls; the times are medians over rounds of "
        "the per-call time, speedup = ONNX Runtime / hlstmc, spread = (max - min) / median over rounds "
        "(hlstmc / ONNX Runtime). Nonzero weights count the rank-2 initializers." % (ort.__version__, a.rounds),
        "",
        "- commands: `cargo build --release`; "
        "`cargo run --release -p hlstm-bench --bin gen_bench_models -- %s`; "
        "`python3 bench/compare_ort.py %s --rounds %d`" % (a.dir, a.dir, a.rounds),
        "- machine: %s, `nproc` = %d (%s)" % (cpu, os.cpu_count(), platform.machine()),
        "- date: %s" % now,
        "- source: commit %s%s" % (commit, dirty),
        "- load average when the run began: %s" % loadavg,
        "",
        "| model | nonzero weights | hlstmc median (ms) | ONNX Runtime median (ms) | speedup | spread |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    if a.no_write:
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
