"""Keras recurrent layers exported by tf2onnx, with ONNX Runtime's outputs as the reference.

tf2onnx writes Keras LSTM layers as ONNX LSTM ops, but GRU, SimpleRNN, go_backwards GRUs and
masked layers as an ONNX Loop (issue 15). Each model gets a symbolic batch; the test data is at
batch 2. Run from the repository root with TensorFlow, tf2onnx and onnxruntime installed:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx onnxruntime onnx
    /tmp/tfvenv/bin/python tools/gen_keras_fixtures.py [NAME ...]

It writes tests/fixtures/extra/keras_*/ and prints the versions used (recorded in
tests/fixtures/extra/README.md).
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "extra"
T, F, H, BATCH = 6, 5, 8, 2

L = keras.layers
MODELS = {
    "keras_gru_T6": lambda x: L.GRU(H, return_sequences=True)(x),
    "keras_gru_state_T6": lambda x: L.GRU(H, return_sequences=False, reset_after=False)(x),
    "keras_gru_backwards_T6": lambda x: L.GRU(H, return_sequences=True, go_backwards=True)(x),
    "keras_simplernn_T6": lambda x: L.SimpleRNN(H, return_sequences=True)(x),
    "keras_lstm_stacked_T6": lambda x: L.LSTM(H, return_sequences=True)(L.LSTM(H, return_sequences=True)(x)),
    "keras_lstm_bidir_T6": lambda x: L.Bidirectional(L.LSTM(H, return_sequences=True))(x),
    # Masking in front: tf2onnx writes the layer as a Loop, computes the mask outside it and
    # selects between the new and the carried state inside it.
    "keras_lstm_masked_T6": lambda x: L.LSTM(H, return_sequences=True)(L.Masking(mask_value=0.0)(x)),
    "keras_lstm_masked_last_T6": lambda x: L.LSTM(H, return_sequences=False)(L.Masking(mask_value=0.0)(x)),
    "keras_gru_masked_T6": lambda x: L.GRU(H, return_sequences=True)(L.Masking(mask_value=0.0)(x)),
}
MASKED = {name for name in MODELS if "masked" in name}


def test_input(name):
    x = np.random.default_rng(11).standard_normal((BATCH, T, F)).astype(np.float32)
    if name in MASKED:
        # Row 0: its last two steps are padding. Row 1: step 2 (in the middle) and its last
        # step are padding. A masked step is one whose features all equal the mask value.
        x[0, 4:, :] = 0.0
        x[1, 2, :] = 0.0
        x[1, 5, :] = 0.0
    return x


def export(name, build):
    keras.utils.set_random_seed(7)
    inp = keras.Input(shape=(T, F), name="x")
    model = keras.Model(inp, build(inp))
    spec = (tf.TensorSpec((None, T, F), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    proto.producer_name = f"tf2onnx {tf2onnx.__version__} (Keras {keras.__version__})"
    folder = OUT / name
    data = folder / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, folder / "model.onnx")
    x = test_input(name)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": x})
    # The Keras model itself agrees with ONNX Runtime: the export is faithful.
    want = model.predict(x, verbose=0)
    want = want if isinstance(want, list) else [want]
    for got, k in zip(outs, want):
        np.testing.assert_allclose(got, k, rtol=1e-5, atol=1e-5)
    if name in MASKED:
        # Masking must matter: the same layer without the mask gives other outputs.
        unmasked = keras.Model(model.input, model.layers[-1](model.input))
        plain = unmasked.predict(x, verbose=0)
        plain = plain if isinstance(plain, list) else [plain]
        for got, p in zip(outs, plain):
            assert np.abs(got - p).max() > 1e-3, f"{name}: masking changes nothing"
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    for i, (o, info) in enumerate(zip(outs, sess.get_outputs())):
        (data / f"output_{i}.pb").write_bytes(numpy_helper.from_array(o, info.name).SerializeToString())
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"{name}: {ops}")


def main():
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__}, "
          f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, python {sys.version.split()[0]}")
    only = set(sys.argv[1:])
    for name, build in MODELS.items():
        if not only or name in only:
            export(name, build)


if __name__ == "__main__":
    main()
