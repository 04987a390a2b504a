"""Type stubs of hlstmc's native module (re-exported by ``hlstmc``)."""

import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

ModelSource = Union[str, "os.PathLike[str]", bytes]

class InvalidArgument(ValueError):
    """An argument does not fit the model: an input's name, shape or dtype, or an option."""

class ModelError(RuntimeError):
    """The model cannot be imported, optimized, compiled or run (a malformed file, an unsupported op)."""

class NodeArg:
    """An input or output of a model, as ONNX Runtime's ``NodeArg``."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Optional[list[Union[int, str, None]]]:
        """Ints for known dims, the symbol's name for open ones (``"N"``), None for unknown ones."""
    @property
    def type(self) -> str:
        """``"tensor(float)"``, ``"tensor(int64)"``, ``"tensor(int32)"`` or ``"tensor(bool)"``;
        ``"tensor(float16)"``, ``"tensor(bfloat16)"`` or ``"tensor(double)"`` for a float the
        model declares so (computed in float32)."""

class InferenceSession:
    """A model built to run, used as ONNX Runtime's ``InferenceSession``.

    ``sess_options``, ``providers`` and ``provider_options`` are accepted for compatibility;
    only ``sess_options.intra_op_num_threads`` is read (as ``threads`` when that is not given).
    """

    def __init__(
        self,
        path_or_bytes: ModelSource,
        sess_options: Any = None,
        providers: Optional[Sequence[Any]] = None,
        provider_options: Optional[Sequence[Any]] = None,
        *,
        threads: Optional[int] = None,
        engine: Optional[str] = None,
        optimize: bool = True,
        sparse_strategy: Optional[str] = None,
        cpu: str = "native",
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
    ) -> None:
        """Imports, optimizes and compiles the model.

        threads: threads that split each step's work (1 to 64; default 1).
        engine: "jit", "interp", "fast-interp", "kernel-interp" or "cuda"; default: the JIT
            where the model compiles, else the reference interpreter (with a RuntimeWarning).
        optimize: run the optimizer (default True).
        sparse_strategy: "dense", "sparse-unrolled" or "sparse-csr" for every weight.
        cpu: "native", "x86-64-v3" or "x86-64-v2".
        shapes: {input: dims} fixing open dims once; otherwise they are fixed per call and
            each shape's code is kept.
        """
    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Mapping[str, npt.ArrayLike],
        run_options: Any = None,
    ) -> list[np.ndarray]:
        """Runs the model on ``input_feed`` ({input name: array}); returns the outputs named in
        ``output_names`` (None: all) as numpy arrays. Float inputs of other precisions are
        converted to float32. The GIL is released while the model runs.

        The model computes in float32. An input declared float16, bfloat16 or float64 takes a
        float array of any precision, rounded to its declared type; a bfloat16 input also takes
        a uint16 array of bfloat16 bit patterns (numpy has no bfloat16) or an
        ``ml_dtypes.bfloat16`` array. Outputs declared float16 or float64 come back as float16
        or float64 arrays; outputs declared bfloat16 as uint16 arrays of bit patterns
        (``out.view(ml_dtypes.bfloat16)``, or
        ``(out.astype(numpy.uint32) << 16).view(numpy.float32)``)."""
    def get_inputs(self) -> list[NodeArg]: ...
    def get_outputs(self) -> list[NodeArg]: ...
    def get_providers(self) -> list[str]: ...
    @property
    def engine(self) -> str: ...
    @property
    def threads(self) -> int: ...

def inspect(path_or_bytes: ModelSource, *, optimized: bool = False) -> dict[str, Any]:
    """The dict ``hlstmc inspect --json`` prints: inputs, outputs, ops, weights with their
    nonzeros and density, parameters, multiply-adds per step (after the optimizer with
    ``optimized=True``)."""

def limits() -> dict[str, int]:
    """The resource limits in force: ``elements`` (of one tensor), ``bytes`` (of one file as
    read, after decompression) and ``nesting`` (of graph bodies)."""

def set_limits(
    *,
    elements: Optional[int] = None,
    bytes: Optional[int] = None,
    nesting: Optional[int] = None,
) -> dict[str, int]:
    """Changes the resource limits for the whole process (those not given stay) and returns
    the previous ones: ``hlstmc.set_limits(**old)`` restores them."""

def optimize(
    path_or_bytes: ModelSource,
    *,
    passes: Optional[Sequence[str]] = None,
    level: int = 1,
    dump_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    verify_each: bool = False,
    stats: bool = False,
    time_passes: bool = False,
    output: Optional[Union[str, "os.PathLike[str]"]] = None,
    format: str = "onnx",
) -> Union[bytes, str]:
    """The optimized model as ONNX bytes (``format="onnx"``) or IR text (``"hir"``); with
    ``output``, written there and its path returned."""

def compile(
    path_or_bytes: ModelSource,
    target: str = "x86_64",
    out_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    name: Optional[str] = None,
    emit: Optional[Sequence[str]] = None,
    threads: int = 1,
    max_batch: Optional[int] = None,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    cpu: str = "x86-64-v3",
    sm: int = 80,
    sparse_strategy: Optional[str] = None,
    level: int = 1,
) -> list[str]:
    """Compiles a library (``target`` "x86_64" or "ptx") into ``out_dir`` (default ".") and
    returns the paths written (by default NAME.o, libhlstmc_NAME.so.3 and its link libhlstmc_NAME.so,
    libhlstmc_NAME.a, NAME.h, hlstmc_NAME.pc and hlstmc_NAMEConfig.cmake)."""

def train(
    config: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    out_path: Union[str, "os.PathLike[str]"],
    data: Optional[tuple[npt.ArrayLike, npt.ArrayLike]] = None,
    *,
    seed: Optional[int] = None,
    progress: Union[bool, Callable[[dict[str, Any]], None]] = True,
) -> list[dict[str, Any]]:
    """Trains with grow and prune as ``hlstmc train`` does and writes the model to
    ``out_path`` (its log, plots and config beside it). ``config`` is a TOML file or a dict of
    the same keys (docs/trainer.md); ``data=(X, y)`` (X float [samples, steps, features], y
    integer [samples]) replaces the config's data files. Returns the training history, one dict
    per epoch, grow, prune and test event. ``progress``: True prints one line per event to
    ``sys.stderr``, False prints nothing, a callable receives each record."""
