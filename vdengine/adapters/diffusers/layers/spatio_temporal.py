"""Stable Video Diffusion's spatio-temporal transformer in the token layout [B·F, S, C].

diffusers' ``TransformerSpatioTemporalModel`` runs a spatial block on ``[B·F, S, C]`` tokens, then
``TemporalBasicTransformerBlock`` permutes them to ``[B·S, F, C]`` (a copy) for attention over
frames and back (another copy), and cross-attends to the image embedding broadcast to every pixel
(``time_context``, a ``[B·S, L, D]`` copy). Here the temporal block works on ``[B·F, S, C]``: the
frame attention reads strided views (ops.temporal_attention), and the cross-attention uses the
``[B, L, D]`` context directly (with one key, L = 1 as in SVD, softmax is exactly 1 and the
output is the projected value: no attention call at all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import TemporalBasicTransformerBlock
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from torch import Tensor, nn

from vdengine.adapters.diffusers.layers.attention import FusedFrameAttention, unsupported_reason
from vdengine.adapters.diffusers.layers.norm import group_norm

__all__ = ["FusedSpatioTemporalTransformer", "FusedTemporalBasicBlock",
           "temporal_basic_block_unsupported"]


def temporal_basic_block_unsupported(block: nn.Module) -> str | None:
    """Why a TemporalBasicTransformerBlock cannot be fused (None when it can)."""
    if not isinstance(block, TemporalBasicTransformerBlock):
        return f"block type {type(block).__name__}"
    reason = unsupported_reason(block.attn1)
    if reason is None and block.attn2 is not None:
        reason = unsupported_reason(block.attn2, self_attention=False)
    return reason


class FusedTemporalBasicBlock(nn.Module):
    """``TemporalBasicTransformerBlock`` on tokens ``[B·F, S, C]``.

    ``forward(x [B·F, S, C], num_frames, context [B, L, D] or None)``: feed-forward in, attention
    over frames, cross-attention to the per-video context, feed-forward out — per token, as the
    original computes on its ``[B·S, F, C]`` permutation.
    """

    def __init__(self, block: TemporalBasicTransformerBlock) -> None:
        super().__init__()
        reason = temporal_basic_block_unsupported(block)
        if reason is not None:
            raise ValueError(f"FusedTemporalBasicBlock cannot replace this block: {reason}")
        self.is_res = block.is_res
        self.norm_in, self.ff_in = block.norm_in, block.ff_in
        self.norm1, self.attn1 = block.norm1, FusedFrameAttention(block.attn1)
        self.norm2, self.attn2 = block.norm2, block.attn2  # cross-attention, kept as is
        self.norm3, self.ff = block.norm3, block.ff

    def forward(self, x: Tensor, num_frames: int, context: Tensor | None = None) -> Tensor:
        # Residual adds land in fresh projection outputs (add_), as in FusedTemporalBlock.
        h = self.ff_in(self.norm_in(x))
        if self.is_res:
            h = h.add_(x)
        h = self.attn1(self.norm1(h), num_frames).add_(h)
        if self.attn2 is not None:
            h = self._cross_attention_add(self.norm2(h), h, num_frames, context)
        out = self.ff(self.norm3(h))
        return out.add_(h) if self.is_res else out

    def _cross_attention_add(self, x: Tensor, h: Tensor, frames: int, context: Tensor | None
                             ) -> Tensor:
        """h + attn2(x) where every token of video b attends to context[b] ([B, L, D])."""
        attn = self.attn2
        bf, s, _ = x.shape
        b = bf // frames
        if context is None:
            raise ValueError("the temporal block's cross-attention needs encoder_hidden_states")
        value = attn.to_v(context)  # [B, L, C]
        if context.shape[1] == 1:  # one key: softmax = 1 exactly, every query gets the value
            out = value
            for layer in attn.to_out:
                out = layer(out)  # [B, 1, C], broadcast over the video's frames and pixels
            h.view(b, frames * s, -1).add_(out)  # h: this block's own running state
            return h
        heads, inner = attn.heads, attn.to_q.out_features
        d = inner // heads
        q = attn.to_q(x).view(b, frames * s, heads, d).transpose(1, 2)
        k = attn.to_k(context).view(b, -1, heads, d).transpose(1, 2)
        v = value.view(b, -1, heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bf, s, inner)
        for layer in attn.to_out:
            out = layer(out)
        return out.add_(h)


class FusedSpatioTemporalTransformer(nn.Module):
    """Drop-in for SVD's ``TransformerSpatioTemporalModel``: the spatial blocks run as in
    diffusers, the temporal blocks as FusedTemporalBasicBlock, with no permute over frames."""

    def __init__(self, module: TransformerSpatioTemporalModel) -> None:
        super().__init__()
        for block in module.temporal_transformer_blocks:
            reason = temporal_basic_block_unsupported(block)
            if reason is not None:
                raise ValueError(f"FusedSpatioTemporalTransformer cannot replace this module: "
                                 f"{reason}")
        self.norm, self.proj_in, self.proj_out = module.norm, module.proj_in, module.proj_out
        self.transformer_blocks = module.transformer_blocks
        self.temporal_transformer_blocks = nn.ModuleList(
            FusedTemporalBasicBlock(b) for b in module.temporal_transformer_blocks)
        self.time_proj, self.time_pos_embed = module.time_proj, module.time_pos_embed
        self.time_mixer = module.time_mixer
        self.fallbacks = 0

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                image_only_indicator: Tensor | None = None, return_dict: bool = True):
        bf, c, h, w = hidden_states.shape
        frames = image_only_indicator.shape[-1]
        b = bf // frames
        # The per-video context: the first frame's rows of the per-frame encoder_hidden_states.
        context = None
        if encoder_hidden_states is not None:
            context = encoder_hidden_states.view(b, frames, *encoder_hidden_states.shape[1:])[:, 0]

        x = group_norm(hidden_states, self.norm, counter=self)
        tokens = self.proj_in(x.view(bf, c, h * w).transpose(1, 2))  # [B·F, S, inner]
        inner = tokens.shape[-1]
        # Frame-index embedding, [F, inner], added to every video's rows f.
        t_emb = self.time_proj(torch.arange(frames, device=tokens.device)).to(tokens.dtype)
        emb = self.time_pos_embed(t_emb)[:, None, :]  # [F, 1, inner]

        for block, temporal_block in zip(self.transformer_blocks,
                                         self.temporal_transformer_blocks):
            tokens = block(tokens, encoder_hidden_states=encoder_hidden_states)
            mix = (tokens.view(b, frames, h * w, inner) + emb).view(bf, h * w, inner)
            mix = temporal_block(mix, frames, context)
            tokens = self.time_mixer(x_spatial=tokens, x_temporal=mix,
                                     image_only_indicator=image_only_indicator)

        out = self.proj_out(tokens).transpose(1, 2).reshape(bf, c, h, w)
        out = out + hidden_states
        return TransformerTemporalModelOutput(sample=out) if return_dict else (out,)
