"""Memory layouts of the 4-D [N, C, H, W] inputs of posgn and group_norm (the CPU kernels read both).

nchw: contiguous;  nhwc: channels-last (torch.channels_last), made as a model makes it: a
contiguous [N, H, W, C] tensor viewed through .permute(0, 3, 1, 2).

Imported as a plain module (tests/ops is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import torch
from torch import Tensor

LAYOUTS = ["nchw", "nhwc"]


def to_layout(t: Tensor | None, layout: str) -> Tensor | None:
    """t [N, C, H, W] (any strides) with the same values, laid out as `layout`; None stays None."""
    if t is None or layout == "nchw":
        return None if t is None else t.contiguous()
    if layout == "nhwc":
        return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    raise AssertionError(layout)


def assert_layout(y: Tensor, layout: str) -> None:
    """y is laid out as `layout` (an op output takes its input's layout)."""
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), (layout, y.shape, y.stride())
