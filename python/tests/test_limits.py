"""hlstmc.limits and hlstmc.set_limits: the resource-limit policy of docs/limits.md."""

from __future__ import annotations

import pytest

import hlstmc
from conftest import FIXTURES

MODEL = FIXTURES / "hlstm_scan_H64_X32_T8_sp97" / "model.onnx"


@pytest.fixture
def restore_limits():
    old = hlstmc.limits()
    yield
    hlstmc.set_limits(**old)


def test_the_defaults_are_the_documented_ones():
    assert hlstmc.limits() == {"elements": 2**28, "bytes": 2**30, "nesting": 64}


def test_a_lowered_limit_refuses_the_model_and_says_how_to_raise_it(restore_limits):
    old = hlstmc.set_limits(elements=100)
    assert old["elements"] == 2**28 and hlstmc.limits()["elements"] == 100
    with pytest.raises(hlstmc.ModelError, match=r"over the limit of 100 \(raise it with --limit elements=N\)"):
        hlstmc.InferenceSession(str(MODEL))
    hlstmc.set_limits(**old)
    hlstmc.InferenceSession(str(MODEL))  # back to the default: it loads


def test_a_file_over_the_byte_limit_is_refused(restore_limits):
    hlstmc.set_limits(bytes=1000)
    with pytest.raises(OSError, match="over the limit of 1000 bytes"):
        hlstmc.InferenceSession(str(MODEL))


def test_bad_limits_are_invalid_arguments(restore_limits):
    with pytest.raises(hlstmc.InvalidArgument, match="at most 1024"):
        hlstmc.set_limits(nesting=5000)
    with pytest.raises(hlstmc.InvalidArgument, match="at least 1"):
        hlstmc.set_limits(bytes=0)
    assert hlstmc.limits()["nesting"] == 64
