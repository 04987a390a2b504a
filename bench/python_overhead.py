#!/usr/bin/env python3
"""The Python package's own cost per call: `hlstmc.InferenceSession.run` against `hlstmc bench`
(the engine's time for the same call, with no Python in it) and against ONNX Runtime's Python
session, on the same model files, side by side in the same run, one thread each.

    cargo build --release
    cargo run --release -p hlstm-bench --bin gen_bench_models -- target/bench-models
    pip install ./python onnxruntime
    python3 bench/python_overhead.py target/bench-models [--rounds 5] [--no-write]

For each model, in interleaved rounds (each round: `hlstmc bench`, the Python session, ONNX
Runtime's session), every engine makes one measurement per round: a few untimed warm-up calls,
then single timed calls for about --budget seconds, and the median per-call time. The table
gives, per engine, the best round (the least of these medians: the machine's noise only ever
adds time) and the median over rounds; "Python layer" is the session's time minus `hlstmc
bench`'s (what the binding adds: converting the feed dict, taking a state from the pool,
releasing the GIL, returning numpy arrays), from the best rounds.

- `hlstmc bench MODEL --engine jit --threads 1 --warmup 3 --runs R --json`: the median of
  `State::run_into`, the call the session makes.
- `hlstmc.InferenceSession(MODEL).run(None, {name: x})`, timed with `time.perf_counter_ns`.
- `onnxruntime.InferenceSession(MODEL, intra_op_num_threads=1, inter_op_num_threads=1,
  sequential execution).run(None, {name: x})`, timed the same way.

The section "## Python: the session's cost per call" of BENCHMARKS.md is replaced (or
appended) unless --no-write is given. Not part of CI.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HLSTMC = os.path.join(ROOT, "target", "release", "hlstmc")
MODELS = ["hlstm_X32_H64_T8_sp97.onnx", "hlstm_X512_H512_T16_sp97.onnx", "hlstm_X256_H800_T50_sp97.onnx"]
SECTION = "## Python: the session's cost per call"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed_calls(call, budget):
    for _ in range(3):
        call()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    n = max(20, int(budget / max(first, 1e-7)))
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3  # microseconds


def bench_cli(path, budget, guess_us):
    runs = max(20, int(budget / max(guess_us * 1e-6, 1e-7)))
    cmd = [HLSTMC, "bench", path, "--engine", "jit", "--threads", "1", "--warmup", "3", "--runs", str(runs), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])["median_us"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", help="folder of the benchmark models (gen_bench_models)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed calls per measurement")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import hlstmc
    import onnxruntime as ort

    rows = []
    for name in MODELS:
        path = os.path.join(args.models, name)
        if not os.path.exists(path):
            print(f"skip {name}: not in {args.models}", file=sys.stderr)
            continue
        ours = hlstmc.InferenceSession(path, threads=1)
        inp = ours.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        theirs = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {inp.name: x}
        cli, py, ort_t = [], [], []
        for r in range(args.rounds):
            py.append(timed_calls(lambda: ours.run(None, feed), args.budget))
            cli.append(bench_cli(path, args.budget, py[-1]))
            ort_t.append(timed_calls(lambda: theirs.run(None, feed), args.budget))
            print(f"{name} round {r + 1}: bench {cli[-1]:.1f} us, session.run {py[-1]:.1f} us, ORT {ort_t[-1]:.1f} us", file=sys.stderr)
        rows.append((name, cli, py, ort_t))

    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today()} on {cpu_name()}, one thread each, {args.rounds} "
        f"interleaved rounds of per-call medians: the best round, and in brackets the median "
        f"over rounds (numpy {np.__version__}, "
        f"onnxruntime {ort.__version__}, hlstmc {hlstmc.__version__}). Command:",
        "",
        "```sh",
        "python3 bench/python_overhead.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "```",
        "",
        "| model | `hlstmc bench` (engine) | `hlstmc` session.run | Python layer | ONNX Runtime session.run | ORT / hlstmc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    med = statistics.median
    for name, cli, py, o in rows:
        lines.append(
            f"| {name[:-5]} | {min(cli):.1f} us ({med(cli):.1f}) | {min(py):.1f} us ({med(py):.1f}) "
            f"| {min(py) - min(cli):+.1f} us | {min(o):.1f} us ({med(o):.1f}) | {min(o) / min(py):.1f}x |"
        )
    lines += [
        "",
        "\"Python layer\" is session.run's median minus `hlstmc bench`'s: the feed converted (a "
        "float32 C-contiguous array is copied once into the engine's tensor), a working state taken "
        "from the session's pool, the GIL released around the run, the outputs handed to numpy "
        "without a copy. It is a difference of two timings from separate loops, so it carries their "
        "noise: a few microseconds either way on a quiet machine, more on a busy one (compare the "
        "bracketed medians, which a noisy round moves).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.no_write:
        return
    bm = os.path.join(ROOT, "BENCHMARKS.md")
    with open(bm) as f:
        old = f.read()
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if end < 0 else old[end:])
    with open(bm, "w") as f:
        f.write(new)
    print(f"wrote {bm}", file=sys.stderr)


if __name__ == "__main__":
    main()
