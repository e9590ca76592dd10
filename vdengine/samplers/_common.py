"""Helpers shared by every sampler: the step plan, the one-forward denoiser call, noise, progress.

Every sampler has the signature

    sample_x(model, x, schedule, num_steps, *, spacing="leading", prediction_type="epsilon",
             guidance_scale=None, extra_args=None, generator=None, callback=None, disable=None,
             clip_sample=None, **sampler_options) -> Tensor

with ``model(x_in, t_in, **extra_args) -> output``: x_in [B_in, ...], t_in float32 [B_in] of
integer-valued timesteps on x's device, output shaped like x_in. With ``guidance_scale`` set,
B_in = 2B: x_in = cat[x, x], and the caller has stacked the conditioning in ``extra_args`` as
[uncond; cond]; the 2B-row output goes to the fused op, which combines u + s·(c − u).

Nothing in a step loop reads a device value back to the host: the per-step coefficients are
built once as device tensors and sliced with Python ints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vdengine.schedules import PREDICTION_TYPES, NoiseSchedule

Model = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class StepPlan:
    """What a sampler loop indexes: timesteps on the host, coefficients on x's device.

    timesteps: Python ints, descending, [n].
    alpha_bar: ᾱ at each timestep followed by ᾱ = 1 (the clean end), [n + 1], on x's device,
        float32 (float64 for float64 x). Step i goes from alpha_bar[i] to alpha_bar[i + 1].
    t_in: the model's timestep input per step, float32 [n, B_in] on x's device.
    """

    timesteps: list[int]
    alpha_bar: Tensor
    t_in: Tensor

    def __len__(self) -> int:
        return len(self.timesteps)

    def ab(self, i: int) -> Tensor:
        """ᾱ of step i's timestep as a [1] device tensor (a view: no copy, no sync)."""
        return self.alpha_bar[i : i + 1]


def setup(
    x: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    spacing: str,
    prediction_type: str,
    guidance_scale: float | None,
    extra_args: dict[str, Any] | None,
) -> tuple[Tensor, dict[str, Any], StepPlan]:
    """Validate the arguments every sampler shares and build its plan.

    Returns (x made contiguous, extra_args as a dict, the StepPlan).
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise TypeError("x must be a tensor [B, ...] of initial noise")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if guidance_scale is not None and (
        isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
    ):
        raise TypeError(f"guidance_scale must be a float or None, got {type(guidance_scale).__name__}")
    if extra_args is None:
        extra_args = {}
    elif not isinstance(extra_args, dict):
        raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
    return x.contiguous(), extra_args, make_plan(schedule, num_steps, spacing, x, guidance_scale)


def make_plan(
    schedule: NoiseSchedule,
    num_steps: int,
    spacing: str,
    x: Tensor,
    guidance_scale: float | None,
) -> StepPlan:
    """The timesteps of ``num_steps`` steps and their coefficients, moved to x's device once."""
    ts = schedule.timesteps(num_steps, spacing)  # int64 [n] on the CPU
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    ab = torch.cat([schedule.alphas_cumprod[ts], torch.ones(1, dtype=torch.float64)])
    rows = x.shape[0] * (1 if guidance_scale is None else 2)
    t_in = ts.to(torch.float32)[:, None].expand(-1, rows).contiguous()
    return StepPlan(
        timesteps=ts.tolist(),
        alpha_bar=to_device(ab.to(cd), x.device),
        t_in=to_device(t_in, x.device),
    )


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device``; to CUDA through pinned memory so the copy needs no host sync."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def denoise(
    model: Model,
    x: Tensor,
    t_in: Tensor,
    extra_args: dict[str, Any],
    guidance_scale: float | None,
) -> Tensor:
    """One model forward: [B] rows, or cat[x, x] = 2B rows under classifier-free guidance."""
    x_in = x if guidance_scale is None else torch.cat([x, x])
    out = model(x_in, t_in, **extra_args)
    if not isinstance(out, Tensor) or out.shape != x_in.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model returned {got} for an input of shape {tuple(x_in.shape)}")
    return out.contiguous()  # the fused ops take contiguous tensors (no copy if already so)


def resolve_generator(generator: torch.Generator | None, x: Tensor) -> torch.Generator:
    """The caller's generator, or a fresh one seeded from OS entropy (global RNG is never used)."""
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.seed()
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like x on x's device, drawn from ``generator``.

    A generator on another device (a CPU generator for CUDA x) draws there and the noise is
    copied over, as diffusers' randn_tensor does, so a seed gives the same noise on any device.
    """
    if generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return to_device(noise, x.device) if noise.device.type == "cpu" else noise.to(x.device)


def progress(n: int, disable: bool | None) -> Iterable[int]:
    """range(n) under a tqdm bar; disable=None shows it only when stderr is a terminal."""
    if disable is None:
        isatty = getattr(sys.stderr, "isatty", None)
        disable = not (isatty is not None and isatty())
    return tqdm(range(n), disable=bool(disable), leave=False)


def report(callback: Callback | None, i: int, plan: StepPlan, x: Tensor, x0: Tensor) -> None:
    """callback({"i", "t", "x", "x0"}) after step i (t is the Python int timestep)."""
    if callback is not None:
        callback({"i": i, "t": plan.timesteps[i], "x": x, "x0": x0})


__all__ = [
    "Callback",
    "Model",
    "StepPlan",
    "denoise",
    "make_plan",
    "progress",
    "randn_like",
    "report",
    "resolve_generator",
    "setup",
    "to_device",
]
