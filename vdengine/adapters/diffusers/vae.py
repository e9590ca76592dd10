"""Decode video latents with a diffusers VAE, in chunks, as diffusers' video pipelines do."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

__all__ = ["decode_latents"]


def decode_latents(vae: nn.Module, latents: Tensor, decode_chunk_size: int = 16) -> Tensor:
    """Frames [B, F, 3, H·s, W·s] in [-1, 1] for latents [B, F, C, H, W] (s: the VAE's scale).

    The latents are divided by ``vae.config.scaling_factor`` and decoded ``decode_chunk_size``
    frames at a time over the flattened B·F frames, as StableVideoDiffusionPipeline.decode_latents
    does (TextToVideoSD and AnimateDiff decode the same frames one by one with a 2-D VAE, so chunks
    change nothing there). A temporal decoder (SVD's AutoencoderKLTemporalDecoder) gets
    ``num_frames`` = the chunk's length. The result is clamped to [-1, 1] (diffusers' video
    processor clamps when it maps to [0, 1]), in the latents' dtype.
    """
    if not isinstance(latents, Tensor) or latents.dim() != 5:
        raise ValueError(f"latents must be a [B, F, C, H, W] tensor, got "
                         f"{list(latents.shape) if isinstance(latents, Tensor) else latents!r}")
    if isinstance(decode_chunk_size, bool) or not isinstance(decode_chunk_size, int) \
            or decode_chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be a positive int, got {decode_chunk_size!r}")
    b, f = latents.shape[:2]
    weight = next(vae.parameters())
    flat = latents.flatten(0, 1).to(device=weight.device, dtype=weight.dtype)
    flat = flat / vae.config.scaling_factor
    takes_frames = "num_frames" in inspect.signature(vae.decode).parameters
    chunks = []
    with torch.inference_mode():
        for i in range(0, flat.shape[0], decode_chunk_size):
            chunk = flat[i:i + decode_chunk_size]
            kwargs = {"num_frames": chunk.shape[0]} if takes_frames else {}
            chunks.append(vae.decode(chunk, **kwargs).sample)
    frames = torch.cat(chunks).clamp(-1, 1)
    return frames.reshape(b, f, *frames.shape[1:]).to(latents.dtype)
