"""Host-side step plans (vdengine.samplers.plans) against diffusers' set_timesteps, many n."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

from vdengine.samplers.plans import ddim_steps, dpm_steps, euler_steps, sigma_to_t
from vdengine.schedules import NoiseSchedule, ScheduleOptions

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
NS = [1, 2, 3, 7, 10, 14, 15, 16, 25, 30, 50, 99, 250, 999]
DIFFUSERS = ScheduleOptions(convention="diffusers")


def ours_schedule(cfg: dict) -> NoiseSchedule:
    return NoiseSchedule(cfg.get("beta_schedule", "linear"), 1000, cfg.get("beta_start", 1e-4),
                         cfg.get("beta_end", 2e-2))


def spurious(spacing: str, n: int) -> bool:
    """diffusers' float np.arange yields n + 1 trailing timesteps for these n (dropped here)."""
    return spacing == "trailing" and len(np.arange(1000, 0, -1000 / n)) != n


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("trailing", 0), ("linspace", 1)])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_ddim_steps_match_ddim_scheduler(spacing, offset, final):
    sched = diffusers.DDIMScheduler(**SD, timestep_spacing=spacing, steps_offset=offset,
                                    set_alpha_to_one=final == "zero")
    s = ours_schedule(SD)
    ab = sched.alphas_cumprod.double()
    opts = ScheduleOptions(convention="diffusers", steps_offset=offset, final=final)
    for n in NS:
        if spurious(spacing, n) or (spacing == "leading" and offset >= 1000 // n):
            continue
        sched.set_timesteps(n)
        steps = ddim_steps(s, n, spacing, opts)
        assert steps.timesteps.tolist() == sched.timesteps.tolist(), n
        prev = sched.timesteps - 1000 // n  # DDIMScheduler.step's previous timestep
        want_to = torch.where(prev >= 0, ab[prev.clamp_min(0)], sched.final_alpha_cumprod.double())
        np.testing.assert_allclose(steps.level, ab[sched.timesteps].numpy(), rtol=2e-5)
        np.testing.assert_allclose(steps.level_to, want_to.numpy(), rtol=2e-5)
        assert steps.orders == (1,) * n and steps.init_noise_sigma == 1.0


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("trailing", 0), ("linspace", 1)])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_dpm_steps_match_dpm_solver(spacing, offset, final):
    sched = diffusers.DPMSolverMultistepScheduler(**SD, timestep_spacing=spacing,
                                                  steps_offset=offset, final_sigmas_type=final)
    s = ours_schedule(SD)
    opts = ScheduleOptions(convention="diffusers", steps_offset=offset, final=final)
    for n in NS:
        if spurious(spacing, n) or (spacing == "leading" and n * (1000 // (n + 1)) + offset > 999):
            continue
        sched.set_timesteps(n)
        steps = dpm_steps(s, n, spacing, opts)
        assert steps.timesteps.tolist() == sched.timesteps.tolist(), n
        sig = sched.sigmas.double()  # [n + 1] float32 σ, the last one the final level
        ab = 1 / (sig**2 + 1)
        np.testing.assert_allclose(steps.level, ab[:-1].numpy(), rtol=2e-5)
        np.testing.assert_allclose(steps.level_to, ab[1:].numpy(), rtol=2e-5)
        assert steps.orders[0] == 1 and set(steps.orders[1:-1]) <= {2}


def test_dpm_orders():
    s = NoiseSchedule()
    for n, opts, last in [
        (20, ScheduleOptions(), 1),  # final zero: first order
        (20, ScheduleOptions(final="sigma_min"), 2),  # n >= 15: second order onto σ_0
        (10, ScheduleOptions(final="sigma_min"), 1),  # lower_order_final with n < 15
        (10, ScheduleOptions(final="sigma_min", lower_order_final=False), 2),
        (20, ScheduleOptions(final="sigma_min", euler_at_final=True), 1),
    ]:
        orders = dpm_steps(s, n, "leading", opts).orders
        assert orders == (1,) + (2,) * (n - 2) + (last,), (n, opts)
    assert dpm_steps(s, 6, "leading", ScheduleOptions(solver_order=1)).orders == (1,) * 6
    assert dpm_steps(s, 1, "leading", ScheduleOptions()).orders == (1,)


EULER_CASES = [
    ({}, "linspace", 0, DIFFUSERS),
    ({**SD, "prediction_type": "v_prediction"}, "leading", 1, ScheduleOptions(
        convention="diffusers", steps_offset=1)),
    ({}, "trailing", 0, ScheduleOptions(convention="diffusers", final="sigma_min")),
    ({**SD, "use_karras_sigmas": True}, "linspace", 0, ScheduleOptions(
        convention="diffusers", karras_sigmas=True)),
    ({**SD, "use_karras_sigmas": True, "sigma_min": 0.002, "sigma_max": 700.0,
      "prediction_type": "v_prediction", "timestep_type": "continuous"}, "leading", 1,
     ScheduleOptions(convention="diffusers", steps_offset=1, karras_sigmas=True, sigma_min=0.002,
                     sigma_max=700.0, timestep_type="continuous")),  # SVD
]


@pytest.mark.parametrize("cfg,spacing,offset,opts", EULER_CASES)
def test_euler_steps_match_euler_discrete(cfg, spacing, offset, opts):
    sched = diffusers.EulerDiscreteScheduler(
        **cfg, timestep_spacing=spacing, steps_offset=offset,
        final_sigmas_type=opts.final)
    s = ours_schedule(cfg)
    for n in NS:
        if spurious(spacing, n) or (spacing == "leading" and offset >= 1000 // n):
            continue
        sched.set_timesteps(n)
        steps = euler_steps(s, n, spacing, opts)
        np.testing.assert_allclose(steps.timesteps, sched.timesteps.double().numpy(),
                                   rtol=2e-5, atol=2e-4, err_msg=str(n))
        sig = sched.sigmas.double().numpy()
        np.testing.assert_allclose(steps.level, sig[:-1], rtol=1e-4, err_msg=str(n))
        np.testing.assert_allclose(steps.level_to, sig[1:], rtol=1e-4, err_msg=str(n))
        assert steps.init_noise_sigma == pytest.approx(float(sched.init_noise_sigma), rel=1e-4)
        assert steps.kind == "sigma"


def test_vdengine_convention_differs_where_documented():
    s = NoiseSchedule()
    vd, df = ScheduleOptions(), DIFFUSERS
    # DDIM "trailing" with n not dividing T: diffusers steps to t − T//n, not the next timestep.
    a, b = ddim_steps(s, 30, "trailing", vd), ddim_steps(s, 30, "trailing", df)
    assert np.array_equal(a.level, b.level) and not np.array_equal(a.level_to, b.level_to)
    # DPM-Solver's own "leading" and "linspace" timesteps.
    for spacing in ("leading", "linspace"):
        assert not np.array_equal(dpm_steps(s, 10, spacing, vd).timesteps,
                                  dpm_steps(s, 10, spacing, df).timesteps)
    # Euler's "linspace" timesteps are not rounded under diffusers' rules.
    assert euler_steps(s, 25, "linspace", vd).integer
    assert not euler_steps(s, 25, "linspace", df).integer


def test_sigma_to_t_inverts_the_training_sigmas():
    s = NoiseSchedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    sig = s.sigmas.numpy()
    t = np.array([0.0, 1.0, 17.25, 500.5, 998.0, 999.0])
    np.testing.assert_allclose(sigma_to_t(np.exp(np.interp(t, np.arange(1000), np.log(sig))),
                                          np.log(sig)), t, atol=1e-9)
    assert sigma_to_t(np.array([1e-6, 1e6]), np.log(sig)).tolist() == [0.0, 999.0]  # clamped
