"""Ancestral DDPM sampling over respaced timesteps (Ho et al. 2020; Nichol & Dhariwal 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vdengine.samplers._common import Callback, Model
from vdengine.samplers.ddim import sample_ddim
from vdengine.schedules import NoiseSchedule


def sample_ddpm(
    model: Model,
    x: Tensor,  # [B, ...] initial noise
    schedule: NoiseSchedule,
    num_steps: int,
    *,
    spacing: str = "leading",
    prediction_type: str = "epsilon",
    guidance_scale: float | None = None,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    clip_sample: float | None = None,
) -> Tensor:  # [B, ...]
    """Ancestral DDPM, "Denoising Diffusion Probabilistic Models" (Ho, Jain & Abbeel 2020), Alg. 2,
    over the respaced timesteps of "Improved DDPM" (Nichol & Dhariwal 2021).

    Between consecutive kept timesteps t → s the posterior q(x_s | x_t, x0) has mean
    √ᾱ_s·β/(1−ᾱ_t)·x0 + √(ᾱ_t/ᾱ_s)·(1−ᾱ_s)/(1−ᾱ_t)·x_t and variance (1−ᾱ_s)/(1−ᾱ_t)·β with
    β = 1 − ᾱ_t/ᾱ_s ("fixed_small"): that is exactly DDIM with η = 1, so this is ``sample_ddim``
    with eta=1 (diffusers' DDPMScheduler with variance_type="fixed_small"). The noise comes from
    ``generator``, one draw of x's shape per step (None: a fresh generator seeded from OS entropy;
    the global RNG is never touched).
    """
    return sample_ddim(
        model, x, schedule, num_steps, spacing=spacing, prediction_type=prediction_type,
        guidance_scale=guidance_scale, extra_args=extra_args, generator=generator,
        callback=callback, disable=disable, clip_sample=clip_sample, eta=1.0,
    )
