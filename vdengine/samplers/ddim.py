"""DDIM sampling (Song et al. 2021), deterministic for η = 0 and ancestral for η = 1."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vdengine import ops
from vdengine.samplers._common import (
    Callback,
    Guidance,
    Model,
    denoise,
    progress,
    randn_like,
    report,
    resolve_generator,
    setup,
)
from vdengine.schedules import NoiseSchedule, ScheduleOptions


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,  # [B, ...] initial noise, e.g. [B, F, C, H, W]
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
    eta: float = 0.0,
) -> Tensor:  # [B, ...] the sample at the final level
    """DDIM, "Denoising Diffusion Implicit Models" (Song, Meng & Ermon 2021), Eq. 12.

    x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·z,  σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)),
    over ``schedule.timesteps(num_steps, spacing, steps_offset)`` and finally to ᾱ = 1
    (``final="zero"``, diffusers' set_alpha_to_one=True) or ᾱ_0 (``final="sigma_min"``). η = 0 is
    deterministic; η > 0 draws z from ``generator`` at every step. Each update is one fused
    ``vdengine.ops.ddim_step``.

    Under ``schedule_options.convention="vdengine"`` (the default) every step goes to the next
    timestep of the list; under "diffusers" it goes to t − T//n as DDIMScheduler.step does. The
    two agree for "leading" spacing and for "trailing" when n divides T
    (huggingface/diffusers#9261).
    """
    x, extra_args, guidance_scale, plan = setup(
        "ddim", x, schedule, num_steps, spacing, prediction_type, guidance_scale, extra_args,
        schedule_options,
    )
    eta = float(eta)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    gen = resolve_generator(generator, x) if eta > 0 else None
    want_x0 = callback is not None
    for i in progress(len(plan), disable):
        out = denoise(model, x, plan.t_in[i], extra_args, guidance_scale)
        noise = randn_like(x, gen) if gen is not None else None
        res = ops.ddim_step(
            x, out, plan.at(i), plan.to(i), eta=eta, noise=noise,
            prediction_type=prediction_type, guidance_scale=guidance_scale,
            clip_sample=clip_sample, return_x0=want_x0,
        )
        x, x0 = res if want_x0 else (res, None)
        report(callback, i, plan, x, x0)
    return x
