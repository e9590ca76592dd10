"""diffusers' video pipelines' denoising loops, written as the pipelines write them: the ground
truth of the end-to-end parity tests and the "diffusers" columns of benchmarks/diffusers_models.py.

``pipeline_loop(family, unet, scheduler, noise, inputs, guidance)`` runs the loop of
TextToVideoSDPipeline ("unet3d"), AnimateDiffPipeline ("motion") or
StableVideoDiffusionPipeline ("svd") on a scheduler whose ``set_timesteps`` was called, from unit
noise [B, F, C, H, W], and returns the final latents [B, F, C, H, W]. ``inputs`` holds the
embeddings (the keywords of DiffusersDenoiser.prepare_conditioning); guidance is the pipeline's
scale (SVD: a (min, max) pair, spread over the frames as the pipeline does) or None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["pipeline_loop"]


@torch.no_grad()
def _text_to_video(unet: nn.Module, scheduler: Any, noise: Tensor, inputs: dict,
                   guidance: float | None, animatediff: bool) -> Tensor:
    ehs = inputs["prompt_embeds"]
    if guidance is not None:
        ehs = torch.cat([inputs["negative_prompt_embeds"], ehs])
    if animatediff:  # AnimateDiffPipeline repeats the text embeddings per frame
        ehs = ehs.repeat_interleave(noise.shape[1], dim=0)
    latents = noise.permute(0, 2, 1, 3, 4) * scheduler.init_noise_sigma  # [B, C, F, H, W]
    for t in scheduler.timesteps:
        lmi = torch.cat([latents] * 2) if guidance is not None else latents
        lmi = scheduler.scale_model_input(lmi, t)
        pred = unet(lmi, t, encoder_hidden_states=ehs).sample
        if guidance is not None:
            u, c = pred.chunk(2)
            pred = u + guidance * (c - u)
        if animatediff:
            latents = scheduler.step(pred, t, latents).prev_sample
        else:  # TextToVideoSDPipeline steps on [B·F, C, H, W]
            b, c, f, h, w = latents.shape
            flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            pred = pred.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            flat = scheduler.step(pred, t, flat).prev_sample
            latents = flat[None, :].reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
    return latents.permute(0, 2, 1, 3, 4)


@torch.no_grad()
def _svd(unet: nn.Module, scheduler: Any, noise: Tensor, inputs: dict,
         guidance: tuple[float, float] | None) -> Tensor:
    b, f = noise.shape[:2]
    emb, img = inputs["image_embeddings"], inputs["image_latents"]
    ids = torch.tensor([[inputs.get("fps", 7) - 1, inputs.get("motion_bucket_id", 127),
                         inputs.get("noise_aug_strength", 0.02)]], dtype=noise.dtype,
                       device=noise.device).repeat(b, 1)
    scale = None
    if guidance is not None:
        emb = torch.cat([torch.zeros_like(emb), emb])
        img = torch.cat([torch.zeros_like(img), img])
        ids = torch.cat([ids, ids])
        scale = torch.linspace(guidance[0], guidance[1], f, device=noise.device)
        scale = scale[None].repeat(b, 1)[..., None, None, None].to(noise.dtype)
    img = img.unsqueeze(1).repeat(1, f, 1, 1, 1)
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        lmi = torch.cat([latents] * 2) if guidance is not None else latents
        lmi = scheduler.scale_model_input(lmi, t)
        lmi = torch.cat([lmi, img], dim=2)
        pred = unet(lmi, t, encoder_hidden_states=emb, added_time_ids=ids).sample
        if guidance is not None:
            u, c = pred.chunk(2)
            pred = u + scale * (c - u)
        latents = scheduler.step(pred, t, latents).prev_sample
    return latents


def pipeline_loop(family: str, unet: nn.Module, scheduler: Any, noise: Tensor, inputs: dict,
                  guidance: Any = None) -> Tensor:
    """The final latents [B, F, C, H, W] of the family's pipeline loop (see the module doc)."""
    if family == "svd":
        return _svd(unet, scheduler, noise, inputs, guidance)
    if family in ("unet3d", "motion"):
        return _text_to_video(unet, scheduler, noise, inputs, guidance, family == "motion")
    raise ValueError(f"family must be 'unet3d', 'motion' or 'svd', got {family!r}")
