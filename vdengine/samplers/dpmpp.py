"""DPM-Solver++(2M) sampling (Lu et al. 2022), the multistep second-order data-prediction solver."""

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
    report,
    setup,
)
from vdengine.schedules import NoiseSchedule


@torch.no_grad()
def sample_dpmpp_2m(
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
) -> Tensor:  # [B, ...] the sample at σ = 0
    """DPM-Solver++(2M), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models" (Lu et al. 2022), Alg. 2: data prediction, midpoint form.

    With λ = log(√ᾱ/√(1−ᾱ)), h = λ_next − λ_t, r = h_prev/h, D = x0 + (x0 − x0_prev)/(2r):
    x_next = (σ_next/σ_t)·x + α_next·(1 − e^{−h})·D. The first step and the final step (to ᾱ = 1,
    σ = 0) are first order (D = x0), as diffusers' DPMSolverMultistepScheduler with
    solver_order=2, lower_order_final=True, final_sigmas_type="zero". Deterministic: ``generator``
    is accepted for the common signature and unused. Each update is one fused
    ``vdengine.ops.dpmpp_2m_step``.

    The timesteps are ``schedule.timesteps`` for every sampler: "trailing" equals diffusers'
    DPM-Solver "trailing", but diffusers' DPM-Solver "leading" spaces them T // (n + 1) apart
    (its DDIM "leading", used here, spaces them T // n apart).
    """
    x, extra_args, plan = setup(
        x, schedule, num_steps, spacing, prediction_type, guidance_scale, extra_args
    )
    last = len(plan) - 1
    x0 = None
    for i in progress(len(plan), disable):
        out = denoise(model, x, plan.t_in[i], extra_args, guidance_scale)
        second_order = 0 < i < last  # first order on the first step and the final one
        x, x0 = ops.dpmpp_2m_step(
            x, out, plan.ab(i), plan.ab(i + 1),
            x0_prev=x0 if second_order else None,
            alpha_bar_prev=plan.ab(i - 1) if second_order else None,
            prediction_type=prediction_type, guidance_scale=guidance_scale,
            clip_sample=clip_sample,
        )
        report(callback, i, plan, x, x0)
    return x
