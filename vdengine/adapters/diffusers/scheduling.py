"""The training noise schedule and prediction type of a diffusers scheduler config (for the
denoiser's spec). The sampling settings are translated by vdengine.samplers.from_diffusers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vdengine.schedules import PREDICTION_TYPES, NoiseSchedule

__all__ = ["scheduler_config", "spec_schedule"]

_ALIASES = {"original_sample": "sample"}  # diffusers' deprecated name


def scheduler_config(scheduler: Any) -> Mapping[str, Any]:
    """The config mapping of a diffusers scheduler object or of a config dict."""
    if isinstance(scheduler, Mapping):
        return scheduler
    config = getattr(scheduler, "config", None)
    if isinstance(config, Mapping):
        return {"_class_name": type(scheduler).__name__, **config}
    raise TypeError(f"scheduler must be a diffusers scheduler, a config dict or a path, got "
                    f"{type(scheduler).__name__}")


def spec_schedule(config: Mapping[str, Any]) -> tuple[NoiseSchedule, str]:
    """(NoiseSchedule, prediction type) of a scheduler config; one-line ValueError for betas
    vdengine cannot represent."""
    if config.get("trained_betas") is not None:
        raise ValueError("scheduler config: trained_betas are not supported (vdengine schedules "
                         "are linear, scaled_linear or squaredcos_cap_v2)")
    prediction = config.get("prediction_type", "epsilon")
    prediction = _ALIASES.get(prediction, prediction)
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"scheduler config: prediction_type {prediction!r} is not supported "
                         f"(expected one of {PREDICTION_TYPES})")
    schedule = NoiseSchedule(kind=config.get("beta_schedule", "linear"),
                             num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                             beta_start=float(config.get("beta_start", 0.0001)),
                             beta_end=float(config.get("beta_end", 0.02)))
    return schedule, prediction
