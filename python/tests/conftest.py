"""Shared helpers: the repository's fixture models and their reference tensors."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "models"
# Every fixture model: model.onnx with test_data_set_0/input_K.pb and output_K.pb (ONNX
# Runtime's outputs, or ONNX's reference implementation's).
MODELS = sorted(p for p in FIXTURES.iterdir() if (p / "model.onnx").exists())

onnx = pytest.importorskip("onnx", reason="the fixtures' reference tensors are read with the onnx package (pip install onnx)")
from onnx import numpy_helper  # noqa: E402


def read_pb(path: pathlib.Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def reference_data(model_dir: pathlib.Path):
    """(inputs by name, reference outputs in order) of a fixture."""
    data = model_dir / "test_data_set_0"
    model = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    inputs = {}
    for k, name in enumerate(names):
        path = data / f"input_{k}.pb"
        if path.exists():
            inputs[name] = read_pb(path)
    outputs = []
    k = 0
    while (data / f"output_{k}.pb").exists():
        outputs.append(read_pb(data / f"output_{k}.pb"))
        k += 1
    return inputs, outputs


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-3, atol: float = 1e-4, what: str = ""):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture(params=MODELS, ids=[p.name for p in MODELS])
def fixture_model(request):
    return request.param
