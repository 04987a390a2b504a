"""from_torch: PyTorch modules exported and built into sessions, checked against torch itself.
Where torch is not installed, the tests are skipped with that reason (pytest -rs shows it) and
the ImportError that from_torch raises is checked instead."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import hlstmc


def test_import_error_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch.*pip install torch"):
        hlstmc.from_torch(object(), ())


torch = pytest.importorskip("torch", reason="torch is not installed: from_torch is not tested (pip install torch)")
nn = torch.nn


class Batched(nn.Module):
    """A recurrent layer whose outputs are its sequence output and its final states."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        y, state = self.layer(x)
        return (y, *state) if isinstance(state, tuple) else (y, state)


class PerGateHLSTM(nn.Module):
    """An H-LSTM cell written out per gate: each gate a two-layer network of nn.Linear on
    [x_t, h_{t-1}], unrolled over a fixed sequence length."""

    def __init__(self, x, h, hidden):
        super().__init__()
        self.h = h
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(x + h, hidden), nn.ReLU(), nn.Linear(hidden, h)) for _ in range(4)
        )

    def forward(self, xs):
        batch = xs.shape[1]
        h = xs.new_zeros(batch, self.h)
        c = xs.new_zeros(batch, self.h)
        ys = []
        for t in range(xs.shape[0]):
            z = torch.cat([xs[t], h], dim=1)
            i, f, o, g = (gate(z) for gate in self.gates)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), h


def _check(module, x, **kwargs):
    torch.manual_seed(0)
    module.eval()
    with torch.no_grad():
        want = module(x)
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    session = hlstmc.from_torch(module, (x,), **kwargs)
    assert session.engine == "jit"
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
    return session


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_torch_recurrent_layers(kind):
    torch.manual_seed(1)
    layer = getattr(nn, kind)(input_size=12, hidden_size=16)
    x = torch.randn(6, 2, 12)
    _check(Batched(layer), x)


def test_torch_per_gate_hlstm_with_pruned_weights():
    torch.manual_seed(2)
    model = PerGateHLSTM(x=10, h=12, hidden=24)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_((torch.rand_like(p) > 0.9).float())
    session = _check(model, torch.randn(5, 1, 10))
    assert session.get_outputs()[0].shape[0] == 5


def test_torch_dynamic_batch():
    torch.manual_seed(3)
    layer = nn.LSTM(input_size=8, hidden_size=8)
    x = torch.randn(4, 3, 8)
    session = hlstmc.from_torch(
        Batched(layer),
        (x,),
        input_names=["x"],
        output_names=["y", "h", "c"],
        dynamic_axes={"x": {1: "batch"}, "y": {1: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}},
        session_options={"threads": 2},
    )
    assert session.get_inputs()[0].shape == [4, "batch", 8]
    assert session.threads == 2
    for batch in [1, 5]:
        xb = torch.randn(4, batch, 8)
        with torch.no_grad():
            want = Batched(layer)(xb)
        got = session.run(None, {"x": xb.numpy()})
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-4)
