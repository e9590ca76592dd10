"""DDIM sampling (Song et al. 2021), deterministic for η = 0 and ancestral for η = 1."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vdengine import ops
from vdengine.samplers._common import (
    Callback,
    Model,
    denoise,
    progress,
    randn_like,
    report,
    resolve_generator,
    setup,
)
from vdengine.schedules import NoiseSchedule


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,  # [B, ...] initial noise, e.g. [B, F, C, H, W]
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
    eta: float = 0.0,
) -> Tensor:  # [B, ...] the sample at t = 0
    """DDIM, "Denoising Diffusion Implicit Models" (Song, Meng & Ermon 2021), Eq. 12.

    x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·z,  σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)),
    stepping through ``schedule.timesteps(num_steps, spacing)`` and finally to ᾱ = 1 (diffusers'
    DDIMScheduler with set_alpha_to_one=True). η = 0 is deterministic; η > 0 draws z from
    ``generator`` at every step. Each update is one fused ``vdengine.ops.ddim_step``.

    Every step goes to the next timestep of the list. diffusers' DDIMScheduler steps to t − T//n
    instead, which is the same for "leading" spacing and for "trailing" when n divides T, but
    not for "trailing" otherwise (huggingface/diffusers#9261; its DDPMScheduler uses the list).
    """
    x, extra_args, plan = setup(
        x, schedule, num_steps, spacing, prediction_type, guidance_scale, extra_args
    )
    eta = float(eta)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    gen = resolve_generator(generator, x) if eta > 0 else None
    for i in progress(len(plan), disable):
        out = denoise(model, x, plan.t_in[i], extra_args, guidance_scale)
        noise = randn_like(x, gen) if gen is not None else None
        x, x0 = ops.ddim_step(
            x, out, plan.ab(i), plan.ab(i + 1), eta=eta, noise=noise,
            prediction_type=prediction_type, guidance_scale=guidance_scale,
            clip_sample=clip_sample, return_x0=True,
        )
        report(callback, i, plan, x, x0)
    return x
