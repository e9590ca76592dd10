"""End-to-end sampling parity: vdengine's samplers (configured by from_diffusers) driving the
accelerated DiffusersDenoiser against diffusers' own loops written as the pipelines write them
(vdengine.adapters.diffusers.pipeline_loops) —
ModelScope UNet3D + DDIM (TextToVideoSDPipeline), AnimateDiff + DPM-Solver++ (AnimateDiffPipeline)
and SVD + Euler with per-frame guidance (StableVideoDiffusionPipeline); with and without guidance,
batch 1 and 2. Both start from the same unit noise. Tolerance: max |difference| <= 2e-5 × max
|latent| (the random tiny models drive latents to ~5-100): float32 rounding of two orders of the
same sums through every step (measured at most 4.7e-6 relative, UNet3D + DDIM with guidance 9;
the samplers alone, on diffusers' modules, differ by up to 1e-6); a wrong timestep, level or
conditioning moves the result by more than 1e-3 relative."""

from __future__ import annotations

import _diffusers_calls as _calls
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from vdengine.adapters.diffusers import DiffusersDenoiser
from vdengine.adapters.diffusers.pipeline_loops import pipeline_loop
from vdengine.samplers import from_diffusers

F, H, W = 4, 16, 16
REL = 2e-5
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SCHEDULERS = {
    "unet3d": lambda: DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False,
                                    steps_offset=1),
    "motion": lambda: DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012,
                                                  beta_schedule="linear", steps_offset=1,
                                                  timestep_spacing="linspace"),
    "svd": lambda: EulerDiscreteScheduler(**SD_BETAS, prediction_type="v_prediction",
                                          use_karras_sigmas=True, sigma_min=0.002,
                                          sigma_max=700.0, timestep_type="continuous",
                                          timestep_spacing="leading", steps_offset=1),
}
STEPS = 5
GUIDANCE = {"unet3d": 9.0, "motion": 7.5, "svd": (1.0, 3.0)}  # SVD: min/max over frames


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("guided", [False, True])
def test_sampling_matches_the_pipeline_loop(family, batch, guided, tiny_unets):
    unet = tiny_unets[family]
    scheduler = SCHEDULERS[family]()
    scheduler.set_timesteps(STEPS)
    noise = _calls.rand(batch, F, 4, H, W, seed=7 + batch)
    inputs = _calls.user_inputs(family, batch, H, W)
    guidance = GUIDANCE[family] if guided else None
    expected = pipeline_loop(family, unet, scheduler, noise, inputs, guidance)

    den = DiffusersDenoiser(unet, SCHEDULERS[family]())
    spec = from_diffusers(SCHEDULERS[family]())
    cond = _calls.forward_rows(den, batch, guided, inputs, noise.device)
    scale = guidance
    if guided and family == "svd":
        scale = torch.linspace(*guidance, F)  # per-frame guidance, as the SVD pipeline
    got = spec.sample(den, noise, STEPS, guidance_scale=scale, extra_args=cond, disable=True)
    assert got.shape == expected.shape == (batch, F, 4, H, W)
    err = (got - expected).abs().max().item()
    size = max(1.0, expected.abs().max().item())
    assert err <= REL * size, f"max |vdengine − diffusers| = {err:.2e} for latents up to {size:.1f}"
    assert (got - noise * scheduler.init_noise_sigma).abs().max() > 1e-2  # it sampled
