"""How diffusers' video pipelines call their UNet for one guided step, and the matching inputs of
vdengine's DiffusersDenoiser: the ground truth of the full-model parity tests."""

from __future__ import annotations

import torch
from _diffusers_tiny import CROSS_DIM
from torch import Tensor

from vdengine.denoiser import conditioning_rows, stack_guidance

TEXT_LEN = 5


def forward_rows(denoiser, batch_size: int, guided: bool, kwargs: dict, device) -> dict:
    """The forward's conditioning as the engine builds it: [uncond; cond] stacked."""
    return stack_guidance(*conditioning_rows(denoiser, batch_size, guided, kwargs, device))


def rand(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def user_inputs(family: str, batch: int, height: int, width: int, seed: int = 0) -> dict:
    """The embeddings a user would pass (encoders are the user's job)."""
    d = CROSS_DIM[family]
    if family == "svd":
        return {"image_embeddings": rand(batch, 1, d, seed=seed),
                "image_latents": rand(batch, 4, height, width, seed=seed + 1),
                "fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02}
    return {"prompt_embeds": rand(batch, TEXT_LEN, d, seed=seed),
            "negative_prompt_embeds": rand(batch, TEXT_LEN, d, seed=seed + 1)}


def pipeline_forward(unet, family: str, latents: Tensor, t: Tensor, inputs: dict,
                     guided: bool) -> Tensor:
    """The UNet output as the pipeline computes it, [B or 2B, F, C, H, W] (engine layout).

    latents: [B, F, C, H, W]. TextToVideoSD / AnimateDiff / SVD build [uncond; cond] exactly so.
    """
    rows = torch.cat([latents, latents]) if guided else latents
    f = latents.shape[1]
    with torch.no_grad():
        if family == "svd":
            emb, img = inputs["image_embeddings"], inputs["image_latents"]
            ids = torch.tensor([[inputs["fps"] - 1, inputs["motion_bucket_id"],
                                 inputs["noise_aug_strength"]]]).repeat(latents.shape[0], 1)
            if guided:
                emb = torch.cat([torch.zeros_like(emb), emb])
                img = torch.cat([torch.zeros_like(img), img])
                ids = torch.cat([ids, ids])
            img = img.unsqueeze(1).repeat(1, f, 1, 1, 1)
            return unet(torch.cat([rows, img], dim=2), t, encoder_hidden_states=emb,
                        added_time_ids=ids).sample
        ehs = inputs["prompt_embeds"]
        if guided:
            ehs = torch.cat([inputs["negative_prompt_embeds"], ehs])
        if family == "motion":
            ehs = ehs.repeat_interleave(f, dim=0)
        out = unet(rows.permute(0, 2, 1, 3, 4), t, encoder_hidden_states=ehs).sample
        return out.permute(0, 2, 1, 3, 4)
