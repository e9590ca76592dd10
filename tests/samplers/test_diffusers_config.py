"""from_diffusers: diffusers scheduler objects, config dicts and JSON files in vdengine terms."""

from __future__ import annotations

import inspect
import json
import math

import diffusers
import pytest

from vdengine.samplers import SchedulerSpec, from_diffusers
from vdengine.samplers.diffusers_config import DEFAULTS
from vdengine.schedules import NoiseSchedule, ScheduleOptions

# Modelled on text-to-video-ms-1.7b's scheduler_config.json (from memory, not copied: a DDIM
# config with SD's betas, which the model card loads into DPMSolverMultistepScheduler), with keys
# diffusers ignores.
MODELSCOPE = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.15.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
# AnimateDiff's documented scheduler: SD 1.5's config with these overrides.
ANIMATEDIFF = {**MODELSCOPE, "beta_schedule": "linear", "timestep_spacing": "linspace"}
# Modelled on stable-video-diffusion-img2vid(-xt)'s scheduler_config.json (from memory).
SVD = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "sigma_max": 700.0,
    "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
    "timestep_type": "continuous", "trained_betas": None, "use_karras_sigmas": True,
}
SD_SCHEDULE = NoiseSchedule("scaled_linear", 1000, 0.00085, 0.012)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_are_the_installed_diffusers_defaults(name):
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    theirs = {k: p.default for k, p in params.items() if k != "self"}
    assert DEFAULTS[name] == theirs


def test_modelscope_dpm_solver():
    sched = diffusers.DPMSolverMultistepScheduler.from_config(MODELSCOPE)
    spec = from_diffusers(sched)
    assert spec == SchedulerSpec(
        sampler="dpmpp_2m", schedule=SD_SCHEDULE, spacing="linspace", prediction_type="epsilon",
        options=ScheduleOptions(convention="diffusers", steps_offset=1),
        source="DPMSolverMultistepScheduler",
    )
    # The same config dict under DPM-Solver's class name gives the same spec.
    assert from_diffusers({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler"}) == spec


def test_modelscope_and_animatediff_ddim():
    spec = from_diffusers(MODELSCOPE)
    assert spec.sampler == "ddim" and spec.spacing == "leading" and spec.clip_sample is None
    assert spec.options == ScheduleOptions(convention="diffusers", steps_offset=1,
                                           final="sigma_min")
    anim = from_diffusers(diffusers.DDIMScheduler.from_config(ANIMATEDIFF))
    assert anim.schedule == NoiseSchedule("linear", 1000, 0.00085, 0.012)
    assert anim.spacing == "linspace" and anim.prediction_type == "epsilon"
    assert from_diffusers(diffusers.DDIMScheduler()).clip_sample == 1.0  # DDIM's default clips
    assert from_diffusers({**MODELSCOPE, "clip_sample": True,
                           "clip_sample_range": 2.5}).clip_sample == 2.5


def test_svd_euler():
    spec = from_diffusers(diffusers.EulerDiscreteScheduler.from_config(SVD))
    assert spec == SchedulerSpec(
        sampler="euler", schedule=SD_SCHEDULE, spacing="leading", prediction_type="v_prediction",
        options=ScheduleOptions(convention="diffusers", steps_offset=1, karras_sigmas=True,
                                sigma_min=0.002, sigma_max=700.0, timestep_type="continuous"),
        source="EulerDiscreteScheduler",
    )
    assert from_diffusers(SVD) == spec
    # diffusers uses continuous timesteps for v-prediction only; σ bounds only with Karras σ.
    eps = from_diffusers({**SVD, "prediction_type": "epsilon", "use_karras_sigmas": False})
    assert eps.options.timestep_type == "discrete" and eps.options.sigma_max is None
    assert from_diffusers({**SVD, "prediction_type": "original_sample"}).prediction_type == "sample"


def test_paths(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(SVD))
    assert from_diffusers(tmp_path / "scheduler") == from_diffusers(SVD)
    assert from_diffusers(str(tmp_path / "scheduler" / "scheduler_config.json")) == from_diffusers(SVD)
    with pytest.raises(ValueError, match="is not a scheduler_config.json or a directory"):
        from_diffusers(tmp_path)


def test_sampler_kwargs():
    spec = from_diffusers(MODELSCOPE)
    assert spec.sampler_kwargs() == {"spacing": "leading", "prediction_type": "epsilon",
                                     "schedule_options": spec.options, "clip_sample": None}


UNSUPPORTED = [
    ({"_class_name": "PNDMScheduler"}, r"scheduler class 'PNDMScheduler' is not supported"),
    ({**MODELSCOPE, "thresholding": True}, r"DDIMScheduler: thresholding=True is not supported"),
    ({**MODELSCOPE, "rescale_betas_zero_snr": True}, r"rescale_betas_zero_snr=True"),
    ({**MODELSCOPE, "trained_betas": [0.1] * 1000}, r"trained_betas=\[0\.1"),
    ({**MODELSCOPE, "beta_schedule": "sigmoid"},
     r"beta_schedule='sigmoid' is not supported by vdengine \(supported: 'linear', 'scaled_linear'"),
    ({**MODELSCOPE, "timestep_spacing": "uniform"}, r"timestep_spacing='uniform'"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "solver_order": 3},
     r"DPMSolverMultistepScheduler: solver_order=3 is not supported by vdengine \(supported: 1, 2\)"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "solver_type": "heun"},
     r"solver_type='heun'"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler",
      "algorithm_type": "sde-dpmsolver++"}, r"algorithm_type='sde-dpmsolver\+\+'"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True},
     r"DPMSolverMultistepScheduler: use_karras_sigmas=True"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": True},
     r"use_lu_lambdas=True"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1},
     r"lambda_min_clipped=-5\.1"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler", "variance_type": "learned_range"},
     r"variance_type='learned_range'"),
    ({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler",
      "prediction_type": "flow_prediction"}, r"prediction_type='flow_prediction'"),
    ({**SVD, "interpolation_type": "log_linear"}, r"EulerDiscreteScheduler: interpolation_type="),
    ({**SVD, "use_karras_sigmas": False, "use_exponential_sigmas": True},
     r"use_exponential_sigmas=True"),
    ({**SVD, "final_sigmas_type": "one"}, r"final_sigmas_type='one'"),
    ({"beta_schedule": "linear"}, r"a scheduler config must name its class in '_class_name'"),
]


@pytest.mark.parametrize("config,match", UNSUPPORTED, ids=lambda v: str(v)[:40])
def test_unsupported_configs_raise_one_line(config, match):
    with pytest.raises(ValueError, match=match) as info:
        from_diffusers(config)
    assert "\n" not in str(info.value)


def test_diffusers_aliases_are_followed():
    deis = from_diffusers({**MODELSCOPE, "_class_name": "DPMSolverMultistepScheduler",
                           "algorithm_type": "deis", "solver_type": "bh2"})
    assert deis.sampler == "dpmpp_2m"  # diffusers itself rewrites these to dpmsolver++/midpoint


def test_type_errors():
    with pytest.raises(TypeError, match="scheduler must be a diffusers scheduler, a config dict"):
        from_diffusers(42)
    assert math.isinf(DEFAULTS["DPMSolverMultistepScheduler"]["lambda_min_clipped"])
