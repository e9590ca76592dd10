"""Samplers: small functions with one signature, each update one fused op (see _common.py).

    from vdengine.samplers import get_sampler
    video = get_sampler("dpmpp_2m")(model, noise, NoiseSchedule("linear"), 8, guidance_scale=5.0,
                                    extra_args={"cond": torch.cat([uncond, cond])}, generator=g)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from vdengine.samplers.ddim import sample_ddim
from vdengine.samplers.ddpm import sample_ddpm
from vdengine.samplers.dpmpp import sample_dpmpp_2m

Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "ddpm": sample_ddpm,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name`` (one of ``SAMPLERS``)."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}") from None


__all__ = ["SAMPLERS", "Sampler", "get_sampler", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m"]
