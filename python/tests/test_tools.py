"""inspect, optimize and compile from Python; the compiled library loaded with ctypes."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess

import numpy as np
import pytest

import hlstmc
from conftest import FIXTURES, REPO, assert_close, reference_data

MODEL = FIXTURES / "hlstm_scan_H64_X32_T8_sp97"


def test_inspect_matches_the_cli_keys():
    r = hlstmc.inspect(str(MODEL / "model.onnx"))
    assert r["inputs"] == [{"name": "X", "dtype": "f32", "shape": [8, 1, 32]}]
    assert [o["name"] for o in r["outputs"]] == ["Y", "Y_h"]
    assert r["params_nonzero"] < r["params_dense"]
    assert r["macs_per_step_nonzero"] < r["macs_per_step_dense"]
    for w in r["weights"]:
        assert 0.0 <= w["density"] <= 1.0 and w["nonzero"] >= 0
    optimized = hlstmc.inspect(str(MODEL / "model.onnx"), optimized=True)
    assert optimized["macs_per_step_nonzero"] <= r["macs_per_step_nonzero"]
    # The same object as `hlstmc inspect --json`, where the CLI is built.
    cli = REPO / "target" / "release" / "hlstmc"
    if not cli.exists():
        print(f"note: {cli} is not built; the comparison with the CLI's JSON is not made")
        return
    out = subprocess.run([str(cli), "inspect", "--json", str(MODEL / "model.onnx")], capture_output=True, check=True, text=True)
    assert json.loads(out.stdout) == r


def test_optimize_returns_a_model_that_runs(tmp_path):
    inputs, refs = reference_data(MODEL)
    onnx_bytes = hlstmc.optimize(str(MODEL / "model.onnx"))
    assert isinstance(onnx_bytes, bytes) and len(onnx_bytes) > 0
    before = hlstmc.inspect(str(MODEL / "model.onnx"))
    after = hlstmc.inspect(onnx_bytes)
    assert after["macs_per_step_nonzero"] < before["macs_per_step_nonzero"]
    session = hlstmc.InferenceSession(onnx_bytes, optimize=False, engine="jit")
    for got, want in zip(session.run(None, inputs), refs):
        assert_close(got, want)
    # Written to a file: whole, and the path comes back.
    out = tmp_path / "opt.onnx"
    assert hlstmc.optimize(str(MODEL / "model.onnx"), output=str(out)) == str(out)
    assert out.read_bytes() == onnx_bytes
    # ONNX Runtime runs the optimized model too, where it is installed.
    try:
        import onnxruntime as ort
    except ImportError:
        print("note: onnxruntime is not installed; the optimized model is not run in it")
        return
    theirs = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, inputs)
    for got, want in zip(theirs, refs):
        assert_close(got, want)


def test_optimize_debugging_options(tmp_path, capsys):
    dumps = tmp_path / "dumps"
    text = hlstmc.optimize(
        str(MODEL / "model.onnx"), dump_dir=str(dumps), verify_each=True, stats=True, time_passes=True, format="hir"
    )
    assert isinstance(text, str) and text.startswith("graph")
    dumped = sorted(p.name for p in dumps.iterdir())
    assert any(name.endswith(".hir") for name in dumped), dumped
    err = capsys.readouterr().err
    assert err, "stats and time_passes print their tables to sys.stderr"
    none = hlstmc.optimize(str(MODEL / "model.onnx"), level=0, format="hir")
    assert none != text, "level 0 runs no pass"
    one = hlstmc.optimize(str(MODEL / "model.onnx"), passes=["dce"], format="hir")
    assert one.startswith("graph")


def _ensure_cc():
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine: libhlstmc_NAME.so cannot be linked")


def test_compile_and_call_the_library_with_ctypes(tmp_path):
    _ensure_cc()
    inputs, refs = reference_data(MODEL)
    x = np.ascontiguousarray(inputs["X"], dtype=np.float32)
    files = hlstmc.compile(str(MODEL / "model.onnx"), "x86_64", str(tmp_path), name="hl", cpu="native")
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["hl.h", "hl.o", "hlstmc_hl.pc", "hlstmc_hlConfig.cmake", "libhlstmc_hl.a", "libhlstmc_hl.so", "libhlstmc_hl.so.3"]
    lib = ctypes.CDLL(str(tmp_path / "libhlstmc_hl.so"))
    lib.hl_version.restype = ctypes.c_int
    lib.hl_num_inputs.restype = ctypes.c_size_t
    lib.hl_num_outputs.restype = ctypes.c_size_t
    lib.hl_max_steps.restype = ctypes.c_size_t
    lib.hl_batch.restype = ctypes.c_size_t
    lib.hl_output_len.restype = ctypes.c_size_t
    lib.hl_output_len.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    lib.hl_context_create.restype = ctypes.c_void_p
    lib.hl_context_create.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    lib.hl_context_free.argtypes = [ctypes.c_void_p]
    lib.hl_run.restype = ctypes.c_int
    FloatPtr = ctypes.POINTER(ctypes.c_float)
    lib.hl_run.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(FloatPtr), ctypes.POINTER(FloatPtr)]
    assert lib.hl_version() == 3
    assert (lib.hl_num_inputs(), lib.hl_num_outputs()) == (1, 2)
    steps, batch = lib.hl_max_steps(), lib.hl_batch()
    assert (steps, batch) == (8, 1)
    outs = [np.zeros(lib.hl_output_len(k, steps), dtype=np.float32) for k in range(2)]
    ins_arr = (FloatPtr * 1)(x.ctypes.data_as(FloatPtr))
    outs_arr = (FloatPtr * 2)(*[o.ctypes.data_as(FloatPtr) for o in outs])
    ctx = lib.hl_context_create(steps, batch)
    assert ctx
    try:
        assert lib.hl_run(ctx, steps, batch, ins_arr, outs_arr) == 0
    finally:
        lib.hl_context_free(ctx)
    for got, want in zip(outs, refs):
        assert_close(got.reshape(want.shape), want)


def test_compile_ptx_writes_the_kernel(tmp_path):
    files = hlstmc.compile(str(MODEL / "model.onnx"), target="ptx", out_dir=str(tmp_path), emit=["ptx", "header"])
    names = sorted(p.split("/")[-1] for p in files)
    assert "model.ptx" in names and "model.h" in names, names
    ptx = (tmp_path / "model.ptx").read_text()
    assert ".entry" in ptx and ".version" in ptx
