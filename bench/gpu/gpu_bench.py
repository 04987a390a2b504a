#!/usr/bin/env python3
"""PyTorch references for bench/gpu/run.sh: the same weights as an ONNX benchmark model, as
torch.nn.LSTM (cuDNN on cuda) for the LSTMs and an H-LSTM module for the H-LSTMs, timed per
batch-1 sequence; and the report that run.sh writes.

Needs only numpy and torch (no onnx package, no network): the weights are read from the ONNX
file by a small protobuf reader below (the main graph's initializers: dims, data type, raw_data
or float_data). `--npz FILE` reads them from a .npz instead (`export-npz` writes one, for models
whose ONNX files cannot be copied to the GPU machine).

    gpu_bench.py torch MODEL.onnx [--device cuda] [--runs N] [--warmup N] [--x X.npy] [--y-out Y.npy]
    gpu_bench.py export-npz MODEL.onnx OUT.npz
    gpu_bench.py check                         # torch, its CUDA and cuDNN, as one JSON line
    gpu_bench.py report RESULTS_DIR OUT.md     # the markdown of run.sh's results

The models are those of `gen_bench_models` (bench/src/bin/gen_bench_models.rs):
- `lstm_*`: one ONNX LSTM op, W [1, 4H, X], R [1, 4H, H], B [1, 8H], gates in ONNX order
  (i, o, f, c); torch.nn.LSTM's order is (i, f, g, o).
- `hlstm_*`: a Scan whose body reads `{f,i,o,g}_W{l}` [in, out] and `{f,i,o,g}_b{l}` [out] from
  the main graph; each gate is a = [x_t, h]; a = relu(a W_l + b_l) for hidden layers; the last
  layer's output goes through sigmoid (f, i, o) or tanh (g); c = f c + i g; h = o tanh(c).
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np

# ---------------------------------------------------------------------------------------------
# A minimal protobuf reader for ONNX initializers (wire format only).


def _varint(b, i):
    shift = result = 0
    while True:
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return result, i
        shift += 7


def _fields(b):
    """Yields (field number, wire type, value) of one message; value is an int or bytes."""
    i = 0
    n = len(b)
    while i < n:
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 2:
            ln, i = _varint(b, i)
            v = b[i:i + ln]
            i += ln
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wt)
        yield f, wt, v


_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 11: np.float64}


def _tensor(b):
    dims, name, dtype, raw, floats = [], "", 1, None, []
    for f, wt, v in _fields(b):
        if f == 1:  # dims (int64, packed or not)
            if wt == 2:
                j = 0
                while j < len(v):
                    d, j = _varint(v, j)
                    dims.append(d)
            else:
                dims.append(v)
        elif f == 2:
            dtype = v
        elif f == 4:  # float_data
            if wt == 2:
                floats.extend(struct.unpack("<%df" % (len(v) // 4), v))
            else:
                floats.append(struct.unpack("<f", v)[0])
        elif f == 8:
            name = bytes(v).decode()
        elif f == 9:
            raw = bytes(v)
        elif f == 14 and v == 1:
            raise ValueError("%s: external data is not supported" % name)
    if dtype not in _DTYPES:
        raise ValueError("%s: data type %d is not supported" % (name, dtype))
    if raw is not None:
        a = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).copy()
    else:
        a = np.array(floats, dtype=_DTYPES[dtype])
    return name, a.reshape(dims)


def onnx_initializers(path):
    """The main graph's initializers of an ONNX file, by name, as numpy arrays."""
    with open(path, "rb") as fh:
        data = memoryview(fh.read())
    graph = None
    for f, _, v in _fields(data):
        if f == 7:  # ModelProto.graph
            graph = v
    if graph is None:
        raise ValueError("%s: no graph" % path)
    out = {}
    for f, _, v in _fields(graph):
        if f == 5:  # GraphProto.initializer
            name, a = _tensor(v)
            out[name] = a
    return out


def weights(model, npz=None):
    if npz:
        with np.load(npz) as z:
            return {k: z[k] for k in z.files}
    return onnx_initializers(model)


# ---------------------------------------------------------------------------------------------
# The PyTorch models.

GATES = ["f", "i", "o", "g"]


def torch_lstm(w, torch, device):
    """torch.nn.LSTM with the ONNX LSTM op's weights (one layer, one direction)."""
    W, R, B = w["W"][0], w["R"][0], w["B"][0]
    h4, x = W.shape
    h = h4 // 4
    order = [0, 2, 3, 1]  # ONNX (i, o, f, c) -> torch (i, f, g, o)

    def re(a):
        return np.concatenate([a[k * h:(k + 1) * h] for k in order], axis=0)

    m = torch.nn.LSTM(x, h, num_layers=1)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(re(W)))
        m.weight_hh_l0.copy_(torch.from_numpy(re(R)))
        m.bias_ih_l0.copy_(torch.from_numpy(re(B[:h4])))
        m.bias_hh_l0.copy_(torch.from_numpy(re(B[h4:])))
    m = m.to(device).eval()

    def call(xs):  # [T, 1, X] -> Y [T, 1, H]
        y, _ = m(xs)
        return y

    return call, x, h


def torch_hlstm(w, torch, device):
    """The H-LSTM of gen_bench_models as a torch.nn.Module: each gate a small MLP on [x_t, h]."""
    layers = {}
    for g in GATES:
        ls = []
        while "%s_W%d" % (g, len(ls)) in w:
            k = len(ls)
            ls.append((w["%s_W%d" % (g, k)], w["%s_b%d" % (g, k)]))
        if not ls:
            raise ValueError("no weights %s_W0: not an H-LSTM of gen_bench_models" % g)
        layers[g] = ls
    h = layers["f"][-1][0].shape[1]
    x = layers["f"][0][0].shape[0] - h

    class Hlstm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.ParameterList()
            self.b = torch.nn.ParameterList()
            self.n = []
            for g in GATES:
                self.n.append(len(layers[g]))
                for W, b in layers[g]:
                    self.w.append(torch.nn.Parameter(torch.from_numpy(W.copy())))
                    self.b.append(torch.nn.Parameter(torch.from_numpy(b.copy())))

        def forward(self, xs):  # [T, B, X] -> [T, B, H]
            T, B, _ = xs.shape
            hh = xs.new_zeros(B, h)
            cc = xs.new_zeros(B, h)
            ys = []
            for t in range(T):
                z = torch.cat([xs[t], hh], dim=1)
                outs = []
                k = 0
                for gi, n in enumerate(self.n):
                    a = z
                    for l in range(n):
                        a = torch.addmm(self.b[k], a, self.w[k])
                        k += 1
                        if l + 1 < n:
                            a = torch.relu(a)
                    outs.append(torch.tanh(a) if gi == 3 else torch.sigmoid(a))
                f, i, o, g = outs
                cc = f * cc + i * g
                hh = o * torch.tanh(cc)
                ys.append(hh)
            return torch.stack(ys)

    m = Hlstm().to(device).eval()
    return m, x, h


def xorshift_inputs(n):
    """The values `hlstmc bench` feeds (src/cli/bench.rs: Rng), n of them."""
    mask = (1 << 64) - 1
    s = 0x9E3779B97F4A7C15
    out = np.empty(n, dtype=np.float32)
    for k in range(n):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        out[k] = np.float32((s >> 40) / float(1 << 24) * 2.0 - 1.0)
    return out


def cmd_torch(a):
    import torch

    torch.backends.cudnn.enabled = True
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: torch has no CUDA device", file=sys.stderr)
        return 1
    w = weights(a.model, a.npz)
    name = os.path.basename(a.model)
    if "W" in w and "R" in w and "B" in w:
        call, nx, nh = torch_lstm(w, torch, device)
        engine = "torch.nn.LSTM (cuDNN)" if device.type == "cuda" else "torch.nn.LSTM"
    else:
        call, nx, nh = torch_hlstm(w, torch, device)
        engine = "torch H-LSTM module"
    steps = a.steps
    if steps is None:
        import re

        m = re.search(r"_T(\d+)_", name)
        if not m:
            print("error: %s: give --steps (no _T<steps>_ in the name)" % name, file=sys.stderr)
            return 1
        steps = int(m.group(1))
    if a.x:
        xh = np.load(a.x).astype(np.float32)
    else:
        xh = xorshift_inputs(steps * nx).reshape(steps, 1, nx)
    # One call: the input copied to the device, the sequence, the output copied back (as
    # `hlstmc bench --engine cuda` times its calls).
    def once():
        xs = torch.from_numpy(xh).to(device)
        y = call(xs)
        return y.cpu()

    with torch.inference_mode():
        y = once()
        if a.y_out:
            np.save(a.y_out, y.numpy())
        for _ in range(a.warmup):
            once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        us = []
        for _ in range(a.runs):
            t = time.perf_counter()
            once()  # .cpu() waits for the device
            us.append((time.perf_counter() - t) * 1e6)
    us.sort()
    print(json.dumps({
        "model": a.model,
        "engine": engine,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": steps,
        "runs": a.runs,
        "median_us": statistics.median(us),
        "min_us": us[0],
        "p90_us": us[min(len(us) - 1, int(np.ceil(0.9 * len(us))) - 1)],
        "median_us_per_step": statistics.median(us) / steps,
    }))
    return 0


def cmd_export(a):
    w = onnx_initializers(a.model)
    np.savez(a.out, **w)
    print("wrote %s (%d arrays)" % (a.out, len(w)))
    return 0


def cmd_check(_a):
    info = {"python": sys.version.split()[0], "numpy": np.__version__}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["device"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
    except ImportError as e:
        info["torch"] = None
        info["error"] = str(e)
    print(json.dumps(info))
    return 0 if info.get("cuda") else 1


def _load_lines(path):
    out = []
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def _us(v):
    if v is None:
        return "n/a"
    return "%.0f" % v if v >= 100 else "%.1f" % v


def cmd_report(a):
    d = a.results
    env = {}
    if os.path.exists(os.path.join(d, "env.json")):
        with open(os.path.join(d, "env.json")) as fh:
            env = json.load(fh)
    fixtures = _load_lines(os.path.join(d, "fixtures.jsonl"))
    rows = _load_lines(os.path.join(d, "bench.jsonl"))
    L = []
    L.append("## GPU (PTX)")
    L.append("")
    L.append("Measured by `%s` on %s (%s; driver %s; torch %s, cuDNN %s), %s." % (
        env.get("command", "bench/gpu/run.sh"), env.get("gpu", "?"), env.get("host", "?"),
        env.get("driver", "?"), env.get("torch", "?"), env.get("cudnn", "?"), env.get("date", "?")))
    L.append("")
    ok = sum(1 for f in fixtures if f["status"] == "pass")
    bad = [f for f in fixtures if f["status"] != "pass"]
    L.append("Fixtures through `hlstmc run --engine cuda --test-data`: %d pass, %d fail%s." % (
        ok, len(bad), (": " + ", ".join("%s (%s)" % (f["name"], f["status"])
                                       for f in bad)) if bad else ""))
    L.append("")
    clib = _load_lines(os.path.join(d, "clib.jsonl"))
    if clib:
        cok = [c for c in clib if c["status"] == "pass"]
        cbad = [c for c in clib if c["status"] != "pass"]
        L.append("The C library of `hlstmc compile --target ptx` (bench/gpu/clib_check.sh: "
                 "tests/c/run_model.c linked to libhlstmc_NAME.a; error codes, whole sequences, and "
                 "streaming where the model streams): %d of %d fixtures pass%s." % (
                     len(cok), len(clib), (": " + ", ".join("%s (%s)" % (c["name"], c["status"])
                                                            for c in cbad)) if cbad else ""))
        L.append("")
    L.append("Batch 1, one whole sequence per call, median of single timed calls, microseconds; "
             "every call copies the input to the GPU and the outputs back. CPU JIT: "
             "`hlstmc bench --engine jit` (1 thread). PyTorch: torch.nn.LSTM (cuDNN) for the LSTMs, "
             "an eager H-LSTM module (bench/gpu/gpu_bench.py) for the H-LSTMs, same weights; "
             "max |dY| is hlstmc cuda's output against PyTorch's on the same input.")
    L.append("")
    L.append("| model | hlstmc cuda | hlstmc jit (CPU) | PyTorch cuda | PyTorch / hlstmc cuda | jit / hlstmc cuda | max abs dY |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        c, j, t = r.get("cuda_us"), r.get("jit_us"), r.get("torch_us")
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], _us(c), _us(j), _us(t),
            "%.2fx" % (t / c) if c and t else "n/a",
            "%.2fx" % (j / c) if c and j else "n/a",
            "%.1e" % r["max_abs_dy"] if r.get("max_abs_dy") is not None else "n/a"))
    errors = [(r["model"], e) for r in rows for e in r.get("errors", [])]
    if errors:
        L.append("")
        L.append("Errors:")
        for m, e in errors:
            L.append("- %s: %s" % (m, e))
    text = "\n".join(L) + "\n"
    with open(a.out, "w") as fh:
        fh.write(text)
    sys.stdout.write(text)
    return 0


def cmd_compare(a):
    """Max |a - b| of two .npy files (shapes must agree after squeezing)."""
    x = np.load(a.a).astype(np.float64).squeeze()
    y = np.load(a.b).astype(np.float64).squeeze()
    if x.shape != y.shape:
        print("shape %s vs %s" % (x.shape, y.shape), file=sys.stderr)
        return 1
    print("%.3e" % float(np.max(np.abs(x - y))) if x.size else "0")
    return 0


def read_pb(path):
    """A TensorProto file (test_data_set_*/input_K.pb) as a numpy array."""
    with open(path, "rb") as fh:
        return _tensor(memoryview(fh.read()))[1]


def cmd_pb2raw(a):
    """input_K.pb -> OUT/in_K.f32 and output_K.pb -> OUT/want_K.f32 (raw little-endian f32)."""
    os.makedirs(a.out, exist_ok=True)
    n = 0
    for kind, prefix in (("input", "in"), ("output", "want")):
        k = 0
        while os.path.exists(os.path.join(a.data, "%s_%d.pb" % (kind, k))):
            x = read_pb(os.path.join(a.data, "%s_%d.pb" % (kind, k)))
            x.astype("<f4").tofile(os.path.join(a.out, "%s_%d.f32" % (prefix, k)))
            k += 1
            n += 1
    print(n)
    return 0 if n else 1


def cmd_compare_raw(a):
    """Raw f32 outputs against references, within 1e-4 + 1e-3 |want| (the tests' rule)."""
    for got_path, want_path in zip(a.got, a.want):
        got = np.fromfile(got_path, dtype="<f4").astype(np.float64)
        want = np.fromfile(want_path, dtype="<f4").astype(np.float64)
        if got.shape != want.shape:
            print("%s: %d floats, want %d" % (got_path, got.size, want.size))
            return 1
        bad = np.abs(got - want) > 1e-4 + 1e-3 * np.abs(want)
        if bad.any():
            i = int(np.argmax(bad))
            print("%s[%d]: got %g, want %g" % (got_path, i, got[i], want[i]))
            return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("torch")
    t.add_argument("model")
    t.add_argument("--npz")
    t.add_argument("--device", default="cuda")
    t.add_argument("--runs", type=int, default=100)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--steps", type=int)
    t.add_argument("--x", help="the input [T, 1, X] as .npy (default: hlstmc bench's values)")
    t.add_argument("--y-out", help="write the output Y here (.npy)")
    e = sub.add_parser("export-npz")
    e.add_argument("model")
    e.add_argument("out")
    sub.add_parser("check")
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    p = sub.add_parser("pb2raw")
    p.add_argument("data")
    p.add_argument("out")
    c = sub.add_parser("compare-raw")
    c.add_argument("--got", nargs="+", required=True)
    c.add_argument("--want", nargs="+", required=True)
    a = ap.parse_args()
    return {"torch": cmd_torch, "export-npz": cmd_export, "check": cmd_check,
            "report": cmd_report, "compare": cmd_compare, "pb2raw": cmd_pb2raw,
            "compare-raw": cmd_compare_raw}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
