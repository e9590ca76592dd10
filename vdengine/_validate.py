"""Checks of plain arguments, one home for each rule: ints, real numbers and uint8 video frames.

Every check raises a one-line TypeError (wrong type) or ValueError (wrong value) that names the
argument and says what was expected, and returns the value in its canonical form. bools are
refused where a number is expected (True is no frame count), numpy scalars are accepted (a value
read from a config or a schedule array). The module imports no torch, so video I/O stays light.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_frames", "check_int", "check_real"]


def _is_symint(value: Any) -> bool:
    """A torch.SymInt: an int whose value torch.compile decides later (accepted while tracing)."""
    import torch  # only reached for non-int values: the common path stays torch-free

    return isinstance(value, torch.SymInt)


def _range_error(name: str, value: object, min: float | None, max: float | None) -> str:
    if min is not None and max is not None:
        return f"{name} must be in [{min}, {max}], got {value}"
    if min is not None:
        return f"{name} must be >= {min}, got {value}"
    return f"{name} must be <= {max}, got {value}"


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """An int (Python or numpy, not bool) in [min, max], returned as a Python int.

    A torch.SymInt passes too (returned as is), so op wrappers can check while torch.compile traces.
    """
    if type(value) is not int:  # the common case skips the ABC checks below
        if isinstance(value, (bool, np.bool_)) or not (
            isinstance(value, numbers.Integral) or _is_symint(value)
        ):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not _is_symint(value):
            value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(_range_error(name, value, min, max))
    return value


def check_real(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    positive: bool = False,
    allow_none: bool = False,
) -> float | None:
    """A finite real number (Python or numpy int/float, not bool) as a Python float.

    positive: the value must be > 0; min/max: inclusive bounds; allow_none: None passes through.
    """
    if value is None and allow_none:
        return None
    common = type(value) is float or type(value) is int  # skips the ABC checks below
    if not common and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)):
        what = "a float or None" if allow_none else "a float"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(_range_error(name, value, min, max))
    return value


def check_frames(frames: Any, name: str = "frames") -> np.ndarray:
    """uint8 RGB video frames [F, H, W, 3] or [B, F, H, W, 3], returned as [B, F, H, W, 3] (a view).

    Every dimension must be non-empty. Float tensors in [−1, 1] convert with Video.from_tensor.
    """
    hint = "convert float tensors in [-1, 1] with vdengine.Video.from_tensor"
    if not isinstance(frames, np.ndarray):
        kind = f"{type(frames).__module__}.{type(frames).__qualname__}"
        raise TypeError(
            f"{name} must be a numpy uint8 array [F, H, W, 3] or [B, F, H, W, 3], got {kind} "
            f"({hint})"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (values 0..255), got {frames.dtype} ({hint})")
    if frames.ndim not in (4, 5) or frames.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape [F, H, W, 3] or [B, F, H, W, 3] (RGB last), got shape "
            f"{tuple(frames.shape)}"
        )
    if min(frames.shape) == 0:
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(frames.shape)}")
    return frames[None] if frames.ndim == 4 else frames
