#!/usr/bin/env python3
"""Writes models that ONNX Runtime saved after its own graph optimizations
(SessionOptions.optimized_model_filepath) into tests/fixtures/extra/, in the ONNX backend test
layout (model.onnx, test_data_set_0/{input,output}_K.pb), with ONNX Runtime's outputs on the
saved file as the reference. They carry the com.microsoft ops the optimizer writes (FusedGemm,
FusedMatMul, QuickGelu); docs/contrib-ops.md says how hlstmc reads them.

Needs: onnx, onnxruntime, numpy (pip install onnxruntime onnx). The outputs are committed, so
`cargo test` needs none of them. Run from the repository root, after
tools/gen_extra_fixtures.py (which rewrites tests/fixtures/extra/README.md; this script then
adds its own section):  python3 tools/gen_ort_optimized.py
"""
import os
import shutil
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join("tests", "fixtures")
OUT = os.path.join(ROOT, "extra")
LEVELS = {
    "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
ROWS = []


def optimize(src, level):
    """The model ONNX Runtime saves after optimizing `src` at `level`, as a ModelProto."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "opt.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = LEVELS[level]
        so.optimized_model_filepath = out
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return onnx.load(out)


def contrib_ops(m):
    """{op type: count} of the nodes outside the default domain, bodies included."""
    found = {}

    def walk(g):
        for n in g.node:
            if n.domain not in ("", "ai.onnx"):
                key = f"{n.domain}.{n.op_type}"
                found[key] = found.get(key, 0) + 1
            for a in n.attribute:
                if a.g.node:
                    walk(a.g)
                for b in a.graphs:
                    walk(b)

    walk(m.graph)
    return found


def save(name, model, feeds, source, level, original=None, out=OUT):
    """Writes the fixture; the reference is ONNX Runtime running the saved file with its own
    optimizations off (so the file is run as written). `original` (a path) must agree."""
    d = os.path.join(out, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    path = os.path.join(d, "model.onnx")
    onnx.save(model, path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: feeds[n] for n in names})
    if original is not None:
        ref = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(
            None, {n: feeds[n] for n in names})
        for a, b in zip(outs, ref):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-6), f"{name}: optimized file disagrees"
    for k, n in enumerate(names):
        t = numpy_helper.from_array(feeds[n], n)
        with open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    for k, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        t = numpy_helper.from_array(v, o.name)
        with open(os.path.join(d, "test_data_set_0", f"output_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(contrib_ops(model).items())) or "none"
    if out == OUT:
        ROWS.append((name, source, level, ops))


def from_fixture(name, folder, src, level):
    """An existing fixture as ONNX Runtime saves it; inputs from its own test data."""
    sdir = os.path.join(ROOT, folder, src)
    path = os.path.join(sdir, "model.onnx")
    m = onnx.load(path)
    init = {t.name for t in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in init]
    feeds = {}
    for k, n in enumerate(names):
        t = onnx.TensorProto()
        with open(os.path.join(sdir, "test_data_set_0", f"input_{k}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        feeds[n] = numpy_helper.to_array(t)
    save(name, optimize(path, level), feeds, f"{folder}/{src}", level, original=path)


def contrib_mix():
    """A small H-LSTM (Scan form, batch 2) whose gate networks are written so that the
    optimizer fuses them into every contrib op hlstmc imports: Gemm + LeakyRelu/HardSigmoid/
    Sigmoid/Tanh (FusedGemm with activation parameters), x * sigmoid(x) (QuickGelu) and
    Mul(MatMul(W, Transpose(z)), 0.5) (FusedMatMul with transB and alpha)."""
    rng = np.random.default_rng(15)
    X, H, W, T, B = 8, 12, 16, 5, 2
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def rand(*s):
        return rng.standard_normal(s) * 0.3

    nodes.append(helper.make_node("Concat", ["x_t", "h_in"], ["z"], axis=1))
    for gate, kind in zip("fiog", ["LeakyRelu", "HardSigmoid", "Swish", "ScaledMatMul"]):
        w1, b1 = rand(X + H, W), const(f"b1_{gate}", rand(W))
        w2, b2 = const(f"W2_{gate}", rand(W, H)), const(f"b2_{gate}", rand(H))
        p1, a1 = f"p1_{gate}", f"a_{gate}"
        if kind in ("LeakyRelu", "HardSigmoid"):
            nodes.append(helper.make_node("Gemm", ["z", const(f"W1_{gate}", w1), b1], [p1]))
            attrs = {"alpha": 0.1} if kind == "LeakyRelu" else {"alpha": 0.3, "beta": 0.4}
            nodes.append(helper.make_node(kind, [p1], [a1], **attrs))
        elif kind == "Swish":
            nodes += [
                helper.make_node("MatMul", ["z", const(f"W1_{gate}", w1)], [f"m1_{gate}"]),
                helper.make_node("Add", [f"m1_{gate}", b1], [p1]),
                helper.make_node("Sigmoid", [p1], [f"s_{gate}"]),
                helper.make_node("Mul", [p1, f"s_{gate}"], [a1]),
            ]
        else:
            half = const("half", np.array(0.5))
            nodes += [
                helper.make_node("Transpose", ["z"], [f"zt_{gate}"], perm=[1, 0]),
                helper.make_node("MatMul", [const(f"W1t_{gate}", 2 * w1.T), f"zt_{gate}"],
                                 [f"mt_{gate}"]),
                helper.make_node("Mul", [f"mt_{gate}", half], [f"ms_{gate}"]),
                helper.make_node("Transpose", [f"ms_{gate}"], [f"m1_{gate}"], perm=[1, 0]),
                helper.make_node("Add", [f"m1_{gate}", b1], [p1]),
                helper.make_node("Elu", [p1], [a1], alpha=0.7),
            ]
        nodes += [
            helper.make_node("MatMul", [a1, w2], [f"m2_{gate}"]),
            helper.make_node("Add", [f"m2_{gate}", b2], [f"p2_{gate}"]),
            helper.make_node("Tanh" if gate == "g" else "Sigmoid", [f"p2_{gate}"], [gate]),
        ]
    nodes += [
        helper.make_node("Mul", ["f", "c_in"], ["fc"]),
        helper.make_node("Mul", ["i", "g"], ["ig"]),
        helper.make_node("Add", ["fc", "ig"], ["c_out"]),
        helper.make_node("Tanh", ["c_out"], ["tc"]),
        helper.make_node("Mul", ["o", "tc"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y_t"]),
    ]

    def vi(n, s):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, s)

    body = helper.make_graph(nodes, "body", [vi("h_in", [B, H]), vi("c_in", [B, H]),
                                             vi("x_t", [B, X])],
                             [vi("h_out", [B, H]), vi("c_out", [B, H]), vi("y_t", [B, H])], inits)
    scan = helper.make_node("Scan", ["h0", "c0", "X"], ["h_T", "c_T", "Y"], num_scan_inputs=1,
                            body=body)
    g = helper.make_graph([scan], "contrib_mix", [vi("h0", [B, H]), vi("c0", [B, H]),
                                                  vi("X", [T, B, X])],
                          [vi("Y", [T, B, H]), vi("h_T", [B, H]), vi("c_T", [B, H])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    feeds = {"h0": rand(B, H).astype(np.float32), "c0": rand(B, H).astype(np.float32),
             "X": rng.standard_normal((T, B, X)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "model.onnx")
        onnx.save(m, src)
        level = "ORT_ENABLE_EXTENDED"
        opt = optimize(src, level)
        found = contrib_ops(opt)
        for op in ("com.microsoft.FusedGemm", "com.microsoft.FusedMatMul",
                   "com.microsoft.QuickGelu"):
            assert op in found, f"onnxruntime {ort.__version__} no longer writes {op}: {found}"
        save("ort_ext_hlstm_contrib_mix_B2", opt, feeds, "a Scan H-LSTM built here", level,
             original=src)


def direct_ops():
    """Contrib ops written by hand, with the attributes the optimizer rarely writes
    (transBatchA/B, the parameterized activations), into tests/fixtures/contrib/: not
    recurrent models, so tests/contrib_ops.rs runs them, not the fixture tests of every engine."""
    rng = np.random.default_rng(16)
    out = os.path.join(ROOT, "contrib")

    def vi(n, s):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, s)

    def model(name, nodes, inputs, outputs, feeds):
        g = helper.make_graph(nodes, name, inputs, outputs)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 8
        save(name, m, feeds, "written by hand", "none", out=out)

    def r(*s):
        return rng.standard_normal(s).astype(np.float32)

    ms = "com.microsoft"
    model("fusedmatmul_transbatch", [
        helper.make_node("FusedMatMul", ["A", "B"], ["Y1"], domain=ms, transBatchA=1, transA=1,
                         alpha=0.25),
        helper.make_node("FusedMatMul", ["F", "C"], ["Y2"], domain=ms, transBatchB=1),
        helper.make_node("FusedMatMul", ["D", "E"], ["Y3"], domain=ms, transA=1, transB=1,
                         alpha=-2.0),
    ], [vi("A", [2, 3, 4, 5]), vi("B", [3, 4, 2, 6]), vi("C", [2, 3, 5, 4]), vi("D", [7, 3]),
        vi("E", [5, 7]), vi("F", [3, 5, 6, 2])],
        [vi("Y1", None), vi("Y2", None), vi("Y3", None)],
        {"A": r(2, 3, 4, 5), "B": r(3, 4, 2, 6), "C": r(2, 3, 5, 4), "D": r(7, 3),
         "E": r(5, 7), "F": r(3, 5, 6, 2)})
    acts = [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Softsign", {}), ("Softplus", {}),
            ("LeakyRelu", {"activation_alpha": 0.2}),
            ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.6}),
            ("Elu", {"activation_alpha": 0.8}), ("ThresholdedRelu", {"activation_alpha": 0.1}),
            ("Selu", {"activation_alpha": 1.5, "activation_gamma": 1.1}),
            ("ScaledTanh", {"activation_alpha": 1.7, "activation_beta": 0.6}),
            ("ParametricSoftplus", {"activation_alpha": 0.9, "activation_beta": 1.3})]
    nodes, outs = [], []
    for k, (act, attrs) in enumerate(acts):
        nodes.append(helper.make_node("FusedGemm", ["A", "W", "b"], [f"Y_{act}"], domain=ms,
                                      activation=act, alpha=0.7, beta=1.2, transB=1, **attrs))
        outs.append(vi(f"Y_{act}", [3, 6]))
    model("fusedgemm_activations", nodes, [vi("A", [3, 5]), vi("W", [6, 5]), vi("b", [6])],
          outs, {"A": r(3, 5) * 2, "W": r(6, 5), "b": r(6)})


from_fixture("ort_ext_hlstm_scan_H64_X32_T8_sp97", "models", "hlstm_scan_H64_X32_T8_sp97",
             "ORT_ENABLE_EXTENDED")
from_fixture("ort_all_torch_hlstm_pergate_H64_X32_T8_sp97", "models",
             "torch_hlstm_pergate_H64_X32_T8_sp97", "ORT_ENABLE_ALL")
from_fixture("ort_ext_lstm_std_H64_X32_T8", "models", "lstm_std_H64_X32_T8",
             "ORT_ENABLE_EXTENDED")
contrib_mix()
direct_ops()

# The section this script owns in extra/README.md (gen_extra_fixtures.py rewrites the file).
BEGIN, END = "<!-- gen_ort_optimized.py: begin -->", "<!-- gen_ort_optimized.py: end -->"
readme = os.path.join(OUT, "README.md")
text = open(readme).read() if os.path.exists(readme) else ""
if BEGIN in text:
    text = text[:text.index(BEGIN)].rstrip("\n") + text[text.index(END) + len(END):]
section = [BEGIN, "", "## Files saved by ONNX Runtime's graph optimizer", "",
           f"Written by `tools/gen_ort_optimized.py` with onnxruntime {ort.__version__} "
           f"(onnx {onnx.__version__}): the source model optimized at the level shown and saved "
           "with `SessionOptions.optimized_model_filepath`. Reference outputs: onnxruntime "
           f"{ort.__version__} running the saved file (optimizations off), checked against the "
           "source model's outputs. docs/contrib-ops.md describes the contrib ops.", "",
           "| fixture | source | level | contrib ops in the file |", "|---|---|---|---|"]
section += [f"| `{n}` | {s} | {lv} | {ops} |" for n, s, lv, ops in ROWS]
section += ["", END, ""]
with open(readme, "w") as f:
    f.write(text.rstrip("\n") + "\n\n" + "\n".join(section))
print("\n".join(f"{n}: {ops}" for n, _, _, ops in ROWS))
