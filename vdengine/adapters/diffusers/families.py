"""The three diffusers video UNets vdengine adapts, and what differs between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers import UNet3DConditionModel, UNetMotionModel, UNetSpatioTemporalConditionModel

__all__ = ["FAMILIES", "Family", "family_named", "family_of"]


@dataclass(frozen=True)
class Family:
    """One supported UNet class.

    Attributes:
        cls: the diffusers class.
        layout: the model's native latent layout ("BCFHW" or "BFCHW").
        conditioning: the keyword inputs of the adapter's forward (see denoiser.py).
        default_scheduler: the scheduler config its pipeline ships with, used when none is given.
    """

    cls: type
    layout: str
    conditioning: tuple[str, ...]
    default_scheduler: dict[str, Any]


_SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}

FAMILIES: dict[str, Family] = {
    # ModelScope text-to-video (TextToVideoSDPipeline): the checkpoint's DDIM config.
    "UNet3DConditionModel": Family(
        UNet3DConditionModel, "BCFHW", ("encoder_hidden_states",),
        {"_class_name": "DDIMScheduler", **_SD_BETAS, "beta_schedule": "scaled_linear",
         "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
         "prediction_type": "epsilon"}),
    # AnimateDiff (AnimateDiffPipeline): the DDIM settings of diffusers' AnimateDiff docs.
    "UNetMotionModel": Family(
        UNetMotionModel, "BCFHW", ("encoder_hidden_states",),
        {"_class_name": "DDIMScheduler", **_SD_BETAS, "beta_schedule": "linear",
         "clip_sample": False, "timestep_spacing": "linspace", "steps_offset": 1,
         "prediction_type": "epsilon"}),
    # Stable Video Diffusion (StableVideoDiffusionPipeline): EDM Euler with Karras σ, v-prediction.
    "UNetSpatioTemporalConditionModel": Family(
        UNetSpatioTemporalConditionModel, "BFCHW",
        ("encoder_hidden_states", "image_latents", "added_time_ids"),
        {"_class_name": "EulerDiscreteScheduler", **_SD_BETAS, "beta_schedule": "scaled_linear",
         "prediction_type": "v_prediction", "use_karras_sigmas": True, "sigma_min": 0.002,
         "sigma_max": 700.0, "timestep_type": "continuous", "timestep_spacing": "leading",
         "steps_offset": 1, "interpolation_type": "linear"}),
}

_EXPECTED = "a UNet3DConditionModel, UNetMotionModel or UNetSpatioTemporalConditionModel"


def family_of(unet: object) -> Family:
    """The Family of a model instance; ValueError naming the supported classes otherwise."""
    for family in FAMILIES.values():
        if type(unet) is family.cls:
            return family
    raise ValueError(f"expected {_EXPECTED}, got {type(unet).__name__}")


def family_named(class_name: str, where: str) -> Family:
    """The Family of a ``_class_name`` read from ``where`` (a config file, for the message)."""
    if class_name not in FAMILIES:
        raise ValueError(f"{where} names {class_name!r}; expected {_EXPECTED}")
    return FAMILIES[class_name]
