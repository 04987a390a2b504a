"""hlstmc: a compiler for LSTMs and pruned hidden-layer LSTMs (H-LSTM).

hlstmc imports a trained recurrent model from ONNX, removes what its pruned weights make dead,
and runs it as native code that costs only what the surviving connections cost.

Switching from ONNX Runtime is one changed line::

    import hlstmc
    session = hlstmc.InferenceSession("model.onnx")       # was onnxruntime.InferenceSession
    outputs = session.run(None, {"X": x})

The rest of the command-line tool is here as functions: ``inspect``, ``optimize``,
``compile`` (a C library for x86-64 or PTX) and ``train`` (grow-and-prune training), and
``from_torch`` exports a ``torch.nn.Module`` and returns a session. ``limits`` and
``set_limits`` read and change the bounds on what is read from files (docs/limits.md).

Errors: ``hlstmc.InvalidArgument`` (a ``ValueError``) for inputs and options that do not fit the
model, ``hlstmc.ModelError`` (a ``RuntimeError``) for a model that cannot be imported, compiled
or run, and ``OSError`` subclasses for files.
"""

from ._native import (
    InferenceSession,
    InvalidArgument,
    ModelError,
    NodeArg,
    __version__,
    compile,
    inspect,
    limits,
    optimize,
    set_limits,
    train,
)
from ._torch import from_torch

__all__ = [
    "InferenceSession",
    "InvalidArgument",
    "ModelError",
    "NodeArg",
    "__version__",
    "compile",
    "from_torch",
    "inspect",
    "limits",
    "optimize",
    "set_limits",
    "train",
]
