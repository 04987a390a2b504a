"""float16, bfloat16 and float64 models (docs/precision.md) through InferenceSession: every
fixture of tests/fixtures/precision against its reference at the tolerance of its type, the
dtypes that come back, NodeArg types, and the input conversions (rounding to the declared
type, bfloat16 as uint16 bit patterns)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import hlstmc
from conftest import REPO, assert_close, onnx, read_pb

PRECISION = REPO / "tests" / "fixtures" / "precision"
MODELS = sorted(p for p in PRECISION.iterdir() if (p / "model.onnx").exists())

# ONNX element type -> (ORT's NodeArg type, numpy dtype run() returns, (rtol, atol)).
# The tolerances are docs/precision.md's table (test_tolerances_are_the_documented_ones
# holds the two together).
TYPES = {
    onnx.TensorProto.FLOAT16: ("tensor(float16)", np.float16, (4e-3, 1e-3)),
    onnx.TensorProto.BFLOAT16: ("tensor(bfloat16)", np.uint16, (3e-2, 8e-3)),
    onnx.TensorProto.DOUBLE: ("tensor(double)", np.float64, (1e-3, 1e-4)),
}
ENGINES = ["interp", "jit"]


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    assert bits.dtype == np.uint16, bits.dtype
    return (bits.astype(np.uint32) << 16).view(np.float32)


def as_f64(a: np.ndarray, elem_type: int) -> np.ndarray:
    """A reference or an output as float64 values: bfloat16 from its uint16 bit patterns."""
    if elem_type == onnx.TensorProto.BFLOAT16 and a.dtype == np.uint16:
        return bf16_bits_to_f32(a).astype(np.float64)
    return a.astype(np.float64)


def declared(model_dir):
    """(element type of the one input, of each output) as the model declares them."""
    m = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    assert len(ins) == 1, f"{model_dir.name}: expected one input, got {[i.name for i in ins]}"
    return ins[0], [o.type.tensor_type.elem_type for o in m.graph.output]


def data(model_dir):
    d = model_dir / "test_data_set_0"
    refs = []
    k = 0
    while (d / f"output_{k}.pb").exists():
        refs.append(read_pb(d / f"output_{k}.pb"))
        k += 1
    assert refs, f"{model_dir.name}: no output_K.pb"
    return read_pb(d / "input_0.pb"), refs


def test_every_type_has_fixtures():
    kinds = {declared(m)[0].type.tensor_type.elem_type for m in MODELS}
    assert kinds == set(TYPES), kinds


def test_tolerances_are_the_documented_ones():
    text = (REPO / "docs" / "precision.md").read_text()
    for label, key in [("float16", onnx.TensorProto.FLOAT16), ("bfloat16", onnx.TensorProto.BFLOAT16),
                       ("float32, float64", onnx.TensorProto.DOUBLE)]:
        rtol, atol = TYPES[key][2]
        row = re.search(rf"^\| {re.escape(label)} \| ([0-9.e-]+) \| ([0-9.e-]+) \|", text, re.M)
        assert row, f"docs/precision.md has no tolerance row for {label}"
        assert (float(row.group(1)), float(row.group(2))) == (rtol, atol), label


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("model_dir", MODELS, ids=[m.name for m in MODELS])
def test_fixture_matches_reference_in_its_type(model_dir, engine):
    inp, out_types = declared(model_dir)
    in_type = inp.type.tensor_type.elem_type
    x, refs = data(model_dir)
    s = hlstmc.InferenceSession(str(model_dir / "model.onnx"), engine=engine)
    assert s.engine == engine
    assert [i.type for i in s.get_inputs()] == [TYPES[in_type][0]]
    assert [o.type for o in s.get_outputs()] == [TYPES[t][0] for t in out_types]
    if in_type == onnx.TensorProto.BFLOAT16:
        # onnx.numpy_helper reads bfloat16 as ml_dtypes.bfloat16; run() takes it, and the
        # same values as uint16 bit patterns give the same outputs.
        assert x.dtype.name == "bfloat16", x.dtype
        outputs = s.run(None, {inp.name: x})
        by_bits = s.run(None, {inp.name: x.view(np.uint16)})
        for a, b in zip(outputs, by_bits):
            np.testing.assert_array_equal(a, b)
    else:
        assert x.dtype == TYPES[in_type][1], x.dtype
        outputs = s.run(None, {inp.name: x})
    assert len(outputs) == len(refs)
    for info, t, got, want in zip(s.get_outputs(), out_types, outputs, refs):
        assert got.dtype == TYPES[t][1], f"{model_dir.name}: {info.name} came back {got.dtype}"
        assert got.shape == want.shape, f"{model_dir.name}: {info.name}"
        # The least precise of the input's and the output's types sets the tolerance.
        rtol, atol = max(TYPES[in_type][2], TYPES[t][2])
        assert_close(as_f64(got, t), as_f64(want, t), rtol=rtol, atol=atol,
                     what=f"{model_dir.name} ({engine}): {info.name}")


def test_float16_outputs_are_float16_values_not_widened_float32():
    model = PRECISION / "lstm_f16_native"
    inp, _ = declared(model)
    x, refs = data(model)
    s = hlstmc.InferenceSession(str(model / "model.onnx"), engine="interp")
    for got, want in zip(s.run(None, {inp.name: x}), refs):
        # Bit-identical with ONNX Runtime's float16 outputs (docs/precision.md: 0 error).
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("name", ["lstm_f16_cast", "lstm_bf16_cast"])
def test_float32_values_for_16_bit_inputs_are_rounded_to_the_declared_type(name):
    model = PRECISION / name
    inp, _ = declared(model)
    s = hlstmc.InferenceSession(str(model / "model.onnx"), engine="interp")
    rng = np.random.default_rng(7)
    x32 = rng.standard_normal(s.get_inputs()[0].shape).astype(np.float32)
    if name.startswith("lstm_f16"):
        rounded = x32.astype(np.float16)
    else:
        # Round to nearest even bfloat16 by hand (numpy has no bfloat16).
        bits = x32.view(np.uint32)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = bits.astype(np.uint16)
    # The float32 values are not all of the declared type: the rounding is what makes these equal.
    assert not np.array_equal(as_f64(np.asarray(rounded), inp.type.tensor_type.elem_type), x32.astype(np.float64))
    for a, b in zip(s.run(None, {inp.name: x32}), s.run(None, {inp.name: rounded})):
        np.testing.assert_array_equal(a, b)
    # Float64 values are taken as well.
    for a, b in zip(s.run(None, {inp.name: x32.astype(np.float64)}), s.run(None, {inp.name: rounded})):
        np.testing.assert_array_equal(a, b)


def test_float64_model_takes_float32_and_float64_arrays():
    model = PRECISION / "hlstm_scan_f64_cast"
    inp, _ = declared(model)
    x, refs = data(model)
    s = hlstmc.InferenceSession(str(model / "model.onnx"))
    got64 = s.run(None, {inp.name: x})
    got32 = s.run(None, {inp.name: x.astype(np.float32)})
    for a, b in zip(got64, got32):
        assert a.dtype == np.float64 and b.dtype == np.float64
        np.testing.assert_array_equal(a, b)


def test_uint16_is_bfloat16_bits_only_for_bfloat16_inputs():
    model = PRECISION / "lstm_f16_cast"
    s = hlstmc.InferenceSession(str(model / "model.onnx"), engine="interp")
    x = np.zeros(s.get_inputs()[0].shape, dtype=np.uint16)
    with pytest.raises(hlstmc.InvalidArgument, match=r"input 'X' expects f16\[5,3,16\].*bfloat16 bit patterns.*float16"):
        s.run(None, {"X": x})


def test_wrong_dtype_for_a_bfloat16_input_names_the_input_and_the_choices():
    model = PRECISION / "lstm_bf16_cast"
    s = hlstmc.InferenceSession(str(model / "model.onnx"), engine="interp")
    x = np.zeros(s.get_inputs()[0].shape, dtype=np.int32)
    with pytest.raises(hlstmc.InvalidArgument, match=r"input 'X' expects bf16\[5,3,16\], got a numpy array of dtype int32.*uint16"):
        s.run(None, {"X": x})


def test_node_arg_types_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the side-by-side check needs it")
    for name in ["lstm_f16_cast", "lstm_bf16_cast", "hlstm_scan_f64_native"]:
        path = str(PRECISION / name / "model.onnx")
        ours = hlstmc.InferenceSession(path, engine="interp")
        theirs = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [a.type for a in ours.get_inputs()] == [b.type for b in theirs.get_inputs()], name
        assert [a.type for a in ours.get_outputs()] == [b.type for b in theirs.get_outputs()], name
        assert "tensor(float)" not in repr(ours.get_outputs()[0])
