"""Every error path: the exception's class and a message naming the problem; nothing from
Python crashes the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import hlstmc
from conftest import FIXTURES, onnx, reference_data

MODEL = FIXTURES / "hlstm_scan_H64_X32_T8_sp97"


@pytest.fixture(scope="module")
def session():
    return hlstmc.InferenceSession(str(MODEL / "model.onnx"))


@pytest.fixture(scope="module")
def x():
    inputs, _ = reference_data(MODEL)
    return inputs["X"]


def test_exception_classes():
    assert issubclass(hlstmc.InvalidArgument, ValueError)
    assert issubclass(hlstmc.ModelError, RuntimeError)


def test_wrong_input_name(session, x):
    with pytest.raises(hlstmc.InvalidArgument, match=r"no input named 'x'; its inputs are: X"):
        session.run(None, {"x": x})


def test_missing_input(session):
    with pytest.raises(hlstmc.InvalidArgument, match="missing inputs: X"):
        session.run(None, {})


def test_wrong_shape(session, x):
    with pytest.raises(ValueError, match=r"input 'X' expects f32\[8,1,32\], got f32\[8,1,31\]"):
        session.run(None, {"X": x[:, :, :31]})
    with pytest.raises(ValueError, match="input 'X' expects"):
        session.run(None, {"X": np.float32(1.0)})


def test_wrong_dtype(session, x):
    for bad in [x.astype(np.int64), x.astype(bool), np.array([["a"]]), np.array([object()])]:
        with pytest.raises(hlstmc.InvalidArgument, match="input 'X' expects f32"):
            session.run(None, {"X": bad})


def test_wrong_output_name(session, x):
    with pytest.raises(hlstmc.InvalidArgument, match=r"no output named 'Z'; its outputs are: Y, Y_h"):
        session.run(["Z"], {"X": x})


def test_non_string_key(session, x):
    with pytest.raises(hlstmc.InvalidArgument, match="input names are strings"):
        session.run(None, {0: x})
    with pytest.raises(TypeError):
        session.run(None, [x])


def _model_with_op(op_type: str) -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, ["X"], ["Y"], name="the_node")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_unsupported_op():
    with pytest.raises(hlstmc.ModelError, match="Det"):
        hlstmc.InferenceSession(_model_with_op("Det"))


def test_malformed_and_truncated_files(tmp_path):
    with pytest.raises(hlstmc.ModelError):
        hlstmc.InferenceSession(b"\x08\x07garbage")
    data = (MODEL / "model.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(hlstmc.ModelError):
        hlstmc.InferenceSession(str(truncated))
    with pytest.raises(hlstmc.ModelError):
        hlstmc.inspect(str(truncated))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot read .*nope.onnx"):
        hlstmc.InferenceSession(str(tmp_path / "nope.onnx"))


def test_bad_options():
    path = str(MODEL / "model.onnx")
    with pytest.raises(hlstmc.InvalidArgument, match="engine 'gpu' is not one of: interp, fast-interp, kernel-interp, jit, cuda"):
        hlstmc.InferenceSession(path, engine="gpu")
    for threads in [0, -1, 65]:
        with pytest.raises(hlstmc.InvalidArgument, match="threads"):
            hlstmc.InferenceSession(path, threads=threads)
    with pytest.raises(hlstmc.InvalidArgument, match="sparse_strategy"):
        hlstmc.InferenceSession(path, sparse_strategy="magic")
    with pytest.raises(hlstmc.InvalidArgument, match="cpu"):
        hlstmc.InferenceSession(path, cpu="arm64")
    with pytest.raises(TypeError):
        hlstmc.InferenceSession(12)
    with pytest.raises(hlstmc.InvalidArgument, match="no input named 'Q'|'Q'"):
        hlstmc.InferenceSession(path, shapes={"Q": [1, 2]})
    with pytest.raises(hlstmc.InvalidArgument):
        hlstmc.InferenceSession(path, shapes={"X": [8, 1, 31]})


def test_tool_errors(tmp_path):
    path = str(MODEL / "model.onnx")
    with pytest.raises(hlstmc.InvalidArgument, match="pass"):
        hlstmc.optimize(path, passes=["no-such-pass"])
    with pytest.raises(hlstmc.InvalidArgument, match="format"):
        hlstmc.optimize(path, format="pdf")
    with pytest.raises(hlstmc.InvalidArgument, match="target 'arm' is not one of: x86_64, ptx"):
        hlstmc.compile(path, "arm", str(tmp_path))
    with pytest.raises(hlstmc.InvalidArgument, match="emit 'exe'"):
        hlstmc.compile(path, out_dir=str(tmp_path), emit=["exe"])
    with pytest.raises(hlstmc.InvalidArgument, match="C identifier"):
        hlstmc.compile(path, out_dir=str(tmp_path), name="not a name")
    assert not any(tmp_path.iterdir()), "a failed compile leaves nothing behind"


def test_damaged_models_raise_never_crash():
    """Truncations and flipped bytes of a real model: each loads (and runs, or refuses its
    input) or raises one of the documented exceptions; nothing else escapes."""
    data = bytearray((MODEL / "model.onnx").read_bytes())
    rng = np.random.default_rng(7)
    x = reference_data(MODEL)[0]["X"]
    damaged = [bytes(data[: int(n)]) for n in rng.integers(0, len(data), 40)]
    for _ in range(60):
        d = bytearray(data)
        for i in rng.integers(0, len(d), 4):
            d[int(i)] = int(rng.integers(0, 256))
        damaged.append(bytes(d))
    outcomes = {"loaded": 0, "refused": 0}
    for model in damaged:
        try:
            session = hlstmc.InferenceSession(model)
        except (hlstmc.ModelError, hlstmc.InvalidArgument):
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        try:
            session.run(None, {"X": x})
        except (hlstmc.ModelError, hlstmc.InvalidArgument):
            pass
    assert outcomes["refused"] > 0, outcomes


def test_random_feeds_raise_never_crash(session):
    rng = np.random.default_rng(3)
    dtypes = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, bool, np.complex64]
    for _ in range(60):
        rank = int(rng.integers(0, 5))
        shape = tuple(int(d) for d in rng.integers(0, 10, rank))
        value = rng.standard_normal(shape).astype(dtypes[int(rng.integers(len(dtypes)))])
        try:
            out = session.run(None, {"X": value})
        except hlstmc.InvalidArgument:
            continue
        assert value.shape == (8, 1, 32) and out[0].shape == (8, 1, 64)


def test_a_model_the_jit_cannot_take_runs_in_the_interpreter_with_a_warning():
    from onnx import TensorProto, helper

    node = helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.INT64)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.INT64, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.warns(RuntimeWarning, match="cannot lower to the kernel IR.*running the interpreter instead"):
        session = hlstmc.InferenceSession(model)
    assert session.engine == "interp"
    np.testing.assert_array_equal(session.run(None, {"X": np.full((2, 3), 2.7, np.float32)})[0], np.full((2, 3), 2))
    with pytest.raises(hlstmc.ModelError, match="cannot lower"):
        hlstmc.InferenceSession(model, engine="jit")
