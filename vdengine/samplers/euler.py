"""Euler sampling in σ (Karras et al. 2022), diffusers' EulerDiscreteScheduler: discrete σ from ᾱ
or Karras σ, discrete or continuous (EDM) timesteps, as Stable Video Diffusion samples."""

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
    report,
    setup,
)
from vdengine.schedules import NoiseSchedule, ScheduleOptions


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,  # [B, ...] unit initial noise, e.g. [B, F, C, H, W]
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
) -> Tensor:  # [B, ...] the sample at the final σ
    """Euler's method on the probability-flow ODE dx/dσ = (x − x0)/σ, "Elucidating the Design
    Space of Diffusion-Based Generative Models" (Karras et al. 2022), Alg. 1 without churn: the
    loop of diffusers' EulerDiscreteScheduler (set_timesteps, scale_model_input, step).

    x lives in σ-space, x = x0 + σ·ε: the unit noise is scaled by init_noise_sigma (σ_max, or
    √(σ_max² + 1) for "leading" spacing, as diffusers), the model sees x/√(σ² + 1) (EDM's c_in)
    and the step is x ← x + ((x − x0)/σ)·(σ_next − σ), one fused ``vdengine.ops.euler_step``
    (x0 from ε, from v with EDM's c_skip = 1/(σ²+1) and c_out = −σ/√(σ²+1), or the sample).

    σ: the schedule's √((1−ᾱ)/ᾱ) interpolated at the spaced timesteps, or with
    ``schedule_options.karras_sigmas`` the Karras ramp (ρ = 7) from sigma_max to sigma_min. The
    model's timestep input: the (fractional) training timestep of each σ, or with
    ``timestep_type="continuous"`` EDM's c_noise = 0.25·log σ (SVD). The last step goes to σ = 0
    (``final="zero"``) or to σ of timestep 0 ("sigma_min"). Deterministic: ``generator`` is
    accepted for the common signature and unused. Timesteps follow EulerDiscreteScheduler under
    ``convention="diffusers"`` (its "linspace" is not rounded) and ``schedule.timesteps``
    under "vdengine".
    """
    x, extra_args, guidance_scale, plan = setup(
        "euler", x, schedule, num_steps, spacing, prediction_type, guidance_scale, extra_args,
        schedule_options,
    )
    x = x * plan.init_noise_sigma
    want_x0 = callback is not None
    for i in progress(len(plan), disable):
        x_in = x / plan.input_div[i : i + 1]  # EDM's c_in, divided as diffusers' scale_model_input
        out = denoise(model, x_in, plan.t_in[i], extra_args, guidance_scale)
        res = ops.euler_step(
            x, out, plan.at(i), plan.to(i), prediction_type=prediction_type,
            guidance_scale=guidance_scale, clip_sample=clip_sample, return_x0=want_x0,
        )
        x, x0 = res if want_x0 else (res, None)
        report(callback, i, plan, x, x0)
    return x
