"""Noise schedules of variance-preserving diffusion, timestep spacing and prediction conversions.

Notation (design/SEEDS.md): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε with ᾱ_t = ∏_{s≤t}(1 − β_s), t = 0..T−1.
v-prediction: v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0. The variance-exploding view of the same process (Euler,
EDM) uses σ_t = √((1−ᾱ_t)/ᾱ_t) and x_σ = x_t/√ᾱ_t = x_0 + σ·ε.

The numbers follow diffusers so that checkpoints trained there sample identically here:
``NoiseSchedule(kind)`` takes diffusers' ``beta_schedule`` names — "linear" (β linear from
beta_start to beta_end: DDPM, Video LDM), "scaled_linear" (√β linear: Stable Diffusion, ModelScope,
SVD) and "squaredcos_cap_v2" (Nichol & Dhariwal 2021, β capped at 0.999) — and vdengine's older
name "cosine" for the last one (saved configs keep loading; the two give identical betas).
:meth:`NoiseSchedule.timesteps` is ``DDIMScheduler.set_timesteps`` ("leading" with steps_offset,
"trailing", "linspace"). ᾱ is computed in float64 (diffusers keeps float32; the two agree to
float32 rounding).

:class:`ScheduleOptions` holds the rest of what a diffusers scheduler config fixes about a sampling
run (its timestep rules, steps_offset, where the last step lands, the solver order, Karras sigmas,
continuous timesteps). ``vdengine.samplers.from_diffusers`` translates a diffusers scheduler into
a NoiseSchedule, a sampler name and these options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: beta_schedule names; "cosine" is vdengine's alias of "squaredcos_cap_v2".
KINDS = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
CONVENTIONS = ("vdengine", "diffusers")
FINALS = ("zero", "sigma_min")
TIMESTEP_TYPES = ("discrete", "continuous")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete VP noise schedule with ``num_train_timesteps`` steps.

    Args:
        kind: "linear" (β = linspace(beta_start, beta_end, T)), "scaled_linear"
            (β = linspace(√beta_start, √beta_end, T)²) or "squaredcos_cap_v2" / "cosine" (Nichol &
            Dhariwal: ᾱ(t) ∝ cos²((t/T + 0.008)/1.008 · π/2), β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)).
        num_train_timesteps: T, the number of training steps (1000).
        beta_start, beta_end: the (scaled) linear schedules' end points (ignored by the cosine).

    Attributes:
        betas: float64 [T].
        alphas_cumprod: ᾱ, float64 [T], decreasing from ≈1 to ≈0.
    """

    kind: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    betas: Tensor = field(init=False, repr=False, compare=False)
    alphas_cumprod: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.num_train_timesteps, bool) or not isinstance(
            self.num_train_timesteps, int
        ):
            raise TypeError(
                f"num_train_timesteps must be an int, got {type(self.num_train_timesteps).__name__}"
            )
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                "beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1, got "
                f"{self.beta_start} and {self.beta_end}"
            )
        n = self.num_train_timesteps
        if self.kind == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        elif self.kind == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n,
                                   dtype=torch.float64) ** 2
        else:

            def f(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64
            )
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))

    @property
    def sigmas(self) -> Tensor:
        """σ_t = √((1−ᾱ_t)/ᾱ_t), the variance-exploding noise level of each timestep, float64 [T]."""
        ab = self.alphas_cumprod
        return ((1 - ab) / ab).sqrt()

    def timesteps(self, num_steps: int, spacing: str = "leading", steps_offset: int = 0) -> Tensor:
        """The descending int64 timesteps of a ``num_steps`` sampling run, as diffusers' DDIM.

        "leading": t_i = i·(T // n) + steps_offset for i = n−1..0 (diffusers' default; ends at
        steps_offset). "trailing": round(T − i·T/n) − 1 for i = 0..n−1 (starts at T−1; Lin et al.
        2023, Table 2). "linspace": round(linspace(0, T−1, n)), descending (starts at T−1, ends
        at 0). steps_offset applies to "leading" only, as in diffusers. For 62 values of n (e.g.
        61, 103) diffusers' float ``np.arange`` yields one extra trailing timestep of −1; it is
        dropped here, so exactly ``num_steps`` timesteps always come back.

        Returns:
            int64 [num_steps] on the CPU.
        """
        t = self.num_train_timesteps
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
            raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
        if not 1 <= num_steps <= t:
            raise ValueError(
                f"num_steps must be between 1 and num_train_timesteps={t}, got {num_steps}"
            )
        check_steps_offset(steps_offset)
        if spacing == "leading":
            ts = (np.arange(0, num_steps) * (t // num_steps)).round()[::-1].astype(np.int64)
            ts = ts + steps_offset
            if ts[0] > t - 1:
                raise ValueError(
                    f"steps_offset={steps_offset} moves the first of {num_steps} leading "
                    f"timesteps to {ts[0]}, past num_train_timesteps - 1 = {t - 1}"
                )
        elif spacing == "trailing":
            ts = np.round(np.arange(t, 0, -t / num_steps)).astype(np.int64)[:num_steps] - 1
        elif spacing == "linspace":
            ts = np.linspace(0, t - 1, num_steps).round()[::-1].astype(np.int64)
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        return torch.from_numpy(ts.copy())

    def alpha_bar(
        self, timesteps: Tensor | int, device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """ᾱ at integer timesteps (a negative timestep means the clean end, ᾱ = 1)."""
        ts = torch.as_tensor(timesteps, dtype=torch.int64)
        ab = torch.where(ts >= 0, self.alphas_cumprod[ts.clamp_min(0)], 1.0)
        return ab.to(device=device, dtype=dtype)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor | int) -> Tensor:
        """The forward process x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε; timesteps is an int or [N] per row."""
        ab = self.alpha_bar(timesteps, device=x0.device, dtype=_compute_dtype(x0))
        ab = _broadcast(ab, x0)
        return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).to(x0.dtype)

    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_config` turns back into this schedule."""
        return {
            "kind": self.kind,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Build a schedule from :meth:`to_config`'s dict (missing keys take their defaults)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown NoiseSchedule config keys {unknown}; expected {sorted(known)}")
        return cls(**config)


def check_steps_offset(steps_offset: object) -> int:
    if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)):
        raise TypeError(f"steps_offset must be an int, got {type(steps_offset).__name__}")
    if steps_offset < 0:
        raise ValueError(f"steps_offset must be >= 0, got {steps_offset}")
    return int(steps_offset)


# --- sampling options beyond the schedule ------------------------------------------------------

#: ScheduleOptions fields and the samplers that read them (every other sampler refuses a
#: non-default value, so an option is never silently ignored).
OPTION_USERS: dict[str, tuple[str, ...]] = {
    "convention": ("ddim", "dpmpp_2m", "euler"),
    "steps_offset": ("ddim", "ddpm", "dpmpp_2m", "euler"),
    "final": ("ddim", "ddpm", "dpmpp_2m", "euler"),
    "solver_order": ("dpmpp_2m",),
    "lower_order_final": ("dpmpp_2m",),
    "euler_at_final": ("dpmpp_2m",),
    "karras_sigmas": ("euler",),
    "sigma_min": ("euler",),
    "sigma_max": ("euler",),
    "timestep_type": ("euler",),
}


@dataclass(frozen=True)
class ScheduleOptions:
    """How a sampler walks a NoiseSchedule, beyond ``spacing``: what a diffusers scheduler config
    fixes. The defaults are vdengine's own behaviour; ``from_diffusers`` fills in a scheduler's.

    Args:
        convention: "vdengine": every sampler walks ``NoiseSchedule.timesteps(n, spacing,
            steps_offset)`` and each step goes to the next timestep of that list (then to the
            final level). "diffusers": each sampler reproduces its diffusers scheduler's
            ``set_timesteps`` and ``step``: DDIM steps from t to t − T//n (which is not the next
            listed timestep for "linspace", nor for "trailing" when n does not divide T,
            huggingface/diffusers#9261); DPM-Solver's "leading" and "linspace" timesteps are its
            own (n + 1 points, the last dropped); Euler's "linspace" timesteps are not rounded.
        steps_offset: added to "leading" timesteps (diffusers' ``steps_offset``).
        final: where the last step lands: "zero" noise (ᾱ = 1, σ = 0; diffusers'
            ``set_alpha_to_one=True`` / ``final_sigmas_type="zero"``) or "sigma_min", the noise
            level of timestep 0 (ᾱ_0; ``set_alpha_to_one=False`` / ``final_sigmas_type="sigma_min"``).
        solver_order: DPM-Solver++ order, 1 or 2.
        lower_order_final: DPM-Solver++: first order on the last step when fewer than 15 steps.
        euler_at_final: DPM-Solver++: first order on the last step always.
        karras_sigmas: Euler: the Karras et al. (2022) σ ramp (ρ = 7) between sigma_min and
            sigma_max instead of the schedule's σ at the spaced timesteps.
        sigma_min, sigma_max: the Karras ramp's ends (None: the spaced schedule's σ ends).
        timestep_type: Euler: "discrete" (the model's timestep input is the training timestep
            the σ corresponds to) or "continuous" (EDM's c_noise = 0.25·log σ, as SVD).
    """

    convention: str = "vdengine"
    steps_offset: int = 0
    final: str = "zero"
    solver_order: int = 2
    lower_order_final: bool = True
    euler_at_final: bool = False
    karras_sigmas: bool = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    timestep_type: str = "discrete"

    def __post_init__(self) -> None:
        _choice("convention", self.convention, CONVENTIONS)
        check_steps_offset(self.steps_offset)
        _choice("final", self.final, FINALS)
        _choice("timestep_type", self.timestep_type, TIMESTEP_TYPES)
        if self.solver_order not in (1, 2) or isinstance(self.solver_order, bool):
            raise ValueError(f"solver_order must be 1 or 2, got {self.solver_order!r}")
        for name in ("lower_order_final", "euler_at_final", "karras_sigmas"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        for name in ("sigma_min", "sigma_max"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not 0 < v < math.inf):
                raise ValueError(f"{name} must be a positive finite float or None, got {v!r}")
        if self.sigma_min is not None and self.sigma_max is not None and (
                self.sigma_min >= self.sigma_max):
            raise ValueError(f"sigma_min must be < sigma_max, got {self.sigma_min} and "
                             f"{self.sigma_max}")

    def check_used_by(self, sampler: str) -> None:
        """Raise a ValueError for an option set away from its default that ``sampler`` ignores."""
        default = ScheduleOptions()
        for name, users in OPTION_USERS.items():
            if sampler not in users and getattr(self, name) != getattr(default, name):
                raise ValueError(
                    f"schedule_options.{name}={getattr(self, name)!r} is not used by sampler "
                    f"{sampler!r} (only by {', '.join(users)})"
                )

    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_config` turns back into these options."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScheduleOptions:
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown ScheduleOptions keys {unknown}; expected {sorted(known)}")
        return cls(**config)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# --- prediction-type conversions ---------------------------------------------------------------


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _broadcast(alpha_bar: Tensor | float, x: Tensor) -> Tensor:
    """ᾱ as a float, a one-element tensor, an [N] tensor (one per row of x) or any tensor that
    already broadcasts against x, in x's compute dtype on x's device."""
    ab = torch.as_tensor(alpha_bar, dtype=_compute_dtype(x), device=x.device)
    if ab.dim() == 1 and ab.numel() == x.shape[0] and x.dim() > 1:
        ab = ab.reshape(-1, *([1] * (x.dim() - 1)))
    return ab


def _check_type(name: str, prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{name} must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def predict_x0_eps(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon"
) -> tuple[Tensor, Tensor]:
    """(x0, ε) from a model output of the given type ("epsilon", "v_prediction" or "sample").

    x_t, output: [N, ...]; alpha_bar: float, [1], [N] (per row) or broadcastable. Computed in
    float32 (float64 for float64 input) and returned in x_t's dtype.
    """
    _check_type("prediction_type", prediction_type)
    cd = _compute_dtype(x_t)
    ab = _broadcast(alpha_bar, x_t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    x, out = x_t.to(cd), output.to(cd)
    if prediction_type == "epsilon":
        eps, x0 = out, (x - s * out) / a
    elif prediction_type == "v_prediction":
        x0, eps = a * x - s * out, a * out + s * x
    else:
        x0, eps = out, (x - a * out) / s
    return x0.to(x_t.dtype), eps.to(x_t.dtype)


def predict_x0(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon"
) -> Tensor:
    """x0 = (x_t − √(1−ᾱ)·ε)/√ᾱ, or √ᾱ·x_t − √(1−ᾱ)·v, or the output itself."""
    return predict_x0_eps(x_t, output, alpha_bar, prediction_type)[0]


def predict_eps(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon"
) -> Tensor:
    """ε = the output itself, or √ᾱ·v + √(1−ᾱ)·x_t, or (x_t − √ᾱ·x0)/√(1−ᾱ)."""
    return predict_x0_eps(x_t, output, alpha_bar, prediction_type)[1]


def predict_v(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon"
) -> Tensor:
    """v = √ᾱ·ε − √(1−ᾱ)·x0 from any output type."""
    if prediction_type == "v_prediction":
        return output
    x0, eps = predict_x0_eps(x_t, output, alpha_bar, prediction_type)
    cd = _compute_dtype(x_t)
    ab = _broadcast(alpha_bar, x_t)
    return (ab.sqrt() * eps.to(cd) - (1 - ab).sqrt() * x0.to(cd)).to(x_t.dtype)


def convert_prediction(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor | float, source: str, target: str
) -> Tensor:
    """Re-express a model output of type ``source`` as type ``target`` (both in PREDICTION_TYPES)."""
    _check_type("source", source)
    _check_type("target", target)
    if source == target:
        return output
    if target == "sample":
        return predict_x0(x_t, output, alpha_bar, source)
    if target == "epsilon":
        return predict_eps(x_t, output, alpha_bar, source)
    return predict_v(x_t, output, alpha_bar, source)


__all__ = [
    "CONVENTIONS",
    "FINALS",
    "KINDS",
    "PREDICTION_TYPES",
    "SPACINGS",
    "TIMESTEP_TYPES",
    "NoiseSchedule",
    "ScheduleOptions",
    "convert_prediction",
    "predict_eps",
    "predict_v",
    "predict_x0",
    "predict_x0_eps",
]
