"""Helpers shared by every sampler: the step plan, the one-forward denoiser call, noise, progress.

Every sampler has the signature

    sample_x(model, x, schedule, num_steps, *, spacing="leading", prediction_type="epsilon",
             guidance_scale=None, extra_args=None, generator=None, callback=None, disable=None,
             clip_sample=None, schedule_options=None, **sampler_options) -> Tensor

with ``model(x_in, t_in, **extra_args) -> output``: x_in [B_in, ...], t_in float32 [B_in] of the
step's timestep on x's device (integer-valued training timesteps, except for Euler with Karras σ
or continuous timesteps), output shaped like x_in. With ``guidance_scale`` set (a float, or a
float tensor [F] of per-frame scales for x laid out [B, F, ...]), B_in = 2B: x_in = cat[x, x], and
the caller has stacked the conditioning in ``extra_args`` as [uncond; cond]; the 2B-row output goes
to the fused op, which combines u + s·(c − u). ``schedule_options`` (a ScheduleOptions, None for
the defaults) carries what a diffusers scheduler config fixes beyond the spacing; a sampler
refuses options it does not use. ``sampler_options`` are a sampler's own (DDIM's ``eta``); giving
one to a sampler that has no such option is a TypeError naming it.

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

from vdengine.samplers.plans import STEPS, Steps
from vdengine.schedules import PREDICTION_TYPES, NoiseSchedule, ScheduleOptions

Model = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]
Guidance = float | Tensor | None


@dataclass(frozen=True)
class StepPlan:
    """What a sampler loop indexes: timesteps and orders on the host, coefficients on x's device.

    timesteps: Python numbers, [n] (ints for integer timesteps), for callbacks.
    level: the noise level of each step, [n], on x's device, float32 (float64 for float64 x):
        ᾱ for DDIM/DPM-Solver, σ for Euler.
    level_to: the level step i goes to, [n], like level.
    t_in: the model's timestep input per step, float32 [n, B_in] on x's device.
    orders: the solver order of each step (host ints).
    init_noise_sigma: the initial noise's scale (Euler's σ_max or √(σ_max² + 1); 1 otherwise).
    input_div: Euler: √(σ² + 1) per step, [n] on x's device (the model sees x / input_div);
        None for the ᾱ-level samplers.
    """

    timesteps: list[int] | list[float]
    level: Tensor
    level_to: Tensor
    t_in: Tensor
    orders: tuple[int, ...]
    init_noise_sigma: float
    input_div: Tensor | None

    def __len__(self) -> int:
        return len(self.timesteps)

    def at(self, i: int) -> Tensor:
        """Step i's level as a [1] device tensor (a view: no copy, no sync)."""
        return self.level[i : i + 1]

    def to(self, i: int) -> Tensor:
        """The level step i goes to, as a [1] device tensor."""
        return self.level_to[i : i + 1]


def setup(
    sampler: str,
    x: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    spacing: str,
    prediction_type: str,
    guidance_scale: Guidance,
    extra_args: dict[str, Any] | None,
    schedule_options: ScheduleOptions | None,
) -> tuple[Tensor, dict[str, Any], Guidance, StepPlan]:
    """Validate the arguments every sampler shares and build its plan.

    Returns (x made contiguous, extra_args as a dict, guidance_scale with a per-frame tensor moved
    to x's device as float32, the StepPlan).
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise TypeError("x must be a tensor [B, ...] of initial noise")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    guidance_scale = check_guidance(guidance_scale, x)
    if extra_args is None:
        extra_args = {}
    elif not isinstance(extra_args, dict):
        raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
    if schedule_options is None:
        schedule_options = ScheduleOptions()
    elif not isinstance(schedule_options, ScheduleOptions):
        raise TypeError(f"schedule_options must be a ScheduleOptions or None, got "
                        f"{type(schedule_options).__name__}")
    schedule_options.check_used_by(sampler)
    steps = STEPS[sampler](schedule, num_steps, spacing, schedule_options)
    plan = make_plan(steps, x, guidance_scale is not None)
    return x.contiguous(), extra_args, guidance_scale, plan


def check_guidance(guidance_scale: object, x: Tensor) -> Guidance:
    """None, a real number, or a 1-D float tensor of x.shape[1] per-frame scales (moved to x's
    device as float32, without a sync)."""
    if guidance_scale is None:
        return None
    if isinstance(guidance_scale, Tensor):
        if not guidance_scale.is_floating_point() or guidance_scale.dim() != 1:
            raise TypeError(f"guidance_scale as a tensor must be a 1-D float tensor of per-frame "
                            f"scales, got dtype {guidance_scale.dtype} and shape "
                            f"{tuple(guidance_scale.shape)}")
        if x.dim() < 2 or guidance_scale.numel() != x.shape[1]:
            raise ValueError(f"guidance_scale as a tensor needs one scale per frame of x [B, F, ...] "
                             f"(F = x.shape[1]), got {guidance_scale.numel()} scales for x of "
                             f"shape {tuple(x.shape)}")
        scales = guidance_scale.detach().to(torch.float32).contiguous()
        return scales if scales.device == x.device else to_device(scales, x.device)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale must be a float, a per-frame tensor or None, got "
                        f"{type(guidance_scale).__name__}")
    return float(guidance_scale)


def make_plan(steps: Steps, x: Tensor, guided: bool) -> StepPlan:
    """Moves a host plan's coefficients to x's device once."""
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = x.shape[0] * (2 if guided else 1)
    ts = torch.from_numpy(steps.timesteps)
    t_in = ts.to(torch.float32)[:, None].expand(-1, rows).contiguous()
    level = torch.from_numpy(steps.level).to(cd)
    input_div = None
    if steps.kind == "sigma":  # Euler's model input x / √(σ² + 1), divided as diffusers does
        input_div = to_device((level**2 + 1) ** 0.5, x.device)
    return StepPlan(
        timesteps=[int(t) for t in steps.timesteps] if steps.integer else steps.timesteps.tolist(),
        level=to_device(level, x.device),
        level_to=to_device(torch.from_numpy(steps.level_to).to(cd), x.device),
        t_in=to_device(t_in, x.device),
        orders=steps.orders,
        init_noise_sigma=steps.init_noise_sigma,
        input_div=input_div,
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
    guidance_scale: Guidance,
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


def report(callback: Callback | None, i: int, plan: StepPlan, x: Tensor, x0: Tensor | None
           ) -> None:
    """callback({"i", "t", "x", "x0"}) after step i (t is the Python int timestep)."""
    if callback is not None:
        callback({"i": i, "t": plan.timesteps[i], "x": x, "x0": x0})


__all__ = [
    "Callback",
    "Guidance",
    "Model",
    "StepPlan",
    "check_guidance",
    "denoise",
    "make_plan",
    "progress",
    "randn_like",
    "report",
    "resolve_generator",
    "setup",
    "to_device",
]
