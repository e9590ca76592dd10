"""Self-attention across frames in the token layout ``[B·F, S, C]``: one fused q/k/v projection and
vdengine.ops.temporal_attention reading q, k, v as strided views of it (no permute copies).

``FusedFrameAttention`` replaces the core of a diffusers ``Attention`` used as temporal
self-attention; ``unsupported_reason`` says which Attention configurations it does not reproduce
(those modules are left to diffusers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import Tensor, nn

from vdengine import ops
from vdengine.adapters.diffusers.layers.norm import kernel_can_run
from vdengine.ops.temporal_attention import MAX_CUDA_HEAD_DIM, MAX_FRAMES

__all__ = ["FusedFrameAttention", "fused_linear", "unsupported_reason"]


def unsupported_reason(attn: Attention, self_attention: bool = True) -> str | None:
    """Why ``attn`` cannot be replaced by FusedFrameAttention (None when it can): only the plain
    softmax attention of diffusers' default processors, with its default scale."""
    if not isinstance(attn.processor, (AttnProcessor, AttnProcessor2_0)):
        return f"attention processor {type(attn.processor).__name__}"
    if self_attention and attn.is_cross_attention:
        return "cross-attention where self-attention was expected"
    extras = ("spatial_norm", "group_norm", "norm_q", "norm_k", "norm_cross")
    for name in extras:
        if getattr(attn, name, None) is not None:
            return f"Attention.{name}"
    if attn.residual_connection or attn.rescale_output_factor != 1.0:
        return "Attention.residual_connection / rescale_output_factor"
    if getattr(attn, "fused_projections", False) or not hasattr(attn, "to_q"):
        return "fused q/k/v projections"
    head_dim = attn.to_q.out_features // attn.heads
    if abs(attn.scale - head_dim**-0.5) > 1e-12 * head_dim**-0.5:
        return f"a score scale other than head_dim ** -0.5 ({attn.scale})"
    return None


def fused_linear(*linears: nn.Linear) -> nn.Linear:
    """One Linear computing the given Linears (same input) side by side: weights concatenated."""
    weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    has_bias = [lin.bias is not None for lin in linears]
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=any(has_bias),
                      device=weight.device, dtype=weight.dtype)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if any(has_bias):
        fused.bias = nn.Parameter(torch.cat([
            lin.bias.detach() if lin.bias is not None else
            torch.zeros(lin.out_features, device=weight.device, dtype=weight.dtype)
            for lin in linears]), requires_grad=False)
    return fused


class FusedFrameAttention(nn.Module):
    """Self-attention across the F frames of each video for tokens ``[B·F, S, C]``.

    ``forward(x, num_frames) -> [B·F, S, C_out]`` equals diffusers' Attention applied to the
    ``[B·S, F, C]`` permutation of x, permuted back. q, k, v come from one GEMM (the to_q, to_k,
    to_v weights concatenated once) and go into ops.temporal_attention as strided views. Where the
    kernel cannot run (a dtype the device's kernels lack, F > 128, head_dim > 128 on CUDA, autograd)
    the permute + scaled_dot_product_attention path runs instead, counted in ``fallbacks``.
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        reason = unsupported_reason(attn)
        if reason is not None:
            raise ValueError(f"FusedFrameAttention cannot replace this Attention: {reason}")
        self.heads = attn.heads
        self.to_qkv = fused_linear(attn.to_q, attn.to_k, attn.to_v)
        self.to_out = attn.to_out  # [Linear, Dropout]
        self.fallbacks = 0

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # views of one [B·F, S, 3C] tensor
        head_dim = q.shape[-1] // self.heads
        fits = num_frames <= MAX_FRAMES and (x.device.type != "cuda"
                                            or head_dim <= MAX_CUDA_HEAD_DIM)
        if fits and kernel_can_run(q):
            out = ops.temporal_attention(q, k, v, num_frames, self.heads)
        else:
            self.fallbacks += 1
            out = _permuted_attention(q, k, v, num_frames, self.heads)
        for layer in self.to_out:
            out = layer(out)
        return out


def _permuted_attention(q: Tensor, k: Tensor, v: Tensor, frames: int, heads: int) -> Tensor:
    """The PyTorch path: permute to [B·S, heads, F, d], SDPA, permute back (copies)."""
    bf, s, c = q.shape
    b, d = bf // frames, c // heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(b, frames, s, heads, d).permute(0, 2, 3, 1, 4).reshape(b * s, heads,
                                                                                 frames, d)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.reshape(b, s, heads, frames, d).permute(0, 3, 1, 2, 4).reshape(bf, s, c)
