"""DDIM step: one fused elementwise kernel for a whole DDIM update, guidance combine included.

Replaces the chain  u + s·(c − u) → x0 → clip → ε → √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise:
the kernel reads sample, model_output (and noise) once and writes x_prev (and x0).
Specification: vdengine.ops.reference.ddim_step (the math of diffusers' DDIMScheduler.step).
"""


import torch
from torch import Tensor

from vdengine.ops import _checks as ck
from vdengine.ops import _native

__all__ = ["ddim_step"]


def ddim_step(
    sample: Tensor,  # [N, ...]
    model_output: Tensor,  # [N, ...], or [2N, ...] = [uncond; cond] with guidance_scale
    alpha_bar_t: Tensor | float,  # float, or tensor [1] / [N]
    alpha_bar_prev: Tensor | float,  # float, or tensor [1] / [N]
    eta: float = 0.0,
    noise: Tensor | None = None,  # [N, ...], required when eta > 0
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per-frame scales for [N, F, ...]
    clip_sample: float | None = None,
    return_x0: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:  # x_prev [N, ...] or (x_prev, x0)
    """One DDIM update (Song et al. 2021) from timestep t to the previous timestep.

    x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t (or from v / sample predictions);  σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·
    √(1−ᾱ_t/ᾱ_prev);  x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise. Clipping x0 does not
    recompute ε (as diffusers).

    Args:
        sample: Current latents x_t ``[N, ...]``, contiguous; float32/bfloat16 on CPU,
            float32/float16/bfloat16 on CUDA (float32 math inside).
        model_output: Denoiser output ``[N, ...]`` of sample's shape and dtype, or ``[2N, ...]``
            (unconditional rows first, then conditional) when guidance_scale is given. Contiguous.
        alpha_bar_t: ᾱ at the current timestep: a Python float in (0, 1), or a tensor with one
            element or one per row (N elements), on sample's device (or the CPU). Device tensors
            are used without any host sync, so the step is CUDA-graph capturable.
        alpha_bar_prev: ᾱ at the timestep stepped to, like alpha_bar_t; a float may be 1.0.
        eta: DDIM η >= 0 (0: deterministic DDIM; 1: DDPM-like variance).
        noise: Standard normal noise of sample's shape and dtype, required when eta > 0 and
            ignored when eta == 0.
        prediction_type: "epsilon", "v_prediction" or "sample".
        guidance_scale: Classifier-free guidance scale s: ε = u + s·(c − u) on the stacked rows;
            a float, or a 1-D tensor of F per-frame scales for sample laid out [N, F, ...]
            (element frame = (index / inner) % F, inner = the product of the dims after F).
        clip_sample: Clamp x0 to [−clip_sample, clip_sample] (> 0) when given.
        return_x0: Also return the predicted x0.

    Returns:
        x_prev ``[N, ...]`` in sample's dtype, or ``(x_prev, x0)`` when return_x0.

    Python-float coefficients must lie in the stated ranges (checked); tensor coefficients are not
    value-checked (that would sync the host). Inference only: raises RuntimeError if an input
    requires grad while grad mode is on (use vdengine.ops.reference.ddim_step for training).
    """
    ck.tensor(sample, "sample")
    ck.tensor(model_output, "model_output")
    ck.tensor(noise, "noise", allow_none=True)
    if sample.dim() < 1:
        raise ValueError("sample must have at least one dimension [N, ...], got a 0-d tensor")
    eta = ck.real(eta, "eta")
    ck.eta_and_noise(eta, noise)
    prediction_type = ck.prediction_type(prediction_type)
    clip_sample = ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    return_x0 = ck.flag(return_x0, "return_x0")
    n = sample.shape[0]
    if torch.is_grad_enabled():
        ck.no_grad("ddim_step", {
            "sample": sample, "model_output": model_output, "noise": noise,
            "alpha_bar_t": alpha_bar_t, "alpha_bar_prev": alpha_bar_prev,
            "guidance_scale": guidance_scale,
        })
    guidance_scale, frames = ck.guidance(guidance_scale, sample)
    ab_t = ck.coefficient(alpha_bar_t, "alpha_bar_t", n, sample)
    ab_prev = ck.coefficient(alpha_bar_prev, "alpha_bar_prev", n, sample, allow_one=True)
    x_prev, x0 = _ddim_op(sample, model_output, ab_t, ab_prev, eta, noise, prediction_type,
                          guidance_scale, frames, clip_sample, return_x0)
    return (x_prev, x0) if return_x0 else x_prev


def _validate(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_prev: Tensor, eta: float,
    noise: Tensor | None, prediction_type: str, guidance_scale: float | None,
    guidance_frames: Tensor | None, clip_sample: float | None,
) -> tuple[int, int]:
    ck.eta_and_noise(eta, noise)
    ck.prediction_type(prediction_type)
    ck.real(guidance_scale, "guidance_scale", allow_none=True)
    ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    guided = guidance_scale is not None or guidance_frames is not None
    n, d = ck.step_tensors(sample, model_output, guided, {"noise": noise})
    ck.guidance_frames_tensor(guidance_frames, sample, guidance_scale)
    ck.coefficient_tensor(alpha_bar_t, "alpha_bar_t", n, sample)
    ck.coefficient_tensor(alpha_bar_prev, "alpha_bar_prev", n, sample)
    return n, d


@torch.library.custom_op("vdengine::ddim_step", mutates_args=())
def _ddim_op(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_prev: Tensor, eta: float,
    noise: Tensor | None, prediction_type: str, guidance_scale: float | None,
    guidance_frames: Tensor | None, clip_sample: float | None, return_x0: bool,
) -> tuple[Tensor, Tensor]:
    """(x_prev, x0); x0 is an empty [0] tensor unless return_x0 (the kernel then skips it).
    guidance_frames: float32 [F] per-frame scales (instead of guidance_scale), or None."""
    n, d = _validate(sample, model_output, alpha_bar_t, alpha_bar_prev, eta, noise,
                     prediction_type, guidance_scale, guidance_frames, clip_sample)
    x_prev = ck.new_output(sample.shape, sample)
    x0 = ck.new_output(sample.shape if return_x0 else (0,), sample)
    if x_prev.numel() == 0:
        return x_prev, x0
    (ab_t, ab_prev), coef_stride = ck.step_coefficients(
        {"alpha_bar_t": alpha_bar_t, "alpha_bar_prev": alpha_bar_prev}, n)
    ck.launch(
        "ddim_step", sample, sample.data_ptr(), model_output.data_ptr(),
        # The reference ignores noise when eta == 0 (even non-finite noise): pass no pointer.
        ck.ptr(noise) if eta > 0 else 0, 0, ab_t.data_ptr(), ab_prev.data_ptr(), 0, coef_stride,
        x_prev.data_ptr(), ck.ptr(x0) if return_x0 else 0, n, d, eta,
        _native.PREDICTION_CODES[prediction_type],
        *ck.guidance_launch_args(guidance_scale, guidance_frames, d), clip_sample is not None,
        0.0 if clip_sample is None else clip_sample,
    )
    return x_prev, x0


@_ddim_op.register_fake
def _ddim_fake(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_prev: Tensor, eta: float,
    noise: Tensor | None, prediction_type: str, guidance_scale: float | None,
    guidance_frames: Tensor | None, clip_sample: float | None, return_x0: bool,
) -> tuple[Tensor, Tensor]:
    _validate(sample, model_output, alpha_bar_t, alpha_bar_prev, eta, noise, prediction_type,
              guidance_scale, guidance_frames, clip_sample)
    return sample.new_empty(sample.shape), sample.new_empty(sample.shape if return_x0 else (0,))
