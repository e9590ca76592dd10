"""Group normalization (+ SiLU) whose statistics may span the frames of a video.

One kernel replaces F.group_norm → SiLU, and, for the temporal layers of video UNets, the permute
of a [B·F, C, H, W] tensor to [B, C, F, H, W] that nn.GroupNorm needs to normalise over frames:
the F frame rows of a video are read in place. Specification: vdengine.ops.reference.group_norm.
"""

import torch
from torch import Tensor

from vdengine.ops import _checks as ck
from vdengine.ops._fastpath import ValidatedCalls

__all__ = ["group_norm"]


def group_norm(
    x: Tensor,  # [N, C, H, W], N = B·F, contiguous or channels-last
    num_groups: int,
    weight: Tensor | None = None,  # [C]
    bias: Tensor | None = None,  # [C]
    eps: float = 1e-5,
    silu: bool = False,
    frames: int = 1,
) -> Tensor:  # [N, C, H, W]
    """y = GN(x)·weight + bias [→ SiLU], statistics of each group over ``frames`` rows.

    Args:
        x: Input feature maps ``[N, C, H, W]``, contiguous (NCHW) or, on the CPU, channels-last
            (``torch.channels_last``); float32/bfloat16 on CPU, float32/float16/bfloat16 on CUDA
            (statistics accumulate in float32 or better).
        num_groups: Number of groups G; must divide C.
        weight: Optional per-channel affine weight ``[C]`` (x's dtype).
        bias: Optional per-channel affine bias ``[C]``.
        eps: Variance epsilon (> 0).
        silu: Apply SiLU to the result.
        frames: F, rows per statistics group: rows v·F .. v·F+F−1 are the frames of video v and
            group g of video v is normalised over its C/G channels × H × W × F frames (what
            nn.GroupNorm gives on the [B, C, F, H, W] view). Must divide N. 1: per row.

    Returns:
        ``[N, C, H, W]`` tensor in x's dtype, device and memory layout (a new tensor).

    Inference only: raises RuntimeError if an input requires grad while grad mode is on (use
    vdengine.ops.reference.group_norm, which has autograd, for training).
    """
    key = _calls.key((x, weight, bias), (num_groups, eps, silu, frames))
    if key in _calls:  # this signature passed the checks below before
        return _run(x, num_groups, weight, bias, eps, silu, frames, not x.is_contiguous())
    ck.tensor(x, "x")
    ck.tensor(weight, "weight", allow_none=True)
    ck.tensor(bias, "bias", allow_none=True)
    num_groups = ck.positive_int(num_groups, "num_groups")
    eps = ck.positive_real(eps, "eps")
    silu = ck.flag(silu, "silu")
    frames = ck.positive_int(frames, "frames")
    if torch.is_grad_enabled():
        ck.no_grad("group_norm", {"x": x, "weight": weight, "bias": bias})
    out = _group_norm_op(x, num_groups, weight, bias, eps, silu, frames)
    _calls.add(key)
    return out


_calls = ValidatedCalls()


def _validate(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
              frames: int) -> bool:
    """Checks everything the kernel assumes; returns True for a channels-last x."""
    ck.positive_int(num_groups, "num_groups")
    ck.positive_real(eps, "eps")
    ck.positive_int(frames, "frames")
    ck.rank(x, "x", 4, "[N, C, H, W]")
    tensors = {"x": x, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is not None:
            ck.floating(t, name)
    ck.same_device(tensors, "x")
    ck.same_dtype(tensors, "x")
    ck.kernel_dtype(x, "x")
    n, c = x.shape[:2]
    if c % num_groups != 0:
        raise ValueError(f"num_groups ({num_groups}) must divide the channels of x (C = {c})")
    if n % frames != 0:
        raise ValueError(f"frames ({frames}) must divide the rows of x (N = B·F = {n})")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            ck.shape(t, name, (c,), "[C], one value per channel of x")
            ck.contiguous(t, name)
    return ck.layout_4d({"x": x}, "x")


@torch.library.custom_op("vdengine::group_norm", mutates_args=())
def _group_norm_op(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None,
                   eps: float, silu: bool, frames: int) -> Tensor:
    channels_last = _validate(x, num_groups, weight, bias, eps, frames)
    return _run(x, num_groups, weight, bias, eps, silu, frames, channels_last)


def _run(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
         silu: bool, frames: int, channels_last: bool) -> Tensor:
    """The kernel call on validated arguments."""
    y = ck.new_output(x.shape, x, memory_format=ck.memory_format(channels_last))
    if y.numel() == 0:
        return y
    n, c, h, w = x.shape
    layout = (channels_last,) if x.device.type == "cpu" else ()  # CUDA: NCHW only (checked)
    ck.launch("group_norm", x, x.data_ptr(), ck.ptr(weight), ck.ptr(bias), y.data_ptr(), n, c,
              h * w, num_groups, frames, eps, silu, *layout)
    return y


@_group_norm_op.register_fake
def _group_norm_fake(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None,
                     eps: float, silu: bool, frames: int) -> Tensor:
    channels_last = _validate(x, num_groups, weight, bias, eps, frames)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=ck.memory_format(channels_last))
