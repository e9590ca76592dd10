"""Euler step: one fused elementwise kernel for a whole Euler update in σ, guidance included.

Replaces the chain  u + s·(c − u) → x0 (ε / v with EDM's c_skip, c_out / sample) → clip →
d = (x − x0)/σ → x + d·(σ_next − σ): the kernel reads sample and model_output once and writes
x_next (and x0). Specification: vdengine.ops.reference.euler_step (the math of diffusers'
EulerDiscreteScheduler.step with s_churn = 0).
"""


import torch
from torch import Tensor

from vdengine.ops import _checks as ck
from vdengine.ops import _native

__all__ = ["euler_step"]


def euler_step(
    sample: Tensor,  # [N, ...] x in σ-space: x0 + σ·ε
    model_output: Tensor,  # [N, ...], or [2N, ...] = [uncond; cond] with guidance_scale
    sigma: Tensor | float,  # σ of the current step: float, or tensor [1] / [N]
    sigma_next: Tensor | float,  # σ stepped to (0 = the clean end)
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per-frame scales for [N, F, ...]
    clip_sample: float | None = None,
    return_x0: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:  # x_next [N, ...] or (x_next, x0)
    """One Euler step of the probability-flow ODE dx/dσ = (x − x0)/σ (Karras et al. 2022, Alg. 1
    without churn), as diffusers' EulerDiscreteScheduler.step.

    x0 = x − σ·m (epsilon), m·(−σ/√(σ²+1)) + x/(σ²+1) (v-prediction: EDM's c_out and c_skip with
    σ_data = 1, the model having seen x/√(σ²+1)), or m (sample); then
    x_next = x + ((x − x0)/σ)·(σ_next − σ).

    Args:
        sample: Current latents in σ-space ``[N, ...]``, contiguous; float32/bfloat16
            on CPU, float32/float16/bfloat16 on CUDA (float32 math inside).
        model_output: Denoiser output ``[N, ...]`` of sample's shape and dtype, or ``[2N, ...]``
            (unconditional rows first, then conditional) when guidance_scale is given.
        sigma: σ of the current step: a Python float > 0, or a tensor with one element or one
            per row, on sample's device (or the CPU). Device tensors are used without any host
            sync, so the step is CUDA-graph capturable.
        sigma_next: σ stepped to, like sigma; a float may be 0.
        prediction_type: "epsilon", "v_prediction" or "sample".
        guidance_scale: Classifier-free guidance scale s: out = u + s·(c − u) on the stacked rows;
            a float, or a 1-D tensor of F per-frame scales for sample laid out [N, F, ...] (SVD's
            linspace(min, max, F); element frame = (index / inner) % F, inner = the product of
            the dims after F).
        clip_sample: Clamp x0 to [−clip_sample, clip_sample] (> 0) when given.
        return_x0: Also return the predicted x0.

    Returns:
        x_next ``[N, ...]`` in sample's dtype, or ``(x_next, x0)`` when return_x0.

    Python-float coefficients are range-checked; tensor coefficients are not (that would sync the
    host). Inference only: raises RuntimeError if an input requires grad while grad mode is on
    (use vdengine.ops.reference.euler_step for training).
    """
    ck.tensor(sample, "sample")
    ck.tensor(model_output, "model_output")
    if sample.dim() < 1:
        raise ValueError("sample must have at least one dimension [N, ...], got a 0-d tensor")
    prediction_type = ck.prediction_type(prediction_type)
    clip_sample = ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    return_x0 = ck.flag(return_x0, "return_x0")
    n = sample.shape[0]
    if torch.is_grad_enabled():
        ck.no_grad("euler_step", {
            "sample": sample, "model_output": model_output, "sigma": sigma,
            "sigma_next": sigma_next, "guidance_scale": guidance_scale,
        })
    guidance_scale, frames = ck.guidance(guidance_scale, sample)
    s = ck.sigma(sigma, "sigma", n, sample)
    s_next = ck.sigma(sigma_next, "sigma_next", n, sample, allow_zero=True)
    x_next, x0 = _euler_op(sample, model_output, s, s_next, prediction_type, guidance_scale,
                           frames, clip_sample, return_x0)
    return (x_next, x0) if return_x0 else x_next


def _validate(
    sample: Tensor, model_output: Tensor, sigma: Tensor, sigma_next: Tensor, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
) -> tuple[int, int]:
    ck.prediction_type(prediction_type)
    ck.real(guidance_scale, "guidance_scale", allow_none=True)
    ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    guided = guidance_scale is not None or guidance_frames is not None
    n, d = ck.step_tensors(sample, model_output, guided, {})
    ck.guidance_frames_tensor(guidance_frames, sample, guidance_scale)
    ck.coefficient_tensor(sigma, "sigma", n, sample)
    ck.coefficient_tensor(sigma_next, "sigma_next", n, sample)
    return n, d


@torch.library.custom_op("vdengine::euler_step", mutates_args=())
def _euler_op(
    sample: Tensor, model_output: Tensor, sigma: Tensor, sigma_next: Tensor, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
    return_x0: bool,
) -> tuple[Tensor, Tensor]:
    """(x_next, x0); x0 is an empty [0] tensor unless return_x0 (the kernel then skips it).
    guidance_frames: float32 [F] per-frame scales (instead of guidance_scale), or None."""
    n, d = _validate(sample, model_output, sigma, sigma_next, prediction_type, guidance_scale,
                     guidance_frames, clip_sample)
    x_next = ck.new_output(sample.shape, sample)
    x0 = ck.new_output(sample.shape if return_x0 else (0,), sample)
    if x_next.numel() == 0:
        return x_next, x0
    (s, s_next), coef_stride = ck.step_coefficients({"sigma": sigma, "sigma_next": sigma_next}, n)
    ck.launch(
        "euler_step", sample, sample.data_ptr(), model_output.data_ptr(), 0, 0, s.data_ptr(),
        s_next.data_ptr(), 0, coef_stride, x_next.data_ptr(), ck.ptr(x0) if return_x0 else 0,
        n, d, 0.0, _native.PREDICTION_CODES[prediction_type],
        *ck.guidance_launch_args(guidance_scale, guidance_frames, d), clip_sample is not None,
        0.0 if clip_sample is None else clip_sample,
    )
    return x_next, x0


@_euler_op.register_fake
def _euler_fake(
    sample: Tensor, model_output: Tensor, sigma: Tensor, sigma_next: Tensor, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
    return_x0: bool,
) -> tuple[Tensor, Tensor]:
    _validate(sample, model_output, sigma, sigma_next, prediction_type, guidance_scale,
              guidance_frames, clip_sample)
    return sample.new_empty(sample.shape), sample.new_empty(sample.shape if return_x0 else (0,))
