"""vdengine.ops.dpmpp_2m_step (fused kernel) against vdengine.ops.reference.dpmpp_2m_step and
diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint).

Every output is pre-filled with NaN (poison_outputs) so an element the kernel skips cannot match.
Ground truth is the reference in float64 on the same inputs and float32 coefficients.
"""

from __future__ import annotations

import _step_helpers as H
import diffusers
import pytest
import torch
from _dtype_helpers import CPU_DTYPES
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")


def schedule(n, gen, *, final=None):
    """ᾱ_prev < ᾱ_t < ᾱ_next per row (noise decreases along the solve); final: ᾱ_next = 1
    for every row (True) or for row 0 only ("mixed": rows 1.. keep the second-order update)."""
    u = torch.rand(n, 3, generator=gen)
    ab_prev, ab_t, ab_next = 0.03 + 0.3 * u[:, 0], 0.35 + 0.3 * u[:, 1], 0.67 + 0.3 * u[:, 2]
    if final is True:
        ab_next = torch.ones(n)
    elif final == "mixed":
        ab_next = ab_next.clone()
        ab_next[0] = 1.0
    return ab_t.float(), ab_next.float(), ab_prev.float()


def check(shape, gen, *, prediction="epsilon", guidance=None, clip=None, order=2, kind="float",
          final=None, dtype=torch.float32, device="cpu"):
    n = shape[0]
    sample, model_output = H.random_sample_and_model_output(shape, gen, guidance is not None)
    x0_prev = torch.randn(shape, generator=gen) if order == 2 else None
    sample, model_output = sample.to(device, dtype), model_output.to(device, dtype)
    x0_prev = None if x0_prev is None else x0_prev.to(device, dtype)
    ab_t, ab_next, ab_prev = schedule(n, gen, final=final)
    g_op, g_ref = H.guidance_arg(guidance, shape, gen, device)
    x_next, x0 = ops.dpmpp_2m_step(
        sample, model_output, H.coefficient(ab_t, kind, device),
        H.coefficient(ab_next, kind, device), x0_prev=x0_prev,
        alpha_bar_prev=H.coefficient(ab_prev, kind, device) if order == 2 else None,
        prediction_type=prediction, guidance_scale=g_op, clip_sample=clip,
    )
    for t in (x_next, x0):
        H.assert_fresh_output(t, sample)
    t, c = H.reference_casts(sample)
    ref_next, ref_x0 = R.dpmpp_2m_step(
        t(sample), t(model_output), c(H.used(ab_t, kind)), c(H.used(ab_next, kind)),
        None if x0_prev is None else t(x0_prev),
        c(H.used(ab_prev, kind)) if order == 2 else None, prediction, g_ref, clip,
    )
    H.assert_matches(x_next, ref_next, dtype)
    H.assert_matches(x0, ref_x0, dtype)
    return x_next, x0


# ---- parity on the CPU ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", H.SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance", [None, 4.5])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("kind", H.COEF_KINDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_matches_reference(shape, prediction, guidance, order, kind, dtype, gen):
    check(shape, gen, prediction=prediction, guidance=guidance, order=order, kind=kind,
          dtype=dtype)


@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_clip_sample(prediction, order, dtype, gen):
    check((4, 3, 8, 8), gen, prediction=prediction, order=order, clip=1.0, guidance=2.0,
          dtype=dtype)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("kind", ["float", "tensor1", "per_row"])
def test_final_step_to_alpha_one(order, kind, gen):
    """ᾱ_next = 1: the step lands on x0 (first order, as diffusers' final step)."""
    x_next, x0 = check((3, 4, 5), gen, order=order, kind=kind, final=True)
    torch.testing.assert_close(x_next, x0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_final_step_in_some_rows_only(prediction, gen):
    """Per-row ᾱ_next with row 0 at 1: that row is first order, the others second order."""
    x_next, x0 = check((4, 6, 5), gen, prediction=prediction, kind="per_row", final="mixed")
    torch.testing.assert_close(x_next[0], x0[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(x_next[1:], x0[1:], atol=1e-3)


def test_video_shape(gen):
    check((2, 4, 16, 32, 32), gen, prediction="v_prediction", guidance=7.5, kind="per_row")

# ---- per-frame guidance ([N, F, ...] samples, one scale per frame) ----------------------------------


@pytest.mark.parametrize("shape", H.FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("kind", ["float", "per_row"])
def test_per_frame_guidance_matches_reference(shape, prediction, kind, gen):
    check(shape, gen, prediction=prediction, guidance="frames", kind=kind, order=2)


def test_per_frame_guidance_is_scalar_guidance_frame_by_frame(gen):
    """Frame f of a per-frame-guided step is, bit for bit, the step of frame f alone with scale f
    (and equal per-frame scales are the scalar scale)."""
    sample, out = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(4, 5, 3, 4, generator=gen)
    scales = torch.tensor([0.0, 1.0, 2.0, 7.5, 12.0])

    def step(x, o, g):
        return ops.dpmpp_2m_step(x, o, 0.3, 0.6, x0_prev=x, alpha_bar_prev=0.2, guidance_scale=g)

    for got, want in zip(step(sample, out, torch.full((5,), 3.5)), step(sample, out, 3.5)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    guided = step(sample, out, scales)
    for f in range(5):
        alone = step(sample[:, f].contiguous(), out[:, f].contiguous(), float(scales[f]))
        for got, want in zip(guided, alone):
            torch.testing.assert_close(got[:, f], want, atol=0, rtol=0)


@given(
    n=st.integers(1, 5), d=st.integers(1, 70), prediction=st.sampled_from(H.PREDICTIONS),
    guidance=st.sampled_from([None, 0.0, 1.0, 6.0]), order=st.sampled_from([1, 2]),
    clip=st.sampled_from([None, 1.0]), kind=st.sampled_from(H.COEF_KINDS),
    final=st.sampled_from([None, True]), seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(n, d, prediction, guidance, order, clip, kind, final, seed):
    check((n, d), torch.Generator().manual_seed(seed), prediction=prediction, guidance=guidance,
          order=order, clip=clip, kind=kind, final=final)


def test_alpha_bar_prev_unused_for_first_order(gen):
    """Without x0_prev the step is first order whatever alpha_bar_prev holds."""
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    a = ops.dpmpp_2m_step(sample, out, 0.4, 0.7)
    b = ops.dpmpp_2m_step(sample, out, 0.4, 0.7, alpha_bar_prev=0.2)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_inputs_untouched(gen):
    sample, out, x0_prev = (torch.randn(2, 3, 4, generator=gen) for _ in range(3))
    guided = torch.cat([out, out * 2])
    ab = torch.tensor([0.3, 0.4])
    before = [t.clone() for t in (sample, guided, x0_prev, ab)]
    ops.dpmpp_2m_step(sample, guided, 0.5, 0.8, x0_prev=x0_prev, alpha_bar_prev=ab,
                      guidance_scale=3.0)
    for t, b in zip((sample, guided, x0_prev, ab), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0), (2, 0, 5)])
def test_empty(shape):
    sample = torch.empty(shape)
    x_next, x0 = ops.dpmpp_2m_step(sample, sample, 0.5, 0.7, x0_prev=sample, alpha_bar_prev=0.3)
    assert x_next.shape == shape and x0.shape == shape


# ---- diffusers ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers/numpy
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("guidance", [None, 5.0])
@pytest.mark.parametrize("coef", ["float", "tensor"])
def test_matches_diffusers_loop(prediction_type, guidance, coef, gen):
    """An 8-step DPM-Solver++(2M) loop against diffusers, step by step: first order at step 0,
    second order in between, first order on the final step to σ = 0 (ᾱ_next = 1)."""
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
        prediction_type=prediction_type, final_sigmas_type="zero", lower_order_final=True,
    )
    sched.set_timesteps(8)
    timesteps = sched.timesteps.tolist()
    n = 2
    x_ours = x_ref = torch.randn(n, 4, 2, 6, 6, generator=gen)
    x0_prev = ab_prev = None
    for i, t in enumerate(timesteps):
        uncond = torch.randn(x_ref.shape, generator=gen)
        cond = torch.randn(x_ref.shape, generator=gen)
        combined = cond if guidance is None else uncond + guidance * (cond - uncond)
        model_output = cond if guidance is None else torch.cat([uncond, cond])
        x_ref = sched.step(combined, t, x_ref).prev_sample
        ab_t = sched.alphas_cumprod[t]
        ab_next = sched.alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        if coef == "float":
            ab_t, ab_next = float(ab_t), float(ab_next)
        else:
            ab_t, ab_next = ab_t.reshape(1), torch.full((n,), float(ab_next))
        x_ours, x0 = ops.dpmpp_2m_step(x_ours, model_output, ab_t, ab_next, x0_prev=x0_prev,
                                       alpha_bar_prev=ab_prev, prediction_type=prediction_type,
                                       guidance_scale=guidance)
        torch.testing.assert_close(x_ours, x_ref, atol=2e-4, rtol=2e-4,
                                   msg=lambda m, i=i: f"step {i}: {m}")
        x0_prev, ab_prev = x0, ab_t


# ---- autograd, custom op ---------------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    x0_prev = torch.randn(2, 8, generator=gen, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"x0_prev requires grad.*reference\.dpmpp_2m_step"):
        ops.dpmpp_2m_step(sample, out, 0.4, 0.7, x0_prev=x0_prev, alpha_bar_prev=0.2)
    with torch.inference_mode():
        ops.dpmpp_2m_step(sample, out, 0.4, 0.7, x0_prev=x0_prev, alpha_bar_prev=0.2)


@pytest.mark.parametrize("order,guidance", [(1, None), (2, 3.0), (2, "frames")])
def test_opcheck(order, guidance, gen):
    n = 3
    sample = torch.randn(n, 4, 5, generator=gen)
    out = torch.randn(2 * n if guidance else n, 4, 5, generator=gen)
    x0_prev = torch.randn(n, 4, 5, generator=gen) if order == 2 else None
    ab_t, ab_next, ab_prev = schedule(n, gen)
    scale, frames = (None, 5 * torch.rand(4, generator=gen)) if guidance == "frames" else (
        guidance, None)
    torch.library.opcheck(
        torch.ops.vdengine.dpmpp_2m_step.default,
        (sample, out, ab_t, ab_next[:1].clone(), x0_prev, ab_prev if order == 2 else None,
         "epsilon", scale, frames, 1.0),
    )


def test_torch_export(gen):
    class Step(torch.nn.Module):
        def forward(self, sample, out, x0_prev, ab):
            return ops.dpmpp_2m_step(sample, out, ab[1], ab[2], x0_prev=x0_prev,
                                     alpha_bar_prev=ab[0], prediction_type="v_prediction")

    args = (torch.randn(2, 5, generator=gen), torch.randn(2, 5, generator=gen),
            torch.randn(2, 5, generator=gen), torch.tensor([0.2, 0.4, 0.7]))
    H.check_export(Step(), args, torch.ops.vdengine.dpmpp_2m_step.default)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    g = torch.Generator().manual_seed(0)
    kw = {"sample": torch.randn(3, 4, 5, generator=g), "model_output": torch.randn(3, 4, 5, generator=g),
              "alpha_bar_t": 0.4, "alpha_bar_next": 0.7, "x0_prev": torch.randn(3, 4, 5, generator=g),
              "alpha_bar_prev": 0.2, "prediction_type": "epsilon", "guidance_scale": None, "clip_sample": None}
    kw.update(over)
    return kw


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
    ({"model_output": [1.0]}, TypeError, r"model_output must be a torch\.Tensor"),
    ({"x0_prev": 1.0}, TypeError, r"x0_prev must be a torch\.Tensor or None"),
    ({"sample": torch.tensor(1.0)}, ValueError, r"sample must have at least one dimension"),
    ({"model_output": torch.randn(3, 4, 6)}, ValueError, r"model_output must have the shape of sample"),
    ({"model_output": torch.randn(6, 4, 5)}, ValueError, r"needs guidance_scale"),
    ({"guidance_scale": 2.0}, ValueError, r"with guidance_scale, model_output must have 2N rows"),
    ({"guidance_scale": [2.0]}, TypeError, r"guidance_scale must be a float, a 1-D tensor of per-frame scales or None"),
    ({"x0_prev": torch.randn(3, 4)}, ValueError, r"x0_prev must have shape \[3, 4, 5\]"),
    ({"x0_prev": torch.randn(3, 5, 4).transpose(1, 2)}, ValueError, r"x0_prev must be contiguous"),
    ({"x0_prev": torch.randn(3, 4, 5).double()}, TypeError, r"x0_prev must have the dtype of sample"),
    ({"x0_prev": torch.empty(3, 4, 5, device="meta")}, ValueError,
     r"x0_prev must be on the same device as sample"),
    ({"alpha_bar_prev": None}, ValueError, r"alpha_bar_prev is required when x0_prev is given"),
    ({"alpha_bar_prev": 1.0}, ValueError, r"alpha_bar_prev must lie in \(0, 1\)"),
    ({"alpha_bar_prev": torch.rand(2)}, ValueError, r"alpha_bar_prev must have 1 element or one per"),
    ({"alpha_bar_prev": "0.2"}, TypeError, r"alpha_bar_prev must be a float"),
    ({"x0_prev": None, "alpha_bar_prev": -1.0}, ValueError, r"alpha_bar_prev must lie in"),
    ({"alpha_bar_t": 1.0}, ValueError, r"alpha_bar_t must lie in \(0, 1\)"),
    ({"alpha_bar_t": torch.rand(4)}, ValueError, r"alpha_bar_t must have 1 element or one per sample row \(3\)"),
    ({"alpha_bar_t": torch.ones(3, dtype=torch.int32)}, TypeError, r"alpha_bar_t must be a floating-point"),
    ({"alpha_bar_next": 0.0}, ValueError, r"alpha_bar_next must lie in \(0, 1\]"),
    ({"alpha_bar_next": 1.01}, ValueError, r"alpha_bar_next must lie in \(0, 1\]"),
    ({"alpha_bar_next": float("inf")}, ValueError, r"alpha_bar_next must be finite"),
    ({"alpha_bar_next": torch.rand(2, 2)}, ValueError, r"alpha_bar_next must have 1 element"),
    ({"alpha_bar_next": torch.rand(1, device="meta")}, ValueError,
     r"alpha_bar_next must be on the device of sample"),
    ({"prediction_type": "flow"}, ValueError, r"prediction_type must be one of"),
    ({"clip_sample": 0}, ValueError, r"clip_sample must be positive"),
    ({"clip_sample": True}, TypeError, r"clip_sample must be a float or None"),
    ({"sample": torch.randn(5, 4, 3).transpose(0, 2)}, ValueError, r"sample must be contiguous"),
    ({"model_output": torch.randn(3, 5, 4).transpose(1, 2)}, ValueError,
     r"model_output must be contiguous"),
    ({"sample": torch.randn(3, 4, 5).double(), "model_output": torch.randn(3, 4, 5).double(),
          "x0_prev": torch.randn(3, 4, 5).double()}, TypeError,
     r"sample has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"sample": torch.randn(3, 4, 5).half(), "model_output": torch.randn(3, 4, 5).half(),
          "x0_prev": None}, TypeError, r"sample has dtype torch\.float16, but the CPU kernels"),
    ({"sample": torch.randn(3, 4, 5).bfloat16(), "model_output": torch.randn(3, 4, 5).bfloat16()},
     TypeError, r"x0_prev must have the dtype of sample \(torch\.bfloat16\), got torch\.float32"),
    ({"model_output": torch.randn(3, 4, 5).half()}, TypeError, r"model_output must have the dtype"),
    ({"sample": torch.ones(3, 4, 5, dtype=torch.int32)}, TypeError, r"sample must be a floating-point"),
    ({"model_output": torch.empty(3, 4, 5, device="meta")}, ValueError,
     r"model_output must be on the same device as sample"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.dpmpp_2m_step(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    kw = _args()
    one = torch.tensor([0.5])
    with pytest.raises(ValueError, match="alpha_bar_prev is required when x0_prev is given"):
        torch.ops.vdengine.dpmpp_2m_step(kw["sample"], kw["model_output"], one, one, kw["x0_prev"],
                                         None, "epsilon", None, None, None)
    with pytest.raises(ValueError, match="alpha_bar_next must be a float32 tensor of shape"):
        torch.ops.vdengine.dpmpp_2m_step(kw["sample"], kw["model_output"], one, torch.rand(2),
                                         None, None, "epsilon", None, None, None)
    guided = torch.cat([kw["model_output"], kw["model_output"]])
    with pytest.raises(ValueError, match=r"guidance_frames must be a float32 tensor of shape \[F\]"):
        torch.ops.vdengine.dpmpp_2m_step(kw["sample"], guided, one, one, None, None, "epsilon",
                                         None, torch.ones(3), None)


# ---- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance,order,clip,kind,final", [
    (None, 1, None, "float", None), (7.5, 2, None, "per_row", None),
    (3.0, 2, 1.0, "tensor0d", True), (None, 2, None, "per_row_cpu", "mixed"),
])
def test_cuda_matches_reference(dtype, shape, prediction, guidance, order, clip, kind, final, gen,
                                cuda_device):
    if final == "mixed" and shape[0] == 1:
        final = True
    check(shape, gen, prediction=prediction, guidance=guidance, order=order, clip=clip, kind=kind,
          final=final, dtype=dtype, device=cuda_device)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["tensor0d", "tensor1", "per_row"])
def test_cuda_device_coefficients_never_sync(kind, gen, cuda_device):
    n = 4
    sample = torch.randn(n, 4, 8, 8, device=cuda_device)
    out = torch.randn(2 * n, 4, 8, 8, device=cuda_device)
    x0_prev = torch.randn(n, 4, 8, 8, device=cuda_device)
    ab_t, ab_next, ab_prev = schedule(n, gen)
    coefs = [H.coefficient(v, kind, cuda_device) for v in (ab_t, ab_next, ab_prev)]
    with H.no_host_sync():
        x_next, _ = ops.dpmpp_2m_step(sample, out, coefs[0], coefs[1], x0_prev=x0_prev,
                                      alpha_bar_prev=coefs[2], guidance_scale=5.0)
    ref, _ = R.dpmpp_2m_step(sample.double().cpu(), out.double().cpu(), H.used(ab_t, kind).double(),
                             H.used(ab_next, kind).double(), x0_prev.double().cpu(),
                             H.used(ab_prev, kind).double(), guidance_scale=5.0)
    torch.testing.assert_close(x_next.double().cpu(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    n = 3
    sample = torch.randn(n, 4, 5, device=cuda_device, dtype=torch.bfloat16)
    out = torch.randn(2 * n, 4, 5, device=cuda_device, dtype=torch.bfloat16)
    x0_prev = torch.randn(n, 4, 5, device=cuda_device, dtype=torch.bfloat16)
    ab_t, ab_next, ab_prev = (t.to(cuda_device) for t in schedule(n, gen))
    torch.library.opcheck(torch.ops.vdengine.dpmpp_2m_step.default,
                          (sample, out, ab_t, ab_next, x0_prev, ab_prev, "v_prediction", 3.0, None,
                           None))
    frames = torch.rand(sample.shape[1], device=cuda_device)
    torch.library.opcheck(torch.ops.vdengine.dpmpp_2m_step.default,
                          (sample, out, ab_t, ab_next, x0_prev, ab_prev, "v_prediction", None,
                           frames, None))


@pytest.mark.cuda
def test_cuda_mixed_devices(cuda_device):
    sample = torch.randn(2, 8, device=cuda_device)
    with pytest.raises(ValueError, match="x0_prev must be on the same device as sample"):
        ops.dpmpp_2m_step(sample, sample, 0.3, 0.6, x0_prev=sample.cpu(), alpha_bar_prev=0.2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_cuda_per_frame_guidance(dtype, shape, prediction, gen, cuda_device):
    check(shape, gen, prediction=prediction, guidance="frames", kind="per_row", dtype=dtype,
          device=cuda_device, order=2)
