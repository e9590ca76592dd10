"""Drop-in replacements for diffusers' video UNet modules, built on vdengine's fused ops.

Each class takes the diffusers module it replaces, keeps its parameters (the same tensors) and
its forward signature, and computes the same function: tested module by module against the
original in tests/adapters/test_diffusers_layers.py.
"""

from vdengine.adapters.diffusers.layers.feed_forward import FusedFeedForward
from vdengine.adapters.diffusers.layers.norm import FusedGroupNorm
from vdengine.adapters.diffusers.layers.resnet import (
    FusedResnetBlock2D,
    FusedSpatioTemporalResBlock,
    FusedTemporalConvLayer,
)
from vdengine.adapters.diffusers.layers.spatial import FusedSpatialBlock
from vdengine.adapters.diffusers.layers.spatio_temporal import (
    FusedSpatioTemporalTransformer,
    FusedTemporalBasicBlock,
)
from vdengine.adapters.diffusers.layers.temporal_transformer import (
    FusedTemporalBlock,
    FusedTemporalTransformer,
)

__all__ = [
    "FusedFeedForward",
    "FusedGroupNorm",
    "FusedResnetBlock2D",
    "FusedSpatialBlock",
    "FusedSpatioTemporalResBlock",
    "FusedSpatioTemporalTransformer",
    "FusedTemporalBasicBlock",
    "FusedTemporalBlock",
    "FusedTemporalConvLayer",
    "FusedTemporalTransformer",
]
