"""Shared by the dlib-based tests: a skip marker when dlib is absent, and the one-line error check."""

from __future__ import annotations

import importlib.util

import pytest

from toon3d.errors import Toon3dError

HAS_DLIB = importlib.util.find_spec("dlib") is not None
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed (pip install dlib-bin)")


def one_line_error(fn, *args, **kwargs) -> str:
    """Call fn expecting a Toon3dError; return its message, asserting it is one line."""
    with pytest.raises(Toon3dError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message
