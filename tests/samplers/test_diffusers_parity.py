"""vdengine's samplers, configured by from_diffusers, against diffusers' own scheduler loops.

Both loops drive the same deterministic toy denoiser (a fixed function of x and t) from the same
unit noise: diffusers' set_timesteps / init_noise_sigma / scale_model_input / step, and
``from_diffusers(scheduler).sample(...)``. The final latents must agree to ATOL (absolute, on
latents of magnitude ~1-10): both compute in float32, vdengine's ᾱ and σ come from float64 and
its step ops are fused, so they differ by float32 rounding only (measured max ~1e-5, see the
report in the commit); a wrong timestep, final level or solver order moves them by 1e-2 or more.
"""

from __future__ import annotations

import diffusers
import pytest
import torch
from _sampler_helpers import TinyDenoiser, conditioning, diffusers_loop, max_abs_diff, noise

from vdengine.samplers import from_diffusers
from vdengine.schedules import ScheduleOptions

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ATOL = 1e-4
#: A wrong plan (the other timestep convention, say) moves the result by at least this much.
SEPARATION = 1e-2

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
# A ModelScope-style config (text-to-video-ms: a DDIM config with SD's betas, steps_offset 1,
# set_alpha_to_one False, which its model card loads into DPMSolverMultistepScheduler).
MODELSCOPE = {"_class_name": "DDIMScheduler", **SD_BETAS, "clip_sample": False,
              "set_alpha_to_one": False, "steps_offset": 1, "skip_prk_steps": True}

DDIM_CASES = {
    # AnimateDiff's documented DDIM: linear betas (SD's ends), linspace, steps_offset 1.
    "animatediff-linspace": ({**MODELSCOPE, "beta_schedule": "linear",
                              "timestep_spacing": "linspace"}, 25),
    "linear-leading-offset1-eps": ({"beta_schedule": "linear", "steps_offset": 1,
                                    "clip_sample": False}, 20),
    "scaled-leading-offset1-v": ({**MODELSCOPE, "prediction_type": "v_prediction"}, 20),
    "scaled-trailing-v-n30": ({**MODELSCOPE, "timestep_spacing": "trailing",
                               "set_alpha_to_one": True, "prediction_type": "v_prediction"}, 30),
    "linear-trailing-eps-n8": ({"beta_schedule": "linear", "timestep_spacing": "trailing",
                                "clip_sample": False}, 8),
    "linear-linspace-v-clip": ({"beta_schedule": "linear", "timestep_spacing": "linspace",
                                "prediction_type": "v_prediction", "clip_sample": True,
                                "clip_sample_range": 1.5}, 12),
}

DPM_CASES = {
    "modelscope-25": (MODELSCOPE, 25),  # linspace, last step first order (final zero)
    "modelscope-10": (MODELSCOPE, 10),
    "leading-offset1-v-sigma_min-20": ({**MODELSCOPE, "timestep_spacing": "leading",
                                        "prediction_type": "v_prediction",
                                        "final_sigmas_type": "sigma_min"}, 20),  # 2nd-order last
    "trailing-sigma_min-8": ({**MODELSCOPE, "timestep_spacing": "trailing",
                              "final_sigmas_type": "sigma_min"}, 8),  # lower_order_final
    "linear-linspace-order1": ({"beta_schedule": "linear", "solver_order": 1}, 12),
    "euler_at_final-sigma_min": ({**MODELSCOPE, "final_sigmas_type": "sigma_min",
                                  "euler_at_final": True}, 16),
}


def build(cls, config):
    return cls.from_config({k: v for k, v in config.items() if k != "_class_name"})


def ours(scheduler, model, num_steps, guidance=None, **kw):
    spec = from_diffusers(scheduler)
    return spec.sample(model, noise(), num_steps, guidance_scale=guidance,
                       extra_args=conditioning(guidance is not None), disable=True, **kw)


@pytest.fixture(scope="module")
def model():
    return TinyDenoiser().eval()


def check(cls, config, num_steps, model, guidance, *, other_convention=True):
    sched = build(cls, config)
    theirs = diffusers_loop(sched, model, noise(), num_steps, guidance)
    got = ours(sched, model, num_steps, guidance)
    err = max_abs_diff(got, theirs)
    assert err <= ATOL, f"max |vdengine - diffusers| = {err:.3g}"
    if other_convention:  # the test can tell a wrong plan from rounding
        spec = from_diffusers(sched)
        wrong = spec.sample(model, noise(), num_steps, guidance_scale=guidance,
                            extra_args=conditioning(guidance is not None), disable=True,
                            schedule_options=ScheduleOptions(**{
                                **spec.options.to_config(), "convention": "vdengine"}))
        assert max_abs_diff(wrong, theirs) >= SEPARATION
    return err


@pytest.mark.parametrize("guidance", [None, 7.5])
@pytest.mark.parametrize("case", sorted(DDIM_CASES))
def test_ddim(case, guidance, model):
    config, n = DDIM_CASES[case]
    # The two conventions coincide for leading spacing and for trailing when n divides T.
    differs = config.get("timestep_spacing") == "linspace" or case.endswith("n30")
    check(diffusers.DDIMScheduler, config, n, model, guidance, other_convention=differs)


@pytest.mark.parametrize("guidance", [None, 9.0])
@pytest.mark.parametrize("case", sorted(DPM_CASES))
def test_dpm_solver(case, guidance, model):
    config, n = DPM_CASES[case]
    differs = config.get("timestep_spacing", "linspace") != "trailing"
    check(diffusers.DPMSolverMultistepScheduler, config, n, model, guidance,
          other_convention=differs)


def test_ddim_eta_one_with_the_same_generator(model):
    sched = build(diffusers.DDIMScheduler, DDIM_CASES["scaled-trailing-v-n30"][0])
    theirs = diffusers_loop(sched, model, noise(), 30, step_kw={
        "eta": 1.0, "generator": torch.Generator().manual_seed(3)})
    got = ours(sched, model, 30, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert max_abs_diff(got, theirs) <= ATOL
