"""DPM-Solver++(2M) sampling (Lu et al. 2022), the multistep second-order data-prediction solver."""

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
def sample_dpmpp_2m(
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
) -> Tensor:  # [B, ...] the sample at the final level
    """DPM-Solver++(2M), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models" (Lu et al. 2022), Alg. 2: data prediction, midpoint form.

    With λ = log(√ᾱ/√(1−ᾱ)), h = λ_next − λ_t, r = h_prev/h, D = x0 + (x0 − x0_prev)/(2r):
    x_next = (σ_next/σ_t)·x + α_next·(1 − e^{−h})·D. The first step is first order, and so is
    the last when it lands on σ = 0 (``final="zero"``), or with ``lower_order_final`` and fewer
    than 15 steps, or with ``euler_at_final`` (diffusers' DPMSolverMultistepScheduler with
    algorithm_type="dpmsolver++", solver_type="midpoint"); ``solver_order=1`` makes every step
    first order (DDIM). Deterministic: ``generator`` is accepted for the common signature and
    unused. Each update is one fused ``vdengine.ops.dpmpp_2m_step``.

    Timesteps: under ``schedule_options.convention="vdengine"`` (the default) they are
    ``schedule.timesteps`` as for every sampler; under "diffusers" they are
    DPMSolverMultistepScheduler's own ("leading" T // (n + 1) apart, "linspace" from n + 1
    points without the last; "trailing" is the same in both).
    """
    x, extra_args, guidance_scale, plan = setup(
        "dpmpp_2m", x, schedule, num_steps, spacing, prediction_type, guidance_scale, extra_args,
        schedule_options,
    )
    x0 = None
    for i in progress(len(plan), disable):
        out = denoise(model, x, plan.t_in[i], extra_args, guidance_scale)
        second_order = plan.orders[i] == 2
        x, x0 = ops.dpmpp_2m_step(
            x, out, plan.at(i), plan.to(i),
            x0_prev=x0 if second_order else None,
            alpha_bar_prev=plan.at(i - 1) if second_order else None,
            prediction_type=prediction_type, guidance_scale=guidance_scale,
            clip_sample=clip_sample,
        )
        report(callback, i, plan, x, x0)
    return x
