#!/usr/bin/env python3
"""The text results of docs/results.md: bits per character on the test slice against nonzero
weights, for the configs in examples/text/ (standard library only).

    python3 tools/text_results.py                       # every config, one after another (hours)
    python3 tools/text_results.py --jobs 2              # two at a time (2 cores: see docs/results.md)
    python3 tools/text_results.py --only lstm-2x256     # one config (about 40 minutes on one core)
    python3 tools/text_results.py --epochs 1 --only lstm-2x256 --out out/text-quick   # a smoke run
    python3 tools/text_results.py --epochs 1 --max-chars 100000 --out out/text-smoke  # all, minutes
    python3 tools/text_results.py --group search --only hlstm-256-d0.14-gradual-39ep   # the search

`--group search` reads the configs of the text search (examples/text/search/, docs/results.md,
"Text: the search") instead of the published seven (examples/text/), into out/text-search.

Each config is trained with `hlstmc train` (skipped when OUT/<name>.summary.json exists, so an
interrupted run resumes), then OUT/results.md gets a table: test bits per character, nonzero
weights (every weight matrix: embedding, layers and head), training characters, hours. With
--epochs N every phase of the schedule is cut to at most N epochs (and one pruning round), with
--max-chars N only the first N characters are read: smoke tests of the pipeline, not results.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = {"results": "examples/text", "search": "examples/text/search"}


def cost(text):
    """A rough cost of training a config (weights touched per character times epochs), to start
    the longest first when several run side by side."""
    import tomllib
    c = tomllib.loads(text)
    m, t, g = c["model"], c.get("train", {}), c.get("gp", {})
    h, e, layers = m["hidden"], m.get("embed", 32), m.get("layers", 1)
    if m["cell"] == "hlstm":
        w = m.get("hidden_width", h)
        per_layer = 4 * ((e + h) * w + w * h)
    else:
        per_layer = 4 * (e + h) * h
    epochs = (t.get("epochs", 10) + g.get("grow_rounds", 0) * g.get("grow_epochs", 1)
              + g.get("max_prune_rounds", 0) * g.get("retrain_epochs", 0)
              + g.get("final_epochs", 0))
    return per_layer * layers * epochs


def shorten(text, epochs):
    # every `*epochs = K` key to min(K, epochs), `max_prune_rounds` to 1
    def cut(m):
        return f"{m.group(1)} = {min(int(m.group(2)), epochs)}"
    text = re.sub(r"^(\w*epochs) = (\d+)", cut, text, flags=re.M)
    return re.sub(r"^max_prune_rounds = \d+", "max_prune_rounds = 1", text, flags=re.M)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", choices=sorted(GROUPS), default="results",
                    help="results: the configs of examples/text/; search: examples/text/search/")
    ap.add_argument("--out", help="default: out/text-results (out/text-search for the search)")
    ap.add_argument("--hlstmc", help="an hlstmc binary (default: build target/release/hlstmc)")
    ap.add_argument("--only", action="append", help="a config name (repeatable)")
    ap.add_argument("--epochs", type=int, help="cut every phase to this many epochs (smoke run)")
    ap.add_argument("--max-chars", type=int, help="read only this many characters (smoke run)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="configs trained at once (each `hlstmc train` uses one thread)")
    a = ap.parse_args()
    configs = os.path.join(ROOT, GROUPS[a.group])
    if not a.out:
        a.out = os.path.join(ROOT, "out/text-" + a.group)
    hlstmc = a.hlstmc
    if not hlstmc:
        subprocess.run(["cargo", "build", "--release", "--bin", "hlstmc"], cwd=ROOT, check=True)
        hlstmc = os.path.join(ROOT, "target/release/hlstmc")
    os.makedirs(a.out, exist_ok=True)
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(configs, "*.toml")))
    names = [n for n in names if not a.only or n in a.only]
    # Write every config, then train those without a summary, --jobs at a time.
    todo = []
    for name in names:
        with open(os.path.join(configs, f"{name}.toml")) as f:
            text = f.read()
        text = text.replace("../../../shared/", os.path.join(ROOT, "../shared/"))
        # The copy is written to OUT: its relative data path is made absolute from the config's
        # folder, where it was written for.
        text = re.sub(r'^path = "([^/"][^"]*)"',
                      lambda m: f'path = "{os.path.normpath(os.path.join(configs, m.group(1)))}"',
                      text, count=1, flags=re.M)
        if a.epochs:
            text = shorten(text, a.epochs)
        if a.max_chars:
            text = text.replace("\n[model]", f"max_chars = {a.max_chars}\n\n[model]", 1)
        cfg = os.path.join(a.out, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(text)
        model = os.path.join(a.out, f"{name}.onnx")
        summary = os.path.join(a.out, f"{name}.summary.json")
        if not os.path.exists(summary):
            todo.append((cost(text), name, [hlstmc, "train", cfg, "-o", model]))
    # Longest first: two at a time, the last two to start are short ones.
    todo = [(name, cmd) for _, name, cmd in sorted(todo, key=lambda x: -x[0])]
    running = []
    while todo or running:
        while todo and len(running) < max(1, a.jobs):
            name, cmd = todo.pop(0)
            print(f"training {name}", file=sys.stderr)
            # Alone, the progress goes to the terminal; side by side, to NAME.train.log.
            out = None if a.jobs <= 1 else open(os.path.join(a.out, f"{name}.train.log"), "w")
            running.append((name, subprocess.Popen(cmd, stdout=out, stderr=out)))
        done = [r for r in running if r[1].poll() is not None]
        if not done:
            time.sleep(1)
            continue
        for name, proc in done:
            running.remove((name, proc))
            if proc.returncode != 0:
                sys.exit(f"training {name} failed (exit status {proc.returncode})")
    rows = []
    for name in names:
        summary = os.path.join(a.out, f"{name}.summary.json")
        with open(summary) as f:
            s = json.load(f)
        with open(os.path.join(a.out, f"{name}.log.jsonl")) as f:
            records = [json.loads(line) for line in f if '"kind":"epoch"' in line]
        rows.append((name, s, len(records), records[-1].get("val_bpc") if records else None))
    md = ["| config | test bits/char | last validation bits/char | nonzero weights | density "
          "| epochs | hours |",
          "|---|---|---|---|---|---|---|"]
    for name, s, epochs, val in rows:
        val = "-" if val is None else f"{val:.3f}"
        md.append(f"| {name} | {s['test_bpc']:.3f} | {val} | {s['nonzero_weights']:,} | "
                  f"{100 * s['density']:.1f}% | {epochs} | {s['seconds'] / 3600:.2f} |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
