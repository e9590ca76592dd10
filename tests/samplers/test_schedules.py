"""NoiseSchedule against diffusers: ᾱ, timesteps, prediction conversions, config and errors."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch

from vdengine.schedules import (
    NoiseSchedule,
    ScheduleOptions,
    convert_prediction,
    predict_eps,
    predict_v,
    predict_x0,
    predict_x0_eps,
)

DIFFUSERS_KIND = {"linear": "linear", "cosine": "squaredcos_cap_v2",
                  "squaredcos_cap_v2": "squaredcos_cap_v2", "scaled_linear": "scaled_linear"}
BETAS = {"scaled_linear": (0.00085, 0.012)}  # Stable Diffusion's, ModelScope's, SVD's


def ddim_scheduler(kind: str = "linear", spacing: str = "leading", steps_offset: int = 0):
    start, end = BETAS.get(kind, (1e-4, 2e-2))
    return diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=start,
        beta_end=end,
        beta_schedule=DIFFUSERS_KIND[kind],
        timestep_spacing=spacing,
        steps_offset=steps_offset,
    )


def schedule(kind: str = "linear") -> NoiseSchedule:
    start, end = BETAS.get(kind, (1e-4, 2e-2))
    return NoiseSchedule(kind, beta_start=start, beta_end=end)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"])
def test_alphas_cumprod_match_diffusers(kind):
    ours = schedule(kind)
    theirs = ddim_scheduler(kind).alphas_cumprod.double()  # float32 in diffusers
    assert ours.alphas_cumprod.dtype == torch.float64
    assert ours.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(ours.alphas_cumprod, theirs, rtol=2e-5, atol=1e-8)
    torch.testing.assert_close(ours.betas.float(), ddim_scheduler(kind).betas, rtol=1e-6, atol=0)
    assert bool((ours.alphas_cumprod[1:] < ours.alphas_cumprod[:-1]).all())
    sigmas = ((1 - ddim_scheduler(kind).alphas_cumprod) / ddim_scheduler(kind).alphas_cumprod) ** 0.5
    # 1 − ᾱ cancels near t = 0: diffusers' float32 σ_0 carries ~1e-4 relative error there.
    torch.testing.assert_close(ours.sigmas, sigmas.double(), rtol=5e-4, atol=0)


def test_cosine_is_an_alias_that_round_trips():
    a, b = NoiseSchedule("cosine"), NoiseSchedule("squaredcos_cap_v2")
    assert torch.equal(a.betas, b.betas)
    assert NoiseSchedule.from_config(a.to_config()).kind == "cosine"  # saved configs keep loading


def test_linear_is_the_ddpm_schedule():
    s = NoiseSchedule()
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(2e-2)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


@pytest.mark.parametrize("spacing,offset", [("leading", 0), ("leading", 1), ("trailing", 0),
                                            ("linspace", 0), ("linspace", 1)])
def test_timesteps_match_diffusers_for_every_num_steps(spacing, offset):
    s, sched = NoiseSchedule(), ddim_scheduler("linear", spacing, offset)
    extra = []
    for n in range(1, 1001):
        if spacing == "leading" and offset >= 1000 // n:
            continue  # diffusers' first timestep would pass T - 1 (tested in test_errors)
        ours = s.timesteps(n, spacing, steps_offset=offset)
        sched.set_timesteps(n)
        theirs = sched.timesteps
        assert ours.dtype == torch.int64 and ours.shape == (n,)
        if len(theirs) == n + 1:  # diffusers' float np.arange overshoots: one spurious -1
            assert spacing == "trailing" and theirs[-1].item() == -1
            extra.append(n)
            theirs = theirs[:n]
        assert torch.equal(ours, theirs), (n, spacing)
        assert bool((ours[1:] <= ours[:-1]).all()) and ours.min() >= 0 and ours.max() <= 999
    if spacing == "trailing":
        assert 61 in extra  # documented in NoiseSchedule.timesteps
    else:
        assert not extra


def test_timesteps_examples():
    s = NoiseSchedule()
    assert s.timesteps(4).tolist() == [750, 500, 250, 0]
    assert s.timesteps(4, steps_offset=1).tolist() == [751, 501, 251, 1]
    assert s.timesteps(4, "trailing").tolist() == [999, 749, 499, 249]
    assert s.timesteps(4, "linspace").tolist() == [999, 666, 333, 0]
    assert s.timesteps(1000).tolist() == list(range(999, -1, -1))


def test_alpha_bar_and_add_noise():
    s = NoiseSchedule()
    ab = s.alpha_bar(torch.tensor([-1, 0, 999]), dtype=torch.float64)
    assert ab[0].item() == 1.0
    assert ab[1:].tolist() == s.alphas_cumprod[[0, 999]].tolist()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    t = torch.tensor([10, 500, 990])
    ours = s.add_noise(x0, eps, t)
    theirs = ddim_scheduler().add_noise(x0, eps, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def _triplet(alpha_bar):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    abr = ab.reshape(-1, 1, 1, 1) if ab.dim() == 1 else ab
    x_t = abr.sqrt() * x0 + (1 - abr).sqrt() * eps
    v = abr.sqrt() * eps - (1 - abr).sqrt() * x0
    return x_t, {"sample": x0, "epsilon": eps, "v_prediction": v}


@pytest.mark.parametrize("alpha_bar", [0.3, torch.tensor([0.999, 0.5, 0.1, 1e-3])])
def test_prediction_conversions(alpha_bar):
    x_t, outs = _triplet(alpha_bar)
    for source, out in outs.items():
        x0, eps = predict_x0_eps(x_t, out, alpha_bar, source)
        torch.testing.assert_close(x0, outs["sample"])
        torch.testing.assert_close(eps, outs["epsilon"])
        torch.testing.assert_close(predict_x0(x_t, out, alpha_bar, source), outs["sample"])
        torch.testing.assert_close(predict_eps(x_t, out, alpha_bar, source), outs["epsilon"])
        torch.testing.assert_close(predict_v(x_t, out, alpha_bar, source), outs["v_prediction"])
        for target, expected in outs.items():
            torch.testing.assert_close(convert_prediction(x_t, out, alpha_bar, source, target), expected)


def test_conversions_keep_float32_and_agree_with_diffusers_v():
    s, sched = NoiseSchedule(), ddim_scheduler()
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    t = torch.tensor([100, 800])
    x_t = s.add_noise(x0, eps, t)
    v = predict_v(x_t, eps, s.alpha_bar(t), "epsilon")
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, sched.get_velocity(x0, eps, t), rtol=1e-5, atol=1e-5)


def test_config_round_trip():
    for s in (NoiseSchedule(), NoiseSchedule("cosine"), NoiseSchedule("linear", 500, 1e-3, 1e-2)):
        cfg = json.loads(json.dumps(s.to_config()))
        back = NoiseSchedule.from_config(cfg)
        assert back == s and hash(back) == hash(s)
        assert torch.equal(back.alphas_cumprod, s.alphas_cumprod)
    assert NoiseSchedule.from_config({"kind": "cosine"}) == NoiseSchedule("cosine")


def test_errors():
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="num_steps"):
        s.timesteps(0)
    with pytest.raises(ValueError, match="num_steps"):
        s.timesteps(1001, "trailing")
    with pytest.raises(TypeError, match="num_steps"):
        s.timesteps(8.0)
    with pytest.raises(ValueError, match="spacing.*'leading', 'trailing', 'linspace'"):
        s.timesteps(8, "uniform")
    with pytest.raises(ValueError, match="steps_offset=250 moves the first of 4 leading"):
        s.timesteps(4, steps_offset=250)
    with pytest.raises(ValueError, match="steps_offset must be >= 0"):
        s.timesteps(4, steps_offset=-1)
    with pytest.raises(TypeError, match="steps_offset must be an int"):
        s.timesteps(4, steps_offset=1.0)
    with pytest.raises(ValueError, match="kind.*'linear', 'scaled_linear', 'squaredcos_cap_v2'"):
        NoiseSchedule("sigmoid")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        NoiseSchedule(num_train_timesteps=0)
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="unknown NoiseSchedule config keys \\['beta_schedule'\\]"):
        NoiseSchedule.from_config({"beta_schedule": "linear"})
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0(torch.zeros(2), torch.zeros(2), 0.5, "x0")
    with pytest.raises(ValueError, match="target"):
        convert_prediction(torch.zeros(2), torch.zeros(2), 0.5, "epsilon", "v")
    with pytest.raises(AttributeError):
        s.kind = "cosine"  # frozen
    assert np.isfinite(NoiseSchedule("cosine").alphas_cumprod.numpy()).all()


# ---- ScheduleOptions --------------------------------------------------------------------------


def test_schedule_options_round_trip_and_defaults():
    default = ScheduleOptions()
    assert default.convention == "vdengine" and default.final == "zero"
    opts = ScheduleOptions(convention="diffusers", steps_offset=1, final="sigma_min",
                           karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                           timestep_type="continuous")
    back = ScheduleOptions.from_config(json.loads(json.dumps(opts.to_config())))
    assert back == opts


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"convention": "k-diffusion"}, ValueError, r"convention must be one of \('vdengine', 'diffusers'\)"),
    ({"final": "one"}, ValueError, r"final must be one of \('zero', 'sigma_min'\)"),
    ({"timestep_type": "float"}, ValueError, r"timestep_type must be one of"),
    ({"solver_order": 3}, ValueError, r"solver_order must be 1 or 2, got 3"),
    ({"solver_order": True}, ValueError, r"solver_order must be 1 or 2"),
    ({"steps_offset": -1}, ValueError, r"steps_offset must be >= 0"),
    ({"lower_order_final": 1}, TypeError, r"lower_order_final must be a bool"),
    ({"sigma_min": 0.0}, ValueError, r"sigma_min must be a positive finite float or None"),
    ({"sigma_max": float("inf")}, ValueError, r"sigma_max must be a positive finite"),
    ({"sigma_min": 5.0, "sigma_max": 1.0}, ValueError, r"sigma_min must be < sigma_max"),
])
def test_schedule_options_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ScheduleOptions(**kwargs)


def test_schedule_options_config_errors():
    with pytest.raises(ValueError, match=r"unknown ScheduleOptions keys \['rho'\]"):
        ScheduleOptions.from_config({"rho": 7.0})
    with pytest.raises(TypeError, match="config must be a dict"):
        ScheduleOptions.from_config([("final", "zero")])
