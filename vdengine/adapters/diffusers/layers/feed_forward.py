"""diffusers' GEGLU ``FeedForward`` with the activation on ops.geglu.

The projection runs as a plain GEMM (no bias: PyTorch's CPU addmm would first copy the bias into
the whole [N, 2H] output) and ops.geglu adds the bias, splits value and gate and applies the
exact GELU in one pass. Used by the spatial and the temporal transformer blocks alike (the
feed-forward is per token).
"""

from __future__ import annotations

import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.attention import FeedForward
from torch import Tensor, nn

from vdengine import ops
from vdengine.adapters.diffusers.layers.norm import kernel_can_run

__all__ = ["FusedFeedForward", "feed_forward_unsupported"]


def feed_forward_unsupported(ff: nn.Module) -> str | None:
    """Why a FeedForward cannot be fused (None when it can): GEGLU activation only."""
    if not isinstance(ff, FeedForward):
        return f"module type {type(ff).__name__}"
    if not isinstance(ff.net[0], GEGLU):
        return f"activation {type(ff.net[0]).__name__} (only GEGLU is fused)"
    return None


class FusedFeedForward(nn.Module):
    """Drop-in for a GEGLU ``FeedForward``: x → GEMM → ops.geglu (+bias) → dropout → Linear."""

    def __init__(self, ff: FeedForward) -> None:
        super().__init__()
        reason = feed_forward_unsupported(ff)
        if reason is not None:
            raise ValueError(f"FusedFeedForward cannot replace this module: {reason}")
        self.proj = ff.net[0].proj  # Linear(dim, 2·inner)
        self.rest = nn.ModuleList(list(ff.net)[1:])  # Dropout, Linear(inner, dim_out)[, Dropout]
        self.fallbacks = 0

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        h = F.linear(hidden_states, self.proj.weight)
        if kernel_can_run(h, self.proj.bias):
            h = ops.geglu(h.contiguous(), self.proj.bias)
        else:
            self.fallbacks += 1
            if self.proj.bias is not None:
                h = h + self.proj.bias
            value, gate = h.chunk(2, dim=-1)
            h = value * F.gelu(gate)
        for layer in self.rest:
            h = layer(h)
        return h
