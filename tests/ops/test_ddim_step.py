"""vdengine.ops.ddim_step (fused kernel) against vdengine.ops.reference.ddim_step and diffusers.

Every output is pre-filled with NaN (poison_outputs) so an element the kernel skips cannot match.
Ground truth is the reference in float64 on the same inputs, with the same float32 coefficients
the kernel reads; diffusers' DDIMScheduler.step is the external check of the math.
"""

from __future__ import annotations

import _step_helpers as H
import diffusers
import numpy as np
import pytest
import torch
from _dtype_helpers import CPU_DTYPES
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")


def schedule(n, gen, *, final=False):
    """ᾱ_t in [0.05, 0.9] and ᾱ_prev in (ᾱ_t, 1) per row (1 exactly with final)."""
    ab_t = 0.05 + 0.85 * torch.rand(n, generator=gen)
    ab_prev = ab_t + (1 - ab_t) * (0.1 + 0.8 * torch.rand(n, generator=gen))
    if final:
        ab_prev = torch.ones(n)
    return ab_t.float(), ab_prev.float()


def check(shape, gen, *, prediction="epsilon", guidance=None, eta=0.0, clip=None, kind="float",
          return_x0=True, final=False, dtype=torch.float32, device="cpu"):
    n = shape[0]
    sample, model_output = H.random_sample_and_model_output(shape, gen, guidance is not None)
    noise = torch.randn(shape, generator=gen) if eta > 0 else None
    sample, model_output = sample.to(device, dtype), model_output.to(device, dtype)
    noise = None if noise is None else noise.to(device, dtype)
    ab_t, ab_prev = schedule(n, gen, final=final)
    g_op, g_ref = H.guidance_arg(guidance, shape, gen, device)
    out = ops.ddim_step(sample, model_output, H.coefficient(ab_t, kind, device),
                        H.coefficient(ab_prev, kind, device), eta=eta, noise=noise,
                        prediction_type=prediction, guidance_scale=g_op, clip_sample=clip,
                        return_x0=return_x0)
    x_prev, x0 = out if return_x0 else (out, None)
    H.assert_fresh_output(x_prev, sample)
    t, c = H.reference_casts(sample)
    ref_prev, ref_x0 = R.ddim_step(
        t(sample), t(model_output), c(H.used(ab_t, kind)), c(H.used(ab_prev, kind)), eta,
        None if noise is None else t(noise), prediction, g_ref, clip, return_x0=True,
    )
    H.assert_matches(x_prev, ref_prev, dtype)
    if return_x0:
        assert x0.shape == sample.shape and torch.isfinite(x0).all()
        H.assert_matches(x0, ref_x0, dtype)
    return out


# ---- parity on the CPU ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", H.SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance", [None, 4.5])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("kind", H.COEF_KINDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_matches_reference(shape, prediction, guidance, eta, kind, dtype, gen):
    check(shape, gen, prediction=prediction, guidance=guidance, eta=eta, kind=kind,
          return_x0=kind != "tensor1", dtype=dtype)


@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("clip", [0.5, 1.0])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_clip_sample(prediction, clip, dtype, gen):
    check((4, 3, 8, 8), gen, prediction=prediction, clip=clip, eta=1.0, guidance=2.0, dtype=dtype)


@pytest.mark.parametrize("kind", ["float", "per_row"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_final_step_to_alpha_one(kind, eta, gen):
    """ᾱ_prev = 1 (diffusers' set_alpha_to_one end): x_prev = x0, σ = 0."""
    out = check((3, 4, 5), gen, kind=kind, eta=eta, final=True)
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["per_row_f64_col", "per_row_cpu"])
def test_coefficient_layouts(kind, gen):
    check((4, 2, 3), gen, kind=kind, eta=1.0)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_video_shape(dtype, gen):
    """2 videos × 4 latent channels × 16 frames × 32×32 (as [N, C, F, H, W]), CFG, per-row ᾱ."""
    check((2, 4, 16, 32, 32), gen, prediction="v_prediction", guidance=7.5, eta=1.0,
          kind="per_row", dtype=dtype)


def test_bfloat16_outputs_round_to_nearest_even(gen):
    """The bfloat16 store rounds as torch's .to(bfloat16), bit for bit: to nearest, ties to even,
    overflow to ±inf, subnormals kept (no flush); NaN is stored as the quiet NaN 0x7FC0. With
    sample prediction and ᾱ_prev = 1 the step is x_prev = u + g·(c − u), a float32 value in
    general, so the output is its rounding."""
    n = 1 << 18  # ~4 exact ties (probability 2^-16 each) besides the constructed one
    u = torch.randn(n, generator=gen).bfloat16()
    c = torch.randn(n, generator=gen).bfloat16()
    big = torch.finfo(torch.bfloat16).max
    c[:7] = torch.tensor([0.0, 1.0, big, 1e-39, 1.0, float("nan"), -big]).bfloat16()
    u[:7] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0 + 2**-7, 0.0, 0.0]).bfloat16()
    g = 1.0 + 2**-8  # 1·g = 1 + 2^-8: the tie between 1 and 1 + 2^-7 goes to the even 1
    out = ops.ddim_step(torch.zeros(1, n, dtype=torch.bfloat16), torch.stack([u, c]), 0.5, 1.0,
                        prediction_type="sample", guidance_scale=g)[0]
    expected = (u.float() + g * (c.float() - u.float())).bfloat16()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(out), nan)
    assert torch.equal(out[~nan].view(torch.int16), expected[~nan].view(torch.int16))
    assert out[1] == 1.0 and out[2] == float("inf") and out[6] == -float("inf")
    assert 0 < out[3] < torch.finfo(torch.bfloat16).tiny and out[4] == 1.0
    assert out[5].view(torch.int16) == 0x7FC0


# ---- per-frame guidance ([N, F, ...] samples, one scale per frame) ----------------------------------


@pytest.mark.parametrize("shape", H.FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("kind", ["float", "per_row"])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_per_frame_guidance_matches_reference(shape, prediction, kind, dtype, gen):
    check(shape, gen, prediction=prediction, guidance="frames", kind=kind, eta=1.0, dtype=dtype)


def test_per_frame_guidance_is_scalar_guidance_frame_by_frame(gen):
    """Frame f of a per-frame-guided step is, bit for bit, the step of frame f alone with scale f
    (and equal per-frame scales are the scalar scale)."""
    sample, out = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(4, 5, 3, 4, generator=gen)
    scales = torch.tensor([0.0, 1.0, 2.0, 7.5, 12.0])

    def step(x, o, g):
        return ops.ddim_step(x, o, 0.3, 0.6, eta=1.0, noise=x, guidance_scale=g, return_x0=True)

    for got, want in zip(step(sample, out, torch.full((5,), 3.5)), step(sample, out, 3.5)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    guided = step(sample, out, scales)
    for f in range(5):
        alone = step(sample[:, f].contiguous(), out[:, f].contiguous(), float(scales[f]))
        for got, want in zip(guided, alone):
            torch.testing.assert_close(got[:, f], want, atol=0, rtol=0)


@given(
    n=st.integers(1, 5), d=st.integers(1, 70), prediction=st.sampled_from(H.PREDICTIONS),
    guidance=st.sampled_from([None, 0.0, 1.0, 6.0]), eta=st.sampled_from([0.0, 0.3, 1.0]),
    clip=st.sampled_from([None, 1.0]), kind=st.sampled_from(H.COEF_KINDS),
    dtype=st.sampled_from(CPU_DTYPES), seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(n, d, prediction, guidance, eta, clip, kind, dtype, seed):
    check((n, d), torch.Generator().manual_seed(seed), prediction=prediction, guidance=guidance,
          eta=eta, clip=clip, kind=kind, dtype=dtype)


def test_noise_ignored_when_eta_is_zero(gen):
    """Like the reference, eta = 0 never reads noise: NaN noise leaves the result finite."""
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    nan_noise = torch.full((2, 8), float("nan"))
    got = ops.ddim_step(sample, out, 0.3, 0.6, eta=0.0, noise=nan_noise)
    torch.testing.assert_close(got, ops.ddim_step(sample, out, 0.3, 0.6), atol=0, rtol=0)
    torch.testing.assert_close(got, R.ddim_step(sample, out, 0.3, 0.6), atol=1e-5, rtol=1e-5)


def test_numpy_coefficients(gen):
    """ᾱ as numpy floats (a schedule held as a numpy array) behave as Python floats."""
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    got = ops.ddim_step(sample, out, np.float32(0.3), np.float64(0.6), eta=np.float32(0.0))
    torch.testing.assert_close(got, ops.ddim_step(sample, out, 0.3, 0.6), atol=1e-6, rtol=1e-6)


def test_return_x0_default_is_tensor(gen):
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    got = ops.ddim_step(sample, out, 0.3, 0.6)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 8)


def test_inputs_untouched(gen):
    sample, out, noise = (torch.randn(2, 3, 4, generator=gen) for _ in range(3))
    guided = torch.cat([out, out * 2])
    ab = torch.tensor([0.3, 0.4])
    before = [t.clone() for t in (sample, guided, noise, ab)]
    ops.ddim_step(sample, guided, ab, 0.7, eta=1.0, noise=noise, guidance_scale=3.0)
    for t, b in zip((sample, guided, noise, ab), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0), (2, 0, 5)])
def test_empty(shape):
    sample = torch.empty(shape)
    x_prev, x0 = ops.ddim_step(sample, sample, 0.5, 0.7, return_x0=True)
    assert x_prev.shape == shape and x0.shape == shape
    n = shape[0]
    assert ops.ddim_step(sample, torch.empty((2 * n, *shape[1:])), torch.full((max(n, 1),), 0.5),
                         0.7, guidance_scale=2.0).shape == shape


# ---- diffusers ------------------------------------------------------------------------------------


def _diffusers_scheduler(prediction_type: str, steps: int):
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        set_alpha_to_one=True, clip_sample=False, prediction_type=prediction_type,
    )
    sched.set_timesteps(steps)
    return sched


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("guidance", [None, 7.5])
@pytest.mark.parametrize("step_index", [0, 4, 9])  # first, middle, last (to final_alpha_cumprod)
@pytest.mark.parametrize("coef", ["float", "tensor"])
def test_matches_diffusers(prediction_type, eta, guidance, step_index, coef, gen):
    steps = 10
    sched = _diffusers_scheduler(prediction_type, steps)
    t = int(sched.timesteps[step_index])
    prev_t = t - sched.config.num_train_timesteps // steps
    ab_t = sched.alphas_cumprod[t]
    ab_prev = sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.final_alpha_cumprod
    if step_index == steps - 1:
        assert prev_t < 0 and float(ab_prev) == 1.0
    n = 2
    sample = torch.randn(n, 4, 3, 8, 8, generator=gen)
    uncond, cond = torch.randn(n, 4, 3, 8, 8, generator=gen), torch.randn(n, 4, 3, 8, 8, generator=gen)
    noise = torch.randn(n, 4, 3, 8, 8, generator=gen)
    if guidance is None:
        model_output, combined = cond, cond
    else:
        model_output, combined = torch.cat([uncond, cond]), uncond + guidance * (cond - uncond)
    expected = sched.step(combined, t, sample, eta=eta,
                          variance_noise=noise if eta > 0 else None)
    if coef == "float":
        a_t, a_prev = float(ab_t), float(ab_prev)
    else:  # 0-d tensors straight from the scheduler, and a per-row [N] tensor
        a_t, a_prev = ab_t, torch.full((n,), float(ab_prev))
    x_prev, x0 = ops.ddim_step(sample, model_output, a_t, a_prev, eta=eta,
                               noise=noise if eta > 0 else None, prediction_type=prediction_type,
                               guidance_scale=guidance, return_x0=True)
    torch.testing.assert_close(x_prev, expected.prev_sample, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0, expected.pred_original_sample, atol=1e-3, rtol=1e-4)


def test_matches_diffusers_full_loop(gen):
    """A whole 8-step eta = 1 DDIM loop against diffusers (errors must not accumulate)."""
    sched = _diffusers_scheduler("epsilon", 8)
    x_ours = x_ref = torch.randn(1, 4, 2, 6, 6, generator=gen)
    for t in sched.timesteps.tolist():
        prev_t = t - 1000 // 8
        ab_t = float(sched.alphas_cumprod[t])
        ab_prev = float(sched.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
        r = torch.randn(x_ref.shape, generator=gen)
        noise = torch.randn(x_ref.shape, generator=gen)
        x_ref = sched.step(0.5 * x_ref + r, t, x_ref, eta=1.0, variance_noise=noise).prev_sample
        x_ours = ops.ddim_step(x_ours, 0.5 * x_ours + r, ab_t, ab_prev, eta=1.0, noise=noise)
        torch.testing.assert_close(x_ours, x_ref, atol=1e-4, rtol=1e-4)


# ---- autograd, custom op, compile ------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    with pytest.raises(RuntimeError, match=r"model_output requires grad.*reference\.ddim_step"):
        ops.ddim_step(sample, out.requires_grad_(True), 0.3, 0.6)
    with pytest.raises(RuntimeError, match=r"alpha_bar_t requires grad"):
        ops.ddim_step(sample, out.detach(), torch.tensor(0.3, requires_grad=True), 0.6)
    with torch.no_grad():
        ops.ddim_step(sample, out, 0.3, 0.6)


@pytest.mark.parametrize("guidance,eta,return_x0", [(None, 0.0, False), (3.0, 1.0, True),
                                                    ("frames", 1.0, True)])
def test_opcheck(guidance, eta, return_x0, gen):
    n = 3
    sample = torch.randn(n, 4, 5, generator=gen)
    out = torch.randn(2 * n if guidance else n, 4, 5, generator=gen)
    noise = torch.randn(n, 4, 5, generator=gen) if eta else None
    ab_t, ab_prev = schedule(n, gen)
    scale, frames = (None, 5 * torch.rand(4, generator=gen)) if guidance == "frames" else (
        guidance, None)
    torch.library.opcheck(
        torch.ops.vdengine.ddim_step.default,
        (sample, out, ab_t, ab_prev[:1].clone(), eta, noise, "v_prediction", scale, frames, 1.0,
         return_x0),
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit internals H.used by inductor
def test_torch_compile_fullgraph_all_ops(gen):
    """The smoke test of torch.compile (default inductor backend, fullgraph) over all five ops.

    The graph holds only the custom ops and views, so inductor generates no C++ kernels and the
    compile stays a few seconds on a small CPU. Results must equal eager bit for bit.
    """
    torch._dynamo.reset()

    def f(x, scale, shift, qkv, sample, out, ab):
        y = ops.posgn(x, scale, shift, 2, silu=True)
        q, k, v = qkv.chunk(3, dim=-1)
        a = ops.temporal_attention(q, k, v, 2, 1)
        z = ops.ddim_step(sample, out, ab[0], ab[1], guidance_scale=2.0)
        x_next, x0 = ops.dpmpp_2m_step(z, out, ab[1], ab[2], guidance_scale=2.0)
        x_e = ops.euler_step(x_next, out, ab[2], ab[0], "v_prediction", guidance_scale=2.0)
        return y, a, x_next, x0, x_e

    args = (torch.randn(4, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen),
            torch.randn(2, 4, 3, 3, generator=gen), torch.randn(4, 3, 48, generator=gen),
            torch.randn(2, 5, generator=gen), torch.randn(4, 5, generator=gen),
            torch.tensor([0.3, 0.5, 0.8]))
    compiled = torch.compile(f, fullgraph=True)
    for got, want in zip(compiled(*args), f(*args)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_torch_export(gen):
    class Step(torch.nn.Module):
        def forward(self, sample, out, noise, ab):
            return ops.ddim_step(sample, out, ab[0], ab[1], eta=1.0, noise=noise,
                                 guidance_scale=3.0, return_x0=True)

    args = (torch.randn(2, 5, generator=gen), torch.randn(4, 5, generator=gen),
            torch.randn(2, 5, generator=gen), torch.tensor([0.3, 0.6]))
    H.check_export(Step(), args, torch.ops.vdengine.ddim_step.default)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    g = torch.Generator().manual_seed(0)
    kw = {"sample": torch.randn(3, 4, 5, generator=g), "model_output": torch.randn(3, 4, 5, generator=g),
              "alpha_bar_t": 0.4, "alpha_bar_prev": 0.6, "eta": 0.0, "noise": None, "prediction_type": "epsilon",
              "guidance_scale": None, "clip_sample": None, "return_x0": False}
    kw.update(over)
    return kw


NOISE = torch.randn(3, 4, 5)
BAD = [
    ({"guidance_scale": torch.ones(3), "model_output": torch.randn(6, 4, 5)}, ValueError,
     (r"guidance_scale as a tensor must hold one scale per frame, shape \[F\] for sample "
      r"\[N, F, ...\]; got shape \[3\] for sample \[3, 4, 5\]")),
    ({"guidance_scale": torch.ones(1, 4), "model_output": torch.randn(6, 4, 5)}, ValueError,
     r"guidance_scale as a tensor must hold one scale per frame"),
    ({"guidance_scale": torch.ones(4, dtype=torch.int64), "model_output": torch.randn(6, 4, 5)},
     TypeError, r"guidance_scale as a tensor must be floating point"),
    ({"guidance_scale": torch.ones(4, device="meta"), "model_output": torch.randn(6, 4, 5)},
     ValueError, r"guidance_scale must be on the device of sample \(cpu\) or on the CPU"),
    ({"guidance_scale": torch.ones(4), "model_output": torch.randn(3, 4, 5)}, ValueError,
     r"with guidance_scale, model_output must have 2N rows"),
    ({"sample": None}, TypeError, r"sample must be a torch\.Tensor"),
    ({"model_output": 1.0}, TypeError, r"model_output must be a torch\.Tensor"),
    ({"noise": 1.0}, TypeError, r"noise must be a torch\.Tensor or None"),
    ({"sample": torch.tensor(1.0)}, ValueError, r"sample must have at least one dimension"),
    ({"model_output": torch.randn(3, 4, 6)}, ValueError,
     r"model_output must have the shape of sample \[3, 4, 5\]"),
    ({"model_output": torch.randn(3, 20)}, ValueError, r"model_output must have the shape of sample"),
    ({"model_output": torch.randn(6, 4, 5)}, ValueError,
     r"model_output must have the shape of sample .* needs guidance_scale"),
    ({"guidance_scale": 2.0}, ValueError,
     r"with guidance_scale, model_output must have 2N rows \[uncond; cond\]: shape \[6, 4, 5\]"),
    ({"guidance_scale": 2.0, "model_output": torch.randn(6, 4, 4)}, ValueError,
     r"with guidance_scale, model_output must have 2N rows"),
    ({"guidance_scale": "2"}, TypeError, r"guidance_scale must be a float, a 1-D tensor of per-frame scales or None"),
    ({"guidance_scale": float("nan")}, ValueError, r"guidance_scale must be finite"),
    ({"noise": torch.randn(3, 4)}, ValueError, r"noise must have shape \[3, 4, 5\]"),
    ({"eta": -0.5}, ValueError, r"eta must be >= 0"),
    ({"eta": float("nan")}, ValueError, r"eta must be finite"),
    ({"eta": None}, TypeError, r"eta must be a float"),
    ({"eta": 1.0}, ValueError, r"noise .* is required when eta > 0"),
    ({"prediction_type": "eps"}, ValueError, r"prediction_type must be one of \('epsilon', 'v_prediction', 'sample'\)"),
    ({"prediction_type": None}, ValueError, r"prediction_type must be one of"),
    ({"clip_sample": 0.0}, ValueError, r"clip_sample must be positive"),
    ({"clip_sample": -1.0}, ValueError, r"clip_sample must be positive"),
    ({"clip_sample": "1"}, TypeError, r"clip_sample must be a float or None"),
    ({"return_x0": 1}, TypeError, r"return_x0 must be a bool"),
    ({"alpha_bar_t": 0.0}, ValueError, r"alpha_bar_t must lie in \(0, 1\)"),
    ({"alpha_bar_t": 1.0}, ValueError, r"alpha_bar_t must lie in \(0, 1\)"),
    ({"alpha_bar_t": -0.1}, ValueError, r"alpha_bar_t must lie in"),
    ({"alpha_bar_t": float("nan")}, ValueError, r"alpha_bar_t must be finite"),
    ({"alpha_bar_prev": 1.5}, ValueError, r"alpha_bar_prev must lie in \(0, 1\]"),
    ({"alpha_bar_prev": 0.0}, ValueError, r"alpha_bar_prev must lie in \(0, 1\]"),
    ({"alpha_bar_t": "0.5"}, TypeError, r"alpha_bar_t must be a float"),
    ({"alpha_bar_t": None}, TypeError, r"alpha_bar_t must be a float"),
    ({"alpha_bar_t": torch.tensor([0.4, 0.5])}, ValueError,
     r"alpha_bar_t must have 1 element or one per sample row \(3\), got shape \[2\]"),
    ({"alpha_bar_prev": torch.rand(4)}, ValueError, r"alpha_bar_prev must have 1 element or one per"),
    ({"alpha_bar_prev": torch.empty(0)}, ValueError, r"alpha_bar_prev must have 1 element"),
    ({"alpha_bar_t": torch.tensor([1, 2, 3])}, TypeError, r"alpha_bar_t must be a floating-point"),
    ({"alpha_bar_t": torch.rand(3, device="meta")}, ValueError,
     r"alpha_bar_t must be on the device of sample \(cpu\) or on the CPU, got meta"),
    ({"sample": torch.randn(5, 4, 3).transpose(0, 2)}, ValueError, r"sample must be contiguous"),
    ({"model_output": torch.randn(3, 5, 4).transpose(1, 2)}, ValueError,
     r"model_output must be contiguous"),
    ({"eta": 1.0, "noise": torch.randn(3, 5, 4).transpose(1, 2)}, ValueError,
     r"noise must be contiguous"),
    ({"sample": torch.randn(3, 4, 5).double(), "model_output": torch.randn(3, 4, 5).double()},
     TypeError, r"sample has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"sample": torch.randn(3, 4, 5).half(), "model_output": torch.randn(3, 4, 5).half()},
     TypeError, r"sample has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    ({"model_output": torch.randn(3, 4, 5).double()}, TypeError,
     r"model_output must have the dtype of sample"),
    ({"eta": 1.0, "noise": NOISE.half()}, TypeError, r"noise must have the dtype of sample"),
    ({"sample": torch.randn(3, 4, 5).bfloat16()}, TypeError,
     r"model_output must have the dtype of sample \(torch\.bfloat16\), got torch\.float32"),
    ({"sample": torch.randn(3, 4, 5).bfloat16(), "model_output": torch.randn(3, 4, 5).bfloat16(),
          "eta": 1.0, "noise": NOISE}, TypeError,
     r"noise must have the dtype of sample \(torch\.bfloat16\)"),
    ({"sample": torch.ones(3, 4, 5, dtype=torch.int64)}, TypeError,
     r"sample must be a floating-point tensor"),
    ({"model_output": torch.ones(3, 4, 5, dtype=torch.bool)}, TypeError,
     r"model_output must be a floating-point"),
    ({"model_output": torch.empty(3, 4, 5, device="meta")}, ValueError,
     r"model_output must be on the same device as sample"),
    ({"eta": 0.5, "noise": torch.empty(3, 4, 5, device="meta")}, ValueError,
     r"noise must be on the same device as sample"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.ddim_step(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    kw = _args()
    one = torch.tensor([0.5])
    with pytest.raises(ValueError, match="alpha_bar_t must be a float32 tensor of shape"):
        torch.ops.vdengine.ddim_step(kw["sample"], kw["model_output"], one.double(), one, 0.0,
                                     None, "epsilon", None, None, None, False)
    with pytest.raises(ValueError, match="noise .* is required when eta > 0"):
        torch.ops.vdengine.ddim_step(kw["sample"], kw["model_output"], one, one, 1.0, None,
                                     "epsilon", None, None, None, False)
    with pytest.raises(ValueError, match="with guidance_scale"):
        torch.ops.vdengine.ddim_step(kw["sample"], kw["model_output"], one, one, 0.0, None,
                                     "epsilon", 2.0, None, None, False)
    guided = torch.cat([kw["model_output"], kw["model_output"]])
    with pytest.raises(ValueError, match="give guidance_scale or guidance_frames, not both"):
        torch.ops.vdengine.ddim_step(kw["sample"], guided, one, one, 0.0, None, "epsilon", 2.0,
                                     torch.ones(4), None, False)
    with pytest.raises(ValueError, match=r"guidance_frames must be a float32 tensor of shape \[F\]"):
        torch.ops.vdengine.ddim_step(kw["sample"], guided, one, one, 0.0, None, "epsilon", None,
                                     torch.ones(4).double(), None, False)


# ---- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance,eta,clip,kind", [
    (None, 0.0, None, "float"), (7.5, 1.0, None, "per_row"), (3.0, 0.5, 1.0, "tensor0d"),
    (None, 1.0, 1.0, "per_row_cpu"),
])
def test_cuda_matches_reference(dtype, shape, prediction, guidance, eta, clip, kind, gen,
                                cuda_device):
    check(shape, gen, prediction=prediction, guidance=guidance, eta=eta, clip=clip, kind=kind,
          dtype=dtype, device=cuda_device)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["tensor0d", "tensor1", "per_row"])
def test_cuda_device_coefficients_never_sync(kind, gen, cuda_device):
    """Device-tensor ᾱ: the whole call runs without a host sync (CUDA-graph friendly)."""
    n = 4
    sample = torch.randn(n, 4, 8, 8, device=cuda_device)
    out = torch.randn(2 * n, 4, 8, 8, device=cuda_device)
    noise = torch.randn(n, 4, 8, 8, device=cuda_device)
    ab_t, ab_prev = schedule(n, gen)
    a_t, a_prev = H.coefficient(ab_t, kind, cuda_device), H.coefficient(ab_prev, kind, cuda_device)
    with H.no_host_sync():
        x_prev, _x0 = ops.ddim_step(sample, out, a_t, a_prev, eta=1.0, noise=noise,
                                   guidance_scale=5.0, return_x0=True)
    ref = R.ddim_step(sample.double().cpu(), out.double().cpu(), H.used(ab_t, kind).double(),
                      H.used(ab_prev, kind).double(), 1.0, noise.double().cpu(),
                      guidance_scale=5.0)
    torch.testing.assert_close(x_prev.double().cpu(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_graph_capture(gen, cuda_device):
    """The step captures in a CUDA graph and replays with new ᾱ values written into its inputs."""
    n = 2
    sample = torch.randn(n, 4, 8, 8, device=cuda_device)
    out = torch.randn(n, 4, 8, 8, device=cuda_device)
    ab_t = torch.tensor([0.3, 0.4], device=cuda_device)
    ab_prev = torch.tensor([0.6, 0.7], device=cuda_device)
    ops.ddim_step(sample, out, ab_t, ab_prev)  # warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x_prev = ops.ddim_step(sample, out, ab_t, ab_prev)
    ab_t.copy_(torch.tensor([0.2, 0.5]))
    ab_prev.copy_(torch.tensor([0.5, 0.9]))
    graph.replay()
    torch.cuda.synchronize()
    ref = R.ddim_step(sample.cpu(), out.cpu(), ab_t.cpu(), ab_prev.cpu())
    torch.testing.assert_close(x_prev.cpu(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    n = 3
    sample = torch.randn(n, 4, 5, device=cuda_device, dtype=torch.float16)
    out = torch.randn(2 * n, 4, 5, device=cuda_device, dtype=torch.float16)
    noise = torch.randn(n, 4, 5, device=cuda_device, dtype=torch.float16)
    ab_t, ab_prev = (t.to(cuda_device) for t in schedule(n, gen))
    torch.library.opcheck(torch.ops.vdengine.ddim_step.default,
                          (sample, out, ab_t, ab_prev, 1.0, noise, "epsilon", 3.0, None, None,
                           True))
    frames = torch.rand(4, device=cuda_device)
    torch.library.opcheck(torch.ops.vdengine.ddim_step.default,
                          (sample, out, ab_t, ab_prev, 1.0, noise, "epsilon", None, frames, None,
                           True))


@pytest.mark.cuda
def test_cuda_mixed_devices(cuda_device):
    sample = torch.randn(2, 8, device=cuda_device)
    with pytest.raises(ValueError, match="model_output must be on the same device as sample"):
        ops.ddim_step(sample, sample.cpu(), 0.3, 0.6)
    with pytest.raises(ValueError, match="alpha_bar_t must be on the device of sample"):
        ops.ddim_step(sample.cpu(), sample.cpu(), torch.tensor(0.3, device=cuda_device), 0.6)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_cuda_per_frame_guidance(dtype, shape, prediction, gen, cuda_device):
    check(shape, gen, prediction=prediction, guidance="frames", kind="per_row", dtype=dtype,
          device=cuda_device, eta=1.0)
