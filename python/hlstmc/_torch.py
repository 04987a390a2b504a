"""``hlstmc.from_torch``: a PyTorch module exported to ONNX and built into a session."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Optional

from ._native import InferenceSession


def from_torch(
    module: Any,
    example_inputs: Any,
    *,
    session_options: Optional[Mapping[str, Any]] = None,
    **export_kwargs: Any,
) -> InferenceSession:
    """Exports ``module`` with ``torch.onnx.export`` and returns an ``InferenceSession`` of it.

    ``example_inputs`` is a tensor or a tuple of tensors, as ``torch.onnx.export`` takes them.
    ``export_kwargs`` go to ``torch.onnx.export`` (``input_names``, ``output_names``,
    ``dynamic_axes``, ``opset_version``, ``dynamo``, ...). By default the TorchScript exporter
    is used (``dynamo=False``, which needs nothing beyond torch; ``dynamo=True`` needs the
    ``onnxscript`` package) and the inputs are named ``input`` (one) or ``input_0``,
    ``input_1``, ... . ``session_options`` are the keyword arguments of ``InferenceSession``
    (``threads``, ``engine``, ...).

    Works for ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and H-LSTM cells written out per gate with
    ``nn.Linear`` layers. Raises ``ImportError`` when torch is not installed.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "hlstmc.from_torch needs PyTorch, which is not installed (pip install torch)"
        ) from e
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    elif not isinstance(example_inputs, tuple):
        example_inputs = tuple(example_inputs)
    kwargs = dict(export_kwargs)
    kwargs.setdefault("dynamo", False)
    if "input_names" not in kwargs:
        n = len(example_inputs)
        kwargs["input_names"] = ["input"] if n == 1 else [f"input_{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="hlstmc-torch-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        was_training = getattr(module, "training", False)
        if hasattr(module, "eval"):
            module.eval()
        try:
            with torch.no_grad():
                torch.onnx.export(module, example_inputs, path, **kwargs)
        finally:
            if was_training:
                module.train()
        # The session reads the file (and any external data beside it) before the folder goes.
        return InferenceSession(path, **dict(session_options or {}))
