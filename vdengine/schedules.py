"""Noise schedules of variance-preserving diffusion, timestep spacing and prediction conversions.

Notation (design/SEEDS.md): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε with ᾱ_t = ∏_{s≤t}(1 − β_s), t = 0..T−1.
v-prediction: v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0.

The numbers follow diffusers so that checkpoints trained there sample identically here:
``NoiseSchedule("linear")`` is diffusers' ``beta_schedule="linear"`` (β linear 1e-4 → 2e-2, DDPM,
Video LDM), ``NoiseSchedule("cosine")`` is ``"squaredcos_cap_v2"`` (Nichol & Dhariwal 2021, β capped
at 0.999), and :meth:`NoiseSchedule.timesteps` is ``DDIMScheduler.set_timesteps`` (steps_offset 0).
ᾱ is computed in float64 (diffusers keeps float32; the two agree to float32 rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

KINDS = ("linear", "cosine")
SPACINGS = ("leading", "trailing")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete VP noise schedule with ``num_train_timesteps`` steps.

    Args:
        kind: "linear" (β = linspace(beta_start, beta_end, T)) or "cosine" (Nichol & Dhariwal:
            ᾱ(t) ∝ cos²((t/T + 0.008)/1.008 · π/2), β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)).
        num_train_timesteps: T, the number of training steps (1000).
        beta_start, beta_end: the linear schedule's end points (ignored by "cosine").

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
        else:

            def f(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64
            )
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))

    def timesteps(self, num_steps: int, spacing: str = "leading") -> Tensor:
        """The descending int64 timesteps of a ``num_steps`` sampling run, as diffusers' DDIM.

        "leading": t_i = i·(T // n) for i = n−1..0 (diffusers' default, steps_offset 0; ends at 0).
        "trailing": round(T − i·T/n) − 1 for i = 0..n−1 (starts at T−1; Lin et al. 2023, Table 2).
        For 62 values of n (e.g. 61, 103) diffusers' float ``np.arange`` yields one extra trailing
        timestep of −1; it is dropped here, so exactly ``num_steps`` timesteps always come back.

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
        if spacing == "leading":
            ts = (np.arange(0, num_steps) * (t // num_steps)).round()[::-1].astype(np.int64)
        elif spacing == "trailing":
            ts = np.round(np.arange(t, 0, -t / num_steps)).astype(np.int64)[:num_steps] - 1
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
    "KINDS",
    "PREDICTION_TYPES",
    "SPACINGS",
    "NoiseSchedule",
    "convert_prediction",
    "predict_eps",
    "predict_v",
    "predict_x0",
    "predict_x0_eps",
]
