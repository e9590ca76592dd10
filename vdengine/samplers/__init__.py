"""Samplers: small functions with one signature, each update one fused op (see _common.py).

    from vdengine.samplers import get_sampler
    video = get_sampler("dpmpp_2m")(model, noise, NoiseSchedule("linear"), 8, guidance_scale=5.0,
                                    extra_args={"cond": torch.cat([uncond, cond])}, generator=g)

A diffusers scheduler becomes a sampler with its settings through ``from_diffusers``:

    spec = from_diffusers(pipe.scheduler)   # SchedulerSpec: sampler, schedule, spacing, options
    video = spec.sample(model, noise, 25, guidance_scale=torch.linspace(1.0, 3.0, num_frames))

Public API: ``get_sampler(name)`` for name in ``SAMPLERS`` ("ddim", "ddpm", "dpmpp_2m", "euler");
``from_diffusers(scheduler_or_config_or_path) -> SchedulerSpec``; ``ScheduleOptions`` (from
vdengine.schedules) for ``schedule_options=``. The common signature is documented in _common.py.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from vdengine.samplers.ddim import sample_ddim
from vdengine.samplers.ddpm import sample_ddpm
from vdengine.samplers.diffusers_config import SchedulerSpec, from_diffusers
from vdengine.samplers.dpmpp import sample_dpmpp_2m
from vdengine.samplers.euler import sample_euler
from vdengine.schedules import ScheduleOptions

Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "ddpm": sample_ddpm,
    "euler": sample_euler,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name`` (one of ``SAMPLERS``)."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}") from None


__all__ = [
    "SAMPLERS",
    "Sampler",
    "ScheduleOptions",
    "SchedulerSpec",
    "from_diffusers",
    "get_sampler",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
]
