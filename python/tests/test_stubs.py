"""The type stubs (hlstmc/_native.pyi) name exactly what the native module has."""

from __future__ import annotations

import ast
import inspect
import pathlib

import hlstmc
from hlstmc import _native

STUB = pathlib.Path(hlstmc.__file__).with_name("_native.pyi")


def _stub_tree():
    return ast.parse(STUB.read_text())


def test_stub_names_match_the_module():
    tree = _stub_tree()
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stubbed |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    public = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    assert stubbed - {"ModelSource"} == public - {"ModelSource"}, (stubbed ^ public)
    assert set(hlstmc.__all__) == (public | {"from_torch"})


def test_stub_methods_match_the_classes():
    for node in _stub_tree().body:
        if not isinstance(node, ast.ClassDef) or node.name in {"InvalidArgument", "ModelError"}:
            continue
        cls = getattr(_native, node.name)
        stubbed = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        real = {n for n in dir(cls) if not n.startswith("_")}
        assert stubbed - {"__init__"} == real, (node.name, stubbed ^ real)


def test_everything_public_has_a_docstring():
    for name in hlstmc.__all__:
        obj = getattr(hlstmc, name)
        if isinstance(obj, str):
            continue
        assert inspect.getdoc(obj), name
    for cls in [hlstmc.InferenceSession]:
        for name in ["run", "get_inputs", "get_outputs"]:
            assert inspect.getdoc(getattr(cls, name)), name
