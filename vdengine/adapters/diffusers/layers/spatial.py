"""The spatial transformer blocks of diffusers' video UNets with one q/k/v GEMM.

A ``BasicTransformerBlock`` inside ``Transformer2DModel`` (UNet3D, AnimateDiff) or
``TransformerSpatioTemporalModel`` (SVD) attends over the pixels of each frame. Here its
self-attention computes q, k and v with one GEMM (the three weights concatenated once; the
attention itself stays on scaled_dot_product_attention, as diffusers' processor runs it), and the
residual adds land in the fresh outputs of the projections. Cross-attention and the feed-forward
are the block's own modules (the feed-forward fused separately, see feed_forward.py).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from torch import Tensor, nn

from vdengine.adapters.diffusers.layers.attention import fused_linear, unsupported_reason

__all__ = ["FusedSpatialBlock", "spatial_block_unsupported"]


def spatial_block_unsupported(block: nn.Module) -> str | None:
    """Why a spatial BasicTransformerBlock cannot be fused (None when it can)."""
    if type(block) is not BasicTransformerBlock:
        return f"block type {type(block).__name__}"
    if block.norm_type != "layer_norm" or block.only_cross_attention or block.pos_embed is not None:
        return f"norm_type {block.norm_type!r} / only_cross_attention / positional embedding"
    if hasattr(block, "fuser"):
        return "gated (GLIGEN) attention"
    return unsupported_reason(block.attn1)


class FusedSpatialBlock(nn.Module):
    """Drop-in for a spatial ``BasicTransformerBlock`` (layer norms, self-attention, optional
    cross-attention, feed-forward) on tokens [N, S, C]. Calls with an attention mask or GLIGEN
    inputs run the original block (counted in ``fallbacks``)."""

    def __init__(self, block: BasicTransformerBlock) -> None:
        super().__init__()
        reason = spatial_block_unsupported(block)
        if reason is not None:
            raise ValueError(f"FusedSpatialBlock cannot replace this block: {reason}")
        self.block = block  # its modules, and the path for masked calls
        self.heads = block.attn1.heads
        self.to_qkv = fused_linear(block.attn1.to_q, block.attn1.to_k, block.attn1.to_v)
        self.fallbacks = 0

    def _self_attention(self, x: Tensor) -> Tensor:
        n, s, _ = x.shape
        q, k, v = (t.view(n, s, self.heads, -1).transpose(1, 2)
                   for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, -1)
        for layer in self.block.attn1.to_out:
            out = layer(out)
        return out

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None,
                encoder_hidden_states: Tensor | None = None,
                encoder_attention_mask: Tensor | None = None, timestep: Any = None,
                cross_attention_kwargs: dict[str, Any] | None = None, class_labels: Any = None,
                added_cond_kwargs: dict[str, Any] | None = None) -> Tensor:
        b = self.block
        if (attention_mask is not None or encoder_attention_mask is not None
                or (cross_attention_kwargs or {}).get("gligen") is not None):
            self.fallbacks += 1
            return b(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                     timestep, cross_attention_kwargs, class_labels, added_cond_kwargs)
        x = self._self_attention(b.norm1(hidden_states)).add_(hidden_states)
        if b.attn2 is not None:
            x = b.attn2(b.norm2(x), encoder_hidden_states=encoder_hidden_states).add_(x)
        return b.ff(b.norm3(x)).add_(x)
