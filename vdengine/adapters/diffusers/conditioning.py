"""User conditioning → the adapter's forward inputs, per video (batch-first), cond and uncond.

Encoders are the user's job: pass the embeddings diffusers' pipelines compute.

- UNet3D / AnimateDiff: ``prompt_embeds`` [B or 1, L, D] (the text encoder's last hidden state)
  and, with guidance, ``negative_prompt_embeds`` (the same for the negative prompt — diffusers
  encodes "" when there is none: those embeddings are not zeros, so they are required).
- SVD: ``image_embeddings`` [B or 1, 1, D] or [B or 1, D] (CLIP image embeddings),
  ``image_latents`` [B or 1, 4, H, W] (the VAE's ``latent_dist.mode()`` of the noise-augmented
  image, unscaled, as the pipeline's _encode_vae_image gives), and either ``added_time_ids``
  [B or 1, 3] or ``fps`` (the pipeline's fps argument: fps − 1 is what the model sees),
  ``motion_bucket_id``, ``noise_aug_strength``. The unconditional half uses zero embeddings and
  zero image latents and the same time ids, as the pipeline does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vdengine.denoiser import expand_conditioning

__all__ = ["svd_conditioning", "text_conditioning"]

Conditioning = tuple[dict[str, Tensor], dict[str, Tensor] | None]


def _embeddings(name: str, value: Any, batch_size: int, dim: int, like: Tensor) -> Tensor:
    """A [B or 1, L, D] embedding tensor as [batch_size, L, D] in like's dtype/device."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor [B or 1, L, D], got {type(value).__name__}")
    if value.dim() != 3 or value.shape[-1] != dim:
        raise ValueError(f"{name} must be [B or 1, L, {dim}] (D = the model's "
                         f"cross_attention_dim), got shape {list(value.shape)}")
    return expand_conditioning(name, value.to(dtype=like.dtype), batch_size, like.device)


def _unexpected(kwargs: dict[str, Any], accepted: tuple[str, ...], model: str) -> None:
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"unexpected argument(s) {', '.join(unknown)} for {model} (it takes "
                         f"{', '.join(accepted)})")


TEXT_ARGS = ("prompt_embeds", "negative_prompt_embeds")


def text_conditioning(batch_size: int, guided: bool, dim: int, like: Tensor, model: str,
                      **kwargs: Any) -> Conditioning:
    """UNet3D / AnimateDiff: ({"encoder_hidden_states": [B, L, D]}, the negative's or None)."""
    _unexpected(kwargs, TEXT_ARGS, model)
    prompt = kwargs.get("prompt_embeds")
    if prompt is None:
        raise ValueError(f"{model} needs prompt_embeds= (the text encoder's output, [B, L, {dim}])")
    cond = {"encoder_hidden_states": _embeddings("prompt_embeds", prompt, batch_size, dim, like)}
    if not guided:
        return cond, None
    negative = kwargs.get("negative_prompt_embeds")
    if negative is None:
        raise ValueError("guidance_scale needs negative_prompt_embeds= (the text encoder's output "
                         "for the negative prompt, or for \"\" as diffusers uses by default)")
    return cond, {"encoder_hidden_states": _embeddings("negative_prompt_embeds", negative,
                                                       batch_size, dim, like)}


SVD_ARGS = ("image_embeddings", "image_latents", "added_time_ids", "fps", "motion_bucket_id",
            "noise_aug_strength")


def svd_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float, count: int,
                 like: Tensor) -> Tensor:
    """[1, 3] time ids as StableVideoDiffusionPipeline._get_add_time_ids builds them (fps is the
    pipeline's fps argument; the model is conditioned on fps − 1)."""
    ids = [fps - 1, motion_bucket_id, noise_aug_strength]
    if count != len(ids):
        raise ValueError(f"the model's add_embedding expects {count} time ids, the SVD pipeline "
                         f"builds {len(ids)} (fps, motion_bucket_id, noise_aug_strength)")
    return torch.tensor([ids], dtype=like.dtype, device=like.device)


def svd_conditioning(batch_size: int, guided: bool, dim: int, image_channels: int,
                     time_id_count: int, like: Tensor, model: str, **kwargs: Any
                     ) -> Conditioning:
    """SVD: encoder_hidden_states [B, 1, D], image_latents [B, 4, H, W], added_time_ids [B, 3]."""
    _unexpected(kwargs, SVD_ARGS, model)
    embeds = kwargs.get("image_embeddings")
    latents = kwargs.get("image_latents")
    if embeds is None or latents is None:
        raise ValueError(f"{model} needs image_embeddings= ([B, 1, {dim}], the CLIP image "
                         f"embeddings) and image_latents= ([B, {image_channels}, H, W], the VAE "
                         f"latents of the conditioning image)")
    if isinstance(embeds, Tensor) and embeds.dim() == 2:
        embeds = embeds[:, None]
    embeds = _embeddings("image_embeddings", embeds, batch_size, dim, like)
    if not isinstance(latents, Tensor) or latents.dim() != 4 or latents.shape[1] != image_channels:
        shape = list(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
        raise ValueError(f"image_latents must be [B or 1, {image_channels}, H, W], got {shape}")
    latents = expand_conditioning("image_latents", latents.to(like.dtype), batch_size,
                                  like.device)
    ids = kwargs.get("added_time_ids")
    parts = {k: kwargs[k] for k in ("fps", "motion_bucket_id", "noise_aug_strength")
             if kwargs.get(k) is not None}
    if ids is not None and parts:
        raise ValueError(f"give added_time_ids= or {', '.join(parts)}=, not both")
    if ids is None:
        ids = svd_time_ids(parts.get("fps", 7), parts.get("motion_bucket_id", 127),
                           parts.get("noise_aug_strength", 0.02), time_id_count, like)
    elif not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[1] != time_id_count:
        shape = list(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"added_time_ids must be [B or 1, {time_id_count}], got {shape}")
    ids = expand_conditioning("added_time_ids", ids.to(like.dtype), batch_size, like.device)
    cond = {"encoder_hidden_states": embeds, "image_latents": latents, "added_time_ids": ids}
    if not guided:
        return cond, None
    uncond = {"encoder_hidden_states": torch.zeros_like(embeds),
              "image_latents": torch.zeros_like(latents), "added_time_ids": ids}
    return cond, uncond
