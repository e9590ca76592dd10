"""vdengine.ops.euler_step (fused kernel) against vdengine.ops.reference.euler_step and diffusers'
EulerDiscreteScheduler.step.

Every output is pre-filled with NaN (poison_outputs) so an element the kernel skips cannot match.
Ground truth is the reference in float64 on the same inputs and the same float32 σ the kernel
reads; diffusers is the external check of the math.
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


def schedule(n, gen, *, final=False, top=15.0):
    """σ in [0.02, top] and σ_next in [0, σ) per row (0 exactly with final)."""
    sigma = 0.02 + (top - 0.02) * torch.rand(n, generator=gen)
    sigma_next = sigma * (0.9 * torch.rand(n, generator=gen))
    if final:
        sigma_next = torch.zeros(n)
    return sigma.float(), sigma_next.float()


def check(shape, gen, *, prediction="epsilon", guidance=None, clip=None, kind="float",
          return_x0=True, final=False, top=15.0, dtype=torch.float32, device="cpu"):
    n = shape[0]
    sample, model_output = H.random_sample_and_model_output(shape, gen, guidance is not None)
    sigma, sigma_next = schedule(n, gen, final=final, top=top)
    sample = (sample * (1 + sigma.reshape(-1, *[1] * (len(shape) - 1)))).to(device, dtype)
    model_output = model_output.to(device, dtype)
    g_op, g_ref = H.guidance_arg(guidance, shape, gen, device)
    out = ops.euler_step(sample, model_output, H.coefficient(sigma, kind, device),
                         H.coefficient(sigma_next, kind, device), prediction_type=prediction,
                         guidance_scale=g_op, clip_sample=clip, return_x0=return_x0)
    x_next, x0 = out if return_x0 else (out, None)
    H.assert_fresh_output(x_next, sample)
    t, c = H.reference_casts(sample)
    ref_next, ref_x0 = R.euler_step(
        t(sample), t(model_output), c(H.used(sigma, kind)), c(H.used(sigma_next, kind)),
        prediction, g_ref, clip, return_x0=True,
    )
    H.assert_matches(x_next, ref_next, dtype)
    if return_x0:
        H.assert_fresh_output(x0, sample)
        H.assert_matches(x0, ref_x0, dtype)
    return out


# ---- parity on the CPU ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", H.SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance", [None, 4.5])
@pytest.mark.parametrize("kind", H.COEF_KINDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_matches_reference(shape, prediction, guidance, kind, dtype, gen):
    check(shape, gen, prediction=prediction, guidance=guidance, kind=kind,
          return_x0=kind != "tensor1", dtype=dtype)


@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("clip", [0.5, 1.0])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_clip_sample(prediction, clip, dtype, gen):
    check((4, 3, 8, 8), gen, prediction=prediction, clip=clip, guidance=2.0, dtype=dtype)


@pytest.mark.parametrize("kind", ["float", "per_row"])
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_final_step_to_sigma_zero(kind, prediction, gen):
    """σ_next = 0: the step lands on x0."""
    x_next, x0 = check((3, 4, 5), gen, kind=kind, prediction=prediction, final=True)
    torch.testing.assert_close(x_next, x0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_svd_noise_levels(prediction, gen):
    """σ up to 700 (SVD's σ_max), latents of that magnitude."""
    check((2, 3, 4, 5, 6), gen, prediction=prediction, guidance=3.0, kind="per_row", top=700.0)


@pytest.mark.parametrize("kind", ["per_row_f64_col", "per_row_cpu"])
def test_coefficient_layouts(kind, gen):
    check((4, 2, 3), gen, kind=kind)


def test_video_shape(gen):
    check((2, 14, 4, 32, 32), gen, prediction="v_prediction", guidance=2.5, kind="per_row")

# ---- per-frame guidance ([N, F, ...] samples, one scale per frame) ----------------------------------


@pytest.mark.parametrize("shape", H.FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("kind", ["float", "per_row"])
def test_per_frame_guidance_matches_reference(shape, prediction, kind, gen):
    check(shape, gen, prediction=prediction, guidance="frames", kind=kind)


def test_per_frame_guidance_is_scalar_guidance_frame_by_frame(gen):
    """Frame f of a per-frame-guided step is, bit for bit, the step of frame f alone with scale f
    (and equal per-frame scales are the scalar scale)."""
    sample, out = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(4, 5, 3, 4, generator=gen)
    scales = torch.tensor([0.0, 1.0, 2.0, 7.5, 12.0])

    def step(x, o, g):
        return ops.euler_step(x, o, 4.0, 1.5, "v_prediction", guidance_scale=g, return_x0=True)

    for got, want in zip(step(sample, out, torch.full((5,), 3.5)), step(sample, out, 3.5)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    guided = step(sample, out, scales)
    for f in range(5):
        alone = step(sample[:, f].contiguous(), out[:, f].contiguous(), float(scales[f]))
        for got, want in zip(guided, alone):
            torch.testing.assert_close(got[:, f], want, atol=0, rtol=0)


@given(
    n=st.integers(1, 5), d=st.integers(1, 70), prediction=st.sampled_from(H.PREDICTIONS),
    guidance=st.sampled_from([None, 0.0, 1.0, 6.0]), clip=st.sampled_from([None, 1.0]),
    kind=st.sampled_from(H.COEF_KINDS), final=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(n, d, prediction, guidance, clip, kind, final, seed):
    check((n, d), torch.Generator().manual_seed(seed), prediction=prediction, guidance=guidance,
          clip=clip, kind=kind, final=final)


def test_return_x0_default_is_tensor(gen):
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    got = ops.euler_step(sample, out, 3.0, 1.0)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 8)


def test_numpy_coefficients(gen):
    import numpy as np

    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    got = ops.euler_step(sample, out, np.float32(3.0), np.float64(0.0))
    torch.testing.assert_close(got, ops.euler_step(sample, out, 3.0, 0.0), atol=0, rtol=0)


def test_inputs_untouched(gen):
    sample, out = (torch.randn(2, 3, 4, generator=gen) for _ in range(2))
    guided = torch.cat([out, out * 2])
    sig = torch.tensor([3.0, 4.0])
    before = [t.clone() for t in (sample, guided, sig)]
    ops.euler_step(sample, guided, sig, 0.5, guidance_scale=3.0, return_x0=True)
    for t, b in zip((sample, guided, sig), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0), (2, 0, 5)])
def test_empty(shape):
    sample = torch.empty(shape)
    x_next, x0 = ops.euler_step(sample, sample, 2.0, 1.0, return_x0=True)
    assert x_next.shape == shape and x0.shape == shape


# ---- diffusers ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers/numpy
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("guidance", [None, 3.0])
@pytest.mark.parametrize("coef", ["float", "tensor"])
@pytest.mark.parametrize("karras", [False, True])
def test_matches_diffusers_loop(prediction_type, guidance, coef, karras, gen):
    """A whole 10-step loop against EulerDiscreteScheduler.step, step by step, with the model
    outputs drawn at random (the sampler's input scaling is not part of the op)."""
    sched = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type=prediction_type, use_karras_sigmas=karras,
        sigma_min=0.002 if karras else None, sigma_max=700.0 if karras else None)
    sched.set_timesteps(10)
    # Karras σ above the training range map to repeated timesteps (999, 999, ...), and diffusers
    # then starts at the second one unless told the begin index.
    sched.set_begin_index(0)
    sigmas = sched.sigmas
    n = 2
    x_ours = x_ref = torch.randn(n, 4, 2, 6, 6, generator=gen) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        uncond = torch.randn(x_ref.shape, generator=gen)
        cond = torch.randn(x_ref.shape, generator=gen)
        combined = cond if guidance is None else uncond + guidance * (cond - uncond)
        model_output = cond if guidance is None else torch.cat([uncond, cond])
        sched.scale_model_input(x_ref, t)  # diffusers warns when step comes without it
        res = sched.step(combined, t, x_ref)
        x_ref = res.prev_sample
        s, s_next = sigmas[i], sigmas[i + 1]
        if coef == "float":
            s, s_next = float(s), float(s_next)
        else:
            s, s_next = s.reshape(1), torch.full((n,), float(s_next))
        x_ours, x0 = ops.euler_step(x_ours, model_output, s, s_next,
                                    prediction_type=prediction_type, guidance_scale=guidance,
                                    return_x0=True)
        scale = max(1.0, x_ref.abs().max().item())
        torch.testing.assert_close(x_ours, x_ref, atol=1e-5 * scale, rtol=1e-5,
                                   msg=lambda m, i=i: f"step {i}: {m}")
        torch.testing.assert_close(x0, res.pred_original_sample, atol=1e-5 * scale, rtol=1e-5)


# ---- autograd, custom op, compile ------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    sample, out = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    with pytest.raises(RuntimeError, match=r"model_output requires grad.*reference\.euler_step"):
        ops.euler_step(sample, out.requires_grad_(True), 3.0, 1.0)
    with pytest.raises(RuntimeError, match=r"sigma requires grad"):
        ops.euler_step(sample, out.detach(), torch.tensor(3.0, requires_grad=True), 1.0)
    with pytest.raises(RuntimeError, match=r"guidance_scale requires grad"):
        ops.euler_step(sample, torch.cat([out, out]).detach(), 3.0, 1.0,
                       guidance_scale=torch.ones(8, requires_grad=True))
    with torch.no_grad():
        ops.euler_step(sample, out, 3.0, 1.0)


@pytest.mark.parametrize("guidance,return_x0,prediction", [
    (None, False, "epsilon"), (3.0, True, "v_prediction"), ("frames", True, "v_prediction")])
def test_opcheck(guidance, return_x0, prediction, gen):
    n = 3
    sample = torch.randn(n, 4, 5, generator=gen)
    out = torch.randn(2 * n if guidance else n, 4, 5, generator=gen)
    sigma, sigma_next = schedule(n, gen)
    scale, frames = (None, 5 * torch.rand(4, generator=gen)) if guidance == "frames" else (
        guidance, None)
    torch.library.opcheck(torch.ops.vdengine.euler_step.default,
                          (sample, out, sigma, sigma_next[:1].clone(), prediction, scale, frames,
                           1.0, return_x0))


def test_torch_export(gen):
    class Step(torch.nn.Module):
        def forward(self, sample, out, sig):
            return ops.euler_step(sample, out, sig[0], sig[1], prediction_type="v_prediction",
                                  guidance_scale=3.0, return_x0=True)

    args = (torch.randn(2, 5, generator=gen), torch.randn(4, 5, generator=gen),
            torch.tensor([7.0, 2.0]))
    H.check_export(Step(), args, torch.ops.vdengine.euler_step.default)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    g = torch.Generator().manual_seed(0)
    kw = {"sample": torch.randn(3, 4, 5, generator=g),
          "model_output": torch.randn(3, 4, 5, generator=g), "sigma": 4.0, "sigma_next": 2.0,
          "prediction_type": "epsilon", "guidance_scale": None, "clip_sample": None,
          "return_x0": False}
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
    ({"model_output": 1.0}, TypeError, r"model_output must be a torch\.Tensor"),
    ({"sample": torch.tensor(1.0)}, ValueError, r"sample must have at least one dimension"),
    ({"model_output": torch.randn(3, 4, 6)}, ValueError,
     r"model_output must have the shape of sample \[3, 4, 5\]"),
    ({"model_output": torch.randn(6, 4, 5)}, ValueError, r"needs guidance_scale"),
    ({"guidance_scale": 2.0}, ValueError,
     r"with guidance_scale, model_output must have 2N rows \[uncond; cond\]: shape \[6, 4, 5\]"),
    ({"guidance_scale": "2"}, TypeError, r"guidance_scale must be a float, a 1-D tensor of per-frame scales or None"),
    ({"guidance_scale": float("inf")}, ValueError, r"guidance_scale must be finite"),
    ({"prediction_type": "eps"}, ValueError, r"prediction_type must be one of"),
    ({"clip_sample": 0.0}, ValueError, r"clip_sample must be positive"),
    ({"return_x0": 1}, TypeError, r"return_x0 must be a bool"),
    ({"sigma": 0.0}, ValueError, r"sigma must be > 0 \(a noise level σ\), got 0\.0"),
    ({"sigma": -1.0}, ValueError, r"sigma must be > 0"),
    ({"sigma": float("nan")}, ValueError, r"sigma must be finite"),
    ({"sigma": None}, TypeError, r"sigma must be a float"),
    ({"sigma_next": -0.5}, ValueError, r"sigma_next must be >= 0 \(a noise level σ\)"),
    ({"sigma_next": "0"}, TypeError, r"sigma_next must be a float"),
    ({"sigma": torch.tensor([4.0, 5.0])}, ValueError,
     r"sigma must have 1 element or one per sample row \(3\), got shape \[2\]"),
    ({"sigma_next": torch.tensor([1, 2, 3])}, TypeError, r"sigma_next must be a floating-point"),
    ({"sigma": torch.rand(3, device="meta")}, ValueError,
     r"sigma must be on the device of sample \(cpu\) or on the CPU, got meta"),
    ({"sample": torch.randn(5, 4, 3).transpose(0, 2)}, ValueError, r"sample must be contiguous"),
    ({"sample": torch.randn(3, 4, 5).double(), "model_output": torch.randn(3, 4, 5).double()},
     TypeError, r"sample has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"model_output": torch.randn(3, 4, 5).half()}, TypeError,
     r"model_output must have the dtype of sample"),
    ({"sample": torch.randn(3, 4, 5).half(), "model_output": torch.randn(3, 4, 5).half()},
     TypeError, r"sample has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    ({"sample": torch.randn(3, 4, 5).bfloat16()}, TypeError,
     r"model_output must have the dtype of sample \(torch\.bfloat16\), got torch\.float32"),
    ({"model_output": torch.empty(3, 4, 5, device="meta")}, ValueError,
     r"model_output must be on the same device as sample"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.euler_step(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    kw = _args()
    one = torch.tensor([2.0])
    with pytest.raises(ValueError, match="sigma must be a float32 tensor of shape"):
        torch.ops.vdengine.euler_step(kw["sample"], kw["model_output"], one.double(), one,
                                      "epsilon", None, None, None, False)
    with pytest.raises(ValueError, match="with guidance_scale"):
        torch.ops.vdengine.euler_step(kw["sample"], kw["model_output"], one, one, "epsilon", 2.0,
                                      None, None, False)
    guided = torch.cat([kw["model_output"], kw["model_output"]])
    with pytest.raises(ValueError, match="guidance_frames must be on the device of sample"):
        torch.ops.vdengine.euler_step(kw["sample"], guided, one, one, "epsilon", None,
                                      torch.ones(4, device="meta"), None, False)


# ---- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
@pytest.mark.parametrize("guidance,clip,kind,final", [
    (None, None, "float", False), (7.5, None, "per_row", True), (3.0, 1.0, "tensor0d", False),
    (None, 1.0, "per_row_cpu", False),
])
def test_cuda_matches_reference(dtype, shape, prediction, guidance, clip, kind, final, gen,
                                cuda_device):
    check(shape, gen, prediction=prediction, guidance=guidance, clip=clip, kind=kind,
          final=final, dtype=dtype, device=cuda_device)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["tensor0d", "tensor1", "per_row"])
def test_cuda_device_coefficients_never_sync(kind, gen, cuda_device):
    n = 4
    sample = torch.randn(n, 4, 8, 8, device=cuda_device)
    out = torch.randn(2 * n, 4, 8, 8, device=cuda_device)
    sigma, sigma_next = schedule(n, gen)
    s, s_next = H.coefficient(sigma, kind, cuda_device), H.coefficient(sigma_next, kind, cuda_device)
    with H.no_host_sync():
        x_next, _x0 = ops.euler_step(sample, out, s, s_next, prediction_type="v_prediction",
                                     guidance_scale=5.0, return_x0=True)
    ref = R.euler_step(sample.double().cpu(), out.double().cpu(), H.used(sigma, kind).double(),
                       H.used(sigma_next, kind).double(), "v_prediction", 5.0)
    torch.testing.assert_close(x_next.double().cpu(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_graph_capture(gen, cuda_device):
    n = 2
    sample = torch.randn(n, 4, 8, 8, device=cuda_device)
    out = torch.randn(n, 4, 8, 8, device=cuda_device)
    sig = torch.tensor([3.0, 4.0], device=cuda_device)
    sig_next = torch.tensor([1.0, 2.0], device=cuda_device)
    ops.euler_step(sample, out, sig, sig_next)  # warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x_next = ops.euler_step(sample, out, sig, sig_next)
    sig.copy_(torch.tensor([5.0, 0.5]))
    sig_next.copy_(torch.tensor([2.0, 0.0]))
    graph.replay()
    torch.cuda.synchronize()
    ref = R.euler_step(sample.cpu(), out.cpu(), sig.cpu(), sig_next.cpu())
    torch.testing.assert_close(x_next.cpu(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    n = 3
    sample = torch.randn(n, 4, 5, device=cuda_device, dtype=torch.float16)
    out = torch.randn(2 * n, 4, 5, device=cuda_device, dtype=torch.float16)
    sigma, sigma_next = (t.to(cuda_device) for t in schedule(n, gen))
    torch.library.opcheck(torch.ops.vdengine.euler_step.default,
                          (sample, out, sigma, sigma_next, "v_prediction", 3.0, None, None, True))
    frames = torch.rand(4, device=cuda_device)
    torch.library.opcheck(torch.ops.vdengine.euler_step.default,
                          (sample, out, sigma, sigma_next, "v_prediction", None, frames, None,
                           True))


@pytest.mark.cuda
def test_cuda_mixed_devices(cuda_device):
    sample = torch.randn(2, 8, device=cuda_device)
    with pytest.raises(ValueError, match="model_output must be on the same device as sample"):
        ops.euler_step(sample, sample.cpu(), 3.0, 1.0)
    with pytest.raises(ValueError, match="sigma must be on the device of sample"):
        ops.euler_step(sample.cpu(), sample.cpu(), torch.tensor(3.0, device=cuda_device), 1.0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", H.DTYPES, ids=str)
@pytest.mark.parametrize("shape", H.CUDA_FRAME_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prediction", H.PREDICTIONS)
def test_cuda_per_frame_guidance(dtype, shape, prediction, gen, cuda_device):
    check(shape, gen, prediction=prediction, guidance="frames", kind="per_row", dtype=dtype,
          device=cuda_device)
