"""diffusers' video UNets behind vdengine's Denoiser protocol, accelerated with vdengine's ops.

    from vdengine.adapters.diffusers import load_diffusers
    denoiser, scheduler, vae = load_diffusers("path/to/pipeline", device="cuda",
                                              dtype=torch.float16)

Supported: ``UNet3DConditionModel`` (ModelScope text-to-video), ``UNetMotionModel``
(AnimateDiff), ``UNetSpatioTemporalConditionModel`` (Stable Video Diffusion). The temporal
transformers run on tokens [B·F, S, C] with ops.temporal_attention (no permute copies over
frames), GroupNorm + SiLU on ops.group_norm (statistics over a video's frames read in place),
temporal convolutions as 2-D ones. docs/diffusers.md has worked examples.
"""

from vdengine.adapters.diffusers.accelerate import (
    AccelerationReport,
    accelerate,
    acceleration_report,
    shared_copy,
)
from vdengine.adapters.diffusers.denoiser import DiffusersDenoiser
from vdengine.adapters.diffusers.loading import load_diffusers
from vdengine.adapters.diffusers.options import AccelerationOptions
from vdengine.adapters.diffusers.vae import decode_latents

__all__ = [
    "AccelerationOptions",
    "AccelerationReport",
    "DiffusersDenoiser",
    "accelerate",
    "acceleration_report",
    "decode_latents",
    "load_diffusers",
    "shared_copy",
]
