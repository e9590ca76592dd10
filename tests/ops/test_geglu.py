"""vdengine.ops.geglu (fused kernel) against vdengine.ops.reference.geglu (float64) and against
diffusers' GEGLU module. Outputs are pre-filled with NaN (poison_outputs)."""

from __future__ import annotations

import pytest
import torch
from _dtype_helpers import CPU_DTYPES, assert_close_bf16
from diffusers.models.activations import GEGLU
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")

# The float32 composition PyTorch runs (bias add, gelu, mul) is itself ~1e-5 off the float64
# reference at |x| ~ 10; the kernel's erf approximation is within that.
TOL = {torch.float32: (3e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 3e-2)}


def check(shape, gen, *, bias=True, scale=3.0, dtype=torch.float32, device="cpu"):
    x = (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)
    b = (torch.randn(shape[-1], generator=gen)).to(device=device, dtype=dtype) if bias else None
    y = ops.geglu(x, b)
    assert y.shape == (*shape[:-1], shape[-1] // 2) and y.dtype == dtype and y.is_contiguous()
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    if dtype == torch.bfloat16 and y.device.type == "cpu":  # one bfloat16 ulp (_dtype_helpers)
        assert_close_bf16(y, R.geglu(x, b), *TOL[torch.float32])
        return
    d = lambda t: None if t is None else t.detach().cpu().double()
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), R.geglu(d(x), d(b)), atol=atol, rtol=rtol)


SHAPES = [(1, 2), (3, 6), (5, 34), (2, 7, 64), (4, 3, 5, 130), (1000, 512), (17, 2048),
          (2, 1, 1, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_matches_reference(shape, bias, dtype, gen):
    check(shape, gen, bias=bias, dtype=dtype)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_value_ranges(scale, dtype, gen):
    """Tiny (gelu ≈ g/2), moderate and large (gelu ≈ g or 0, exp underflow) gate values."""
    check((64, 96), gen, scale=scale, dtype=dtype)


def test_extreme_gates():
    g = torch.tensor([-1e4, -100.0, -20.0, -0.0, 0.0, 20.0, 100.0, 1e4])
    x = torch.cat([torch.ones_like(g)[:, None], g[:, None]], dim=1)
    y = ops.geglu(x).squeeze(1)
    torch.testing.assert_close(y, torch.nn.functional.gelu(g), atol=1e-6, rtol=1e-6)


def test_equals_diffusers_geglu(gen):
    """ops.geglu(x W^T, b) is diffusers' GEGLU(x) with the projection's bias moved into the op."""
    module = GEGLU(24, 40).eval()
    x = torch.randn(2, 9, 24, generator=gen)
    with torch.no_grad():
        expected = module(x)
        got = ops.geglu(torch.nn.functional.linear(x, module.proj.weight), module.proj.bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@given(rows=st.integers(0, 40), h=st.integers(1, 70), bias=st.booleans(),
       dtype=st.sampled_from(CPU_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_matches_reference_hypothesis(rows, h, bias, dtype, seed):
    check((rows, 2 * h), torch.Generator().manual_seed(seed), bias=bias, dtype=dtype)




def test_requires_grad_raises(gen):
    x = torch.randn(3, 8, generator=gen, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"x requires grad.*reference"):
        ops.geglu(x)
    with torch.no_grad():
        ops.geglu(x)


@pytest.mark.parametrize("bias", [False, True])
def test_opcheck(bias, gen):
    x = torch.randn(4, 3, 16, generator=gen)
    b = torch.randn(16, generator=gen) if bias else None
    torch.library.opcheck(torch.ops.vdengine.geglu.default, (x, b))


def test_torch_export(gen):
    class FF(torch.nn.Module):
        def forward(self, x, b):
            return ops.geglu(x, b)

    x, b = torch.randn(4, 16, generator=gen), torch.randn(16, generator=gen)
    ep = torch.export.export(FF(), (x, b))
    assert any(n.target is torch.ops.vdengine.geglu.default for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x, b), FF()(x, b), atol=0, rtol=0)


BAD = [
    ({"x": None}, TypeError, r"x must be a torch\.Tensor"),
    ({"bias": 1.0}, TypeError, r"bias must be a torch\.Tensor or None"),
    ({"x": torch.tensor(1.0)}, ValueError, r"x must have at least one dimension"),
    ({"x": torch.randn(4, 7), "bias": None}, ValueError,
     r"the last dimension of x must be even and positive \(2H"),
    ({"x": torch.randn(4, 0), "bias": None}, ValueError, r"must be even and positive"),
    ({"bias": torch.randn(6)}, ValueError, r"bias must have shape \[8\]"),
    ({"bias": torch.randn(16)[::2]}, ValueError, r"bias must be contiguous"),
    ({"x": torch.randn(8, 4).t()}, ValueError, r"x must be contiguous"),
    ({"x": torch.randn(4, 8).double(), "bias": None}, TypeError,
     r"x has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"x": torch.ones(4, 8, dtype=torch.int32), "bias": None}, TypeError,
     r"x must be a floating-point tensor"),
    ({"bias": torch.randn(8).half()}, TypeError, r"bias must have the dtype of x"),
    ({"x": torch.randn(4, 8).half(), "bias": None}, TypeError,
     r"x has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    ({"x": torch.randn(4, 8).bfloat16()}, TypeError,
     r"bias must have the dtype of x \(torch\.bfloat16\), got torch\.float32"),
    ({"bias": torch.empty(8, device="meta")}, ValueError, r"bias must be on the same device"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    kw = {"x": torch.randn(4, 8), "bias": torch.randn(8)}
    kw.update(over)
    with pytest.raises(exc, match=match):
        ops.geglu(**kw)


# ---- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_cuda_matches_reference(dtype, shape, bias, gen, cuda_device):
    check(shape, gen, bias=bias, dtype=dtype, device=cuda_device)


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    x = torch.randn(4, 3, 16, generator=gen).to(cuda_device, torch.bfloat16)
    torch.library.opcheck(torch.ops.vdengine.geglu.default, (x, None))
