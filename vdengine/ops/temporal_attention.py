"""Temporal attention: softmax attention across the frames of each video, per pixel and head.

One kernel replaces the permute to [B·S, H, F, D] → scaled_dot_product_attention → permute back.
q, k and v are read in place through their strides (chunks of one fused qkv projection need no
copy). Specification: vdengine.ops.reference.temporal_attention.
"""


import torch
from torch import Tensor

from vdengine._validate import check_int, check_real
from vdengine.ops import _checks as ck
from vdengine.ops._fastpath import ValidatedCalls

__all__ = ["HEAD_DIMS", "MAX_CUDA_HEAD_DIM", "MAX_FRAMES", "temporal_attention"]

#: head dimensions the CUDA kernel is compiled for; any other head_dim <= MAX_CUDA_HEAD_DIM runs
#: on the next one up with the extra channels masked (e.g. 40 on the 64 kernel).
HEAD_DIMS = (16, 32, 64, 128)
#: largest head_dim on CUDA (the CPU kernel takes any head_dim).
MAX_CUDA_HEAD_DIM = 128
#: most frames one attention window may hold.
MAX_FRAMES = 128


def temporal_attention(
    q: Tensor,  # [B·F, S, C], channel stride 1
    k: Tensor,  # [B·F, S, C], channel stride 1
    v: Tensor,  # [B·F, S, C], channel stride 1
    num_frames: int,
    num_heads: int,
    bias: Tensor | None = None,  # [F, F] additive, -inf allowed
    scale: float | None = None,
) -> Tensor:  # [B·F, S, C]
    """Attention over the F frames of each video, independently for every (video, pixel, head).

    Rows of q/k/v are frames (row r = b·F + f); the C = num_heads·head_dim channels split into
    heads. For each (b, s, h): out[f] = Σ_g softmax_g(scale·q[f]·k[g] + bias[f, g]) · v[g].

    Args:
        q: Queries ``[B·F, S, C]``. Any strides with channel stride 1 (``q.stride(2) == 1``), e.g.
            ``qkv.chunk(3, dim=-1)`` of one ``[B·F, S, 3C]`` projection: read in place, no copy.
            float32/bfloat16 on CPU; float32/float16/bfloat16 on CUDA (float32 softmax and
            accumulation).
        k: Keys, shape and dtype of q, own strides (channel stride 1).
        v: Values, like k.
        num_frames: Frames per video F, 1 <= F <= 128; must divide B·F.
        num_heads: Heads H; must divide C. head_dim = C / H is any size on CPU and at most 128
            on CUDA (16, 32, 64 and 128 are the compiled sizes; others run masked on the next).
        bias: Optional additive score bias ``[F, F]`` (query frame, key frame), any float dtype,
            -inf allowed (masking). A query whose row is all -inf outputs zeros.
        scale: Score scale; default head_dim ** -0.5.

    Returns:
        Contiguous ``[B·F, S, C]`` tensor in q's dtype and device.

    Inference only: raises RuntimeError if an input requires grad while grad mode is on (use
    vdengine.ops.reference.temporal_attention for training).
    """
    key = _calls.key((q, k, v, bias), (num_frames, num_heads, scale))
    if key in _calls:  # this signature passed the checks below before
        return _run(q, k, v, num_frames, num_heads, bias, scale, q.shape[2] // num_heads)
    ck.tensor(q, "q")
    ck.tensor(k, "k")
    ck.tensor(v, "v")
    ck.tensor(bias, "bias", allow_none=True)
    num_frames = check_int("num_frames", num_frames, min=1, max=MAX_FRAMES)
    num_heads = check_int("num_heads", num_heads, min=1)
    scale = check_real("scale", scale, allow_none=True)
    if torch.is_grad_enabled():
        ck.no_grad("temporal_attention", {"q": q, "k": k, "v": v, "bias": bias})
    out = _attention_op(q, k, v, num_frames, num_heads, bias, scale)
    _calls.add(key)
    return out


_calls = ValidatedCalls()


def _validate(
    q: Tensor, k: Tensor, v: Tensor, num_frames: int, num_heads: int, bias: Tensor | None,
) -> int:
    """Checks everything the kernel assumes; returns head_dim."""
    check_int("num_frames", num_frames, min=1, max=MAX_FRAMES)
    check_int("num_heads", num_heads, min=1)
    for name, t in (("q", q), ("k", k), ("v", v)):
        ck.rank(t, name, 3, "[B·F, S, C]")
        ck.floating(t, name)
    if bias is not None:
        ck.floating(bias, "bias")
    ck.same_device({"q": q, "k": k, "v": v, "bias": bias}, "q")
    ck.same_dtype({"q": q, "k": k, "v": v}, "q")
    ck.kernel_dtype(q, "q")
    ck.shape(k, "k", q.shape, "[B·F, S, C] like q")
    ck.shape(v, "v", q.shape, "[B·F, S, C] like q")
    rows, _, c = q.shape
    if rows % num_frames != 0:
        raise ValueError(
            f"num_frames ({num_frames}) must divide the rows of q (B·F = {rows})"
        )
    if c % num_heads != 0:
        raise ValueError(f"num_heads ({num_heads}) must divide the channels of q (C = {c})")
    head_dim = c // num_heads
    if head_dim > MAX_CUDA_HEAD_DIM and q.device.type == "cuda":
        raise ValueError(
            f"head_dim = C / num_heads = {c} / {num_heads} = {head_dim} is not supported on CUDA; "
            f"the CUDA kernel takes head_dim <= {MAX_CUDA_HEAD_DIM}"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(2) != 1:
            raise ValueError(
                f"{name} must have channel stride 1 (stride(2) == 1), got strides "
                f"{tuple(t.stride())}; other strides are free"
            )
    if bias is not None:
        ck.shape(bias, "bias", (num_frames, num_frames), "[F, F] (query frame, key frame)")
    return head_dim


@torch.library.custom_op("vdengine::temporal_attention", mutates_args=())
def _attention_op(
    q: Tensor, k: Tensor, v: Tensor, num_frames: int, num_heads: int, bias: Tensor | None,
    scale: float | None,
) -> Tensor:
    head_dim = _validate(q, k, v, num_frames, num_heads, bias)
    return _run(q, k, v, num_frames, num_heads, bias, scale, head_dim)


def _run(
    q: Tensor, k: Tensor, v: Tensor, num_frames: int, num_heads: int, bias: Tensor | None,
    scale: float | None, head_dim: int,
) -> Tensor:
    """The kernel call on validated arguments."""
    rows, s, c = q.shape
    out = ck.new_output((rows, s, c), q)
    if out.numel() == 0:
        return out
    if scale is None:
        scale = head_dim**-0.5
    bias32 = None if bias is None else bias.to(torch.float32).contiguous()
    ck.launch(
        "temporal_attention", q, q.data_ptr(), k.data_ptr(), v.data_ptr(), ck.ptr(bias32),
        out.data_ptr(), rows // num_frames, num_frames, s, num_heads, head_dim,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), scale,
    )
    return out


@_attention_op.register_fake
def _attention_fake(
    q: Tensor, k: Tensor, v: Tensor, num_frames: int, num_heads: int, bias: Tensor | None,
    scale: float | None,
) -> Tensor:
    _validate(q, k, v, num_frames, num_heads, bias)
    return q.new_empty(q.shape)
