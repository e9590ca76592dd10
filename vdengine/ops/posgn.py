"""PosGN: group normalization fused with a positional scale/shift table and an optional SiLU.

One kernel replaces F.group_norm → ·(1 + scale) + shift → SiLU. The scale/shift tables have M rows
shared over the batch (row n of x uses table row n % M), so a step's tables are computed once and
never repeated in memory. Specification: vdengine.ops.reference.posgn.
"""


import torch
from torch import Tensor

from vdengine._validate import check_int, check_real
from vdengine.ops import _checks as ck
from vdengine.ops._fastpath import ValidatedCalls

__all__ = ["posgn"]


def posgn(
    x: Tensor,  # [N, C, H, W], contiguous or channels-last
    scale: Tensor,  # [M, C, H, W], N % M == 0; row n of x uses row n % M; x's layout
    shift: Tensor,  # [M, C, H, W]
    num_groups: int,
    weight: Tensor | None = None,  # [C]
    bias: Tensor | None = None,  # [C]
    eps: float = 1e-5,
    silu: bool = False,
) -> Tensor:  # [N, C, H, W]
    """Positional Group Normalization: y = (GN(x)·weight + bias)·(1 + scale) + shift [→ SiLU].

    Args:
        x: Input feature maps ``[N, C, H, W]``, contiguous (NCHW) or, on the CPU, channels-last
            (``torch.channels_last``: ``x.is_contiguous(memory_format=torch.channels_last)``, e.g.
            ``t.permute(0, 3, 1, 2)`` of a contiguous ``[N, H, W, C]`` t); float32/bfloat16 on
            CPU, float32/float16/bfloat16 on CUDA (statistics accumulate in float32 or better).
        scale: Positional scale table ``[M, C, H, W]`` in x's memory layout, with N % M == 0; row
            n of x uses table row n % M (tiling, as ``scale.repeat(N // M, 1, 1, 1)``).
        shift: Positional shift table, like scale.
        num_groups: Number of groups G; must divide C.
        weight: Optional per-channel affine weight ``[C]`` applied before the table (x's dtype).
        bias: Optional per-channel affine bias ``[C]``.
        eps: Variance epsilon (> 0).
        silu: Apply SiLU to the result.

    Returns:
        ``[N, C, H, W]`` tensor in x's dtype, device and memory layout (a new tensor).

    Inference only: raises RuntimeError if an input requires grad while grad mode is on (use
    vdengine.ops.reference.posgn, which has autograd, for training).
    """
    key = _calls.key((x, scale, shift, weight, bias), (num_groups, eps, silu))
    if key in _calls:  # this signature passed the checks below before
        return _run(x, scale, shift, num_groups, weight, bias, eps, silu, not x.is_contiguous())
    ck.tensor(x, "x")
    ck.tensor(scale, "scale")
    ck.tensor(shift, "shift")
    ck.tensor(weight, "weight", allow_none=True)
    ck.tensor(bias, "bias", allow_none=True)
    num_groups = check_int("num_groups", num_groups, min=1)
    eps = check_real("eps", eps, positive=True)
    silu = ck.flag(silu, "silu")
    if torch.is_grad_enabled():
        ck.no_grad("posgn", {"x": x, "scale": scale, "shift": shift, "weight": weight,
                             "bias": bias})
    out = _posgn_op(x, scale, shift, num_groups, weight, bias, eps, silu)
    _calls.add(key)
    return out


_calls = ValidatedCalls()


def _validate(
    x: Tensor, scale: Tensor, shift: Tensor, num_groups: int, weight: Tensor | None,
    bias: Tensor | None, eps: float,
) -> bool:
    """Checks everything the kernel assumes; returns True for channels-last tensors."""
    check_int("num_groups", num_groups, min=1)
    check_real("eps", eps, positive=True)
    ck.rank(x, "x", 4, "[N, C, H, W]")
    ck.rank(scale, "scale", 4, "[M, C, H, W]")
    ck.rank(shift, "shift", 4, "[M, C, H, W]")
    tensors = {"x": x, "scale": scale, "shift": shift, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is not None:
            ck.floating(t, name)
    ck.same_device(tensors, "x")
    ck.same_dtype(tensors, "x")
    ck.kernel_dtype(x, "x")
    n, c, h, w = x.shape
    m = scale.shape[0]
    ck.shape(scale, "scale", (m, c, h, w), "[M, C, H, W] with the C, H, W of x")
    ck.shape(shift, "shift", (m, c, h, w), "[M, C, H, W] like scale")
    if m == 0 and n != 0:
        raise ValueError(f"scale and shift must have at least one row (M >= 1) for N = {n} rows of x")
    if m != 0 and n % m != 0:
        raise ValueError(
            f"the rows of x (N = {n}) must be a multiple of the rows of scale/shift (M = {m})"
        )
    if c % num_groups != 0:
        raise ValueError(f"num_groups ({num_groups}) must divide the channels of x (C = {c})")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            ck.shape(t, name, (c,), "[C], one value per channel of x")
            ck.contiguous(t, name)
    return ck.layout_4d({"x": x, "scale": scale, "shift": shift}, "x")


@torch.library.custom_op("vdengine::posgn", mutates_args=())
def _posgn_op(
    x: Tensor, scale: Tensor, shift: Tensor, num_groups: int, weight: Tensor | None,
    bias: Tensor | None, eps: float, silu: bool,
) -> Tensor:
    channels_last = _validate(x, scale, shift, num_groups, weight, bias, eps)
    return _run(x, scale, shift, num_groups, weight, bias, eps, silu, channels_last)


def _run(
    x: Tensor, scale: Tensor, shift: Tensor, num_groups: int, weight: Tensor | None,
    bias: Tensor | None, eps: float, silu: bool, channels_last: bool,
) -> Tensor:
    """The kernel call on validated arguments."""
    y = ck.new_output(x.shape, x, memory_format=ck.memory_format(channels_last))
    if y.numel() == 0:
        return y
    n, c, h, w = x.shape
    layout = (channels_last,) if x.device.type == "cpu" else ()  # CUDA: NCHW only (checked)
    ck.launch(
        "posgn", x, x.data_ptr(), scale.data_ptr(), shift.data_ptr(), ck.ptr(weight),
        ck.ptr(bias), y.data_ptr(), n, c, h * w, scale.shape[0], num_groups, eps, silu, *layout,
    )
    return y


@_posgn_op.register_fake
def _posgn_fake(
    x: Tensor, scale: Tensor, shift: Tensor, num_groups: int, weight: Tensor | None,
    bias: Tensor | None, eps: float, silu: bool,
) -> Tensor:
    channels_last = _validate(x, scale, shift, num_groups, weight, bias, eps)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=ck.memory_format(channels_last))
