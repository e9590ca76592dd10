"""bfloat16 parity of the CPU kernels: the dtypes they take and the tolerance they are held to.

A CPU kernel on bfloat16 tensors widens its inputs to float32 (exact), computes in float32
(statistics in float64 where its float32 version does) and rounds each output to bfloat16 once.
The reference on the same bfloat16 tensors computes in float32 and rounds once too. Before that
rounding the two differ as the float32 kernel differs from the reference: at most the op's float32
tolerance atol + rtol·|ref|. Each rounding adds at most half a bfloat16 ulp, so

    |kernel − reference| ≤ atol + rtol·|ref| + ulp(max(|kernel|, |ref|)),

ulp(v) = 2^(⌊log2 v⌋ − 7), the spacing of bfloat16 (8 significant bits) at v. That is one bfloat16
ulp plus the float32 tolerance, far tighter than a comparison with a float64 ground truth can be
(bfloat16 rounding of the result alone is 2^-9 relative).

Imported as a plain module (tests/ops is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: dtypes of the CPU kernels.
CPU_DTYPES = [torch.float32, torch.bfloat16]


def bf16_ulp(v: Tensor) -> Tensor:
    """The bfloat16 spacing at |v| (float32), the subnormal spacing 2^-133 below 2^-126."""
    a = v.float().abs().clamp_min(2.0**-126)
    return torch.exp2(torch.floor(torch.log2(a)) - 7)


def assert_close_bf16(got: Tensor, ref: Tensor, atol: float, rtol: float) -> None:
    """got and ref bfloat16 tensors of one shape within atol + rtol·|ref| + 1 bfloat16 ulp
    (see the module docstring); non-finite values must match exactly."""
    assert got.dtype == torch.bfloat16 and ref.dtype == torch.bfloat16, (got.dtype, ref.dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    g, r = got.detach().cpu().float(), ref.detach().cpu().float()
    finite = torch.isfinite(g) & torch.isfinite(r)
    assert torch.equal(torch.isnan(g), torch.isnan(r)), "NaNs differ from the reference"
    assert torch.equal(g[torch.isinf(g) | torch.isinf(r)], r[torch.isinf(g) | torch.isinf(r)]), (
        "infinities differ from the reference")
    err = (g - r).abs()
    bound = atol + rtol * r.abs() + bf16_ulp(torch.maximum(g.abs(), r.abs()))
    bad = finite & (err > bound)
    if bad.any():
        i = int(torch.argmax(torch.where(bad, err - bound, torch.zeros_like(err))))
        raise AssertionError(
            f"{int(bad.sum())} of {g.numel()} bfloat16 elements beyond atol {atol} + rtol {rtol} "
            f"+ 1 ulp; worst at flat index {i}: got {g.flatten()[i].item()}, reference "
            f"{r.flatten()[i].item()} (bound {bound.flatten()[i].item():.3g})"
        )
