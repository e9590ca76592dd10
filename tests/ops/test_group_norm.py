"""vdengine.ops.group_norm (fused C++/CUDA kernel) against vdengine.ops.reference.group_norm.

The op's statistics may span ``frames`` consecutive rows (the frames of one video, as diffusers'
temporal layers normalise a [B, C, F, H, W] view); every output is pre-filled with NaN
(poison_outputs) so an element the kernel skips cannot match. Ground truth is the reference in
float64 on the same (dtype-rounded) inputs, and the reference itself is checked against
nn.GroupNorm on the permuted 5-D view.
"""

from __future__ import annotations

import pytest
import torch
from _dtype_helpers import CPU_DTYPES, assert_close_bf16
from _layout_helpers import LAYOUTS, assert_layout, to_layout
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")

TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 3e-2)}


def make_inputs(n, c, h, w, gen, *, affine="both", offset=0.0, dtype=torch.float32,
                device="cpu", layout="nchw"):
    """x with per-channel and per-row offsets (groups and frames differ), affine near identity;
    x in `layout` (_layout_helpers)."""
    x = torch.randn(n, c, h, w, generator=gen) * 1.5 + torch.randn(1, c, 1, 1, generator=gen)
    x = x + torch.randn(n, 1, 1, 1, generator=gen) + offset
    weight = 1 + 0.2 * torch.randn(c, generator=gen) if affine in ("both", "weight") else None
    bias = 0.2 * torch.randn(c, generator=gen) if affine in ("both", "bias") else None
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return to_layout(cast(x), layout), cast(weight), cast(bias)


def reference64(x, g, weight, bias, eps, silu, frames):
    d = lambda t: None if t is None else t.detach().cpu().double()
    return R.group_norm(d(x), g, d(weight), d(bias), eps, silu, frames)


def check(n, c, g, h, w, frames, gen, *, affine="both", silu=False, eps=1e-5, offset=0.0,
          dtype=torch.float32, device="cpu", tol=None, layout="nchw"):
    x, weight, bias = make_inputs(n, c, h, w, gen, affine=affine, offset=offset, dtype=dtype,
                                  device=device, layout=layout)
    y = ops.group_norm(x, g, weight, bias, eps=eps, silu=silu, frames=frames)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_layout(y, layout)
    assert y.data_ptr() != x.data_ptr()
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    if dtype == torch.bfloat16 and y.device.type == "cpu":  # one bfloat16 ulp (_dtype_helpers)
        ref = R.group_norm(x, g, weight, bias, eps, silu, frames)
        assert_close_bf16(y, ref, *(tol or TOL[torch.float32]))
        return y
    ref = reference64(x, g, weight, bias, eps, silu, frames)
    atol, rtol = tol or TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), ref, atol=atol, rtol=rtol)
    return y


# ---- the reference is nn.GroupNorm on the 5-D view ------------------------------------------------


@pytest.mark.parametrize("frames", [1, 3, 16])
@pytest.mark.parametrize("silu", [False, True])
def test_reference_is_group_norm_of_the_video_view(frames, silu, gen):
    x, weight, bias = make_inputs(2 * frames, 8, 5, 3, gen, dtype=torch.float64)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
        video = x.reshape(2, frames, 8, 5, 3).permute(0, 2, 1, 3, 4)  # [B, C, F, H, W]
        expected = norm(video).permute(0, 2, 1, 3, 4).reshape(x.shape)
    if silu:
        expected = torch.nn.functional.silu(expected)
    torch.testing.assert_close(R.group_norm(x, 4, weight, bias, 1e-6, silu, frames), expected,
                               atol=1e-12, rtol=1e-12)


def test_frames_1_is_per_row_group_norm(gen):
    x, weight, bias = make_inputs(6, 12, 4, 4, gen)
    torch.testing.assert_close(ops.group_norm(x, 3, weight, bias),
                               torch.nn.functional.group_norm(x, 3, weight, bias),
                               atol=1e-5, rtol=1e-5)


# ---- parity on the CPU ----------------------------------------------------------------------------

SHAPES = [  # (N, C, G, H, W, frames)
    (1, 1, 1, 1, 1, 1),  # smallest
    (2, 4, 2, 1, 1, 2),  # 1×1 spatial, one video of 2 frames
    (4, 8, 4, 7, 5, 2),  # 7×5: H·W a multiple of no block size
    (6, 6, 6, 3, 3, 3),  # C = G (one channel per group)
    (6, 12, 3, 5, 9, 6),  # one video
    (32, 32, 8, 8, 8, 16),  # 2 videos × 16 frames
    (16, 64, 32, 4, 4, 1),  # per frame
    (8, 16, 1, 11, 13, 4),  # G = 1: normalise over C·F·H·W
    (3, 96, 32, 9, 7, 3),
    (64, 8, 2, 2, 2, 64),  # long window
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}C{}G{}H{}W{}F{}".format(*s))
@pytest.mark.parametrize("affine", ["none", "both", "weight", "bias"])
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference(shape, affine, silu, dtype, layout, gen):
    check(*shape, gen, affine=affine, silu=silu, dtype=dtype, layout=layout)


@pytest.mark.parametrize("eps", [1e-6, 1e-3, 0.5])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_eps(eps, dtype, layout, gen):
    check(8, 16, 4, 5, 5, 4, gen, eps=eps, dtype=dtype, layout=layout)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unet_temporal_shape(dtype, layout, gen):
    """A temporal transformer's norm: 2 videos × 16 frames, C 128, 16×16, 32 groups."""
    check(32, 128, 32, 16, 16, 16, gen, silu=True, dtype=dtype, layout=layout)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(4, 2, 1, 96, 96, 4), (16, 40, 8, 12, 12, 16),
                                   (6, 320, 32, 5, 7, 2)], ids=str)
def test_two_threads(shape, dtype, layout, gen):
    """With two threads: whole tasks per thread, and with fewer tasks than threads (one video,
    or one video of one group) the threads splitting each task's elements for both passes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check(*shape, gen, silu=True, dtype=dtype, layout=layout)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_mean_is_numerically_stable(dtype, layout, gen):
    check(4, 16, 4, 16, 16, 2, gen, offset=300.0, tol=(2e-3, 2e-3), dtype=dtype, layout=layout)


def test_statistics_span_the_frames(gen):
    """A frame whose values differ from the others' is normalised with the video's statistics,
    not its own: with frames=F its output is not zero-mean, with frames=1 it is."""
    x = torch.randn(4, 4, 3, 3, generator=gen)
    x[1] += 5.0
    per_video = ops.group_norm(x, 2, frames=4)
    per_frame = ops.group_norm(x, 2, frames=1)
    assert per_video[1].mean() > 1.0
    assert per_frame[1].mean().abs() < 1e-4


def test_constant_groups(gen):
    x = torch.full((4, 4, 3, 3), 7.0)
    bias = torch.randn(4, generator=gen)
    y = ops.group_norm(x, 2, None, bias, frames=2)
    torch.testing.assert_close(y, bias.reshape(1, 4, 1, 1).expand_as(x), atol=1e-4, rtol=1e-5)


@given(
    g=st.integers(1, 8), cpg=st.integers(1, 5), h=st.integers(1, 10), w=st.integers(1, 10),
    frames=st.integers(1, 6), videos=st.integers(1, 3), affine=st.sampled_from(["none", "both"]),
    silu=st.booleans(), dtype=st.sampled_from(CPU_DTYPES), layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(g, cpg, h, w, frames, videos, affine, silu, dtype, layout,
                                      seed):
    check(frames * videos, g * cpg, g, h, w, frames, torch.Generator().manual_seed(seed),
          affine=affine, silu=silu, dtype=dtype, layout=layout)




def test_inputs_untouched(gen):
    x, weight, bias = make_inputs(4, 8, 3, 3, gen)
    before = [t.clone() for t in (x, weight, bias)]
    ops.group_norm(x, 4, weight, bias, silu=True, frames=2)
    for t, b in zip((x, weight, bias), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3), (2, 0, 3, 3)])
def test_empty(shape):
    x = torch.empty(*shape)
    y = ops.group_norm(x, 2 if shape[1] else 1, frames=2)
    assert y.shape == x.shape and y.numel() == 0


# ---- autograd, custom op, export ------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    x, weight, bias = make_inputs(2, 4, 3, 3, gen)
    weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"weight requires grad.*vdengine\.ops\.reference"):
        ops.group_norm(x, 2, weight, bias)
    with torch.no_grad():
        assert not ops.group_norm(x, 2, weight, bias).requires_grad


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("frames", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck(affine, frames, layout, gen):
    x, weight, bias = make_inputs(4, 8, 5, 3, gen, affine=affine, layout=layout)
    torch.library.opcheck(torch.ops.vdengine.group_norm.default,
                          (x, 4, weight, bias, 1e-5, True, frames))


def test_torch_export(gen):
    class Norm(torch.nn.Module):
        def forward(self, x):
            return ops.group_norm(x, 4, silu=True, frames=2)

    x, _, _ = make_inputs(4, 8, 5, 3, gen)
    ep = torch.export.export(Norm(), (x,))
    assert any(n.target is torch.ops.vdengine.group_norm.default for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), Norm()(x), atol=0, rtol=0)


def test_meta_tensors_give_shapes():
    x = torch.empty(4, 8, 5, 3, device="meta")
    assert ops.group_norm(x, 4, frames=4).shape == (4, 8, 5, 3)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    x, weight, bias = make_inputs(4, 8, 5, 3, torch.Generator().manual_seed(0))
    kw = {"x": x, "num_groups": 4, "weight": weight, "bias": bias, "eps": 1e-5, "silu": False,
          "frames": 2}
    kw.update(over)
    return kw


BAD = [
    ({"x": None}, TypeError, r"x must be a torch\.Tensor"),
    ({"weight": 1.0}, TypeError, r"weight must be a torch\.Tensor or None"),
    ({"bias": [0.0]}, TypeError, r"bias must be a torch\.Tensor or None"),
    ({"x": torch.randn(4, 8, 15)}, ValueError, r"x must be 4-D \[N, C, H, W\]"),
    ({"x": torch.randn(2, 4, 8, 5, 3)}, ValueError, r"x must be 4-D"),
    ({"num_groups": 3}, ValueError, r"num_groups \(3\) must divide the channels of x \(C = 8\)"),
    ({"num_groups": 0}, ValueError, r"num_groups must be positive"),
    ({"num_groups": 4.0}, TypeError, r"num_groups must be an int"),
    ({"frames": 3}, ValueError, r"frames \(3\) must divide the rows of x \(N = B·F = 4\)"),
    ({"frames": 0}, ValueError, r"frames must be positive"),
    ({"frames": 2.0}, TypeError, r"frames must be an int"),
    ({"frames": True}, TypeError, r"frames must be an int"),
    ({"frames": None}, TypeError, r"frames must be an int"),
    ({"eps": 0.0}, ValueError, r"eps must be positive"),
    ({"eps": float("nan")}, ValueError, r"eps must be finite"),
    ({"eps": "1e-5"}, TypeError, r"eps must be a float"),
    ({"silu": 1}, TypeError, r"silu must be a bool"),
    ({"weight": torch.randn(9)}, ValueError, r"weight must have shape \[8\]"),
    ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \[8\]"),
    ({"weight": torch.randn(16)[::2]}, ValueError, r"weight must be contiguous"),
    ({"x": torch.randn(4, 8, 3, 5).transpose(-1, -2)}, ValueError, r"x must be contiguous"),
    ({"x": torch.randn(4, 8, 5, 6)[..., ::2]}, ValueError,
     r"x must be contiguous \(NCHW\) or channels-last \(torch\.channels_last\)"),
    ({"x": torch.randn(4, 8, 5, 3).double(), "weight": None, "bias": None}, TypeError,
     r"x has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"x": torch.ones(4, 8, 5, 3, dtype=torch.int32)}, TypeError,
     r"x must be a floating-point tensor"),
    ({"weight": torch.randn(8).double()}, TypeError, r"weight must have the dtype of x"),
    ({"x": torch.randn(4, 8, 5, 3).half(), "weight": None, "bias": None}, TypeError,
     r"x has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    ({"x": torch.randn(4, 8, 5, 3).bfloat16()}, TypeError,
     r"weight must have the dtype of x \(torch\.bfloat16\), got torch\.float32"),
    ({"bias": torch.empty(8, device="meta")}, ValueError, r"bias must be on the same device"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.group_norm(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    """torch.ops.vdengine.group_norm validates too: a direct call cannot crash the kernel."""
    kw = _args()
    with pytest.raises(ValueError, match="frames"):
        torch.ops.vdengine.group_norm(kw["x"], 4, None, None, 1e-5, False, 3)


# ---- CUDA ------------------------------------------------------------------------------------------

CUDA_SHAPES = [  # (N, C, G, H, W, frames)
    (1, 1, 1, 1, 1, 1),
    (4, 8, 4, 7, 5, 2),  # scalar path (H·W odd)
    (32, 128, 32, 32, 32, 16),  # 2 videos × 16 frames, in shared memory
    (32, 320, 32, 32, 32, 16),  # 160K-element video groups: past the shared-memory budget
    (16, 64, 32, 8, 8, 1),
    (128, 8, 2, 4, 4, 128),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "N{}C{}G{}H{}W{}F{}".format(*s))
@pytest.mark.parametrize("silu", [False, True])
def test_cuda_matches_reference(dtype, shape, silu, gen, cuda_device):
    check(*shape, gen, silu=silu, affine="both" if silu else "none", dtype=dtype,
          device=cuda_device)


@pytest.mark.cuda
def test_cuda_large_mean_and_stream(gen, cuda_device):
    check(4, 16, 4, 64, 64, 2, gen, offset=300.0, tol=(2e-3, 2e-3), device=cuda_device)
    stream = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(stream):
        check(8, 32, 8, 9, 9, 4, gen, device=cuda_device)
    stream.synchronize()


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    x, weight, bias = make_inputs(4, 8, 5, 4, gen, dtype=torch.float16, device=cuda_device)
    torch.library.opcheck(torch.ops.vdengine.group_norm.default,
                          (x, 4, weight, bias, 1e-5, True, 2))


@pytest.mark.cuda
def test_cuda_mixed_devices(gen, cuda_device):
    x, weight, _ = make_inputs(4, 8, 5, 3, gen, device=cuda_device)
    with pytest.raises(ValueError, match="weight must be on the same device as x"):
        ops.group_norm(x, 4, weight.cpu())
