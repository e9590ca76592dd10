"""Samplers against diffusers' schedulers driving the same tiny model from the same noise.

Each parity test runs the loop a diffusers user writes (set_timesteps; for t: out = model(x, t);
x = scheduler.step(out, t, x).prev_sample) and our sampler, and compares x after every step.
"""

from __future__ import annotations

import inspect
import io
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from _sampler_helpers import B, C, F, TinyDenoiser, noise
from torch import nn

import vdengine.ops
from vdengine.samplers import (
    SAMPLERS,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
)
from vdengine.schedules import NoiseSchedule, ScheduleOptions

# diffusers 0.42's DPMSolverMultistepScheduler.set_timesteps under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

DIFFUSERS_KIND = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
SCHEDULE_ARGS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 2e-2}


@pytest.fixture(scope="module")
def model():
    return TinyDenoiser().eval()


def run_ours(sampler, model, x, schedule, num_steps, **kw) -> list[torch.Tensor]:
    traj: list[dict[str, Any]] = []
    out = sampler(model, x, schedule, num_steps, callback=traj.append, disable=True, **kw)
    assert [d["i"] for d in traj] == list(range(num_steps))
    assert torch.equal(traj[-1]["x"], out)
    return [d["x"] for d in traj]


def run_diffusers(scheduler, model, x, step_kw=None, **extra) -> list[torch.Tensor]:
    traj = []
    for t in scheduler.timesteps:
        with torch.no_grad():
            out = model(x, t.float().expand(x.shape[0]), **extra)
        x = scheduler.step(out, t, x, **(step_kw or {})).prev_sample
        traj.append(x)
    return traj


def assert_trajectories_close(ours, theirs, rtol=1e-4):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = max(b.abs().max().item(), 1.0)
        err = (a - b).abs().max().item()
        assert err <= rtol * scale, f"step {i}: max |diff| {err:.3g} > {rtol} * {scale:.3g}"


def ddim_scheduler(kind, spacing, prediction_type):
    return diffusers.DDIMScheduler(
        **SCHEDULE_ARGS, beta_schedule=DIFFUSERS_KIND[kind], set_alpha_to_one=True,
        clip_sample=False, timestep_spacing=spacing, prediction_type=prediction_type,
        steps_offset=0,
    )


PARITY = [
    ("linear", spacing, ptype, n)
    for spacing in ("leading", "trailing")
    for ptype in ("epsilon", "v_prediction")
    for n in (8, 20)
] + [("cosine", "leading", "epsilon", 8), ("cosine", "trailing", "v_prediction", 20)]


@pytest.mark.parametrize("kind,spacing,prediction_type,num_steps", PARITY)
def test_ddim_matches_diffusers(model, kind, spacing, prediction_type, num_steps):
    sched = ddim_scheduler(kind, spacing, prediction_type)
    sched.set_timesteps(num_steps)
    theirs = run_diffusers(sched, model, noise(), step_kw={"eta": 0.0})
    ours = run_ours(
        sample_ddim, model, noise(), NoiseSchedule(kind), num_steps,
        spacing=spacing, prediction_type=prediction_type,
    )
    assert_trajectories_close(ours, theirs)


@pytest.mark.parametrize("kind,spacing,prediction_type,num_steps", PARITY)
def test_dpmpp_2m_matches_diffusers(model, kind, spacing, prediction_type, num_steps):
    schedule = NoiseSchedule(kind)
    sched = diffusers.DPMSolverMultistepScheduler(
        **SCHEDULE_ARGS, beta_schedule=DIFFUSERS_KIND[kind], algorithm_type="dpmsolver++",
        solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", prediction_type=prediction_type, timestep_spacing=spacing,
        steps_offset=0,
    )
    if spacing == "trailing":
        sched.set_timesteps(num_steps)
        assert torch.equal(sched.timesteps, schedule.timesteps(num_steps, spacing))
    else:
        # diffusers' DPM-Solver "leading" spaces T // (n + 1) apart, unlike its DDIM "leading";
        # ours is DDIM's for every sampler, handed to diffusers as custom timesteps.
        sched.set_timesteps(timesteps=schedule.timesteps(num_steps, spacing).tolist())
    theirs = run_diffusers(sched, model, noise())
    ours = run_ours(
        sample_dpmpp_2m, model, noise(), schedule, num_steps,
        spacing=spacing, prediction_type=prediction_type,
    )
    assert_trajectories_close(ours, theirs)


@pytest.mark.parametrize("spacing,num_steps", [("leading", 8), ("trailing", 20)])
def test_ddim_eta_one_matches_diffusers_with_same_noise(model, spacing, num_steps):
    sched = ddim_scheduler("linear", spacing, "epsilon")
    sched.set_timesteps(num_steps)
    theirs = run_diffusers(
        sched, model, noise(), step_kw={"eta": 1.0, "generator": torch.Generator().manual_seed(7)}
    )
    ours = run_ours(
        sample_ddim, model, noise(), NoiseSchedule(), num_steps, spacing=spacing, eta=1.0,
        generator=torch.Generator().manual_seed(7),
    )
    assert_trajectories_close(ours, theirs)


@pytest.mark.parametrize(
    "spacing,prediction_type,num_steps",
    [("leading", "epsilon", 8), ("trailing", "v_prediction", 20), ("trailing", "epsilon", 7)],
)
def test_ddpm_matches_diffusers_ddpm_scheduler(model, spacing, prediction_type, num_steps):
    """Respaced ancestral DDPM (posterior mean and fixed_small variance) equals DDIM with η = 1."""
    sched = diffusers.DDPMScheduler(
        **SCHEDULE_ARGS, beta_schedule="linear", variance_type="fixed_small", clip_sample=False,
        timestep_spacing=spacing, prediction_type=prediction_type, steps_offset=0,
    )
    sched.set_timesteps(num_steps)
    theirs = run_diffusers(
        sched, model, noise(), step_kw={"generator": torch.Generator().manual_seed(3)}
    )
    ours = run_ours(
        sample_ddpm, model, noise(), NoiseSchedule(), num_steps, spacing=spacing,
        prediction_type=prediction_type, generator=torch.Generator().manual_seed(3),
    )
    assert_trajectories_close(ours, theirs)


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.rows = inner, []

    def forward(self, x, t, **kw):
        self.rows.append(x.shape[0])
        return self.inner(x, t, **kw)


@pytest.mark.parametrize("per_frame", [False, True])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_guidance_is_one_forward_and_equals_combining_by_hand(model, name, per_frame):
    g = torch.Generator().manual_seed(5)
    uncond, cond = torch.zeros(B, C), torch.randn(B, C, generator=g)
    steps = 6
    # One scale, or one per frame (SVD's linspace(min, max, F)) for x [B, F, C, H, W].
    scale = torch.linspace(1.0, 6.0, F) if per_frame else 4.0
    by_frame = scale.reshape(1, F, 1, 1, 1) if per_frame else scale

    def by_hand(x, t):  # two forwards, u + s·(c − u), then an unguided step
        u, c = model(x, t, cond=uncond), model(x, t, cond=cond)
        return u + by_frame * (c - u)

    rec = Recorder(model)
    sampler = get_sampler(name)
    guided = sampler(
        rec, noise(1), NoiseSchedule(), steps, guidance_scale=scale,
        extra_args={"cond": torch.cat([uncond, cond])}, generator=torch.Generator().manual_seed(9),
        disable=True,
    )
    assert rec.rows == [2 * B] * steps
    reference = sampler(
        by_hand, noise(1), NoiseSchedule(), steps, generator=torch.Generator().manual_seed(9),
        disable=True,
    )
    torch.testing.assert_close(guided, reference, rtol=1e-5, atol=1e-5)
    unguided = sampler(
        model, noise(1), NoiseSchedule(), steps, extra_args={"cond": cond},
        generator=torch.Generator().manual_seed(9), disable=True,
    )
    assert not torch.allclose(guided, unguided, atol=1e-3)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_determinism_and_no_global_rng(model, name):
    sampler = get_sampler(name)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sampler(model, noise(), NoiseSchedule(), 5, generator=g, disable=True)

    state = torch.get_rng_state()
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    if name == "ddpm":
        assert not torch.equal(a, c)
        d = sampler(model, noise(), NoiseSchedule(), 5, disable=True)  # fresh entropy generator
        assert not torch.equal(a, d)
    else:
        assert torch.equal(a, c)  # deterministic samplers ignore the generator
    assert torch.equal(torch.get_rng_state(), state), "a sampler touched the global RNG"


def test_samplers_share_one_signature():
    common = None
    for name, fn in SAMPLERS.items():
        params = inspect.signature(fn).parameters
        names = [p for p in params if p != "eta"]
        common = common or names
        assert names == common, name
        assert fn.__doc__ and len(fn.__doc__) > 100
    assert common[:4] == ["model", "x", "schedule", "num_steps"]


def test_ops_are_called_through_the_module_at_call_time(model, monkeypatch):
    calls = []
    real_ddim, real_dpm, real_euler = (vdengine.ops.ddim_step, vdengine.ops.dpmpp_2m_step,
                                       vdengine.ops.euler_step)

    def ddim(*a, **k):
        calls.append(("ddim", a[2].shape, a[2].device))
        return real_ddim(*a, **k)

    def dpm(*a, **k):
        calls.append(("dpm", a[2].shape, k["x0_prev"] is None))
        return real_dpm(*a, **k)

    def euler(*a, **k):
        calls.append(("euler", a[2].shape, a[2].device))
        return real_euler(*a, **k)

    monkeypatch.setattr(vdengine.ops, "ddim_step", ddim)
    monkeypatch.setattr(vdengine.ops, "dpmpp_2m_step", dpm)
    monkeypatch.setattr(vdengine.ops, "euler_step", euler)
    sample_ddim(model, noise(), NoiseSchedule(), 3, disable=True)
    sample_ddpm(model, noise(), NoiseSchedule(), 2, disable=True)
    sample_dpmpp_2m(model, noise(), NoiseSchedule(), 4, disable=True)
    sample_euler(model, noise(), NoiseSchedule(), 3, disable=True)
    assert [c[0] for c in calls] == ["ddim"] * 5 + ["dpm"] * 4 + ["euler"] * 3
    assert all(c[1] == (1,) for c in calls)  # per-step ᾱ / σ as [1] device tensors
    assert [c[2] for c in calls[5:9]] == [True, False, False, True]  # 1st order first and last


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_contents(model, name):
    seen = []
    schedule = NoiseSchedule("cosine")
    x = noise().transpose(3, 4)  # non-contiguous noise is accepted
    out = get_sampler(name)(model, x, schedule, 4, spacing="trailing", callback=seen.append,
                            disable=True, generator=torch.Generator().manual_seed(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    assert [d["t"] for d in seen] == schedule.timesteps(4, "trailing").tolist()
    assert all(set(d) == {"i", "t", "x", "x0"} for d in seen)
    assert all(isinstance(d["t"], int) and d["x0"].shape == x.shape for d in seen)
    assert all(torch.isfinite(d["x0"]).all() for d in seen)
    torch.testing.assert_close(seen[-1]["x"], seen[-1]["x0"])  # the final step lands on x0


def test_callback_timesteps_of_karras_sigmas_are_floats(model):
    seen = []
    opts = ScheduleOptions(karras_sigmas=True, timestep_type="continuous", sigma_min=0.002,
                           sigma_max=700.0)
    sample_euler(model, noise(), NoiseSchedule(), 5, schedule_options=opts, callback=seen.append,
                 disable=True, prediction_type="v_prediction")
    ts = [d["t"] for d in seen]
    assert all(isinstance(t, float) for t in ts)
    assert ts[0] == pytest.approx(0.25 * np.log(700.0), rel=1e-6)
    assert ts[-1] == pytest.approx(0.25 * np.log(0.002), rel=1e-6)


def test_clip_sample_bounds_the_result(model):
    out = sample_ddim(model, noise(), NoiseSchedule(), 4, clip_sample=0.5, disable=True)
    assert out.abs().max().item() <= 0.5 + 1e-6


def test_progress_bar(model, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    sample_ddim(model, noise(), NoiseSchedule(), 3, disable=False)
    assert "0/3" in buf.getvalue()  # shown (leave=False clears it at the end)
    buf.truncate(0)
    sample_ddim(model, noise(), NoiseSchedule(), 3)  # None: StringIO is not a TTY
    sample_ddim(model, noise(), NoiseSchedule(), 3, disable=True)
    assert buf.getvalue().strip("\x00") == ""


def test_errors(model):
    with pytest.raises(ValueError, match="unknown sampler 'heun'.*'ddim', 'ddpm', 'dpmpp_2m', 'euler'"):
        get_sampler("heun")
    schedule = NoiseSchedule()
    for fn in SAMPLERS.values():
        with pytest.raises(ValueError, match="num_steps"):
            fn(model, noise(), schedule, 0)
        with pytest.raises(ValueError, match="num_steps"):
            fn(model, noise(), schedule, 1001)
        with pytest.raises(ValueError, match="spacing"):
            fn(model, noise(), schedule, 4, spacing="uniform")
        with pytest.raises(ValueError, match="prediction_type"):
            fn(model, noise(), schedule, 4, prediction_type="x0")
        with pytest.raises(TypeError, match="schedule"):
            fn(model, noise(), "linear", 4)
        with pytest.raises(TypeError, match="schedule_options must be a ScheduleOptions"):
            fn(model, noise(), schedule, 4, schedule_options={"final": "zero"})
        with pytest.raises(TypeError, match="guidance_scale must be a float, a per-frame tensor"):
            fn(model, noise(), schedule, 4, guidance_scale="7")
        with pytest.raises(ValueError, match="one scale per frame of x"):
            fn(model, noise(), schedule, 4, guidance_scale=torch.ones(F + 1))
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(model, noise(), schedule, 4, eta=-1.0)
    for name in ("ddpm", "dpmpp_2m", "euler"):  # samplers without η refuse it, never ignore it
        with pytest.raises(TypeError, match="eta"):
            get_sampler(name)(model, noise(), schedule, 4, eta=0.0)
    with pytest.raises(ValueError, match=r"schedule_options.karras_sigmas=True is not used by "
                                         r"sampler 'ddim' \(only by euler\)"):
        sample_ddim(model, noise(), schedule, 4,
                    schedule_options=ScheduleOptions(karras_sigmas=True))
    with pytest.raises(ValueError, match=r"schedule_options.convention='diffusers' is not used by "
                                         r"sampler 'ddpm'"):
        sample_ddpm(model, noise(), schedule, 4,
                    schedule_options=ScheduleOptions(convention="diffusers"))
    with pytest.raises(ValueError, match=r"schedule_options.solver_order=1 is not used by"):
        sample_ddim(model, noise(), schedule, 4, schedule_options=ScheduleOptions(solver_order=1))
    with pytest.raises(ValueError, match=r"model returned \(2, 3, 4, 8, 8\).*\(4, 3, 4, 8, 8\)"):
        sample_ddim(lambda x, t: x[: B], noise(), schedule, 4, guidance_scale=3.0)


@pytest.mark.cuda
@pytest.mark.parametrize("per_frame", [None, "cpu", "cuda"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_host_sync_in_the_loop_cuda(model, name, per_frame):
    m = TinyDenoiser().cuda().eval()
    x = noise().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    extra = {"cond": torch.zeros(2 * B, C, device="cuda")}
    # One scale, or per-frame scales given on the CPU (copied once) or on the GPU.
    scale = torch.linspace(1.0, 3.0, F, device=per_frame) if per_frame else 2.0
    get_sampler(name)(m, x, NoiseSchedule(), 2, guidance_scale=scale, extra_args=extra,
                      generator=g, disable=True)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        get_sampler(name)(m, x, NoiseSchedule(), 6, guidance_scale=scale, extra_args=extra,
                          generator=g, disable=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
