"""Tiny diffusers video UNets for the adapter tests (fp32, eval, CPU, ~0.1 s per forward).

Zero-initialised parameters (TemporalConvLayer.conv4, AnimateDiff's motion proj_out, SVD's ...)
are re-randomised so that every temporal branch changes the output; a test on a branch that is an
identity at initialisation could not fail.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    UNet3DConditionModel,
    UNetMotionModel,
    UNetSpatioTemporalConditionModel,
)
from torch import nn

CROSS_DIM = {"unet3d": 16, "motion": 16, "svd": 32}


def make_live(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every all-zero parameter redrawn N(0, 0.05²) (seeded), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def unet3d(seed: int = 0, head_dim: int = 8, **kw) -> UNet3DConditionModel:
    torch.manual_seed(seed)
    cfg = {"block_out_channels": (32, 64), "norm_num_groups": 32, "layers_per_block": 1,
           "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
           "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
           "cross_attention_dim": CROSS_DIM["unet3d"], "attention_head_dim": head_dim,
           "sample_size": 16}
    cfg.update(kw)
    return make_live(UNet3DConditionModel(**cfg), seed)


def motion(seed: int = 0, **kw) -> UNetMotionModel:
    torch.manual_seed(seed)
    cfg = {"block_out_channels": (32, 64), "norm_num_groups": 32, "layers_per_block": 1,
           "down_block_types": ("CrossAttnDownBlockMotion", "DownBlockMotion"),
           "up_block_types": ("UpBlockMotion", "CrossAttnUpBlockMotion"),
           "num_attention_heads": 2, "cross_attention_dim": CROSS_DIM["motion"], "sample_size": 16,
           "use_motion_mid_block": True, "motion_max_seq_length": 8}
    cfg.update(kw)
    return make_live(UNetMotionModel(**cfg), seed)


def svd(seed: int = 0, **kw) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(seed)
    cfg = {"block_out_channels": (32, 64),
           "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
           "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
           "num_attention_heads": (2, 4), "cross_attention_dim": CROSS_DIM["svd"],
           "layers_per_block": 2, "projection_class_embeddings_input_dim": 96,
           "addition_time_embed_dim": 32, "sample_size": 16}
    cfg.update(kw)
    return make_live(UNetSpatioTemporalConditionModel(**cfg), seed)


UNETS = {"unet3d": unet3d, "motion": motion, "svd": svd}


def vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), latent_channels=4,
                         norm_num_groups=32, sample_size=16).eval()


def temporal_vae(seed: int = 0) -> AutoencoderKLTemporalDecoder:
    torch.manual_seed(seed)
    return make_live(AutoencoderKLTemporalDecoder(block_out_channels=(32,),
                                                  down_block_types=("DownEncoderBlock2D",),
                                                  latent_channels=4, layers_per_block=1,
                                                  sample_size=16), seed)
