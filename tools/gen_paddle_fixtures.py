"""paddle2onnx exports with a symbolic batch, ONNX Runtime's outputs as the reference (issue 15).

Run from the repository root with PaddlePaddle, paddle2onnx and onnxruntime installed:

    python3 -m venv /tmp/pdvenv && /tmp/pdvenv/bin/pip install paddlepaddle paddle2onnx onnxruntime onnx
    /tmp/pdvenv/bin/python tools/gen_paddle_fixtures.py

It writes tests/fixtures/extra/paddle_*_dynbatch/ and prints the versions used (recorded in
tests/fixtures/extra/README.md).
"""

import os
import pathlib
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import paddle
import paddle2onnx
from onnx import numpy_helper

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "extra"
T, BATCH, F, H = 6, 2, 5, 8


class Recurrent(paddle.nn.Layer):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(F, H)

    def forward(self, x):
        y, _ = self.rnn(x)
        return y


def export(name, cell):
    paddle.seed(3)
    model = Recurrent(cell)
    model.eval()
    spec = [paddle.static.InputSpec([None, T, F], "float32", "x")]
    folder = OUT / name
    data = folder / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "model")
        paddle.onnx.export(model, prefix, input_spec=spec, opset_version=17)
        proto = onnx.load(prefix + ".onnx")
    proto.producer_name = f"paddle2onnx {paddle2onnx.__version__} (paddle {paddle.__version__})"
    onnx.save(proto, folder / "model.onnx")
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str), f"{name}: the batch is not symbolic: {dims}"
    x = np.random.default_rng(11).standard_normal((BATCH, T, F)).astype(np.float32)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": x})
    want = model(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    for i, (o, info) in enumerate(zip(outs, sess.get_outputs())):
        (data / f"output_{i}.pb").write_bytes(numpy_helper.from_array(o, info.name).SerializeToString())
    print(f"{name}: x {dims}, ops {sorted({n.op_type for n in proto.graph.node})}")


def main():
    print(f"paddle {paddle.__version__}, paddle2onnx {paddle2onnx.__version__}, onnxruntime "
          f"{ort.__version__}, onnx {onnx.__version__}, python {sys.version.split()[0]}")
    export("paddle_lstm_dynbatch", paddle.nn.LSTM)
    export("paddle_gru_dynbatch", paddle.nn.GRU)


if __name__ == "__main__":
    main()
