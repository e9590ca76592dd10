"""The temporal transformers of UNet3D (ModelScope) and AnimateDiff in the token layout [B·F, S, C].

diffusers' ``TransformerTemporalModel`` / ``AnimateDiffTransformer3D`` permute ``[B·F, C, H, W]``
to ``[B·H·W, F, C]`` (a copy) so that attention runs over frames, and permute back (another copy).
Here the tokens stay ``[B·F, S, C]`` (row = b·F + f, S = H·W): the GroupNorm takes its statistics
over the F frame rows in place (ops.group_norm, frames=F), LayerNorm, projections and feed-forward
are per token, and attention across frames reads the fused q/k/v views through their strides
(ops.temporal_attention).
"""

from __future__ import annotations

from typing import Any

from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from diffusers.models.transformers.transformer_temporal import (
    TransformerTemporalModel,
    TransformerTemporalModelOutput,
)
from torch import Tensor, nn

from vdengine.adapters.diffusers.layers.attention import FusedFrameAttention, unsupported_reason
from vdengine.adapters.diffusers.layers.norm import group_norm

__all__ = ["FusedTemporalBlock", "FusedTemporalTransformer", "temporal_block_unsupported"]


def temporal_block_unsupported(block: nn.Module) -> str | None:
    """Why a temporal BasicTransformerBlock cannot be fused (None when it can)."""
    if not isinstance(block, BasicTransformerBlock):
        return f"block type {type(block).__name__}"
    if block.norm_type != "layer_norm" or block.only_cross_attention:
        return f"norm_type {block.norm_type!r} / only_cross_attention"
    if hasattr(block, "fuser"):
        return "gated (GLIGEN) attention"
    if block.pos_embed is not None and not isinstance(block.pos_embed,
                                                      SinusoidalPositionalEmbedding):
        return f"positional embedding {type(block.pos_embed).__name__}"
    for attn in (block.attn1, block.attn2):
        reason = None if attn is None else unsupported_reason(attn)
        if reason is not None:
            return reason
    return None


class FusedTemporalBlock(nn.Module):
    """A temporal ``BasicTransformerBlock`` (self-attention over frames, twice with
    double_self_attention, then the feed-forward) on tokens ``[B·F, S, C]``."""

    def __init__(self, block: BasicTransformerBlock) -> None:
        super().__init__()
        reason = temporal_block_unsupported(block)
        if reason is not None:
            raise ValueError(f"FusedTemporalBlock cannot replace this block: {reason}")
        self.norm1, self.norm2, self.norm3 = block.norm1, block.norm2, block.norm3
        self.attn1 = FusedFrameAttention(block.attn1)
        self.attn2 = None if block.attn2 is None else FusedFrameAttention(block.attn2)
        self.ff = block.ff
        # The sinusoidal table of AnimateDiff's motion modules, indexed by frame: [max_len, C].
        self.register_buffer("pos", None if block.pos_embed is None else block.pos_embed.pe[0],
                             persistent=False)

    def _add_position(self, x: Tensor, frames: int) -> Tensor:
        if self.pos is None:
            return x
        if frames > self.pos.shape[0]:
            raise ValueError(f"num_frames = {frames} exceeds the motion module's max_seq_length "
                             f"{self.pos.shape[0]}: generate in windows of at most that many frames")
        bf, s, c = x.shape
        x.view(bf // frames, frames, s, c).add_(self.pos[:frames, None])  # x: a fresh norm output
        return x

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        # Residual adds land in the fresh outputs of the attention / feed-forward projections
        # (add_): no new [B·F, S, C] buffer per add (the same sums as diffusers' out + x).
        h = self._add_position(self.norm1(x), num_frames)
        x = self.attn1(h, num_frames).add_(x)
        if self.attn2 is not None:  # double self-attention (diffusers' temporal blocks)
            h = self._add_position(self.norm2(x), num_frames)
            x = self.attn2(h, num_frames).add_(x)
        return self.ff(self.norm3(x)).add_(x)


class FusedTemporalTransformer(nn.Module):
    """Drop-in for ``TransformerTemporalModel`` (UNet3D) and ``AnimateDiffTransformer3D``.

    ``forward(hidden_states [B·F, C, H, W], num_frames=F, ...)`` returns what the original returns
    (a TransformerTemporalModelOutput / tuple, or the tensor for AnimateDiff): GroupNorm over each
    video's frames → proj_in → temporal blocks → proj_out → residual, with no permute over the
    frame axis.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for block in module.transformer_blocks:
            reason = temporal_block_unsupported(block)
            if reason is not None:
                raise ValueError(f"FusedTemporalTransformer cannot replace this module: {reason}")
        self.norm = module.norm
        self.proj_in, self.proj_out = module.proj_in, module.proj_out
        self.transformer_blocks = nn.ModuleList(
            FusedTemporalBlock(b) for b in module.transformer_blocks)
        self.returns_output = isinstance(module, TransformerTemporalModel)
        self.fallbacks = 0

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                timestep: Any = None, class_labels: Any = None, num_frames: int = 1,
                cross_attention_kwargs: dict[str, Any] | None = None, return_dict: bool = True):
        if encoder_hidden_states is not None:
            raise ValueError("the fused temporal transformer runs self-attention over frames only; "
                             "diffusers' video UNets pass no encoder_hidden_states to it")
        bf, c, h, w = hidden_states.shape
        x = group_norm(hidden_states, self.norm, frames=num_frames, counter=self)
        tokens = self.proj_in(x.view(bf, c, h * w).transpose(1, 2))  # [B·F, S, inner]
        for block in self.transformer_blocks:
            tokens = block(tokens, num_frames)
        out = self.proj_out(tokens).transpose(1, 2).reshape(bf, c, h, w)
        out = hidden_states + out
        if not self.returns_output:
            return out
        return TransformerTemporalModelOutput(sample=out) if return_dict else (out,)
