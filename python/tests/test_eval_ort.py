"""`hlstmc eval MODEL --text FILE` against ONNX Runtime (issue 20): the bits per character of
tiny character models trained here (an LSTM exported as ONNX LSTM ops, an H-LSTM as Scans), and
of the shipped text model where it exists, computed by ONNX Runtime with the state carried
across windows, the vocabulary read from the model's metadata property `hlstmc.text`, agree
with hlstmc's to 1e-3."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import REPO

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")

CLI = REPO / "target" / "release" / "hlstmc"
DATA = REPO / "trainer" / "data" / "text" / "fortunes-head.txt"
SHIPPED = REPO / "examples" / "text-hlstm.onnx"
FULL_TEXT = REPO / "examples" / "data" / "text" / "fortunes-en.txt.gz"

CONFIG = """seed = 4
[data]
format = "text"
path = "{data}"
window = 16
max_chars = 4000
[model]
cell = "{cell}"
hidden = 12
embed = 6
{model}
[train]
epochs = 1
batch = 4
lr = 0.01
{gp}"""

GP = """[gp]
seed_density = 0.6
grow_rounds = 1
prune_ratio = 0.5
target_density = 0.4
retrain_epochs = 1
tolerance = 10.0
"""


def need_cli():
    if not CLI.exists():
        pytest.skip(f"{CLI} is not built (cargo build --release); hlstmc eval cannot be compared")


def ort_bits_per_char(model: str, text: str, window: int) -> tuple[float, int]:
    """Bits per character of `text` by ONNX Runtime: batch 1, windows of `window`, each
    window's final states fed as the next one's initial states, log-softmax in float64."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["hlstmc.text"])
    vocab = {c: i for i, c in enumerate(meta["vocab"])}
    ids = np.array([vocab[c] for c in text], dtype=np.int64)
    inputs = sess.get_inputs()
    tokens = next(i.name for i in inputs if i.type == "tensor(int64)")
    states = {i.name: np.zeros((1, i.shape[1]), np.float32) for i in inputs if i.name != tokens}
    outputs = [o.name for o in sess.get_outputs()]
    bits, n, at = 0.0, 0, 0
    while at + 1 < len(ids):
        t = min(window, len(ids) - 1 - at)
        feeds = {tokens: ids[at : at + t].reshape(t, 1), **states}
        got = dict(zip(outputs, sess.run(outputs, feeds)))
        logits = got["logits"].reshape(t, -1).astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        bits -= logp[np.arange(t), ids[at + 1 : at + 1 + t]].sum() / np.log(2)
        n += t
        states = {k: got[k.replace("0.", "T.", 1)] for k in states}
        at += t
    return bits / n, n


def hlstmc_eval(*args: str) -> dict:
    out = subprocess.run([str(CLI), "eval", *args, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("cell", ["lstm", "hlstm"])
def test_eval_agrees_with_onnxruntime(tmp_path, cell):
    need_cli()
    config = tmp_path / f"{cell}.toml"
    model_lines = "hidden_width = 8" if cell == "hlstm" else "layers = 2"
    config.write_text(CONFIG.format(data=DATA, cell=cell, model=model_lines, gp=GP if cell == "hlstm" else ""))
    model = tmp_path / f"{cell}.onnx"
    subprocess.run([str(CLI), "train", str(config), "-o", str(model), "-q"], check=True, capture_output=True)
    text = open(DATA, encoding="utf-8", newline="").read()[1000:1900]
    piece = tmp_path / "piece.txt"
    piece.write_bytes(text.encode("utf-8"))
    theirs, n = ort_bits_per_char(str(model), text, window=16)
    for extra in ([], ["--window", "50"]):
        ours = hlstmc_eval(str(model), "--text", str(piece), *extra)
        assert ours["predicted"] == n
        assert abs(ours["bits_per_char"] - theirs) < 1e-3, (extra, ours["bits_per_char"], theirs)
    print(f"{cell}: hlstmc {ours['bits_per_char']:.6f}, ONNX Runtime {theirs:.6f} bits per character")


def test_shipped_text_model_agrees_with_onnxruntime():
    need_cli()
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED.relative_to(REPO)} is not shipped yet")
    import gzip

    text = gzip.open(FULL_TEXT, "rt", encoding="utf-8", newline="").read()
    meta = json.loads(
        ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map["hlstmc.text"]
    )
    if meta.get("max_chars"):
        text = text[: meta["max_chars"]]
    n = len(text)
    start = n - int(n * meta["test"])
    theirs, _ = ort_bits_per_char(str(SHIPPED), text[start:], window=meta["window"])
    ours = hlstmc_eval(str(SHIPPED), "--text", str(FULL_TEXT), "--slice", "test")
    assert ours["from"] == start
    assert abs(ours["bits_per_char"] - theirs) < 1e-3, (ours["bits_per_char"], theirs)
