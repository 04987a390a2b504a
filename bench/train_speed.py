#!/usr/bin/env python3
"""Training speed: hlstmc's trainer against PyTorch on CPU, same model, same batch, on one and
two threads.

    python3 bench/train_speed.py                 # prints a markdown table (BENCHMARKS.md, Training)
    python3 bench/train_speed.py --steps 20 --json out.json
    python3 bench/train_speed.py --only masked   # the rows whose name contains "masked"

For each model, hlstmc's side is the `train_step_time` example of hlstm-trainer (built once
with `cargo build --release -p hlstm-trainer --example train_step_time`, then run) on a
generated config with the `jit` engine, once with `train.threads = 1` and
once with 2 (`--fast` adds the `fast` engine, single-threaded): the wall time of each training
step (forward and backward pass, the weight-gradient products, clipping to norm 5, Adam, the
masks). PyTorch's side times the same step (forward, cross-entropy, backward, clip_grad_norm_,
Adam) for the same model, batch and sequence length, with torch.set_num_threads(1) and (2).
Both sides run one after the other for each model, in --rounds rounds (each configuration once
per round, so that a busy spell slows them alike); each run skips two warm-up steps and takes
the median of the next --steps, and the table gives each configuration's best round (the json
has every round). The table gives steps per second
(and ms per step); throughput in samples is steps/s times samples/step (sequences for the
digits classifiers, characters for the language models).

Models: the digits H-LSTM (hidden 64, one ReLU layer of 64 per gate, dropout 0.2, dense), the
digits 2 x 64 stacked LSTM, and the character models of the text results: the 2 x 256 stacked
LSTM (with the defaults, whose sparse kernels leave the weight gradients aᵀ·g to the trainer's
AVX2/AVX-512 product, dense for a full mask; then with `train.sampled_gradients = false`: in the
compiled graph) and the H-LSTM of state 256 with one ReLU
layer of 256 per gate (embedding 32, windows of 100, batch 32; the state is carried across
windows); and that H-LSTM with its weight matrices masked to 10%, with `train.sparse_kernels`
(compressed kernels over the masks), first with the weight gradients dense as before
(`sampled_gradients = false`), then sampled at the masks' kept positions (the default with
sparse kernels). PyTorch times the same dense model for the masked rows: its kernels do not
skip the zeros.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "trainer/data/digits/digits.csv.gz")
TEXT = os.path.join(ROOT, "examples/data/text/fortunes-en.txt.gz")
TEXT_CHARS = 100_000  # enough windows for the timed steps

THREADS = [1, 2]
STEP_TIME = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                         "release", "examples", "train_step_time")

COMMON_TRAIN = """engine = "ENGINE"
threads = THREADS
batch = 32
optimizer = "adam"
lr = 0.005
clip_norm = 5.0
"""

MODELS = {
    "digits H-LSTM (64, 1x64 per gate)": dict(kind="hlstm", hidden=64, layers=1, T=8, F=8),
    "digits LSTM 2x64": dict(kind="lstm", hidden=64, layers=2, T=8, F=8),
    "text LSTM 2x256 (embed 32, window 100)": dict(kind="lm", hidden=256, layers=2, T=100, E=32),
    # The defaults (sparse kernels, so weight gradients by the trainer: dense for a full mask),
    # then with the weight gradients in the compiled graph.
    "text LSTM 2x256, weight gradients in the compiled graph":
        dict(kind="lm", hidden=256, layers=2, T=100, E=32, extra="sampled_gradients = false"),
    "text H-LSTM 256 (1x256 per gate, embed 32, window 100)":
        dict(kind="hlm", hidden=256, layers=1, T=100, E=32),
    # Every weight matrix but the embedding masked to 10% (a grow-and-prune model's density),
    # multiplied by compressed kernels over the masks (`train.sparse_kernels`): the weight
    # gradients dense (before issue 20), then sampled at the kept positions.
    "text H-LSTM 256 masked to 10%, sparse kernels, dense weight gradients":
        dict(kind="hlm", hidden=256, layers=1, T=100, E=32, density=0.1,
             extra="sampled_gradients = false"),
    "text H-LSTM 256 masked to 10%, sparse kernels, sampled weight gradients":
        dict(kind="hlm", hidden=256, layers=1, T=100, E=32, density=0.1),
}


def config(m, text):
    if m["kind"] in ("lm", "hlm"):
        data = f"""[data]
format = "text"
path = "{text}"
window = {m['T']}
max_chars = {TEXT_CHARS}
"""
        cell = "hlstm" if m["kind"] == "hlm" else "lstm"
        model = (f'cell = "{cell}"\nhidden = {m["hidden"]}\nlayers = {m["layers"]}\n'
                 f'embed = {m["E"]}\n')
        if cell == "hlstm":
            model += f'hidden_layers = 1\nhidden_width = {m["hidden"]}\n'
    else:
        data = f"""[data]
format = "csv"
path = "{DIGITS}"
steps = 8
features = 8
scale = 0.0625
split = {{ modulus = 5, test = [4], validation = [3] }}
"""
        if m["kind"] == "hlstm":
            model = 'cell = "hlstm"\nhidden = 64\nhidden_layers = 1\nhidden_width = 64\ndropout = 0.2\n'
        else:
            model = f'cell = "lstm"\nhidden = {m["hidden"]}\nlayers = {m["layers"]}\n'
    text = f"seed = 1\n{data}\n[model]\n{model}\n[train]\n{COMMON_TRAIN}"
    if "extra" in m:
        text += m["extra"] + "\n"
    if "density" in m:
        text += (f'sparse_kernels = true\n\n[gp]\nseed_density = {m["density"]}\n'
                 'exclude = ["embed"]\n')
    return text


def vocab_size(text):
    import gzip
    with gzip.open(text, "rt", encoding="utf-8") as f:
        return len(set(f.read(TEXT_CHARS)))


def time_hlstmc(m, text, steps, tmp, engine, threads):
    path = os.path.join(tmp, f"{m['kind']}-{engine}-{threads}.toml")
    with open(path, "w") as f:
        f.write(config(m, text).replace("ENGINE", engine).replace("THREADS", str(threads)))
    # The binary main() built, run directly: a `cargo run` would rebuild it if a source file
    # changed in the meantime, and time a build or fail on someone's half-made edit.
    run = subprocess.run([STEP_TIME, path, str(steps)], cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"train_step_time {path} failed:\n{run.stderr}")
    out = run.stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["median_s"], r["samples_per_step"]


def time_torch(m, vocab, steps, threads):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    N, T, H = 32, m["T"], m["hidden"]

    class HLSTM(nn.Module):
        # Dai, Yin and Jha's H-LSTM cell as hlstmc builds it: each gate is a ReLU layer on
        # [x, h] (dropout after it) and a linear layer to H; c' = f c + i g, h' = o tanh(c').
        def __init__(self, F_in, H, W, classes, p):
            super().__init__()
            self.hid = nn.ModuleList(nn.Linear(F_in + H, W) for _ in range(4))
            self.out = nn.ModuleList(nn.Linear(W, H) for _ in range(4))
            self.head = nn.Linear(H, classes)
            self.H, self.p = H, p

        def cell(self, x, h, c):
            z = torch.cat([x, h], 1)
            gs = [o(F.dropout(F.relu(l(z)), self.p, self.training))
                  for l, o in zip(self.hid, self.out)]
            i, f, g, o = (torch.sigmoid(gs[0]), torch.sigmoid(gs[1]), torch.tanh(gs[2]),
                          torch.sigmoid(gs[3]))
            c = f * c + i * g
            return o * torch.tanh(c), c

        def forward(self, x):
            n = x.shape[1]
            h = x.new_zeros(n, self.H)
            c = x.new_zeros(n, self.H)
            for t in range(x.shape[0]):
                h, c = self.cell(x[t], h, c)
            return self.head(h)

    class Stacked(nn.Module):
        def __init__(self, F_in, H, L, classes):
            super().__init__()
            self.lstm = nn.LSTM(F_in, H, L)
            self.head = nn.Linear(H, classes)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])

    class LM(nn.Module):
        def __init__(self, V, E, H, L):
            super().__init__()
            self.embed = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H, L)
            self.head = nn.Linear(H, V)

        def forward(self, x, state):
            y, state = self.lstm(self.embed(x), state)
            return self.head(y), state

    class HLM(nn.Module):
        # The H-LSTM language model: embedding, the H-LSTM cell at every step, a head on every
        # step's h; the state is carried across windows like the LSTM's.
        def __init__(self, V, E, H):
            super().__init__()
            self.embed = nn.Embedding(V, E)
            self.rnn = HLSTM(E, H, H, V, 0.0)

        def forward(self, x, state):
            h, c = state if state is not None else (None, None)
            e = self.embed(x)
            if h is None:
                h = e.new_zeros(x.shape[1], self.rnn.H)
                c = e.new_zeros(x.shape[1], self.rnn.H)
            ys = []
            for t in range(x.shape[0]):
                h, c = self.rnn.cell(e[t], h, c)
                ys.append(h)
            return self.rnn.head(torch.stack(ys)), (h, c)

    if m["kind"] in ("lm", "hlm"):
        model = LM(vocab, m["E"], H, m["layers"]) if m["kind"] == "lm" else HLM(vocab, m["E"], H)
        x = torch.randint(vocab, (T, N))
        y = torch.randint(vocab, (T, N))
    else:
        model = (HLSTM(m["F"], H, 64, 10, 0.2) if m["kind"] == "hlstm"
                 else Stacked(m["F"], H, m["layers"], 10))
        x = torch.rand(T, N, m["F"])
        y = torch.randint(10, (N,))
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    state = None
    times = []
    for k in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        if m["kind"] in ("lm", "hlm"):
            logits, state = model(x, state)
            state = tuple(s.detach() for s in state)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        else:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), (T * N if m["kind"] in ("lm", "hlm") else N)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per side (default 20)")
    ap.add_argument("--text", default=TEXT, help="the text data (default examples/data/text)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--only", help="only the models whose name contains this")
    ap.add_argument("--fast", action="store_true", help="also time the fast engine (1 thread)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of every configuration; the table has each one's best (default 3)")
    a = ap.parse_args()
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("PyTorch is not installed: only hlstmc is timed", file=sys.stderr)
    cores = os.cpu_count()
    vocab = vocab_size(a.text)
    # Build first, so that no timed run waits for the compiler.
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "hlstm-trainer", "--example",
                    "train_step_time"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in MODELS.items():
            if a.only and a.only not in name:
                continue
            row = {"model": name, "batch": 32}
            # Rounds of every configuration in turn: on a shared machine the best round is the
            # one least disturbed (the json keeps every round's median).
            for _ in range(a.rounds):
                runs = [("hlstmc_fast", "fast", 1)] if a.fast else []
                runs += [(f"hlstmc_{t}", "jit", t) for t in THREADS]
                for key, engine, t in runs:
                    s, row["per_step"] = time_hlstmc(m, a.text, a.steps, tmp, engine, t)
                    row.setdefault(key + "_rounds", []).append(s)
                    if torch_version and engine == "jit":
                        row.setdefault(f"torch_{t}_rounds", []).append(
                            time_torch(m, vocab, a.steps, t)[0])
            for key in [k for k in row if k.endswith("_rounds")]:
                row[key[:-len("_rounds")] + "_s"] = min(row[key])
            rows.append(row)
            print(f"{name}: {row}", file=sys.stderr)
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    head = (f"machine: {cpu}, {cores} cores, load average {load} at the end; "
            f"PyTorch {torch_version or 'absent'}; {time.strftime('%Y-%m-%d', time.gmtime())}")
    cols = ["model (batch 32)", "samples/step"]
    if a.fast:
        cols.append("hlstmc fast, 1 thread")
    for t in THREADS:
        cols += [f"hlstmc jit, {t} thread{'s' * (t > 1)}", f"PyTorch, {t} thread{'s' * (t > 1)}"]
    cols += [f"hlstmc / PyTorch, {t} thread{'s' * (t > 1)}" for t in THREADS]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rate = lambda s: f"{1 / s:.2f}/s ({1000 * s:.1f} ms)"
    for r in rows:
        cells = [r["model"], str(r["per_step"])]
        if a.fast:
            cells.append(rate(r["hlstmc_fast_s"]))
        for t in THREADS:
            cells.append(rate(r[f"hlstmc_{t}_s"]))
            cells.append(rate(r[f"torch_{t}_s"]) if torch_version else "-")
        for t in THREADS:
            cells.append(f"{r[f'torch_{t}_s'] / r[f'hlstmc_{t}_s']:.2f}x" if torch_version
                         else "-")
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
