"""GEGLU: the gated-GELU activation of diffusers' transformer feed-forwards, bias included.

One kernel replaces the bias fill of the projection (PyTorch's CPU addmm copies the bias into the
whole output first), chunk, gelu and multiply: pass the projection's output computed without its
bias and the bias itself. Specification: vdengine.ops.reference.geglu.
"""

import torch
from torch import Tensor

from vdengine.ops import _checks as ck
from vdengine.ops._fastpath import ValidatedCalls

__all__ = ["geglu"]


def geglu(
    x: Tensor,  # [..., 2H], contiguous
    bias: Tensor | None = None,  # [2H]
) -> Tensor:  # [..., H]
    """y = (x[..., :H] + bias[:H]) · gelu(x[..., H:] + bias[H:]), exact (erf) GELU.

    Args:
        x: The projection output ``[..., 2H]`` without its bias, contiguous; float32/bfloat16
            on CPU, float32/float16/bfloat16 on CUDA (computed in float32).
        bias: Optional bias ``[2H]`` of the projection, in x's dtype, added here.

    Returns:
        ``[..., H]`` contiguous tensor in x's dtype and device.

    Inference only: raises RuntimeError if an input requires grad while grad mode is on (use
    vdengine.ops.reference.geglu for training).
    """
    key = _calls.key((x, bias), ())
    if key in _calls:  # this signature passed the checks below before
        return _run(x, bias, x.shape[-1] // 2)
    ck.tensor(x, "x")
    ck.tensor(bias, "bias", allow_none=True)
    if torch.is_grad_enabled():
        ck.no_grad("geglu", {"x": x, "bias": bias})
    out = _geglu_op(x, bias)
    _calls.add(key)
    return out


_calls = ValidatedCalls()


def _validate(x: Tensor, bias: Tensor | None) -> int:
    """Checks what the kernel assumes; returns H."""
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., 2H], got a 0-d tensor")
    tensors = {"x": x, "bias": bias}
    for name, t in tensors.items():
        if t is not None:
            ck.floating(t, name)
    ck.same_device(tensors, "x")
    ck.same_dtype(tensors, "x")
    ck.kernel_dtype(x, "x")
    two_h = x.shape[-1]
    if two_h == 0 or two_h % 2:
        raise ValueError(f"the last dimension of x must be even and positive (2H: the value "
                         f"and gate halves), got {two_h}")
    if bias is not None:
        ck.shape(bias, "bias", (two_h,), "[2H], the projection's bias")
        ck.contiguous(bias, "bias")
    ck.contiguous(x, "x")
    return two_h // 2


@torch.library.custom_op("vdengine::geglu", mutates_args=())
def _geglu_op(x: Tensor, bias: Tensor | None) -> Tensor:
    return _run(x, bias, _validate(x, bias))


def _run(x: Tensor, bias: Tensor | None, h: int) -> Tensor:
    """The kernel call on validated arguments."""
    y = ck.new_output((*x.shape[:-1], h), x)
    if y.numel() == 0:
        return y
    ck.launch("geglu", x, x.data_ptr(), ck.ptr(bias), y.data_ptr(), y.numel() // h, h)
    return y


@_geglu_op.register_fake
def _geglu_fake(x: Tensor, bias: Tensor | None) -> Tensor:
    h = _validate(x, bias)
    return x.new_empty((*x.shape[:-1], h))
