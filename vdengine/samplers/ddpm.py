"""Ancestral DDPM sampling over respaced timesteps (Ho et al. 2020; Nichol & Dhariwal 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vdengine.samplers._common import Callback, Guidance, Model
from vdengine.samplers.ddim import sample_ddim
from vdengine.schedules import NoiseSchedule, ScheduleOptions


def sample_ddpm(
    model: Model,
    x: Tensor,  # [B, ...] initial noise
    schedule: NoiseSchedule,
    num_steps: int,
    *,
    spacing: str = "leading",
    prediction_type: str = "epsilon",
    guidance_scale: Guidance = None,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    clip_sample: float | None = None,
    schedule_options: ScheduleOptions | None = None,
) -> Tensor:  # [B, ...]
    """Ancestral DDPM, "Denoising Diffusion Probabilistic Models" (Ho, Jain & Abbeel 2020), Alg. 2,
    over the respaced timesteps of "Improved DDPM" (Nichol & Dhariwal 2021).

    Between consecutive kept timesteps t → s the posterior q(x_s | x_t, x0) has mean
    √ᾱ_s·β/(1−ᾱ_t)·x0 + √(ᾱ_t/ᾱ_s)·(1−ᾱ_s)/(1−ᾱ_t)·x_t and variance (1−ᾱ_s)/(1−ᾱ_t)·β with
    β = 1 − ᾱ_t/ᾱ_s ("fixed_small"): that is exactly DDIM with η = 1, so this is ``sample_ddim``
    with eta=1 (diffusers' DDPMScheduler with variance_type="fixed_small"). The noise comes from
    ``generator``, one draw of x's shape per step (None: a fresh generator seeded from OS entropy;
    the global RNG is never touched). Of ``schedule_options`` it reads steps_offset and final:
    diffusers' DDPMScheduler walks the listed timesteps, which is vdengine's convention.
    """
    return sample_ddim(
        model, x, schedule, num_steps, spacing=spacing, prediction_type=prediction_type,
        guidance_scale=guidance_scale, extra_args=extra_args, generator=generator,
        callback=callback, disable=disable, clip_sample=clip_sample,
        schedule_options=_checked(schedule_options), eta=1.0,
    )


def _checked(options: ScheduleOptions | None) -> ScheduleOptions | None:
    """DDPM's own check (sample_ddim would accept DDIM's convention option)."""
    if options is not None:
        if not isinstance(options, ScheduleOptions):
            raise TypeError(f"schedule_options must be a ScheduleOptions or None, got "
                            f"{type(options).__name__}")
        options.check_used_by("ddpm")
    return options
