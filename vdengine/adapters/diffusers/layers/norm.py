"""GroupNorm (+ SiLU) on vdengine.ops.group_norm, for per-frame and per-video statistics.

``group_norm(x, norm, silu, frames)`` is the one entry the fused layers use; ``FusedGroupNorm`` is
the drop-in module for the remaining ``nn.GroupNorm`` of a UNet (spatial transformers, output
norm). Both fall back to PyTorch where the kernels cannot run (a dtype the device's kernels lack,
an input that needs autograd) and count those calls in ``fallbacks``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vdengine import ops
from vdengine.ops._checks import CPU_DTYPES, CUDA_DTYPES

__all__ = ["FusedGroupNorm", "group_norm", "kernel_can_run"]


def kernel_can_run(*tensors: Tensor | None) -> bool:
    """True when vdengine's kernels take these tensors: a dtype of their device's kernels, and no
    autograd needed (the fused ops are inference-only)."""
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        kind = t.device.type
        if kind == "cpu":
            if t.dtype not in CPU_DTYPES:
                return False
        elif kind != "cuda" or t.dtype not in CUDA_DTYPES:
            return False
        if grad and t.requires_grad:
            return False
    return True


def group_norm(x: Tensor, norm: nn.Module, silu: bool = False, frames: int = 1,
               counter: nn.Module | None = None) -> Tensor:
    """``norm(x)`` [→ SiLU] for x ``[B·F, C, H, W]`` (frame-major rows), statistics over
    ``frames`` rows (the frames of a video) — nn.GroupNorm of the ``[B, C, F, H, W]`` view.

    norm: an nn.GroupNorm (or a FusedGroupNorm wrapping one: its own SiLU flag is ignored).
    Returns a contiguous ``[B·F, C, H, W]`` tensor. Falls back to PyTorch (counted on
    ``counter.fallbacks``) when the kernel cannot take x.
    """
    if isinstance(norm, FusedGroupNorm):
        norm = norm.norm
    weight = norm.weight if norm.affine else None
    bias = norm.bias if norm.affine else None
    if kernel_can_run(x, weight, bias):
        return ops.group_norm(x.contiguous(), norm.num_groups, weight, bias, norm.eps, silu,
                              frames)
    if counter is not None:
        counter.fallbacks += 1
    n, c = x.shape[:2]
    video = x.reshape(n // frames, frames, c, -1).transpose(1, 2)  # [B, C, F, H·W]
    y = F.group_norm(video, norm.num_groups, weight, bias, norm.eps)
    y = y.transpose(1, 2).reshape(x.shape)
    return F.silu(y) if silu else y


class FusedGroupNorm(nn.Module):
    """Drop-in for ``nn.GroupNorm`` (optionally fused with the SiLU that follows it).

    Takes any input nn.GroupNorm takes ([N, C, *]). A 5-D ``[B, C, F, H, W]`` input that is a
    permuted view of frame-major ``[B, F, C, H, W]`` memory (what diffusers' temporal layers pass)
    is normalised in place through ``frames=F``, and the output is returned as the same kind of
    view: no permute copy. Other layouts are made contiguous first.
    """

    def __init__(self, norm: nn.GroupNorm, silu: bool = False) -> None:
        super().__init__()
        self.norm = norm
        self.silu = silu
        self.fallbacks = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5 and x.permute(0, 2, 1, 3, 4).is_contiguous():
            b, c, f, h, w = x.shape
            rows = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            y = group_norm(rows, self.norm, self.silu, f, self)
            return y.view(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        shape = x.shape
        y = group_norm(x.reshape(shape[0], shape[1], -1, 1), self.norm, self.silu, 1, self)
        return y.view(shape)

    def extra_repr(self) -> str:
        n = self.norm
        return f"{n.num_groups}, {n.num_channels}, eps={n.eps}, silu={self.silu}"
