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

# A Stable-Video-Diffusion-style config: EulerDiscrete, v-prediction, Karras σ 0.002-700,
# continuous timesteps (c_noise = 0.25·log σ), leading spacing with steps_offset 1.
SVD = {"_class_name": "EulerDiscreteScheduler", **SD_BETAS, "prediction_type": "v_prediction",
       "use_karras_sigmas": True, "sigma_min": 0.002, "sigma_max": 700.0,
       "timestep_type": "continuous", "timestep_spacing": "leading", "steps_offset": 1,
       "interpolation_type": "linear", "set_alpha_to_one": False, "clip_sample": False}

EULER_CASES = {
    "svd-25": (SVD, 25),
    "svd-trailing-sigma_min-14": ({**SVD, "timestep_spacing": "trailing",
                                   "final_sigmas_type": "sigma_min"}, 14),
    "linear-linspace-eps-25": ({"beta_schedule": "linear"}, 25),  # fractional timesteps
    "scaled-leading-offset1-v-20": ({**SD_BETAS, "timestep_spacing": "leading",
                                     "steps_offset": 1, "prediction_type": "v_prediction"}, 20),
    "linear-trailing-sample-sigma_min-10": ({"beta_schedule": "linear",
                                             "timestep_spacing": "trailing",
                                             "prediction_type": "sample",
                                             "final_sigmas_type": "sigma_min"}, 10),
    "karras-eps-15": ({**SD_BETAS, "use_karras_sigmas": True}, 15),  # fractional timesteps
}

#: For each Euler case, an option whose change the comparison must notice.
EULER_WRONG = {
    "svd-25": {"timestep_type": "discrete"},
    "svd-trailing-sigma_min-14": {"final": "zero"},
    "linear-linspace-eps-25": {"final": "sigma_min"},
    "scaled-leading-offset1-v-20": {"karras_sigmas": True},
    "linear-trailing-sample-sigma_min-10": {"final": "zero"},
    "karras-eps-15": {"karras_sigmas": False},
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


def check(cls, config, num_steps, model, guidance, *, wrong=None):
    """vdengine within ATOL of diffusers; with ``wrong`` (ScheduleOptions fields to change), the
    changed plan must land at least SEPARATION away: the test tells a wrong plan from rounding."""
    sched = build(cls, config)
    theirs = diffusers_loop(sched, model, noise(), num_steps, guidance)
    got = ours(sched, model, num_steps, guidance)
    err = max_abs_diff(got, theirs)
    assert err <= ATOL, f"max |vdengine - diffusers| = {err:.3g}"
    if wrong:
        spec = from_diffusers(sched)
        options = ScheduleOptions(**{**spec.options.to_config(), **wrong})
        other = ours(sched, model, num_steps, guidance, schedule_options=options)
        assert max_abs_diff(other, theirs) >= SEPARATION
    return err


@pytest.mark.parametrize("guidance", [None, 7.5])
@pytest.mark.parametrize("case", sorted(DDIM_CASES))
def test_ddim(case, guidance, model):
    config, n = DDIM_CASES[case]
    # The two conventions coincide for leading spacing and for trailing when n divides T.
    differs = config.get("timestep_spacing") == "linspace" or case.endswith("n30")
    check(diffusers.DDIMScheduler, config, n, model, guidance,
          wrong={"convention": "vdengine"} if differs else None)


@pytest.mark.parametrize("guidance", [None, 9.0])
@pytest.mark.parametrize("case", sorted(DPM_CASES))
def test_dpm_solver(case, guidance, model):
    config, n = DPM_CASES[case]
    differs = config.get("timestep_spacing", "linspace") != "trailing"
    check(diffusers.DPMSolverMultistepScheduler, config, n, model, guidance,
          wrong={"convention": "vdengine"} if differs else None)


@pytest.mark.parametrize("guidance", [None, 3.0])
@pytest.mark.parametrize("case", sorted(EULER_CASES))
def test_euler(case, guidance, model):
    config, n = EULER_CASES[case]
    # (Euler's two conventions differ only in rounding fractional "linspace" timesteps, which
    # moves this toy model's result by ~1e-4: test_plans checks those timesteps exactly.)
    check(diffusers.EulerDiscreteScheduler, config, n, model, guidance, wrong=EULER_WRONG[case])


@pytest.mark.parametrize("case,bounds", [("svd-25", (1.0, 3.0)),
                                         ("svd-trailing-sigma_min-14", (2.0, 2.5))])
def test_svd_per_frame_guidance(case, bounds, model):
    """SVD's guidance: linspace(min_guidance_scale, max_guidance_scale, F), one scale per frame."""
    config, n = EULER_CASES[case]
    scales = torch.linspace(*bounds, noise().shape[1])
    sched = build(diffusers.EulerDiscreteScheduler, config)
    theirs = diffusers_loop(sched, model, noise(), n, scales)
    got = ours(sched, model, n, scales)
    assert max_abs_diff(got, theirs) <= ATOL
    # The per-frame scales matter: their mean as one scale lands elsewhere.
    assert max_abs_diff(ours(sched, model, n, float(scales.mean())), theirs) >= SEPARATION


@pytest.mark.parametrize("sampler_case", [("ddim", "animatediff-linspace"),
                                          ("dpm", "modelscope-25")])
def test_per_frame_guidance_ddim_and_dpm(sampler_case, model):
    kind, case = sampler_case
    cls, cases = ((diffusers.DDIMScheduler, DDIM_CASES) if kind == "ddim" else
                  (diffusers.DPMSolverMultistepScheduler, DPM_CASES))
    config, n = cases[case]
    scales = torch.tensor([3.0, 7.5, 12.0])
    sched = build(cls, config)
    assert max_abs_diff(ours(sched, model, n, scales),
                        diffusers_loop(sched, model, noise(), n, scales)) <= ATOL


def test_ddim_eta_one_with_the_same_generator(model):
    sched = build(diffusers.DDIMScheduler, DDIM_CASES["scaled-trailing-v-n30"][0])
    theirs = diffusers_loop(sched, model, noise(), 30, step_kw={
        "eta": 1.0, "generator": torch.Generator().manual_seed(3)})
    got = ours(sched, model, 30, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert max_abs_diff(got, theirs) <= ATOL
