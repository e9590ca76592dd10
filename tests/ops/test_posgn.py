"""vdengine.ops.posgn (fused C++/CUDA kernel) against its specification vdengine.ops.reference.posgn.

Every output is pre-filled with NaN (poison_outputs) so an element the kernel skips cannot match.
Ground truth is the reference in float64 on the same (dtype-rounded) inputs; bfloat16 on the CPU is
held to the reference on the same bfloat16 tensors within one bfloat16 ulp (_dtype_helpers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dtype_helpers import CPU_DTYPES, assert_close_bf16
from _layout_helpers import LAYOUTS, assert_layout, to_layout
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")

# (atol, rtol) of the fused op against the float64 reference, by the dtype it computes in.
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 3e-2)}


def make_inputs(n, m, c, h, w, gen, *, affine="both", offset=0.0, dtype=torch.float32,
                device="cpu", layout="nchw"):
    """x with per-channel offsets (groups differ), tables around 0, affine near identity; x and
    the tables in `layout` (_layout_helpers)."""
    x = torch.randn(n, c, h, w, generator=gen) * 1.5 + torch.randn(1, c, 1, 1, generator=gen)
    x = x + offset
    scale = 0.5 * torch.randn(m, c, h, w, generator=gen)
    shift = torch.randn(m, c, h, w, generator=gen)
    weight = 1 + 0.2 * torch.randn(c, generator=gen) if affine in ("both", "weight") else None
    bias = 0.2 * torch.randn(c, generator=gen) if affine in ("both", "bias") else None
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    x, scale, shift = (to_layout(cast(t), layout) for t in (x, scale, shift))
    return x, scale, shift, cast(weight), cast(bias)


def reference64(x, scale, shift, g, weight, bias, eps, silu):
    d = lambda t: None if t is None else t.detach().cpu().double()
    return R.posgn(d(x), d(scale), d(shift), g, d(weight), d(bias), eps, silu)


def check(n, m, c, g, h, w, gen, *, affine="both", silu=False, eps=1e-5, offset=0.0,
          dtype=torch.float32, device="cpu", tol=None, layout="nchw"):
    x, scale, shift, weight, bias = make_inputs(n, m, c, h, w, gen, affine=affine, offset=offset,
                                                dtype=dtype, device=device, layout=layout)
    y = ops.posgn(x, scale, shift, g, weight, bias, eps=eps, silu=silu)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_layout(y, layout)
    assert y.data_ptr() != x.data_ptr()
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    if dtype == torch.bfloat16 and y.device.type == "cpu":
        ref = R.posgn(x, scale, shift, g, weight, bias, eps, silu)
        assert_close_bf16(y, ref, *(tol or TOL[torch.float32]))
        return
    ref = reference64(x, scale, shift, g, weight, bias, eps, silu)
    atol, rtol = tol or TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), ref, atol=atol, rtol=rtol)


# ---- parity on the CPU ----------------------------------------------------------------------------

SHAPES = [  # (N, M, C, G, H, W)
    (1, 1, 1, 1, 1, 1),  # smallest
    (2, 1, 4, 2, 1, 1),  # 1×1 spatial, M = 1
    (4, 2, 8, 4, 7, 5),  # 7×5: H·W a multiple of no block size
    (3, 3, 6, 6, 3, 3),  # M = N, C = G (one channel per group)
    (6, 2, 12, 3, 5, 9),
    (4, 1, 32, 8, 16, 16),  # one table row for the whole batch
    (2, 2, 64, 32, 8, 8),
    (8, 4, 16, 1, 11, 13),  # G = 1: normalise over C·H·W
    (2, 1, 96, 32, 33, 17),
    (32, 16, 8, 2, 4, 4),  # 2 videos × 16 frames, tables per frame
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}M{}C{}G{}H{}W{}".format(*s))
@pytest.mark.parametrize("affine", ["none", "both", "weight", "bias"])
@pytest.mark.parametrize("silu", [False, True])
def test_matches_reference(shape, affine, silu, dtype, layout, gen):
    check(*shape, gen, affine=affine, silu=silu, dtype=dtype, layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("eps", [1e-6, 1e-3, 0.5])
def test_eps(eps, dtype, layout, gen):
    check(4, 2, 16, 4, 5, 5, gen, eps=eps, dtype=dtype, layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_video_shape(dtype, layout, gen):
    """The CPU benchmark's default: 2 videos × 16 frames, C 128, 32×32, 32 groups, tables per frame."""
    check(32, 16, 128, 32, 32, 32, gen, silu=True, dtype=dtype, layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_large_mean_is_numerically_stable(dtype, layout, gen):
    """|mean| >> std: a one-pass E[x²] − E[x]² variance in float32 would lose most digits."""
    check(2, 1, 16, 4, 16, 16, gen, offset=300.0, tol=(2e-3, 2e-3), dtype=dtype, layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 64, 32, 40, 40), (2, 2, 320, 32, 9, 7),
                                   (3, 1, 24, 8, 70, 70)], ids=str)
def test_two_threads(shape, dtype, layout, gen):
    """With two threads: whole groups/videos per thread, and (N = 1 here, or one big group) the
    threads splitting each task's elements, both passes (the tests otherwise run one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check(*shape, gen, silu=True, dtype=dtype, layout=layout)
    finally:
        torch.set_num_threads(threads)


def test_constant_groups(gen):
    """Zero variance: the output is bias·(1 + scale) + shift exactly (rstd = 1/√eps times 0)."""
    x = torch.full((2, 4, 3, 3), 7.0)
    scale, shift = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    bias = torch.randn(4, generator=gen)
    y = ops.posgn(x, scale, shift, 2, None, bias)
    expected = bias.reshape(1, 4, 1, 1) * (1 + scale) + shift
    # atol: a float32 mean off by one ulp of 7 is amplified by rstd = 1/√eps ≈ 316 (3e-5 in torch).
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-5)


@given(
    g=st.integers(1, 8), cpg=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 12),
    m=st.integers(1, 4), reps=st.integers(1, 3), affine=st.sampled_from(["none", "both"]),
    silu=st.booleans(), dtype=st.sampled_from(CPU_DTYPES), layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(g, cpg, h, w, m, reps, affine, silu, dtype, layout, seed):
    check(m * reps, m, g * cpg, g, h, w, torch.Generator().manual_seed(seed), affine=affine,
          silu=silu, dtype=dtype, layout=layout)


def test_table_row_is_n_mod_m(gen):
    """Row n uses table row n % M (tiling), not n // (N/M) (repeat_interleave)."""
    x = torch.randn(4, 2, 2, 2, generator=gen)
    scale = torch.stack([torch.zeros(2, 2, 2), torch.ones(2, 2, 2)])  # row 0: ×1, row 1: ×2
    shift = torch.zeros(2, 2, 2, 2)
    y = ops.posgn(x, scale, shift, 1)
    gn = torch.nn.functional.group_norm(x, 1)
    torch.testing.assert_close(y[0::2], gn[0::2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1::2], 2 * gn[1::2], atol=1e-5, rtol=1e-5)




def test_numpy_scalars(gen):
    """numpy ints and floats (e.g. from a config or a schedule array) are accepted as scalars."""
    x, scale, shift, weight, bias = make_inputs(4, 2, 8, 3, 3, gen)
    y = ops.posgn(x, scale, shift, np.int64(4), weight, bias, eps=np.float32(1e-5))
    torch.testing.assert_close(y, ops.posgn(x, scale, shift, 4, weight, bias, eps=1e-5),
                               atol=1e-6, rtol=1e-6)


def test_inputs_untouched(gen):
    x, scale, shift, weight, bias = make_inputs(4, 2, 8, 3, 3, gen)
    before = [t.clone() for t in (x, scale, shift, weight, bias)]
    ops.posgn(x, scale, shift, 4, weight, bias, silu=True)
    for t, b in zip((x, scale, shift, weight, bias), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0, 1, 4, 3, 3), (0, 0, 4, 3, 3), (2, 1, 4, 0, 3), (2, 2, 4, 3, 0)])
def test_empty(shape):
    n, m, c, h, w = shape
    x, scale, shift = torch.empty(n, c, h, w), torch.empty(m, c, h, w), torch.empty(m, c, h, w)
    y = ops.posgn(x, scale, shift, 2)
    assert y.shape == x.shape and y.numel() == 0


# ---- autograd, custom op, compile ------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    x, scale, shift, weight, bias = make_inputs(2, 1, 4, 3, 3, gen)
    weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"weight requires grad.*vdengine\.ops\.reference"):
        ops.posgn(x, scale, shift, 2, weight, bias)
    with torch.no_grad():
        y = ops.posgn(x, scale, shift, 2, weight, bias)
    assert not y.requires_grad
    with torch.inference_mode():
        ops.posgn(x, scale, shift, 2, weight, bias)


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck(affine, layout, gen):
    x, scale, shift, weight, bias = make_inputs(4, 2, 8, 5, 3, gen, affine=affine, layout=layout)
    torch.library.opcheck(torch.ops.vdengine.posgn.default,
                          (x, scale, shift, 4, weight, bias, 1e-5, True))


def test_torch_export(gen):
    class Norm(torch.nn.Module):
        def forward(self, x, scale, shift):
            return ops.posgn(x, scale, shift, 4, silu=True)

    x, scale, shift, _, _ = make_inputs(4, 2, 8, 5, 3, gen)
    ep = torch.export.export(Norm(), (x, scale, shift))
    assert any(n.target is torch.ops.vdengine.posgn.default for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x, scale, shift), Norm()(x, scale, shift), atol=0, rtol=0)


def test_meta_tensors_give_shapes():
    x = torch.empty(4, 8, 5, 3, device="meta")
    t = torch.empty(2, 8, 5, 3, device="meta")
    assert ops.posgn(x, t, t, 4).shape == (4, 8, 5, 3)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    g = torch.Generator().manual_seed(0)
    x, scale, shift, weight, bias = make_inputs(4, 2, 8, 5, 3, g)
    kw = {"x": x, "scale": scale, "shift": shift, "num_groups": 4, "weight": weight, "bias": bias, "eps": 1e-5,
              "silu": False}
    kw.update(over)
    return kw


def _nc(shape):
    """A non-contiguous tensor of the given shape (the last two dims transposed)."""
    return torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)


BAD = [
    # (overrides, exception, match)
    ({"x": None}, TypeError, r"x must be a torch\.Tensor"),
    ({"x": [1.0]}, TypeError, r"x must be a torch\.Tensor"),
    ({"scale": 3.0}, TypeError, r"scale must be a torch\.Tensor"),
    ({"shift": "s"}, TypeError, r"shift must be a torch\.Tensor"),
    ({"weight": 1.0}, TypeError, r"weight must be a torch\.Tensor or None"),
    ({"bias": 1.0}, TypeError, r"bias must be a torch\.Tensor or None"),
    ({"x": torch.randn(4, 8, 15)}, ValueError, r"x must be 4-D \[N, C, H, W\]"),
    ({"x": torch.randn(1, 4, 8, 5, 3)}, ValueError, r"x must be 4-D"),
    ({"scale": torch.randn(2, 8, 15)}, ValueError, r"scale must be 4-D \[M, C, H, W\]"),
    ({"shift": torch.randn(8, 5, 3)}, ValueError, r"shift must be 4-D"),
    ({"scale": torch.randn(2, 4, 5, 3)}, ValueError, r"scale must have shape \[2, 8, 5, 3\]"),
    ({"scale": torch.randn(2, 8, 3, 5)}, ValueError, r"scale must have shape \[2, 8, 5, 3\]"),
    ({"scale": torch.randn(2, 8, 5, 4)}, ValueError, r"scale must have shape"),
    ({"shift": torch.randn(1, 8, 5, 3)}, ValueError, r"shift must have shape \[2, 8, 5, 3\]"),
    ({"scale": torch.randn(3, 8, 5, 3), "shift": torch.randn(3, 8, 5, 3)}, ValueError,
     r"rows of x \(N = 4\) must be a multiple of the rows of scale/shift \(M = 3\)"),
    ({"scale": torch.randn(8, 8, 5, 3), "shift": torch.randn(8, 8, 5, 3)}, ValueError,
     r"multiple of the rows of scale/shift"),
    ({"scale": torch.randn(0, 8, 5, 3), "shift": torch.randn(0, 8, 5, 3)}, ValueError,
     r"scale and shift must have at least one row"),
    ({"num_groups": 3}, ValueError, r"num_groups \(3\) must divide the channels of x \(C = 8\)"),
    ({"num_groups": 16}, ValueError, r"num_groups \(16\) must divide"),
    ({"num_groups": 0}, ValueError, r"num_groups must be >= 1, got"),
    ({"num_groups": -2}, ValueError, r"num_groups must be >= 1, got"),
    ({"num_groups": 4.0}, TypeError, r"num_groups must be an int"),
    ({"num_groups": True}, TypeError, r"num_groups must be an int"),
    ({"num_groups": None}, TypeError, r"num_groups must be an int"),
    ({"eps": 0.0}, ValueError, r"eps must be positive"),
    ({"eps": -1e-5}, ValueError, r"eps must be positive"),
    ({"eps": float("nan")}, ValueError, r"eps must be finite"),
    ({"eps": float("inf")}, ValueError, r"eps must be finite"),
    ({"eps": "1e-5"}, TypeError, r"eps must be a float"),
    ({"eps": None}, TypeError, r"eps must be a float"),
    ({"silu": 1}, TypeError, r"silu must be a bool"),
    ({"silu": None}, TypeError, r"silu must be a bool"),
    ({"weight": torch.randn(9)}, ValueError, r"weight must have shape \[8\]"),
    ({"weight": torch.randn(8, 1)}, ValueError, r"weight must have shape \[8\]"),
    ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \[8\]"),
    ({"weight": torch.randn(16)[::2]}, ValueError, r"weight must be contiguous"),
    ({"bias": torch.randn(16)[::2]}, ValueError, r"bias must be contiguous"),
    ({"x": _nc((4, 8, 5, 3))}, ValueError, r"x must be contiguous"),
    ({"x": torch.randn(4, 8, 5, 3).to(memory_format=torch.channels_last)}, ValueError,
     r"scale must be channels-last like x"),
    ({"x": torch.randn(4, 8, 5, 3).to(memory_format=torch.channels_last),
          "scale": torch.randn(2, 8, 5, 3).to(memory_format=torch.channels_last)}, ValueError,
     r"shift must be channels-last like x, got shape \[2, 8, 5, 3\] with strides \(120, 15, 3, 1\)"),
    ({"scale": torch.randn(2, 8, 5, 3).to(memory_format=torch.channels_last)}, ValueError,
     r"scale must be contiguous \(NCHW\) like x"),
    ({"x": torch.randn(4, 8, 5, 6)[..., ::2]}, ValueError,
     r"x must be contiguous \(NCHW\) or channels-last \(torch\.channels_last\)"),
    ({"scale": _nc((2, 8, 5, 3))}, ValueError, r"scale must be contiguous"),
    ({"shift": _nc((2, 8, 5, 3))}, ValueError, r"shift must be contiguous"),
    ({"x": torch.randn(8, 8, 5, 3)[::2]}, ValueError, r"x must be contiguous"),
    ({"x": torch.randn(4, 8, 5, 3, dtype=torch.float64), "scale": torch.randn(2, 8, 5, 3).double(),
          "shift": torch.randn(2, 8, 5, 3).double(), "weight": None, "bias": None}, TypeError,
     r"x has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"x": torch.randn(4, 8, 5, 3).half(), "scale": torch.randn(2, 8, 5, 3).half(),
          "shift": torch.randn(2, 8, 5, 3).half(), "weight": None, "bias": None}, TypeError,
     r"x has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    # bfloat16 x: every tensor argument bfloat16 too (mixed storage is refused, naming the tensor)
    ({"x": torch.randn(4, 8, 5, 3).bfloat16(), "weight": None, "bias": None}, TypeError,
     r"scale must have the dtype of x \(torch\.bfloat16\), got torch\.float32"),
    ({"x": torch.randn(4, 8, 5, 3).bfloat16(), "scale": torch.randn(2, 8, 5, 3).bfloat16(),
          "shift": torch.randn(2, 8, 5, 3).bfloat16()}, TypeError,
     r"weight must have the dtype of x \(torch\.bfloat16\), got torch\.float32"),
    ({"x": torch.ones(4, 8, 5, 3, dtype=torch.int32)}, TypeError,
     r"x must be a floating-point tensor"),
    ({"scale": torch.ones(2, 8, 5, 3, dtype=torch.int64)}, TypeError,
     r"scale must be a floating-point tensor"),
    ({"shift": torch.ones(2, 8, 5, 3, dtype=torch.bool)}, TypeError,
     r"shift must be a floating-point tensor"),
    ({"scale": torch.randn(2, 8, 5, 3).double()}, TypeError,
     r"scale must have the dtype of x \(torch\.float32\)"),
    ({"shift": torch.randn(2, 8, 5, 3).bfloat16()}, TypeError, r"shift must have the dtype of x"),
    ({"weight": torch.randn(8).double()}, TypeError, r"weight must have the dtype of x"),
    ({"bias": torch.randn(8).half()}, TypeError, r"bias must have the dtype of x"),
    ({"scale": torch.empty(2, 8, 5, 3, device="meta")}, ValueError,
     r"scale must be on the same device as x \(cpu\)"),
    ({"weight": torch.empty(8, device="meta")}, ValueError, r"weight must be on the same device"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.posgn(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    """torch.ops.vdengine.posgn validates too: a direct call cannot crash the kernel."""
    kw = _args()
    with pytest.raises(ValueError, match="num_groups"):
        torch.ops.vdengine.posgn(kw["x"], kw["scale"], kw["shift"], 3, None, None, 1e-5, False)
    with pytest.raises(ValueError, match="x must be contiguous"):
        torch.ops.vdengine.posgn(_nc((4, 8, 5, 3)), kw["scale"], kw["shift"], 4, None, None, 1e-5,
                                 False)


def test_meta_float64_refused():
    x = torch.empty(4, 8, 5, 3, device="meta")
    t = torch.empty(2, 8, 5, 3, device="meta")
    with pytest.raises(TypeError, match=r"x has dtype torch\.float64, but the CUDA kernels"):
        ops.posgn(x.double(), t.double(), t.double(), 4)


# ---- CUDA ------------------------------------------------------------------------------------------

CUDA_SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (4, 2, 8, 4, 7, 5),
    (3, 3, 6, 6, 3, 3),
    (8, 4, 16, 1, 11, 13),
    (2, 1, 96, 32, 33, 17),
    (32, 16, 128, 32, 32, 32),  # 2 videos × 16 frames
    (4, 1, 320, 32, 64, 64),  # a large group: 10 channels × 4096 pixels
    (2, 2, 64, 32, 1, 1),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "N{}M{}C{}G{}H{}W{}".format(*s))
@pytest.mark.parametrize("silu", [False, True])
def test_cuda_matches_reference(dtype, shape, silu, gen, cuda_device):
    check(*shape, gen, silu=silu, affine="both" if silu else "none", dtype=dtype,
          device=cuda_device)


@pytest.mark.cuda
def test_cuda_large_mean_and_stream(gen, cuda_device):
    check(2, 1, 16, 4, 64, 64, gen, offset=300.0, tol=(2e-3, 2e-3), device=cuda_device)
    stream = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(stream):  # the kernel runs on the current stream
        check(4, 2, 32, 8, 9, 9, gen, device=cuda_device)
    stream.synchronize()


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    args = make_inputs(4, 2, 8, 5, 3, gen, dtype=torch.float16, device=cuda_device)
    x, scale, shift, weight, bias = args
    torch.library.opcheck(torch.ops.vdengine.posgn.default,
                          (x, scale, shift, 4, weight, bias, 1e-5, True))


@pytest.mark.cuda
def test_cuda_channels_last_refused(gen, cuda_device):
    x, scale, shift, _, _ = make_inputs(4, 2, 8, 5, 3, gen, device=cuda_device, layout="nhwc")
    with pytest.raises(ValueError, match="x is channels-last, which only the CPU kernels read"):
        ops.posgn(x, scale, shift, 4)


@pytest.mark.cuda
def test_cuda_mixed_devices(gen, cuda_device):
    x, scale, shift, _, _ = make_inputs(4, 2, 8, 5, 3, gen, device=cuda_device)
    with pytest.raises(ValueError, match="scale must be on the same device as x"):
        ops.posgn(x, scale.cpu(), shift, 4)
