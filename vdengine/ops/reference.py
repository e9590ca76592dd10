"""Pure-PyTorch specification of every vdengine op.

These functions are the definition the C++ and CUDA kernels are tested against. They favour
clarity over speed, compute in float32 (or float64 when given float64) and return the input dtype.
They also carry autograd, which is why training runs the models on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# One home for the prediction types and the (x0, ε) conversion: the noise-schedule module.
from vdengine.schedules import PREDICTION_TYPES, predict_x0_eps


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def posgn(
    x: Tensor,  # [N, C, H, W]
    scale: Tensor,  # [M, C, H, W], N % M == 0; row i of x uses row i % M
    shift: Tensor,  # [M, C, H, W]
    num_groups: int,
    weight: Tensor | None = None,  # [C]
    bias: Tensor | None = None,  # [C]
    eps: float = 1e-5,
    silu: bool = False,
) -> Tensor:  # [N, C, H, W]
    """Positional Group Normalization (VIDM): (GN(x)·weight + bias)·(1 + scale) + shift [→ SiLU]."""
    n, m = x.shape[0], scale.shape[0]
    cd = _compute_dtype(x)
    w = None if weight is None else weight.to(cd)
    b = None if bias is None else bias.to(cd)
    # torch.group_norm, not F.group_norm: the latter refuses inputs with N·H·W == 1 (a batch-norm
    # check, "Expected more than 1 value per channel when training") though GN over C/G channels
    # is well defined there. Same math and autograd.
    y = torch.group_norm(x.to(cd), num_groups, w, b, eps)
    reps = n // m
    # Row i uses table row i % M: tiling (repeat), not repeat_interleave.
    sc = scale.to(cd).repeat(reps, 1, 1, 1)
    sh = shift.to(cd).repeat(reps, 1, 1, 1)
    y = y * (1 + sc) + sh
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)


def temporal_attention(
    q: Tensor,  # [B·F, S, C]
    k: Tensor,  # [B·F, S, C]
    v: Tensor,  # [B·F, S, C]
    num_frames: int,
    num_heads: int,
    bias: Tensor | None = None,  # [F, F] additive, -inf allowed
    scale: float | None = None,
) -> Tensor:  # [B·F, S, C]
    """Softmax attention across frames, independently for every (video, pixel, head).

    A query whose bias row is entirely -inf attends to nothing and outputs zeros.
    """
    bf, s, c = q.shape
    f, h = num_frames, num_heads
    b, d = bf // f, c // h
    if scale is None:
        scale = d**-0.5
    cd = _compute_dtype(q)

    def split(t: Tensor) -> Tensor:  # [B·F, S, C] -> [B, S, H, F, D]
        return t.to(cd).reshape(b, f, s, h, d).permute(0, 2, 3, 1, 4)

    qs, ks, vs = split(q), split(k), split(v)
    scores = (qs @ ks.transpose(-1, -2)) * scale  # [B, S, H, F, F]
    if bias is not None:
        scores = scores + bias.to(cd)
    probs = torch.softmax(scores, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # fully masked rows -> zeros
    out = probs @ vs  # [B, S, H, F, D]
    return out.permute(0, 3, 1, 2, 4).reshape(bf, s, c).to(q.dtype)


def group_norm(
    x: Tensor,  # [N, C, H, W], N = B·F
    num_groups: int,
    weight: Tensor | None = None,  # [C]
    bias: Tensor | None = None,  # [C]
    eps: float = 1e-5,
    silu: bool = False,
    frames: int = 1,
) -> Tensor:  # [N, C, H, W]
    """GroupNorm·weight + bias [→ SiLU] with statistics over ``frames`` consecutive rows.

    Rows v·F .. v·F+F−1 of x are the F frames of video v; group g of video v is normalised over
    its C/G channels × H·W pixels × F frames — ``nn.GroupNorm`` applied to the [B, C, F, H, W]
    view, as diffusers' temporal layers do. frames=1 is the per-image GroupNorm.
    """
    n, c, h, w = x.shape
    cd = _compute_dtype(x)
    wt = None if weight is None else weight.to(cd)
    b = None if bias is None else bias.to(cd)
    video = x.to(cd).reshape(n // frames, frames, c, h * w).transpose(1, 2)  # [B, C, F, HW]
    y = torch.group_norm(video, num_groups, wt, b, eps)  # torch.group_norm: see posgn
    y = y.transpose(1, 2).reshape(n, c, h, w)
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)


def geglu(
    x: Tensor,  # [..., 2H]: a projection's output, without its bias
    bias: Tensor | None = None,  # [2H]
) -> Tensor:  # [..., H]
    """GEGLU (diffusers' activation "geglu"): h·gelu(g) with [h, g] = (x + bias).chunk(2, -1),
    exact (erf) GELU."""
    cd = _compute_dtype(x)
    xb = x.to(cd) if bias is None else x.to(cd) + bias.to(cd)
    h, g = xb.chunk(2, dim=-1)
    return (h * F.gelu(g)).to(x.dtype)


def _per_row(coef: Tensor | float, rows: int, like: Tensor) -> Tensor:
    """A float, a 0-d/[1] tensor or a [rows] tensor as a [rows, 1, ..., 1] tensor in like's dtype."""
    t = torch.as_tensor(coef, dtype=like.dtype, device=like.device).reshape(-1)
    t = t.expand(rows) if t.numel() == 1 else t
    return t.reshape(rows, *([1] * (like.dim() - 1)))


def combine_guidance(model_output: Tensor, rows: int, guidance_scale: float | Tensor | None
                     ) -> Tensor:
    """Classifier-free guidance on [uncond; cond] stacked rows: u + s·(c − u).

    guidance_scale: a float, or a [F] tensor of per-frame scales for rows laid out [N, F, ...]
    (frame f of every row uses scale f, as SVD's linspace(min, max, F)).
    """
    if guidance_scale is None:
        return model_output
    uncond, cond = model_output[:rows], model_output[rows:]
    if isinstance(guidance_scale, Tensor):
        shape = (1, guidance_scale.numel(), *([1] * (model_output.dim() - 2)))
        guidance_scale = guidance_scale.to(model_output.dtype).reshape(shape)
    return uncond + guidance_scale * (cond - uncond)


def ddim_step(
    sample: Tensor,  # [N, ...]
    model_output: Tensor,  # [N, ...], or [2N, ...] = [uncond; cond] with guidance_scale
    alpha_bar_t: Tensor | float,  # float, or [N] / [1] tensor
    alpha_bar_prev: Tensor | float,
    eta: float = 0.0,
    noise: Tensor | None = None,  # [N, ...], needed when eta > 0
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per frame
    clip_sample: float | None = None,
    return_x0: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """One DDIM update (Song et al. 2021), the math of diffusers' DDIMScheduler.step.

    x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t;  σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev);
    x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise. As in diffusers, clipping x0 does not
    recompute ε.
    """
    n = sample.shape[0]
    cd = _compute_dtype(sample)
    x = sample.to(cd)
    out = combine_guidance(model_output.to(cd), n, guidance_scale)
    ab_t = _per_row(alpha_bar_t, n, x)
    ab_p = _per_row(alpha_bar_prev, n, x)
    x0, eps = predict_x0_eps(x, out, ab_t, prediction_type)
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
    sigma = eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_p).sqrt()
    direction = (1 - ab_p - sigma**2).clamp_min(0).sqrt() * eps
    x_prev = ab_p.sqrt() * x0 + direction
    if eta > 0:
        x_prev = x_prev + sigma * noise.to(cd)
    x_prev = x_prev.to(sample.dtype)
    return (x_prev, x0.to(sample.dtype)) if return_x0 else x_prev


def dpmpp_2m_step(
    sample: Tensor,  # [N, ...]
    model_output: Tensor,  # [N, ...], or [2N, ...] with guidance_scale
    alpha_bar_t: Tensor | float,  # ᾱ at the current timestep
    alpha_bar_next: Tensor | float,  # ᾱ at the timestep stepped to (1.0 = the clean end)
    x0_prev: Tensor | None = None,  # [N, ...] the x0 predicted at the previous step
    alpha_bar_prev: Tensor | float | None = None,  # ᾱ at the previous step's timestep
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per frame
    clip_sample: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One DPM-Solver++(2M) update (Lu et al. 2022), data prediction, midpoint form.

    With λ = log(√ᾱ/√(1−ᾱ)), h = λ_next − λ_t, r = (λ_t − λ_prev)/h, D = x0 + (x0 − x0_prev)/(2r):
    x_next = (σ_next/σ_t)·x + α_next·(1 − e^{−h})·D. First order (D = x0) when x0_prev is None
    or where ᾱ_next = 1 (the final step to σ = 0, as diffusers does). Returns (x_next, x0).
    """
    n = sample.shape[0]
    cd = _compute_dtype(sample)
    x = sample.to(cd)
    out = combine_guidance(model_output.to(cd), n, guidance_scale)
    ab_t = _per_row(alpha_bar_t, n, x)
    ab_n = _per_row(alpha_bar_next, n, x)
    x0, _ = predict_x0_eps(x, out, ab_t, prediction_type)
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
    a_t, s_t = ab_t.sqrt(), (1 - ab_t).sqrt()
    a_n, s_n = ab_n.sqrt(), (1 - ab_n).sqrt()
    exp_neg_h = (s_n * a_t) / (a_n * s_t)
    d = x0
    if x0_prev is not None:
        ab_p = _per_row(alpha_bar_prev, n, x)
        lam = lambda ab: 0.5 * (ab.log() - (1 - ab).log())
        second = s_n > 0
        h = torch.where(second, lam(ab_n) - lam(ab_t), torch.ones_like(ab_n))
        r = (lam(ab_t) - lam(ab_p)) / h
        d = torch.where(second, x0 + (x0 - x0_prev.to(cd)) / (2 * r), x0)
    x_next = (s_n / s_t) * x + a_n * (1 - exp_neg_h) * d
    return x_next.to(sample.dtype), x0.to(sample.dtype)


def euler_step(
    sample: Tensor,  # [N, ...] x in σ-space: x0 + σ·ε
    model_output: Tensor,  # [N, ...], or [2N, ...] with guidance_scale
    sigma: Tensor | float,  # σ of the current step
    sigma_next: Tensor | float,  # σ stepped to (0 = the clean end)
    prediction_type: str = "epsilon",
    guidance_scale: float | Tensor | None = None,  # or [F] per frame
    clip_sample: float | None = None,
    return_x0: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """One Euler step in σ (Karras et al. 2022, Alg. 1 without churn), the math of diffusers'
    EulerDiscreteScheduler.step with s_churn = 0.

    x0 = x − σ·m (epsilon), m·(−σ/√(σ²+1)) + x/(σ²+1) (v-prediction), or m (sample);
    x_next = x + ((x − x0)/σ)·(σ_next − σ).
    """
    n = sample.shape[0]
    cd = _compute_dtype(sample)
    x = sample.to(cd)
    out = combine_guidance(model_output.to(cd), n, guidance_scale)
    s = _per_row(sigma, n, x)
    s_next = _per_row(sigma_next, n, x)
    if prediction_type == "epsilon":
        x0 = x - s * out
    elif prediction_type == "v_prediction":
        x0 = out * (-s / (s**2 + 1) ** 0.5) + x / (s**2 + 1)
    elif prediction_type == "sample":
        x0 = out
    else:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
    x_next = (x + (x - x0) / s * (s_next - s)).to(sample.dtype)
    return (x_next, x0.to(sample.dtype)) if return_x0 else x_next


__all__ = [
    "PREDICTION_TYPES",
    "combine_guidance",
    "ddim_step",
    "dpmpp_2m_step",
    "euler_step",
    "geglu",
    "group_norm",
    "posgn",
    "predict_x0_eps",
    "temporal_attention",
]
