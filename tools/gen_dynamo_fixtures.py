"""torch.onnx.export(dynamo=True) with a symbolic batch, ONNX Runtime's outputs as reference.

The dynamo exporter writes the zero initial states and the output reshape as shape arithmetic
on the batch (Shape, Concat, Expand, Reshape with -1): `compile --max-batch` needs those to keep
the batch symbol (issue 15). Run from the repository root with torch, onnxscript and
onnxruntime installed:

    pip install torch onnxscript onnxruntime onnx
    python3 tools/gen_dynamo_fixtures.py

It writes tests/fixtures/extra/torch_dynamo_*_dynbatch/ and prints the versions used
(recorded in tests/fixtures/extra/README.md).
"""

import pathlib
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

warnings.filterwarnings("ignore")
OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "extra"
T, BATCH, F, H = 6, 2, 5, 8


class Recurrent(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(F, H)

    def forward(self, x):
        y, _ = self.rnn(x)
        return y


def export(name, cell):
    torch.manual_seed(3)
    model = Recurrent(cell).eval()
    x = torch.randn(T, BATCH, F)
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes={"x": {1: batch}},
                             input_names=["x"], output_names=["y"])
    folder = OUT / name
    data = folder / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    prog.save(str(folder / "model.onnx"))
    proto = onnx.load(str(folder / "model.onnx"))
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[1], str), f"{name}: the batch is not symbolic: {dims}"
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x.numpy(), "x").SerializeToString())
    (data / "output_0.pb").write_bytes(numpy_helper.from_array(y, "y").SerializeToString())
    print(f"{name}: x {dims}, ops {sorted({n.op_type for n in proto.graph.node})}")


def main():
    import onnxscript
    print(f"torch {torch.__version__}, onnxscript {onnxscript.__version__}, onnxruntime {ort.__version__}, "
          f"onnx {onnx.__version__}, python {sys.version.split()[0]}")
    export("torch_dynamo_lstm_dynbatch", torch.nn.LSTM)
    export("torch_dynamo_gru_dynbatch", torch.nn.GRU)


if __name__ == "__main__":
    main()
