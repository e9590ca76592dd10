"""vdengine._validate: the shared checks of ints, reals and uint8 frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vdengine._validate import check_frames, check_int, check_real


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_int_accepts_ints(value):
    out = check_int("n", value, min=1, max=3)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize(
    ("value", "exc", "pattern"),
    [
        (True, TypeError, r"^n must be an int, got bool$"),
        (np.bool_(True), TypeError, r"^n must be an int, got bool"),
        (3.0, TypeError, r"^n must be an int, got float$"),
        ("3", TypeError, r"^n must be an int, got str$"),
        (None, TypeError, r"^n must be an int, got NoneType$"),
        (torch.tensor(3), TypeError, r"^n must be an int, got Tensor$"),
    ],
)
def test_int_refuses_other_types(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        check_int("n", value)


def test_int_bounds():
    assert check_int("n", -5) == -5  # no bounds: any int
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        check_int("n", 0, min=1)
    with pytest.raises(ValueError, match=r"^n must be <= 4, got 5$"):
        check_int("n", 5, max=4)
    with pytest.raises(ValueError, match=r"^n must be in \[0, 51\], got 52$"):
        check_int("n", np.int64(52), min=0, max=51)
    assert check_int("n", 0, min=0, max=0) == 0


def test_int_passes_symints_while_tracing():
    """A symbolic size (what torch.compile hands an op wrapper) is checked and returned as is."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    env = ShapeEnv()
    n = env.create_unspecified_symint_and_symbol(5, ConstantSource("n"), DimDynamic.DYNAMIC)
    assert isinstance(n, torch.SymInt)
    assert check_int("n", n, min=1) is n
    with pytest.raises(ValueError, match=r"^n must be >= 6"):
        check_int("n", n, min=6)


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2.0), np.float64(2.0), np.int64(2)])
def test_real_accepts_reals(value):
    out = check_real("x", value, positive=True, min=1.5, max=2.0)
    assert out == 2.0 and type(out) is float


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"value": True}, TypeError, r"^x must be a float, got bool$"),
        ({"value": "1"}, TypeError, r"^x must be a float, got str$"),
        ({"value": None}, TypeError, r"^x must be a float, got NoneType$"),
        ({"value": "1", "allow_none": True}, TypeError, r"^x must be a float or None, got str$"),
        ({"value": math.nan}, ValueError, r"^x must be finite, got nan$"),
        ({"value": -math.inf}, ValueError, r"^x must be finite, got -inf$"),
        ({"value": 0.0, "positive": True}, ValueError, r"^x must be positive, got 0.0$"),
        ({"value": 0.5, "min": 1}, ValueError, r"^x must be >= 1, got 0.5$"),
        ({"value": 1.5, "min": 0, "max": 1}, ValueError, r"^x must be in \[0, 1\], got 1.5$"),
    ],
)
def test_real_refuses(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        check_real("x", **kwargs)


def test_real_none():
    assert check_real("x", None, allow_none=True) is None
    assert check_real("x", -3, allow_none=True) == -3.0


def test_frames_shapes():
    clip = np.zeros((4, 8, 6, 3), np.uint8)
    assert check_frames(clip).shape == (1, 4, 8, 6, 3)
    batch = np.zeros((2, 4, 8, 6, 3), np.uint8)
    assert check_frames(batch) is batch


@pytest.mark.parametrize(
    ("frames", "exc", "pattern"),
    [
        (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), TypeError,
         r"^clip must be a numpy uint8 array .* got torch\.Tensor .*from_tensor"),
        ([[0]], TypeError, r"^clip must be a numpy uint8 array"),
        (np.zeros((4, 8, 8, 3), np.float32), ValueError, r"^clip must have dtype uint8.*float32"),
        (np.zeros((8, 8, 3), np.uint8), ValueError, r"^clip must have shape .*got shape \(8, 8, 3\)"),
        (np.zeros((1, 1, 4, 8, 8, 3), np.uint8), ValueError, r"^clip must have shape"),
        (np.zeros((4, 8, 8, 4), np.uint8), ValueError, r"^clip must have shape .*RGB last"),
        (np.zeros((2, 0, 8, 8, 3), np.uint8), ValueError, r"^clip must have no empty dimension"),
    ],
)
def test_frames_refused(frames, exc, pattern):
    with pytest.raises(exc, match=pattern):
        check_frames(frames, "clip")
