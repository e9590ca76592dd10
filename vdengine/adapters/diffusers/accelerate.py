"""Swap diffusers' video-UNet modules for vdengine's fused ones: ``accelerate(unet, options)``.

The walk is post-order (children first), so a fused parent takes its already-fused children; a
module whose configuration a fused class does not reproduce is left to diffusers and reported.
Never patches diffusers' classes: only the attributes of the model given (or of its copy).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.resnet import ResnetBlock2D, SpatioTemporalResBlock, TemporalConvLayer
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModel,
)
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from vdengine.adapters.diffusers.layers import (
    FusedGroupNorm,
    FusedResnetBlock2D,
    FusedSpatioTemporalResBlock,
    FusedSpatioTemporalTransformer,
    FusedTemporalConvLayer,
    FusedTemporalTransformer,
)
from vdengine.adapters.diffusers.layers.feed_forward import (
    FusedFeedForward,
    feed_forward_unsupported,
)
from vdengine.adapters.diffusers.layers.resnet import resnet_unsupported, temporal_conv_unsupported
from vdengine.adapters.diffusers.layers.spatial import FusedSpatialBlock, spatial_block_unsupported
from vdengine.adapters.diffusers.layers.spatio_temporal import temporal_basic_block_unsupported
from vdengine.adapters.diffusers.layers.temporal_transformer import temporal_block_unsupported
from vdengine.adapters.diffusers.options import AccelerationOptions

__all__ = ["AccelerationReport", "accelerate", "acceleration_report", "shared_copy"]


@dataclass
class AccelerationReport:
    """What ``accelerate`` replaced: ``replaced[class name]`` counts, ``kept`` the modules left to
    diffusers with the reason, ``fallbacks`` the calls fused modules ran on PyTorch since (read
    with ``acceleration_report``)."""

    replaced: Counter = field(default_factory=Counter)
    kept: list[tuple[str, str]] = field(default_factory=list)
    fallbacks: int = 0


def _unsupported_transformer(module: nn.Module) -> str | None:
    if isinstance(module, TransformerSpatioTemporalModel):
        reasons = [temporal_basic_block_unsupported(b) for b in module.temporal_transformer_blocks]
    else:
        reasons = [temporal_block_unsupported(b) for b in module.transformer_blocks]
    return next((r for r in reasons if r is not None), None)


# (diffusers class, option name, why-not check, fused class)
_RULES: list[tuple[type | tuple[type, ...], str, Callable[[nn.Module], str | None], type]] = [
    ((TransformerTemporalModel, AnimateDiffTransformer3D), "temporal_attention",
     _unsupported_transformer, FusedTemporalTransformer),
    (TransformerSpatioTemporalModel, "temporal_attention", _unsupported_transformer,
     FusedSpatioTemporalTransformer),
    (TemporalConvLayer, "temporal_conv", temporal_conv_unsupported, FusedTemporalConvLayer),
    (SpatioTemporalResBlock, "temporal_conv", temporal_conv_unsupported,
     FusedSpatioTemporalResBlock),
    (ResnetBlock2D, "group_norm", resnet_unsupported, FusedResnetBlock2D),
    (FeedForward, "feed_forward", feed_forward_unsupported, FusedFeedForward),
]


def _replacement(module: nn.Module, name: str, options: AccelerationOptions,
                 report: AccelerationReport) -> nn.Module | None:
    for cls, option, unsupported, fused in _RULES:
        if type(module) in (cls if isinstance(cls, tuple) else (cls,)):
            if not getattr(options, option):
                return None
            reason = unsupported(module)
            if reason is not None:
                report.kept.append((name, f"{type(module).__name__}: {reason}"))
                return None
            report.replaced[type(module).__name__] += 1
            return fused(module)
    if options.group_norm and type(module) is nn.GroupNorm:
        report.replaced["GroupNorm"] += 1
        return FusedGroupNorm(module)
    return None


def _fuse_silu_after_norm(module: nn.Module) -> None:
    """In an nn.Sequential, a FusedGroupNorm followed by nn.SiLU takes the SiLU (→ Identity)."""
    if not isinstance(module, nn.Sequential):
        return
    for i in range(len(module) - 1):
        norm, act = module[i], module[i + 1]
        if isinstance(norm, FusedGroupNorm) and not norm.silu and isinstance(act, nn.SiLU):
            module[i] = FusedGroupNorm(norm.norm, silu=True)
            module[i + 1] = nn.Identity()


def _walk(module: nn.Module, prefix: str, options: AccelerationOptions,
          report: AccelerationReport) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        _walk(child, path, options, report)  # post-order: children first
        new = _replacement(child, path, options, report)
        if new is not None:
            setattr(module, name, new)
    _fuse_silu_after_norm(module)


def _fuse_spatial_blocks(model: nn.Module, report: AccelerationReport) -> None:
    """The BasicTransformerBlocks of the spatial transformers (not the temporal ones, which
    their fused parents have already taken) → FusedSpatialBlock."""
    spatial = (Transformer2DModel, TransformerSpatioTemporalModel, FusedSpatioTemporalTransformer)
    for name, module in model.named_modules():
        if not isinstance(module, spatial):
            continue
        blocks = module.transformer_blocks
        for i, block in enumerate(blocks):
            if type(block) is FusedSpatialBlock:
                continue
            reason = spatial_block_unsupported(block)
            if reason is not None:
                report.kept.append((f"{name}.transformer_blocks.{i}", reason))
                continue
            blocks[i] = FusedSpatialBlock(block)
            report.replaced["BasicTransformerBlock (spatial)"] += 1


def shared_copy(model: nn.Module, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of the module tree that shares the parameter and buffer tensors of ``model`` — or,
    when ``device``/``dtype`` ask for a conversion, holds converted copies (floating tensors take
    dtype). Replacing modules in it leaves ``model`` untouched, and costs no weight memory when
    nothing is converted."""
    memo: dict[int, object] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        new = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        if new is not t:  # converted: a new tensor (a Parameter again where t was one)
            new = new.detach()
            if isinstance(t, nn.Parameter):
                new = nn.Parameter(new, requires_grad=False)
        memo[id(t)] = new
    return copy.deepcopy(model, memo)


def accelerate(unet: nn.Module, options: AccelerationOptions | None = None, *,
               inplace: bool = False) -> tuple[nn.Module, AccelerationReport]:
    """Replace the modules of a diffusers video UNet that ``options`` switches on.

    Args:
        unet: a UNet3DConditionModel, UNetMotionModel or UNetSpatioTemporalConditionModel (any
            module tree works: only the classes listed in AccelerationOptions are replaced).
        options: which replacements to make (default: all).
        inplace: replace in ``unet`` itself. Default False: a ``shared_copy`` is accelerated, so
            ``unet`` keeps running as diffusers' model and no weight memory is duplicated.

    Returns:
        (the accelerated model in eval mode, an AccelerationReport).
    """
    if options is None:
        options = AccelerationOptions()
    if not isinstance(options, AccelerationOptions):
        raise TypeError(f"options must be an AccelerationOptions, got {type(options).__name__}")
    model = unet if inplace else shared_copy(unet)
    report = AccelerationReport()
    _walk(model, "", options, report)
    if options.spatial_attention:
        _fuse_spatial_blocks(model, report)
    if options.group_norm and isinstance(getattr(model, "conv_norm_out", None), FusedGroupNorm) \
            and isinstance(getattr(model, "conv_act", None), nn.SiLU):
        model.conv_norm_out = FusedGroupNorm(model.conv_norm_out.norm, silu=True)
        model.conv_act = nn.Identity()
    model.eval()
    model.vdengine_acceleration = report
    return model, report


def acceleration_report(model: nn.Module) -> AccelerationReport:
    """The model's AccelerationReport with ``fallbacks`` updated: the calls its fused modules ran
    on PyTorch (a dtype or size the kernels do not take)."""
    report = getattr(model, "vdengine_acceleration", None) or AccelerationReport()
    report.fallbacks = sum(getattr(m, "fallbacks", 0) for m in model.modules())
    return report
