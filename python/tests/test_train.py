"""hlstmc.train: a short grow-and-prune run from a dict on numpy arrays, from the TOML file of
the shipped example, and its errors; the trained model runs in a session."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hlstmc
from conftest import REPO


def _toy(n=60, steps=4, features=3, seed=0):
    """Sequences whose class is the sign pattern of the mean of features 0 and 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, steps, features)).astype(np.float32)
    m = x.mean(axis=1)
    y = (m[:, 0] > 0).astype(np.int64) + 2 * (m[:, 1] > 0).astype(np.int64)
    return x, y


CONFIG = {
    "seed": 3,
    "model": {"cell": "hlstm", "hidden": 8},
    "train": {"engine": "fast", "epochs": 2, "batch": 8, "optimizer": "adam", "lr": 0.01},
    "gp": {"grow_rounds": 0, "prune_ratio": 0.3, "target_density": 0.5, "retrain_epochs": 1, "max_prune_rounds": 2},
}


def test_train_on_arrays_from_a_dict(tmp_path, capsys):
    x, y = _toy()
    out = tmp_path / "toy.onnx"
    seen = []
    history = hlstmc.train(CONFIG, str(out), data=(x, y), progress=seen.append)
    assert history and history == seen, "the callable sees every record the history returns"
    kinds = [r["kind"] for r in history]
    assert kinds[-1] == "test" and "epoch" in kinds and "prune" in kinds, kinds
    test = history[-1]
    assert 0.0 <= test["accuracy"] <= 1.0
    assert test["density"] < 1.0, "pruning ran"
    for suffix in ["log.jsonl", "summary.json", "config.toml", "curves.svg"]:
        assert (tmp_path / f"toy.{suffix}").exists(), suffix
    log = [json.loads(line) for line in (tmp_path / "toy.log.jsonl").read_text().splitlines()]
    assert log == history
    assert capsys.readouterr().err == "", "a callable replaces the printed lines"
    # The model runs in a session on the same kind of input: X [steps, N, features].
    session = hlstmc.InferenceSession(str(out))
    assert session.get_inputs()[0].shape == [4, "N", 3]
    logits = session.run(None, {"X": np.ascontiguousarray(x[:7].transpose(1, 0, 2))})[0]
    assert logits.shape == (7, 4)
    reference = hlstmc.InferenceSession(str(out), engine="interp")
    np.testing.assert_allclose(logits, reference.run(None, {"X": np.ascontiguousarray(x[:7].transpose(1, 0, 2))})[0], rtol=1e-3, atol=1e-4)


def test_progress_lines_and_seed(tmp_path, capsys):
    x, y = _toy()
    a = hlstmc.train(CONFIG, str(tmp_path / "a.onnx"), data=(x, y), seed=7)
    err = capsys.readouterr().err
    assert "epoch" in err and "test accuracy" in err and "nonzero weights" in err, err
    b = hlstmc.train(CONFIG, str(tmp_path / "b.onnx"), data=(x, y), seed=7, progress=False)
    assert capsys.readouterr().err == ""
    assert a == b, "one seed, one history"


def test_train_from_a_toml_file(tmp_path):
    # The digits data the shipped example trains on, copied beside a short config that names it
    # relative to the config's folder (as `hlstmc train` resolves it).
    import shutil

    shutil.copy(REPO / "trainer" / "data" / "digits" / "digits.csv.gz", tmp_path / "digits.csv.gz")
    config = tmp_path / "digits.toml"
    config.write_text(
        """
seed = 1
[data]
format = "csv"
path = "digits.csv.gz"
steps = 8
features = 8
scale = 0.0625
split = { modulus = 5, test = [4], validation = [3] }
[model]
cell = "hlstm"
hidden = 16
[train]
engine = "fast"
epochs = 1
batch = 32
optimizer = "adam"
lr = 0.01
"""
    )
    history = hlstmc.train(str(config), str(tmp_path / "out" / "digits.onnx"), progress=False)
    assert history[-1]["kind"] == "test"
    assert history[-1]["accuracy"] > 0.3, "one epoch learns something"
    assert (tmp_path / "out" / "digits.config.toml").read_text() == config.read_text()


def test_train_errors(tmp_path):
    x, y = _toy()
    with pytest.raises(hlstmc.InvalidArgument, match="unknown field|hiden"):
        hlstmc.train({**CONFIG, "model": {"cell": "hlstm", "hiden": 8}}, str(tmp_path / "m.onnx"), data=(x, y))
    with pytest.raises(hlstmc.InvalidArgument, match=r"X must be \[samples, steps, features\]"):
        hlstmc.train(CONFIG, str(tmp_path / "m.onnx"), data=(x[0], y))
    with pytest.raises(hlstmc.InvalidArgument, match="y must be an integer array"):
        hlstmc.train(CONFIG, str(tmp_path / "m.onnx"), data=(x, y.astype(np.float32)))
    with pytest.raises(hlstmc.InvalidArgument, match="negative|label"):
        hlstmc.train(CONFIG, str(tmp_path / "m.onnx"), data=(x, -y - 1))
    with pytest.raises(hlstmc.InvalidArgument, match="data is a pair"):
        hlstmc.train(CONFIG, str(tmp_path / "m.onnx"), data=x)
    with pytest.raises(hlstmc.InvalidArgument, match='format = "arrays"|arrays'):
        hlstmc.train({**CONFIG, "data": {"format": "arrays", "split": {"modulus": 10, "test": [0]}}}, str(tmp_path / "m.onnx"))
    with pytest.raises(FileNotFoundError):
        hlstmc.train(str(tmp_path / "missing.toml"), str(tmp_path / "m.onnx"))
    with pytest.raises(TypeError):
        hlstmc.train(42, str(tmp_path / "m.onnx"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot create"):
        hlstmc.train(CONFIG, str(blocker / "m.onnx"), data=(x, y), progress=False)
    assert not (tmp_path / "m.onnx").exists()


def test_a_failing_callback_stops_training_and_writes_nothing(tmp_path):
    x, y = _toy()
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous model")
    seen = []

    def fail_on_second(record):
        seen.append(record)
        if len(seen) == 2:
            raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        hlstmc.train(CONFIG, str(out), data=(x, y), progress=fail_on_second)
    assert len(seen) == 2, "no record after the failing one"
    assert out.read_bytes() == b"the previous model"


def test_ctrl_c_interrupts_training(tmp_path):
    import _thread
    import threading

    x, y = _toy(n=200)
    long_run = {**CONFIG, "train": {**CONFIG["train"], "epochs": 100000}}
    long_run.pop("gp")
    out = tmp_path / "m.onnx"
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            hlstmc.train(long_run, str(out), data=(x, y), progress=False)
    finally:
        timer.cancel()
    assert not out.exists()
