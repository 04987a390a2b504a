"""The README's Python examples, run as written (in a scratch folder that sees examples/)."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from conftest import REPO

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_example(k, tmp_path, monkeypatch):
    code = BLOCKS[k]
    if "import torch" in code and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the README's from_torch example is not run (pip install torch)")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {k}", "exec"), {"__name__": "readme"})
