"""The timesteps and noise levels of a sampling run, on the host, per sampler family.

Each function reproduces what the matching diffusers scheduler's ``set_timesteps`` computes (and,
for DDIM, which level its ``step`` goes to) under ``ScheduleOptions(convention="diffusers")``, or
vdengine's shared rule under ``convention="vdengine"`` (every sampler walks
``NoiseSchedule.timesteps`` and steps to the next listed timestep). Values are float64 numpy arrays;
``vdengine.samplers._common.make_plan`` moves them to the device once per run.

    ddim_steps   DDIMScheduler            levels are ᾱ
    dpm_steps    DPMSolverMultistepScheduler (dpmsolver++, order 1/2)   levels are ᾱ
    euler_steps  EulerDiscreteScheduler   levels are σ = √((1−ᾱ)/ᾱ)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vdengine.schedules import SPACINGS, NoiseSchedule, ScheduleOptions

KARRAS_RHO = 7.0  # Karras et al. 2022, Eq. 5; diffusers' _convert_to_karras


@dataclass(frozen=True)
class Steps:
    """A sampling run of n steps on the host.

    timesteps: float64 [n], the model's timestep input at each step (integer-valued unless Euler
        uses fractional or continuous timesteps; then ``integer`` is False).
    level: float64 [n], the noise level of each step: ᾱ (DDIM, DPM-Solver) or σ (Euler).
    level_to: float64 [n], the level each step goes to (the last one: the final level).
    orders: the solver order of each step (DPM-Solver: 1 or 2; 1 for the one-step samplers).
    init_noise_sigma: the initial noise's standard deviation the sampler scales unit noise by.
    integer: the timesteps are integers (callbacks get Python ints).
    kind: "alpha_bar" or "sigma", what the levels are.
    """

    timesteps: np.ndarray
    level: np.ndarray
    level_to: np.ndarray
    orders: tuple[int, ...]
    init_noise_sigma: float = 1.0
    integer: bool = True
    kind: str = "alpha_bar"

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_steps(schedule: NoiseSchedule, n: int, spacing: str, options: ScheduleOptions) -> Steps:
    """DDIM (and DDPM) steps: ᾱ of each timestep, and the ᾱ each step goes to.

    vdengine: the next listed timestep, then the final level. diffusers (DDIMScheduler.step):
    t − T//n, or the final level (``final_alpha_cumprod``) where that is negative.
    """
    ts = schedule.timesteps(n, spacing, options.steps_offset).numpy()
    ab = schedule.alphas_cumprod.numpy()
    final = _final_alpha_bar(ab, options)
    level = ab[ts]
    if options.convention == "vdengine":
        level_to = np.append(level[1:], final)
    else:
        prev = ts - schedule.num_train_timesteps // n
        level_to = np.where(prev >= 0, ab[np.clip(prev, 0, None)], final)
    return Steps(ts.astype(np.float64), level, level_to, (1,) * n)


def dpm_timesteps(schedule: NoiseSchedule, n: int, spacing: str, steps_offset: int) -> np.ndarray:
    """DPMSolverMultistepScheduler.set_timesteps (lambda_min_clipped = −inf): int64 [n].

    "linspace": round(linspace(0, T−1, n+1)) descending without its last point (0); "leading":
    multiples of T // (n+1) descending without 0, plus steps_offset; "trailing": as DDIM. The
    spurious extra trailing timestep of float ``np.arange`` is dropped, as in NoiseSchedule.
    """
    t = schedule.num_train_timesteps
    schedule.timesteps(n, "trailing")  # validates n
    if spacing == "linspace":
        ts = np.linspace(0, t - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        if t // (n + 1) == 0:
            raise ValueError(f"num_steps={n} leaves DPM-Solver's leading spacing T//(n+1) = 0")
        ts = (np.arange(0, n + 1) * (t // (n + 1))).round()[::-1][:-1].astype(np.int64)
        ts = ts + steps_offset
        if ts[0] > t - 1:
            raise ValueError(f"steps_offset={steps_offset} moves the first timestep past {t - 1}")
    elif spacing == "trailing":
        ts = schedule.timesteps(n, "trailing").numpy()
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return ts.copy()


def dpm_steps(schedule: NoiseSchedule, n: int, spacing: str, options: ScheduleOptions) -> Steps:
    """DPM-Solver++ steps: ᾱ along the timesteps then the final level, and each step's order.

    Order 1 on the first step; on the last step when euler_at_final, or lower_order_final with
    fewer than 15 steps, or the final level is zero (as DPMSolverMultistepScheduler.step); order
    ``solver_order`` elsewhere.
    """
    if options.convention == "vdengine":
        ts = schedule.timesteps(n, spacing, options.steps_offset).numpy()
    else:
        ts = dpm_timesteps(schedule, n, spacing, options.steps_offset)
    ab = schedule.alphas_cumprod.numpy()
    level = ab[ts]
    level_to = np.append(level[1:], _final_alpha_bar(ab, options))
    first_order_final = options.euler_at_final or (options.lower_order_final and n < 15) or (
        options.final == "zero")
    orders = tuple(
        1 if options.solver_order == 1 or i == 0 or (i == n - 1 and first_order_final) else 2
        for i in range(n)
    )
    return Steps(ts.astype(np.float64), level, level_to, orders)


def euler_timesteps(schedule: NoiseSchedule, n: int, spacing: str, steps_offset: int
                    ) -> np.ndarray:
    """EulerDiscreteScheduler.set_timesteps' timesteps, float64 [n] (float32-rounded values):
    "linspace" is linspace(0, T−1, n) descending, not rounded; "leading" and "trailing" as DDIM."""
    if spacing == "linspace":
        schedule.timesteps(n, "trailing")  # validates n
        t = schedule.num_train_timesteps
        return np.linspace(0, t - 1, n, dtype=np.float32)[::-1].astype(np.float64)
    return schedule.timesteps(n, spacing, steps_offset).numpy().astype(np.float64)


def euler_steps(schedule: NoiseSchedule, n: int, spacing: str, options: ScheduleOptions) -> Steps:
    """Euler steps: σ at each step then the final σ (0 or σ_0), and the model's timesteps.

    σ is the schedule's σ linearly interpolated at the (possibly fractional) timesteps, or the
    Karras ramp between sigma_min and sigma_max whose timesteps are found back by interpolating
    log σ over the training σ (diffusers' _sigma_to_t); continuous timesteps are 0.25·log σ.
    The initial noise's σ is max σ for "linspace"/"trailing" and √(max σ² + 1) for "leading",
    as diffusers' init_noise_sigma.
    """
    if options.convention == "vdengine":
        ts = schedule.timesteps(n, spacing, options.steps_offset).numpy().astype(np.float64)
    else:
        ts = euler_timesteps(schedule, n, spacing, options.steps_offset)
    train_sigmas = schedule.sigmas.numpy()
    sigmas = np.interp(ts, np.arange(len(train_sigmas)), train_sigmas)
    integer = bool(np.all(ts == np.round(ts)))
    if options.karras_sigmas:
        lo = options.sigma_min if options.sigma_min is not None else sigmas[-1]
        hi = options.sigma_max if options.sigma_max is not None else sigmas[0]
        ramp = np.linspace(0, 1, n)
        sigmas = (hi ** (1 / KARRAS_RHO) + ramp * (lo ** (1 / KARRAS_RHO) - hi ** (1 / KARRAS_RHO))
                  ) ** KARRAS_RHO
        ts = sigma_to_t(sigmas, np.log(train_sigmas))
        integer = False
    if options.timestep_type == "continuous":
        ts = 0.25 * np.log(sigmas)
        integer = False
    final = 0.0 if options.final == "zero" else float(train_sigmas[0])
    level_to = np.append(sigmas[1:], final)
    top = float(max(sigmas.max(), final))
    init = top if spacing in ("linspace", "trailing") else float(np.sqrt(top**2 + 1))
    return Steps(ts, sigmas, level_to, (1,) * n, init_noise_sigma=init, integer=integer,
                 kind="sigma")


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional training timestep of each σ: log σ interpolated linearly between the two
    neighbouring training log σ (clamped to [0, T−1]), as diffusers' _sigma_to_t."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    low = np.clip(np.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0, len(log_sigmas) - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _final_alpha_bar(alphas_cumprod: np.ndarray, options: ScheduleOptions) -> float:
    return 1.0 if options.final == "zero" else float(alphas_cumprod[0])


STEPS = {"ddim": ddim_steps, "ddpm": ddim_steps, "dpmpp_2m": dpm_steps, "euler": euler_steps}

__all__ = ["STEPS", "Steps", "ddim_steps", "dpm_steps", "dpm_timesteps", "euler_steps",
           "euler_timesteps", "sigma_to_t"]
