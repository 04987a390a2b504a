"""InferenceSession: every fixture against its reference outputs and against ONNX Runtime,
several threads on one session, the input conversions, and NodeArg."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

import hlstmc
from conftest import FIXTURES, REPO, assert_close, read_pb, reference_data


@pytest.mark.parametrize("threads", [1, 2])
def test_fixture_matches_reference(fixture_model, threads):
    inputs, refs = reference_data(fixture_model)
    session = hlstmc.InferenceSession(str(fixture_model / "model.onnx"), threads=threads)
    assert session.threads == threads
    outputs = session.run(None, inputs)
    assert len(outputs) == len(session.get_outputs())
    assert refs, f"{fixture_model.name} has no reference outputs"
    for info, got, want in zip(session.get_outputs(), outputs, refs):
        assert isinstance(got, np.ndarray)
        assert_close(got, want, what=f"{fixture_model.name}: {info.name}")


def test_fixture_matches_onnxruntime(fixture_model):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the side-by-side check needs it")
    inputs, _ = reference_data(fixture_model)
    path = str(fixture_model / "model.onnx")
    ours = hlstmc.InferenceSession(path)
    theirs = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in ours.get_inputs()] == [i.name for i in theirs.get_inputs()]
    assert [o.name for o in ours.get_outputs()] == [o.name for o in theirs.get_outputs()]
    for a, b in zip(ours.get_inputs(), theirs.get_inputs()):
        assert a.type == b.type
    names = [o.name for o in theirs.get_outputs()]
    for got, want, name in zip(ours.run(names, inputs), theirs.run(names, inputs), names):
        assert_close(got, want, what=f"{fixture_model.name}: {name}")


def test_reference_interpreter_and_jit_agree():
    model = FIXTURES / "hlstm_scan_H64_X32_T8_sp90"
    inputs, refs = reference_data(model)
    for engine in ["interp", "fast-interp", "kernel-interp", "jit"]:
        s = hlstmc.InferenceSession(str(model / "model.onnx"), engine=engine)
        assert s.engine == engine
        assert_close(s.run(None, inputs)[0], refs[0], what=engine)


def test_bytes_and_pathlike_sources():
    model = FIXTURES / "lstm_std_H64_X32_T8"
    inputs, refs = reference_data(model)
    for source in [model / "model.onnx", (model / "model.onnx").read_bytes()]:
        s = hlstmc.InferenceSession(source)
        assert_close(s.run(None, inputs)[0], refs[0])


def test_several_threads_share_one_session():
    model = FIXTURES / "hlstm_scan_H64_X32_T8_sp97"
    inputs, refs = reference_data(model)
    (name, x), = inputs.items()
    session = hlstmc.InferenceSession(str(model / "model.onnx"))
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(8)]
    expected = [session.run(None, {name: f}) for f in feeds]

    def work(k):
        return k, session.run(None, {name: feeds[k % len(feeds)]})

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(64)))
    for k, outs in results:
        for got, want in zip(outs, expected[k % len(feeds)]):
            np.testing.assert_array_equal(got, want)


def test_open_batch_is_fixed_per_call():
    # The shipped digits H-LSTM was exported with an open batch N: X is [8, N, 8].
    model = REPO / "examples" / "digits-hlstm.onnx"
    data = REPO / "examples" / "digits-hlstm" / "test_data_set_0"
    x, ref = read_pb(data / "input_0.pb"), read_pb(data / "output_0.pb")
    session = hlstmc.InferenceSession(str(model))
    assert session.get_inputs()[0].shape == [8, "N", 8]
    full = session.run(None, {"X": x})[0]
    assert_close(full, ref)
    # Other batches on the same session: each shape gets its own compiled code.
    for rows in [slice(0, 1), slice(5, 12), slice(100, 164)]:
        part = session.run(None, {"X": np.ascontiguousarray(x[:, rows, :])})[0]
        assert_close(part, full[rows], what=f"rows {rows}")


def test_inputs_are_converted():
    model = FIXTURES / "hlstm_scan_H64_X32_T8"
    inputs, refs = reference_data(model)
    (name, x), = inputs.items()
    session = hlstmc.InferenceSession(str(model / "model.onnx"))
    # float64 and float16 are converted to float32; a non-contiguous view is copied; a list works.
    assert_close(session.run(None, {name: x.astype(np.float64)})[0], refs[0])
    assert_close(session.run(None, {name: x.astype(np.float16)})[0], refs[0], rtol=2e-2, atol=2e-2)
    strided = np.asfortranarray(x)
    assert not strided.flags.c_contiguous
    assert_close(session.run(None, {name: strided})[0], refs[0])
    reversed_view = x[::-1][::-1]
    assert_close(session.run(None, {name: reversed_view})[0], refs[0])
    assert_close(session.run(None, {name: x.tolist()})[0], refs[0])


def test_output_names_select_and_order():
    model = FIXTURES / "hlstm_scan_H64_X32_T8"
    inputs, refs = reference_data(model)
    session = hlstmc.InferenceSession(str(model / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert len(names) == 2
    y_h, y = session.run([names[1], names[0]], inputs)
    assert_close(y, refs[0])
    assert_close(y_h, refs[1])
    twice = session.run([names[0], names[0]], inputs)
    np.testing.assert_array_equal(twice[0], twice[1])


def test_node_args_look_like_onnxruntime():
    session = hlstmc.InferenceSession(str(FIXTURES / "lstm_std_X16_H24_T5_batch3" / "model.onnx"))
    for arg in session.get_inputs() + session.get_outputs():
        assert isinstance(arg.name, str)
        assert arg.type.startswith("tensor(")
        assert all(isinstance(d, (int, str)) or d is None for d in arg.shape)
        assert arg.name in repr(arg)
    assert session.get_providers() == ["hlstmc-jit"]


def test_session_options_threads_are_read():
    class Options:
        intra_op_num_threads = 2

    s = hlstmc.InferenceSession(str(FIXTURES / "lstm_std_H64_X32_T8" / "model.onnx"), Options(), providers=["CPUExecutionProvider"])
    assert s.threads == 2
    s = hlstmc.InferenceSession(str(FIXTURES / "lstm_std_H64_X32_T8" / "model.onnx"), Options(), threads=1)
    assert s.threads == 1


def test_unoptimized_and_fixed_shapes():
    model = FIXTURES / "lstm_std_X16_H24_T5_batch3"
    inputs, refs = reference_data(model)
    session = hlstmc.InferenceSession(str(model / "model.onnx"), optimize=False)
    assert_close(session.run(None, inputs)[0], refs[0])
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    fixed = hlstmc.InferenceSession(str(model / "model.onnx"), shapes=shapes)
    for arg in fixed.get_inputs():
        assert all(isinstance(d, int) for d in arg.shape), arg
    assert_close(fixed.run(None, inputs)[0], refs[0])
