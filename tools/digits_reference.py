#!/usr/bin/env python3
"""Writes ONNX Runtime's outputs for the shipped digits H-LSTM on the whole test split, in the ONNX
backend test layout: examples/digits-hlstm/test_data_set_0/{input_0,output_0}.pb. Also checks
the model with onnx.checker and reports ORT's test accuracy, so the number in docs can be
reproduced without hlstmc.

Needs: onnx, onnxruntime, numpy. The outputs are committed, so `cargo test` needs none of them.
Run from the repository root:  python3 tools/digits_reference.py
"""
import gzip
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

MODEL = os.path.join("examples", "digits-hlstm.onnx")
OUT = os.path.join("examples", "digits-hlstm", "test_data_set_0")
CSV = os.path.join("trainer", "data", "digits", "digits.csv.gz")

rows = np.loadtxt(gzip.open(CSV, "rt"), delimiter=",")
test = rows[np.arange(len(rows)) % 5 == 4]
# Each 8x8 image is 8 steps of 8 pixels, pixels / 16, time-major: X [8, N, 8].
x = (test[:, :64] / 16.0).astype(np.float32).reshape(-1, 8, 8).transpose(1, 0, 2).copy()
labels = test[:, 64].astype(np.int64)

onnx.checker.check_model(onnx.load(MODEL), full_check=True)
sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
(logits,) = sess.run(["logits"], {"X": x})
print(f"{len(labels)} test rows, ONNX Runtime {ort.__version__}: "
      f"accuracy {100 * np.mean(logits.argmax(1) == labels):.2f}%")

os.makedirs(OUT, exist_ok=True)
for name, arr, f in [("X", x, "input_0.pb"), ("logits", logits, "output_0.pb")]:
    with open(os.path.join(OUT, f), "wb") as fh:
        fh.write(numpy_helper.from_array(arr, name).SerializeToString())
