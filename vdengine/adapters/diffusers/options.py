"""Which of diffusers' modules vdengine replaces: one switch per replacement."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["AccelerationOptions"]


@dataclass(frozen=True)
class AccelerationOptions:
    """Switches for the module replacements ``accelerate`` makes (all on by default).

    Attributes:
        temporal_attention: the temporal transformers (``TransformerTemporalModel``,
            ``AnimateDiffTransformer3D``, ``TransformerSpatioTemporalModel``'s temporal blocks)
            run on tokens [B·F, S, C] with ops.temporal_attention and ops.group_norm over frames:
            no permute copies over the frame axis.
        temporal_conv: ``TemporalConvLayer`` (UNet3D) and ``SpatioTemporalResBlock``'s temporal
            resnet (SVD): GroupNorm over frames in place, fused SiLU, Conv3d (3, 1, 1) as Conv2d.
        group_norm: ``ResnetBlock2D`` with norm + SiLU fused, every other ``nn.GroupNorm`` (and the
            UNet's output norm + SiLU) on ops.group_norm.
        feed_forward: the GEGLU ``FeedForward`` of every transformer block (spatial and temporal)
            with bias, gate split and GELU in one ops.geglu pass.
        spatial_attention: the spatial transformer blocks (``BasicTransformerBlock`` in
            ``Transformer2DModel`` / ``TransformerSpatioTemporalModel``) with one q/k/v GEMM for
            self-attention and the residual adds in place.
    """

    temporal_attention: bool = True
    temporal_conv: bool = True
    group_norm: bool = True
    feed_forward: bool = True
    spatial_attention: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), bool):
                raise TypeError(f"AccelerationOptions.{f.name} must be a bool, got "
                                f"{type(getattr(self, f.name)).__name__}")

    @classmethod
    def none(cls) -> AccelerationOptions:
        """Every replacement off: the model runs as diffusers computes it."""
        return cls(**{f.name: False for f in fields(cls)})
