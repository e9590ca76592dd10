"""DPM-Solver++(2M) step: one fused elementwise kernel per update, guidance combine included.

Replaces the chain  u + s·(c − u) → x0 → clip → D = x0 + (x0 − x0_prev)/(2r) → σ-ratio update:
the kernel reads sample, model_output (and x0_prev) once and writes x_next and x0.
Specification: vdengine.ops.reference.dpmpp_2m_step.
"""


import torch
from torch import Tensor

from vdengine.ops import _checks as ck
from vdengine.ops import _native

__all__ = ["dpmpp_2m_step"]


def dpmpp_2m_step(
    sample: Tensor,  # [N, ...]
    model_output: Tensor,  # [N, ...], or [2N, ...] = [uncond; cond] with guidance_scale
    alpha_bar_t: Tensor | float,  # ᾱ at the current timestep: float, or tensor [1] / [N]
    alpha_bar_next: Tensor | float,  # ᾱ at the timestep stepped to (1.0 = clean end)
    x0_prev: Tensor | None = None,  # [N, ...] x0 predicted at the previous step
    alpha_bar_prev: Tensor | float | None = None,  # ᾱ where x0_prev was predicted
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per-frame scales for [N, F, ...]
    clip_sample: float | None = None,
) -> tuple[Tensor, Tensor]:  # (x_next [N, ...], x0 [N, ...])
    """One DPM-Solver++(2M) update (Lu et al. 2022), data prediction, midpoint form.

    With λ = log(√ᾱ/√(1−ᾱ)), h = λ_next − λ_t, r = (λ_t − λ_prev)/h and
    D = x0 + (x0 − x0_prev)/(2r):  x_next = (σ_next/σ_t)·x + α_next·(1 − e^{−h})·D. First order
    (D = x0) when x0_prev is None, and for rows where ᾱ_next = 1 (the final step to σ = 0).

    Args:
        sample: Current latents ``[N, ...]``, contiguous; float32/bfloat16 on CPU,
            float32/float16/bfloat16 on CUDA (float32 math inside).
        model_output: Denoiser output ``[N, ...]``, or ``[2N, ...]`` (unconditional rows first)
            when guidance_scale is given. Contiguous, sample's dtype.
        alpha_bar_t: ᾱ at the current timestep: a Python float in (0, 1), or a tensor with one
            element or one per row, on sample's device (or the CPU); no host sync.
        alpha_bar_next: ᾱ at the timestep stepped to, like alpha_bar_t; a float may be 1.0.
        x0_prev: The x0 returned by the previous step, ``[N, ...]``, for the second-order update.
        alpha_bar_prev: ᾱ at the previous step's timestep; required when x0_prev is given.
        prediction_type: "epsilon", "v_prediction" or "sample".
        guidance_scale: Classifier-free guidance scale s: out = u + s·(c − u); a float, or a 1-D
            tensor of F per-frame scales for sample laid out [N, F, ...] (element frame =
            (index / inner) % F, inner = the product of the dims after F).
        clip_sample: Clamp x0 to [−clip_sample, clip_sample] (> 0) when given.

    Returns:
        ``(x_next, x0)``, both ``[N, ...]`` in sample's dtype; pass x0 as x0_prev next step.

    Python-float coefficients must lie in the stated ranges (checked); tensor coefficients are not
    value-checked (that would sync the host). Inference only: raises RuntimeError if an input
    requires grad while grad mode is on (use vdengine.ops.reference.dpmpp_2m_step for training).
    """
    ck.tensor(sample, "sample")
    ck.tensor(model_output, "model_output")
    ck.tensor(x0_prev, "x0_prev", allow_none=True)
    if sample.dim() < 1:
        raise ValueError("sample must have at least one dimension [N, ...], got a 0-d tensor")
    if x0_prev is not None and alpha_bar_prev is None:
        raise ValueError("alpha_bar_prev is required when x0_prev is given (second-order step)")
    prediction_type = ck.prediction_type(prediction_type)
    clip_sample = ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    n = sample.shape[0]
    if torch.is_grad_enabled():
        ck.no_grad("dpmpp_2m_step", {
            "sample": sample, "model_output": model_output, "x0_prev": x0_prev,
            "alpha_bar_t": alpha_bar_t, "alpha_bar_next": alpha_bar_next,
            "alpha_bar_prev": alpha_bar_prev, "guidance_scale": guidance_scale,
        })
    guidance_scale, frames = ck.guidance(guidance_scale, sample)
    ab_t = ck.coefficient(alpha_bar_t, "alpha_bar_t", n, sample)
    ab_next = ck.coefficient(alpha_bar_next, "alpha_bar_next", n, sample, allow_one=True)
    ab_prev = None  # checked whenever given; read by the kernel only with x0_prev
    if alpha_bar_prev is not None:
        ab_prev = ck.coefficient(alpha_bar_prev, "alpha_bar_prev", n, sample)
    return _dpmpp_op(sample, model_output, ab_t, ab_next, x0_prev, ab_prev, prediction_type,
                     guidance_scale, frames, clip_sample)


def _validate(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_next: Tensor,
    x0_prev: Tensor | None, alpha_bar_prev: Tensor | None, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
) -> tuple[int, int]:
    ck.prediction_type(prediction_type)
    ck.real(guidance_scale, "guidance_scale", allow_none=True)
    ck.positive_real(clip_sample, "clip_sample", allow_none=True)
    if x0_prev is not None and alpha_bar_prev is None:
        raise ValueError("alpha_bar_prev is required when x0_prev is given (second-order step)")
    guided = guidance_scale is not None or guidance_frames is not None
    n, d = ck.step_tensors(sample, model_output, guided, {"x0_prev": x0_prev})
    ck.guidance_frames_tensor(guidance_frames, sample, guidance_scale)
    ck.coefficient_tensor(alpha_bar_t, "alpha_bar_t", n, sample)
    ck.coefficient_tensor(alpha_bar_next, "alpha_bar_next", n, sample)
    if alpha_bar_prev is not None:
        ck.coefficient_tensor(alpha_bar_prev, "alpha_bar_prev", n, sample)
    return n, d


@torch.library.custom_op("vdengine::dpmpp_2m_step", mutates_args=())
def _dpmpp_op(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_next: Tensor,
    x0_prev: Tensor | None, alpha_bar_prev: Tensor | None, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
) -> tuple[Tensor, Tensor]:
    """(x_next, x0). guidance_frames: float32 [F] per-frame scales (instead of guidance_scale)."""
    n, d = _validate(sample, model_output, alpha_bar_t, alpha_bar_next, x0_prev, alpha_bar_prev,
                     prediction_type, guidance_scale, guidance_frames, clip_sample)
    x_next = ck.new_output(sample.shape, sample)
    x0 = ck.new_output(sample.shape, sample)
    if x_next.numel() == 0:
        return x_next, x0
    if x0_prev is None:
        alpha_bar_prev = None  # a first-order step reads no ᾱ_prev
    (ab_t, ab_next, ab_prev), coef_stride = ck.step_coefficients(
        {"alpha_bar_t": alpha_bar_t, "alpha_bar_next": alpha_bar_next,
         "alpha_bar_prev": alpha_bar_prev}, n)
    ck.launch(
        "dpmpp_2m_step", sample, sample.data_ptr(), model_output.data_ptr(), 0, ck.ptr(x0_prev),
        ab_t.data_ptr(), ab_next.data_ptr(), ck.ptr(ab_prev), coef_stride, x_next.data_ptr(),
        x0.data_ptr(), n, d, 0.0, _native.PREDICTION_CODES[prediction_type],
        *ck.guidance_launch_args(guidance_scale, guidance_frames, d), clip_sample is not None,
        0.0 if clip_sample is None else clip_sample,
    )
    return x_next, x0


@_dpmpp_op.register_fake
def _dpmpp_fake(
    sample: Tensor, model_output: Tensor, alpha_bar_t: Tensor, alpha_bar_next: Tensor,
    x0_prev: Tensor | None, alpha_bar_prev: Tensor | None, prediction_type: str,
    guidance_scale: float | None, guidance_frames: Tensor | None, clip_sample: float | None,
) -> tuple[Tensor, Tensor]:
    _validate(sample, model_output, alpha_bar_t, alpha_bar_next, x0_prev, alpha_bar_prev,
              prediction_type, guidance_scale, guidance_frames, clip_sample)
    return sample.new_empty(sample.shape), sample.new_empty(sample.shape)
