#!/usr/bin/env python3
"""Times two builds of hlstmc on the same models, side by side in one run: whole-sequence time
per call and setup time (import + optimize + compile), from `hlstmc bench --json`.

    python3 bench/compare_builds.py OLD_HLSTMC NEW_HLSTMC target/bench-models [--rounds 5]
        [--only REGEX] [--threads 1]

For each model, in interleaved rounds (old, new, old, new, ...), each build runs `bench MODEL
--engine jit --threads N --warmup 3 --json` once per round (about 1 s of timed calls, at least
10) and reports its median per call; setup is import_ms + optimize_ms + compile_ms of that run.
The table gives the median over rounds of both, and new / old. A refactor should leave every
ratio within the run-to-run spread (also printed: (max - min) / median over rounds).

Prints a Markdown table; not part of `cargo test` or CI.
"""

import argparse
import json
import os
import re
import statistics
import subprocess


def bench(exe, model, threads):
    out = subprocess.run(
        [exe, "bench", model, "--engine", "jit", "--threads", str(threads), "--warmup", "3", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    j = json.loads(out)
    return j["median_us"], j["import_ms"] + j["optimize_ms"] + j["compile_ms"]


def spread(xs):
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("models")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    models = sorted(f for f in os.listdir(a.models) if f.endswith(".onnx") and re.search(a.only, f))
    print("| model | old (ms) | new (ms) | new / old | spread old / new | old setup (ms) | new setup (ms) | new / old setup |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for m in models:
        path = os.path.join(a.models, m)
        runs = {"old": [], "new": []}
        for _ in range(a.rounds):
            for k, exe in (("old", a.old), ("new", a.new)):
                runs[k].append(bench(exe, path, a.threads))
        t = {k: statistics.median(r[0] for r in v) / 1e3 for k, v in runs.items()}
        s = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        sp = {k: spread([r[0] for r in v]) for k, v in runs.items()}
        print(
            f"| {m} | {t['old']:.4g} | {t['new']:.4g} | {t['new'] / t['old']:.2f} | "
            f"{sp['old']:.0%} / {sp['new']:.0%} | {s['old']:.1f} | {s['new']:.1f} | {s['new'] / s['old']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
