#!/usr/bin/env python3
"""Writes models beyond the shared fixtures into tests/fixtures/extra/, each with reference outputs
from ONNX Runtime, in the ONNX backend test layout (model.onnx, test_data_set_0/{input,output}_K.pb).

Needs: torch, onnx, onnxruntime, numpy. The outputs are committed, so `cargo test` needs none of
them. Run from the repository root:  python3 tools/gen_extra_fixtures.py
"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join("tests", "fixtures", "extra")
rng = np.random.default_rng(7)
REFS = []
torch.manual_seed(7)


def save(name, model_path_or_proto, inputs):
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    path = os.path.join(d, "model.onnx")
    if isinstance(model_path_or_proto, onnx.ModelProto):
        onnx.save(model_path_or_proto, path)
    else:
        shutil.move(model_path_or_proto, path)
    m = onnx.load(path)
    names = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    out_names = [o.name for o in m.graph.output]
    feeds = dict(zip(names, inputs))
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
        ref = "onnxruntime " + ort.__version__
    except Exception as e:  # ONNX Runtime lacks some attributes (LSTM layout=1): use ONNX's own.
        from onnx.reference import ReferenceEvaluator
        outs = ReferenceEvaluator(m).run(None, feeds)
        ref = "onnx.reference " + onnx.__version__ + " (onnxruntime: " + str(e).splitlines()[0][:80] + ")"
    REFS.append((name, ref))
    for k, (n, v) in enumerate(zip(names, inputs)):
        t = numpy_helper.from_array(v, n)
        open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "wb").write(t.SerializeToString())
    for k, (o, v) in enumerate(zip(out_names, outs)):
        t = numpy_helper.from_array(np.asarray(v), o)
        open(os.path.join(d, "test_data_set_0", f"output_{k}.pb"), "wb").write(t.SerializeToString())
    print(name, [i.shape for i in inputs], "->", [o.shape for o in outs], "ops:",
          sorted({n.op_type for n in m.graph.node}))


def export(module, args, input_names, output_names, opset=17):
    tmp = "/tmp/_hlstmc_export.onnx"
    module.eval()
    torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                      opset_version=opset, dynamo=False)
    return tmp


def prune(module, density):
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                k = int(p.numel() * (1 - density))
                thresh = p.abs().flatten().kthvalue(max(k, 1)).values
                p[p.abs() <= thresh] = 0.0


class Seq(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        y, h = self.rnn(x)
        if isinstance(h, tuple):
            return y, h[0], h[1]
        return y, h


# PyTorch nn.LSTM / GRU / RNN: multi-layer, bidirectional, batch > 1, batch_first.
x = rng.standard_normal((6, 2, 10)).astype(np.float32)
save("torch_lstm_2layer_bidir_B2", export(Seq(torch.nn.LSTM(10, 12, num_layers=2, bidirectional=True)),
                                          torch.from_numpy(x), ["X"], ["Y", "Y_h", "Y_c"]), [x])
xb = rng.standard_normal((3, 5, 7)).astype(np.float32)
save("torch_gru_2layer_batchfirst_B3", export(Seq(torch.nn.GRU(7, 9, num_layers=2, batch_first=True)),
                                              torch.from_numpy(xb), ["X"], ["Y", "Y_h"]), [xb])
x = rng.standard_normal((4, 2, 5)).astype(np.float32)
save("torch_rnn_relu_bidir_B2", export(Seq(torch.nn.RNN(5, 6, nonlinearity="relu", bidirectional=True)),
                                       torch.from_numpy(x), ["X"], ["Y", "Y_h"]), [x])
lstm = torch.nn.LSTM(8, 16, num_layers=1)
prune(lstm, 0.1)
x = rng.standard_normal((5, 1, 8)).astype(np.float32)
save("torch_lstm_sp90", export(Seq(lstm), torch.from_numpy(x), ["X"], ["Y", "Y_h", "Y_c"]), [x])


# A hand-written H-LSTM module with two hidden layers per gate, unrolled by the exporter.
class HLSTM(torch.nn.Module):
    def __init__(self, nx, nh, widths):
        super().__init__()
        self.nh = nh

        def mlp():
            layers, prev = [], nx + nh
            for w in widths:
                layers += [torch.nn.Linear(prev, w), torch.nn.ReLU()]
                prev = w
            layers.append(torch.nn.Linear(prev, nh))
            return torch.nn.Sequential(*layers)

        self.gates = torch.nn.ModuleList([mlp() for _ in range(4)])

    def forward(self, x):
        T, B, _ = x.shape
        h = torch.zeros(B, self.nh)
        c = torch.zeros(B, self.nh)
        ys = []
        for t in range(T):
            z = torch.cat([x[t], h], dim=1)
            f = torch.sigmoid(self.gates[0](z))
            i = torch.sigmoid(self.gates[1](z))
            o = torch.sigmoid(self.gates[2](z))
            g = torch.tanh(self.gates[3](z))
            c = f * c + i * g
            h = o * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), h


hl = HLSTM(6, 10, [14, 12])
prune(hl, 0.3)
x = rng.standard_normal((5, 2, 6)).astype(np.float32)
save("torch_hlstm_2hidden_B2_sp70", export(hl, torch.from_numpy(x), ["X"], ["Y", "Y_h"]), [x])


# ONNX LSTM ops with attributes PyTorch never writes.
def lstm_model(name, T, B, I, H, attrs, layout=0, seq_lens=None, directions=1, peep=False):
    W = rng.standard_normal((directions, 4 * H, I)).astype(np.float32) * 0.4
    R = rng.standard_normal((directions, 4 * H, H)).astype(np.float32) * 0.4
    Bb = rng.standard_normal((directions, 8 * H)).astype(np.float32) * 0.2
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(Bb, "B")]
    xshape = [T, B, I] if layout == 0 else [B, T, I]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xshape)]
    feeds = [rng.standard_normal(xshape).astype(np.float32)]
    node_inputs = ["X", "W", "R", "B"]
    if seq_lens is not None:
        inputs.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32, [B]))
        feeds.append(np.full((B,), seq_lens, dtype=np.int32))
        node_inputs.append("seq_lens")
    else:
        node_inputs.append("")
    node_inputs += ["", ""]
    if peep:
        P = rng.standard_normal((directions, 3 * H)).astype(np.float32) * 0.3
        inits.append(numpy_helper.from_array(P, "P"))
        node_inputs.append("P")
    node = helper.make_node("LSTM", node_inputs, ["Y", "Y_h", "Y_c"], hidden_size=H, layout=layout, **attrs)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["Y", "Y_h", "Y_c"]]
    g = helper.make_graph([node], name, inputs, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save(name, m, feeds)


lstm_model("onnx_lstm_layout1_B2", 5, 2, 4, 6, {}, layout=1)
lstm_model("onnx_lstm_clip_inputforget", 5, 1, 4, 6, {"clip": 0.7, "input_forget": 1})
lstm_model("onnx_lstm_seqlens_short_bidir_peep", 6, 2, 3, 5, {"direction": "bidirectional"}, seq_lens=4,
           directions=2, peep=True)
lstm_model("onnx_lstm_reverse_seqlens", 6, 1, 3, 5, {"direction": "reverse"}, seq_lens=3)
lstm_model("onnx_lstm_activations", 5, 1, 4, 6, {"activations": ["HardSigmoid", "LeakyRelu", "ScaledTanh"],
                                                  "activation_alpha": [0.3, 0.05, 1.5],
                                                  "activation_beta": [0.4, 0.8]})


with open(os.path.join(OUT, "README.md"), "w") as f:
    f.write("# Models beyond the shared fixtures\n\nWritten by `tools/gen_extra_fixtures.py` "
            "(torch " + torch.__version__ + "); reference outputs from:\n\n")
    for name, ref in REFS:
        f.write(f"- `{name}`: {ref}\n")
