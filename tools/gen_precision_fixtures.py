#!/usr/bin/env python3
"""Writes float16, bfloat16 and float64 variants of an H-LSTM (Scan) and an LSTM fixture under
tests/fixtures/precision, with ONNX Runtime's outputs as the reference (issue 15).

Two forms, the ones exporters write:
- `*_cast`: a compressed checkpoint. Weights are stored in the reduced (or wider) type and
  `Cast` to float32 before use; the graph input is declared in that type and cast to float32;
  every output is cast back. ONNX Runtime computes in float32 in between. This is the
  realistic bfloat16 case: ONNX Runtime's CPU provider lacks bfloat16 kernels for the ops
  themselves.
- `*_native`: the whole graph in the type (what `model.half()` / `model.double()` exports):
  initializers, inputs, outputs, body values and Constant tensors. ONNX Runtime computes each
  op in that type, rounding after every op where hlstmc rounds once, at the outputs.
  Written only where ONNX Runtime's CPU provider has the kernels.

Needs onnx, onnxruntime and numpy (ml_dtypes, which onnx installs, for bfloat16). Run from the
repository root: python3 tools/gen_precision_fixtures.py
"""

import copy
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "precision")
BASES = {
    "hlstm_scan": "hlstm_scan_X16_H24_T5_batch3",
    "lstm": "lstm_std_X16_H24_T5_batch3",
}
TYPES = {
    "f16": (TensorProto.FLOAT16, np.float16),
    "bf16": (TensorProto.BFLOAT16, None),
    "f64": (TensorProto.DOUBLE, np.float64),
}
FLOAT = TensorProto.FLOAT


def to_bits_bf16(a):
    """float32 array -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bits_bf16(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def tensor_in(arr32, code, name):
    """A TensorProto of type `code` holding float32 `arr32` converted (raw_data)."""
    arr32 = np.asarray(arr32, np.float32)
    t = TensorProto()
    t.name = name
    t.dims.extend(arr32.shape)
    t.data_type = code
    if code == TensorProto.BFLOAT16:
        t.raw_data = to_bits_bf16(arr32).tobytes()
    else:
        t.raw_data = arr32.astype(dict(TYPES.values())[code]).tobytes()
    return t


def as_f32(t):
    """A TensorProto's values as float32 (bfloat16 through its bit patterns)."""
    if t.data_type == TensorProto.BFLOAT16:
        if t.raw_data:
            bits = np.frombuffer(t.raw_data, np.uint16)
        else:
            bits = np.array(t.int32_data, np.uint16)
        return from_bits_bf16(bits).reshape(tuple(t.dims))
    return numpy_helper.to_array(t).astype(np.float32)


def set_elem(vi, code):
    if vi.type.tensor_type.elem_type == FLOAT:
        vi.type.tensor_type.elem_type = code


def native(model, code):
    """Every float32 value of the model, bodies included, declared and stored as `code`."""
    m = copy.deepcopy(model)

    def walk(g):
        for i, t in enumerate(g.initializer):
            if t.data_type == FLOAT:
                g.initializer[i].CopyFrom(tensor_in(numpy_helper.to_array(t), code, t.name))
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            set_elem(vi, code)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(tensor_in(numpy_helper.to_array(a.t), code, a.t.name))
                if a.name == "to" and n.op_type == "Cast" and a.i == FLOAT:
                    a.i = code
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return m


def cast_form(model, code):
    """Weights stored as `code` and Cast to float32; inputs and outputs declared `code`."""
    m = copy.deepcopy(model)

    def weights(g, top):
        casts = []
        for i, t in enumerate(g.initializer):
            if t.data_type != FLOAT:
                continue
            name, stored = t.name, t.name + "_stored"
            g.initializer[i].CopyFrom(tensor_in(numpy_helper.to_array(t), code, stored))
            casts.append(helper.make_node("Cast", [stored], [name], to=FLOAT, name=f"cast_{name}"))
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    weights(a.g, False)
        nodes = casts + list(g.node)
        del g.node[:]
        g.node.extend(nodes)

    weights(m.graph, True)
    g = m.graph
    pre, post = [], []
    for vi in g.input:
        if vi.type.tensor_type.elem_type != FLOAT:
            continue
        inner = vi.name + "_f32"
        for n in g.node:
            n.input[:] = [inner if x == vi.name else x for x in n.input]
        pre.append(helper.make_node("Cast", [vi.name], [inner], to=FLOAT, name=f"cast_in_{vi.name}"))
        vi.type.tensor_type.elem_type = code
    for vi in g.output:
        if vi.type.tensor_type.elem_type != FLOAT:
            continue
        inner = vi.name + "_f32"
        for n in g.node:
            n.output[:] = [inner if x == vi.name else x for x in n.output]
        post.append(helper.make_node("Cast", [inner], [vi.name], to=code, name=f"cast_out_{vi.name}"))
        vi.type.tensor_type.elem_type = code
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    return m


def feed_value(x32, code):
    return x32.astype(dict(TYPES.values())[code])


def run_bf16(model, x32):
    """ONNX Runtime's outputs of a bfloat16 model as float32: numpy has no bfloat16, so the input
    goes in as an OrtValue of bit patterns and each output is read through an exact Cast to
    float32 appended to a copy of the model."""
    probe = copy.deepcopy(model)
    g = probe.graph
    for vi in g.output:
        g.node.append(helper.make_node("Cast", [vi.name], [vi.name + "_probe"], to=FLOAT))
        vi.name = vi.name + "_probe"
        vi.type.tensor_type.elem_type = FLOAT
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(to_bits_bf16(x32), TensorProto.BFLOAT16)
    outs = sess.run_with_ort_values(None, {g.input[0].name: x})
    return [o.numpy() for o in outs]


def write(name, model, code, x32, notes):
    try:
        onnx.checker.check_model(model)
        if code == TensorProto.BFLOAT16:
            outs = run_bf16(model, x32)
        else:
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            outs = sess.run(None, {sess.get_inputs()[0].name: feed_value(x32, code)})
        source = f"onnxruntime {ort.__version__}"
    except Exception as e:  # noqa: BLE001 - the reason is recorded in the README
        msg = str(e).splitlines()[0][:160]
        if code == TensorProto.BFLOAT16:
            notes.append(f"- `{name}`: not written: ONNX Runtime {ort.__version__} cannot run it ({msg})")
            print(f"{name}: skipped: {msg}")
            return
        # ONNX's reference implementation computes in the declared type (numpy).
        from onnx.reference import ReferenceEvaluator

        outs = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: feed_value(x32, code)})
        source = f"onnx.reference {onnx.__version__} (onnxruntime {ort.__version__}: {msg})"
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    onnx.save(model, os.path.join(d, "model.onnx"))
    data = os.path.join(d, "test_data_set_0")
    inp = tensor_in(x32, code, model.graph.input[0].name)
    with open(os.path.join(data, "input_0.pb"), "wb") as f:
        f.write(inp.SerializeToString())
    for k, (o, vi) in enumerate(zip(outs, model.graph.output)):
        if vi.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            o32 = np.asarray(o).astype(np.float32)
        else:
            o32 = np.asarray(o, np.float32)
        t = tensor_in(o32, vi.type.tensor_type.elem_type, vi.name)
        # float16 and float64 references hold ONNX Runtime's values exactly.
        if vi.type.tensor_type.elem_type != TensorProto.BFLOAT16:
            t = numpy_helper.from_array(np.asarray(o), vi.name)
        with open(os.path.join(data, f"output_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    notes.append(f"- `{name}`: {source}")
    print(f"{name}: written")


def main():
    rng = np.random.default_rng(15)
    notes = []
    for base, folder in BASES.items():
        model = onnx.load(os.path.join(SRC, folder, "model.onnx"))
        x_in = onnx.load_tensor(os.path.join(SRC, folder, "test_data_set_0", "input_0.pb"))
        shape = tuple(x_in.dims)
        for tname, (code, _) in TYPES.items():
            x32 = rng.standard_normal(shape).astype(np.float32)
            write(f"{base}_{tname}_cast", cast_form(model, code), code, x32, notes)
            if code != TensorProto.BFLOAT16:
                write(f"{base}_{tname}_native", native(model, code), code, x32, notes)
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(
            "# float16, bfloat16 and float64 models\n\n"
            "Written by `tools/gen_precision_fixtures.py` from `models/hlstm_scan_X16_H24_T5_batch3` and\n"
            "`models/lstm_std_X16_H24_T5_batch3` (the same weights, converted), with onnx "
            f"{onnx.__version__}, numpy {np.__version__}.\n"
            "`*_cast`: weights stored in the type and `Cast` to float32, input and outputs declared in the\n"
            "type (ONNX Runtime computes in float32). `*_native`: every value in the type (ONNX Runtime\n"
            "computes each op in it). Test data: `input_0.pb` and `output_K.pb` in the declared type\n"
            "(bfloat16 as raw 16-bit patterns). Tolerances per type: docs/precision.md.\n\n"
            "Reference outputs:\n\n" + "\n".join(notes) + "\n"
        )


if __name__ == "__main__":
    sys.exit(main())
