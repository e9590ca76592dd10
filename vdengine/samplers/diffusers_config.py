"""Translate a diffusers scheduler (object, config dict or scheduler_config.json) into vdengine terms.

    spec = from_diffusers(pipe.scheduler)        # or a config dict, or a scheduler directory
    video = spec.sample(denoiser, noise, 25, guidance_scale=..., extra_args=..., generator=g)
    # same as get_sampler(spec.sampler)(denoiser, noise, spec.schedule, 25,
    #                                   **spec.sampler_kwargs(), guidance_scale=..., ...)

    DDIMScheduler                -> "ddim"      (set_alpha_to_one, clip_sample, steps_offset, ...)
    DPMSolverMultistepScheduler  -> "dpmpp_2m"  (dpmsolver++, midpoint, order 1 or 2)
    EulerDiscreteScheduler       -> "euler"     (discrete or Karras σ, discrete or continuous t)

The sampler then reproduces the scheduler's loop (``set_timesteps``, ``scale_model_input``,
``step``): ``ScheduleOptions(convention="diffusers")`` makes it use the scheduler's own timestep
rules. Anything vdengine cannot reproduce (another class, thresholding, DPM-Solver order 3 or
Heun, SDE variants, exponential/beta/Lu sigmas, zero-terminal-SNR rescaling, trained betas, log-
linear interpolation, ...) raises a one-line ValueError naming the field and its value. Keys the
class does not take are ignored, as diffusers' ``from_config`` ignores them (a DDIM config loaded
into DPM-Solver keeps DPM-Solver's defaults for what DDIM does not set). Needs no diffusers
import: the defaults below are diffusers 0.42's (tests compare them with the installed version).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from vdengine.schedules import PREDICTION_TYPES, SPACINGS, NoiseSchedule, ScheduleOptions

CLASS_SAMPLERS = {
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "EulerDiscreteScheduler": "euler",
}

_SCHEDULE = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "trained_betas": None, "prediction_type": "epsilon",
    "steps_offset": 0, "rescale_betas_zero_snr": False,
}

#: Every __init__ parameter of each supported class with its default (diffusers 0.42.1).
DEFAULTS: dict[str, dict[str, Any]] = {
    "DDIMScheduler": {
        **_SCHEDULE, "clip_sample": True, "set_alpha_to_one": True, "thresholding": False,
        "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
        "timestep_spacing": "leading",
    },
    "DPMSolverMultistepScheduler": {
        **_SCHEDULE, "solver_order": 2, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
        "lower_order_final": True, "euler_at_final": False, "use_karras_sigmas": False,
        "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_lu_lambdas": False,
        "use_flow_sigmas": False, "flow_shift": 1.0, "final_sigmas_type": "zero",
        "lambda_min_clipped": -math.inf, "variance_type": None, "timestep_spacing": "linspace",
        "use_dynamic_shifting": False, "time_shift_type": "exponential",
    },
    "EulerDiscreteScheduler": {
        **_SCHEDULE, "interpolation_type": "linear", "use_karras_sigmas": False,
        "use_exponential_sigmas": False, "use_beta_sigmas": False, "sigma_min": None,
        "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    },
}

#: Values diffusers itself rewrites on construction (deprecated aliases).
_ALIASES = {
    ("DPMSolverMultistepScheduler", "algorithm_type"): {"deis": "dpmsolver++"},
    ("DPMSolverMultistepScheduler", "solver_type"): {"logrho": "midpoint", "bh1": "midpoint",
                                                     "bh2": "midpoint"},
    ("EulerDiscreteScheduler", "prediction_type"): {"original_sample": "sample"},
}


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler in vdengine terms.

    Attributes:
        sampler: the vdengine sampler name (``vdengine.samplers.get_sampler``).
        schedule: the training noise schedule (betas).
        spacing: "leading", "trailing" or "linspace".
        prediction_type: "epsilon", "v_prediction" or "sample".
        options: the rest of the config (timestep rules, offset, final level, solver options).
        clip_sample: DDIM's clip_sample_range when clip_sample is on, else None.
        source: the diffusers class name.
    """

    sampler: str
    schedule: NoiseSchedule
    spacing: str
    prediction_type: str
    options: ScheduleOptions = field(default_factory=ScheduleOptions)
    clip_sample: float | None = None
    source: str = ""

    def sampler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that make a sampler follow this scheduler."""
        return {"spacing": self.spacing, "prediction_type": self.prediction_type,
                "schedule_options": self.options, "clip_sample": self.clip_sample}

    def sample(self, model: Any, x: Tensor, num_steps: int, **kwargs: Any) -> Tensor:
        """Run this scheduler's sampler: kwargs are the sampler's others (guidance_scale, ...)
        and override sampler_kwargs() where they overlap."""
        from vdengine.samplers import get_sampler

        return get_sampler(self.sampler)(model, x, self.schedule, num_steps,
                                         **{**self.sampler_kwargs(), **kwargs})


def from_diffusers(scheduler: Any) -> SchedulerSpec:
    """Translate a diffusers scheduler into a SchedulerSpec.

    Args:
        scheduler: a diffusers scheduler object (its class and ``.config``), a config mapping
            with ``_class_name`` (as in scheduler_config.json), or the path of a
            scheduler_config.json or of a directory holding one.

    Raises:
        ValueError: one line naming the class, field and value vdengine cannot reproduce.
        TypeError: for anything that is none of the above.
    """
    name, config = _read(scheduler)
    if name not in DEFAULTS:
        raise ValueError(f"scheduler class {name!r} is not supported; vdengine reproduces "
                         f"{', '.join(DEFAULTS)}")
    cfg = {k: config.get(k, v) for k, v in DEFAULTS[name].items()}
    for (cls, key), aliases in _ALIASES.items():
        if cls == name and cfg[key] in aliases:
            cfg[key] = aliases[cfg[key]]

    def need(key: str, *allowed: Any) -> Any:
        value = cfg[key]
        if value not in allowed:
            raise ValueError(f"{name}: {key}={value!r} is not supported by vdengine "
                             f"(supported: {', '.join(repr(a) for a in allowed)})")
        return value

    need("trained_betas", None)
    need("rescale_betas_zero_snr", False)
    need("beta_schedule", "linear", "scaled_linear", "squaredcos_cap_v2")
    need("prediction_type", *PREDICTION_TYPES)
    need("timestep_spacing", *SPACINGS)
    schedule = NoiseSchedule(kind=cfg["beta_schedule"],
                             num_train_timesteps=int(cfg["num_train_timesteps"]),
                             beta_start=float(cfg["beta_start"]), beta_end=float(cfg["beta_end"]))
    opts: dict[str, Any] = {"convention": "diffusers", "steps_offset": int(cfg["steps_offset"])}
    clip = None
    if name == "DDIMScheduler":
        need("thresholding", False)
        opts["final"] = "zero" if cfg["set_alpha_to_one"] else "sigma_min"
        clip = float(cfg["clip_sample_range"]) if cfg["clip_sample"] else None
    elif name == "DPMSolverMultistepScheduler":
        need("algorithm_type", "dpmsolver++")
        need("solver_type", "midpoint")
        need("thresholding", False)
        for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                    "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"):
            need(key, False)
        need("lambda_min_clipped", -math.inf)
        need("variance_type", None)
        opts.update(solver_order=need("solver_order", 1, 2),
                    final=need("final_sigmas_type", "zero", "sigma_min"),
                    lower_order_final=bool(cfg["lower_order_final"]),
                    euler_at_final=bool(cfg["euler_at_final"]))
    else:  # EulerDiscreteScheduler
        need("interpolation_type", "linear")
        need("use_exponential_sigmas", False)
        need("use_beta_sigmas", False)
        need("timestep_type", "discrete", "continuous")
        # diffusers uses continuous timesteps (0.25·log σ) only for v-prediction.
        continuous = cfg["timestep_type"] == "continuous" and (
            cfg["prediction_type"] == "v_prediction")
        karras = bool(cfg["use_karras_sigmas"])
        opts.update(final=need("final_sigmas_type", "zero", "sigma_min"), karras_sigmas=karras,
                    timestep_type="continuous" if continuous else "discrete")
        if karras:  # sigma_min/max are read by the Karras ramp only
            opts.update(sigma_min=_opt_float(cfg["sigma_min"]),
                        sigma_max=_opt_float(cfg["sigma_max"]))
    return SchedulerSpec(
        sampler=CLASS_SAMPLERS[name], schedule=schedule, spacing=cfg["timestep_spacing"],
        prediction_type=cfg["prediction_type"], options=ScheduleOptions(**opts),
        clip_sample=clip, source=name,
    )


def _read(scheduler: Any) -> tuple[str, Mapping[str, Any]]:
    """(class name, config mapping) of a scheduler object, a config mapping or a JSON path."""
    if isinstance(scheduler, (str, Path)):
        path = Path(scheduler)
        if path.is_dir():
            path = path / "scheduler_config.json"
        if not path.is_file():
            raise ValueError(f"scheduler path {str(scheduler)!r} is not a scheduler_config.json "
                             f"or a directory holding one")
        scheduler = json.loads(path.read_text())
    if isinstance(scheduler, Mapping):
        name = scheduler.get("_class_name")
        if name is None:
            raise ValueError("a scheduler config must name its class in '_class_name'")
        return str(name), scheduler
    config = getattr(scheduler, "config", None)
    if isinstance(config, Mapping):
        return type(scheduler).__name__, config
    raise TypeError(f"scheduler must be a diffusers scheduler, a config dict or a path, got "
                    f"{type(scheduler).__name__}")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = ["CLASS_SAMPLERS", "DEFAULTS", "SchedulerSpec", "from_diffusers"]
