"""Resnet blocks and temporal convolutions of diffusers' video UNets with fused GroupNorm + SiLU.

- ``FusedResnetBlock2D``: norm1 and norm2 each one ops.group_norm call with the SiLU fused (the
  time embedding is added before norm2, as diffusers does).
- ``FusedTemporalConvLayer`` (UNet3D): the first GroupNorm takes its statistics over the frames of
  each video in place on the frame-major input (frames=F); the Conv3d (3, 1, 1) layers run as
  Conv2d (3, 1) on the [B, C, F, H·W] view of their input — the same sums, on PyTorch's optimised
  2-D convolution instead of the slow generic 3-D one.
- ``FusedSpatioTemporalResBlock`` (SVD): the same for ``TemporalResnetBlock``, and the
  AlphaBlender mix written straight into the frame-major output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.resnet import (
    ResnetBlock2D,
    SpatioTemporalResBlock,
    TemporalConvLayer,
    TemporalResnetBlock,
)
from torch import Tensor, nn

from vdengine.adapters.diffusers.layers.norm import FusedGroupNorm, group_norm

__all__ = ["FusedResnetBlock2D", "FusedSpatioTemporalResBlock", "FusedTemporalConvLayer",
           "resnet_unsupported", "temporal_conv_unsupported"]


def _is_group_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.GroupNorm, FusedGroupNorm))


def _is_silu(m: object) -> bool:
    return isinstance(m, nn.SiLU)


def _frame_conv_unsupported(conv: nn.Module) -> str | None:
    """Why a Conv3d is not a (3, 1, 1) convolution over frames that Conv2d (3, 1) reproduces."""
    if not isinstance(conv, nn.Conv3d):
        return f"{type(conv).__name__} where a Conv3d was expected"
    if (conv.kernel_size != (3, 1, 1) or conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1)
            or conv.groups != 1 or conv.padding_mode != "zeros"
            or tuple(conv.padding) != (1, 0, 0)):
        return "a Conv3d other than kernel (3, 1, 1), stride 1, padding (1, 0, 0)"
    return None


def _frame_conv(x: Tensor, conv: nn.Conv3d) -> Tensor:
    """conv (kernel (3, 1, 1), padding (1, 0, 0)) on x [B, C, F, H·W] (contiguous), as a Conv2d."""
    return F.conv2d(x, conv.weight.squeeze(-1), conv.bias, padding=(1, 0))


def resnet_unsupported(block: nn.Module) -> str | None:
    """Why a ResnetBlock2D cannot be fused (None when it can)."""
    if not isinstance(block, ResnetBlock2D):
        return f"block type {type(block).__name__}"
    if block.time_embedding_norm != "default":
        return f"time_embedding_norm {block.time_embedding_norm!r}"
    if not _is_silu(block.nonlinearity):
        return f"nonlinearity {type(block.nonlinearity).__name__}"
    if not (_is_group_norm(block.norm1) and _is_group_norm(block.norm2)):
        return "norms other than GroupNorm"
    return None


def temporal_conv_unsupported(layer: nn.Module) -> str | None:
    """Why a TemporalConvLayer / SpatioTemporalResBlock cannot be fused (None when it can)."""
    if isinstance(layer, TemporalConvLayer):
        for stage in (layer.conv1, layer.conv2, layer.conv3, layer.conv4):
            fused_act = isinstance(stage[0], FusedGroupNorm) and stage[0].silu and isinstance(
                stage[1], nn.Identity)  # the SiLU already taken by the norm
            if not ((_is_group_norm(stage[0]) and _is_silu(stage[1])) or fused_act):
                return "a stage other than GroupNorm, SiLU, [Dropout,] Conv3d"
            reason = _frame_conv_unsupported(stage[-1])
            if reason is not None:
                return reason
        return None
    if isinstance(layer, SpatioTemporalResBlock):
        t = layer.temporal_res_block
        if not isinstance(t, TemporalResnetBlock):
            return f"temporal block {type(t).__name__}"
        if not (_is_group_norm(t.norm1) and _is_group_norm(t.norm2) and _is_silu(t.nonlinearity)):
            return "temporal norms other than GroupNorm + SiLU"
        return _frame_conv_unsupported(t.conv1) or _frame_conv_unsupported(t.conv2)
    return f"layer type {type(layer).__name__}"


class FusedResnetBlock2D(nn.Module):
    """Drop-in for ``ResnetBlock2D`` (time_embedding_norm "default", SiLU): GroupNorm + SiLU fused."""

    def __init__(self, block: ResnetBlock2D) -> None:
        super().__init__()
        reason = resnet_unsupported(block)
        if reason is not None:
            raise ValueError(f"FusedResnetBlock2D cannot replace this block: {reason}")
        self.norm1, self.conv1, self.norm2, self.conv2 = (block.norm1, block.conv1, block.norm2,
                                                          block.conv2)
        self.time_emb_proj, self.dropout = block.time_emb_proj, block.dropout
        self.conv_shortcut = block.conv_shortcut
        self.upsample, self.downsample = block.upsample, block.downsample
        self.skip_time_act = block.skip_time_act
        self.output_scale_factor = block.output_scale_factor
        self.fallbacks = 0

    def forward(self, input_tensor: Tensor, temb: Tensor | None, *args, **kwargs) -> Tensor:
        h = group_norm(input_tensor, self.norm1, silu=True, counter=self)
        if self.upsample is not None:
            input_tensor, h = self.upsample(input_tensor), self.upsample(h)
        elif self.downsample is not None:
            input_tensor, h = self.downsample(input_tensor), self.downsample(h)
        h = self.conv1(h)
        if self.time_emb_proj is not None:
            if not self.skip_time_act:
                temb = F.silu(temb)
            temb = self.time_emb_proj(temb)[:, :, None, None]
        if temb is not None:
            h = h.add_(temb)  # before norm2, as diffusers does (h: conv1's fresh output)
        h = group_norm(h, self.norm2, silu=True, counter=self)
        h = self.conv2(self.dropout(h))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        out = h.add_(input_tensor)  # input + h, into conv2's fresh output
        return out.div_(self.output_scale_factor) if self.output_scale_factor != 1.0 else out


class FusedTemporalConvLayer(nn.Module):
    """Drop-in for UNet3D's ``TemporalConvLayer``: four GroupNorm + SiLU + Conv (3, 1, 1) stages.

    ``forward(x [B·F, C, H, W], num_frames=F) -> [B·F, C, H, W]``. Stage 1's norm reads the
    frame-major input in place (frames=F); its output is laid out [B, C, F, H·W] once for the
    convolutions over frames, which stages 2-4 keep; the residual add writes frame-major again.
    """

    def __init__(self, layer: TemporalConvLayer) -> None:
        super().__init__()
        reason = temporal_conv_unsupported(layer)
        if reason is not None:
            raise ValueError(f"FusedTemporalConvLayer cannot replace this layer: {reason}")
        self.stages = nn.ModuleList([layer.conv1, layer.conv2, layer.conv3, layer.conv4])
        self.fallbacks = 0

    def forward(self, hidden_states: Tensor, num_frames: int = 1) -> Tensor:
        bf, c, hh, ww = hidden_states.shape
        b = bf // num_frames
        first = self.stages[0]
        h = group_norm(hidden_states, first[0], silu=True, frames=num_frames, counter=self)
        h = h.view(b, num_frames, c, hh * ww).transpose(1, 2).contiguous()  # [B, C, F, H·W]
        h = _frame_conv(h, first[-1])
        for stage in self.stages[1:]:
            h = group_norm(h, stage[0], silu=True, counter=self)  # one video per row of [B, C, ...]
            for layer in stage[2:-1]:  # Dropout
                h = layer(h)
            h = _frame_conv(h, stage[-1])
        out = hidden_states.view(b, num_frames, c, hh * ww) + h.transpose(1, 2)
        return out.reshape(bf, c, hh, ww)


class FusedSpatioTemporalResBlock(nn.Module):
    """Drop-in for SVD's ``SpatioTemporalResBlock``: the spatial ResnetBlock2D as given (fused or
    not), then ``TemporalResnetBlock`` with fused norms and Conv2d (3, 1) convolutions, and the
    learned spatial/temporal mix."""

    def __init__(self, block: SpatioTemporalResBlock) -> None:
        super().__init__()
        reason = temporal_conv_unsupported(block)
        if reason is not None:
            raise ValueError(f"FusedSpatioTemporalResBlock cannot replace this block: {reason}")
        self.spatial_res_block = block.spatial_res_block
        t = block.temporal_res_block
        self.norm1, self.conv1, self.norm2, self.conv2 = t.norm1, t.conv1, t.norm2, t.conv2
        self.time_emb_proj, self.dropout, self.conv_shortcut = (t.time_emb_proj, t.dropout,
                                                                t.conv_shortcut)
        self.time_mixer = block.time_mixer
        self.fallbacks = 0

    def forward(self, hidden_states: Tensor, temb: Tensor | None = None,
                image_only_indicator: Tensor | None = None) -> Tensor:
        frames = image_only_indicator.shape[-1]
        x = self.spatial_res_block(hidden_states, temb)  # [B·F, C, H, W]
        bf, c, hh, ww = x.shape
        b = bf // frames
        t = group_norm(x, self.norm1, silu=True, frames=frames, counter=self)
        t = _frame_conv(t.view(b, frames, c, hh * ww).transpose(1, 2).contiguous(), self.conv1)
        if self.time_emb_proj is not None:
            emb = self.time_emb_proj(F.silu(temb.reshape(b, frames, -1)))  # [B, F, C']
            t = t.add_(emb.transpose(1, 2)[..., None])  # [B, C', F, 1] into conv1's output
        t = group_norm(t, self.norm2, silu=True, counter=self)  # [B, C', F, H·W]: per video
        t = _frame_conv(self.dropout(t), self.conv2)
        x5 = x.view(b, frames, c, hh, ww)  # frame-major
        if self.conv_shortcut is not None:
            shortcut = self.conv_shortcut(x5.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
        else:
            shortcut = x5
        temporal = shortcut + t.view(b, -1, frames, hh, ww).transpose(1, 2)  # [B, F, C', H, W]
        alpha = self.time_mixer.get_alpha(image_only_indicator, 5).to(x.dtype)  # [B, 1, F, 1, 1]
        if self.time_mixer.switch_spatial_to_temporal_mix:
            alpha = 1.0 - alpha
        alpha = alpha.transpose(1, 2)  # [B, F, 1, 1, 1]
        out = torch.mul(alpha, x5)
        out = out + (1.0 - alpha) * temporal
        return out.reshape(bf, -1, hh, ww)
