"""vdengine.ops.temporal_attention (fused kernel) against vdengine.ops.reference.temporal_attention.

Every output is pre-filled with NaN (poison_outputs) so an element the kernel skips cannot match.
Ground truth is the reference in float64 on the same (dtype-rounded) inputs. Attention is
independent per (video, pixel, head), so the large-grid tests check a sample of pixels only.
"""

from __future__ import annotations

import pytest
import torch
from _dtype_helpers import CPU_DTYPES, assert_close_bf16
from hypothesis import given
from hypothesis import strategies as st

from vdengine import ops
from vdengine.ops import reference as R

pytestmark = pytest.mark.usefixtures("poison_outputs")

TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (5e-3, 1e-2), torch.bfloat16: (3e-2, 5e-2)}
LAYOUTS = ("contiguous", "chunked", "padded", "pixel_major")


def make_qkv(rows, s, c, gen, layout="chunked", dtype=torch.float32, device="cpu"):
    """q, k, v [rows, S, C] in one of the layouts the kernel must read in place (channel stride 1).

    contiguous:  three separate tensors;  chunked: qkv.chunk(3, -1) of one [rows, S, 3C] tensor;
    padded:      slices of [rows, S+3, C+8] tensors (row/pixel strides of neither);
    pixel_major: [S, rows, C] tensors transposed (row stride C, pixel stride rows·C).
    """

    if torch.device(device).type != "cpu":  # large GPU inputs: draw them on the device
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        gen = torch.Generator(device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device).to(dtype)

    if layout == "contiguous":
        return rnd(rows, s, c), rnd(rows, s, c), rnd(rows, s, c)
    if layout == "chunked":
        return rnd(rows, s, 3 * c).chunk(3, dim=-1)
    if layout == "padded":
        return tuple(rnd(rows, s + 3, c + 8)[:, 2:s + 2, 5:c + 5] for _ in range(3))
    if layout == "pixel_major":
        return tuple(rnd(s, rows, c).transpose(0, 1) for _ in range(3))
    raise AssertionError(layout)


def make_bias(kind, f, gen):
    if kind is None:
        return None
    if kind == "random":
        return torch.randn(f, f, generator=gen)
    if kind == "causal":  # query f sees key frames <= f
        return torch.full((f, f), float("-inf")).triu(1)
    if kind == "masked_row":  # causal, plus query frame 0 sees nothing: it must output zeros
        b = torch.full((f, f), float("-inf")).triu(1)
        b[0] = float("-inf")
        return b
    if kind == "window":  # local window of ±2 frames with a finite random bias inside
        i = torch.arange(f)
        far = (i[:, None] - i[None, :]).abs() > 2
        return torch.randn(f, f, generator=gen).masked_fill(far, float("-inf"))
    raise AssertionError(kind)


def reference64(q, k, v, f, h, bias, scale):
    d = lambda t: None if t is None else t.detach().cpu().double()
    return R.temporal_attention(d(q), d(k), d(v), f, h, d(bias), scale)


def check(b, f, s, h, d, gen, *, layout="chunked", bias=None, scale=None, dtype=torch.float32,
          device="cpu", pixels=None):
    """Run the op and compare with the float64 reference (on `pixels` only, if given)."""
    q, k, v = make_qkv(b * f, s, h * d, gen, layout, dtype, device)
    bias_t = make_bias(bias, f, gen)
    if bias_t is not None:
        bias_t = bias_t.to(device)
    out = ops.temporal_attention(q, k, v, f, h, bias=bias_t, scale=scale)
    assert out.shape == (b * f, s, h * d) and out.dtype == dtype and out.device == q.device
    assert out.is_contiguous()
    assert torch.isfinite(out).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    if pixels is not None:
        q, k, v, out = (t[:, pixels] for t in (q, k, v, out))
    if dtype == torch.bfloat16 and out.device.type == "cpu":  # one bfloat16 ulp (_dtype_helpers)
        assert_close_bf16(out, R.temporal_attention(q, k, v, f, h, bias_t, scale), *TOL[torch.float32])
        return out
    ref = reference64(q, k, v, f, h, bias_t, scale)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), ref, atol=atol, rtol=rtol)
    return out


# ---- parity on the CPU ----------------------------------------------------------------------------

SHAPES = [  # (B, F, S, H, D)
    (1, 1, 1, 1, 16),  # F = 1: the output is v
    (2, 1, 5, 2, 32),
    (1, 2, 7, 1, 16),
    (2, 3, 5, 2, 16),
    (1, 5, 3, 4, 32),
    (2, 8, 9, 1, 64),
    (1, 16, 4, 2, 128),
    (3, 7, 11, 3, 16),
    (1, 33, 2, 1, 32),  # F > 32, not a power of two
    (1, 128, 2, 1, 16),  # the largest F
]
# Head dims between the compiled CUDA sizes (masked channels) and odd ones (scalar tails on CPU).
ODD_HEAD_SHAPES = [  # (B, F, S, H, D)
    (2, 4, 3, 2, 1),
    (1, 5, 4, 3, 3),
    (2, 16, 3, 4, 8),  # UNet3D with attention_head_dim=8
    (2, 8, 5, 2, 40),  # AnimateDiff SD1.5's 320 / 8
    (1, 7, 3, 1, 100),
    (1, 3, 2, 2, 127),
]
BIASES = [None, "random", "causal", "window"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}F{}S{}H{}D{}".format(*s))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_matches_reference(shape, layout, bias, dtype, gen):
    check(*shape, gen, layout=layout, bias=bias, dtype=dtype)


@pytest.mark.parametrize("shape", ODD_HEAD_SHAPES, ids=lambda s: "B{}F{}S{}H{}D{}".format(*s))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [None, "causal"])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_any_head_dim_matches_reference(shape, layout, bias, dtype, gen):
    check(*shape, gen, layout=layout, bias=bias, dtype=dtype)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_cpu_head_dim_above_128(dtype, gen):
    """The CPU kernel has no head_dim limit (AnimateDiff's 1280 / 8 = 160 runs there)."""
    check(1, 6, 3, 2, 160, gen, bias="random", dtype=dtype)


@pytest.mark.parametrize("scale", [None, 1.0, 0.05, -0.3])
def test_scale(scale, gen):
    check(2, 6, 5, 2, 32, gen, scale=scale, bias="random")


def test_large_grid(gen):
    """B·S·heads = 2·4096·8 = 65,536 (independent problems beyond one 16-bit grid dimension)."""
    check(2, 2, 4096, 8, 16, gen, layout="chunked", bias="random")


def test_many_frames_and_heads(gen):
    check(2, 128, 3, 2, 64, gen, layout="padded", bias="window")


@pytest.mark.parametrize("f", [1, 2, 5, 16])
def test_fully_masked_query_rows_output_zeros(f, gen):
    b, s, h, d = 2, 3, 2, 16
    q, k, v = make_qkv(b * f, s, h * d, gen)
    bias = make_bias("masked_row", f, gen)
    out = ops.temporal_attention(q, k, v, f, h, bias=bias)
    frames = out.reshape(b, f, s, h * d)
    assert torch.equal(frames[:, 0], torch.zeros_like(frames[:, 0]))
    torch.testing.assert_close(out.double(), reference64(q, k, v, f, h, bias, None),
                               atol=1e-4, rtol=1e-4)
    everything = torch.full((f, f), float("-inf"))
    out = ops.temporal_attention(q, k, v, f, h, bias=everything)
    assert torch.equal(out, torch.zeros_like(out))


def test_f1_is_v(gen):
    q, k, v = make_qkv(6, 5, 64, gen, layout="padded")
    out = ops.temporal_attention(q, k, v, 1, 2)
    torch.testing.assert_close(out, v, atol=1e-6, rtol=1e-6)


def test_bias_orientation_and_conversion(gen):
    """bias[query, key], any float dtype and layout: float64 and transposed views are converted."""
    b, f, s, h, d = 2, 4, 3, 1, 16
    q, k, v = make_qkv(b * f, s, h * d, gen)
    bias = torch.randn(f, f, generator=gen, dtype=torch.float64) * 3
    ref = reference64(q, k, v, f, h, bias, None)
    torch.testing.assert_close(ops.temporal_attention(q, k, v, f, h, bias=bias).double(), ref,
                               atol=1e-4, rtol=1e-4)
    bias_t = bias.t().contiguous().t()  # same values, transposed strides
    torch.testing.assert_close(ops.temporal_attention(q, k, v, f, h, bias=bias_t).double(), ref,
                               atol=1e-4, rtol=1e-4)
    not_sym = ops.temporal_attention(q, k, v, f, h, bias=bias.t().contiguous())
    assert not torch.allclose(not_sym.double(), ref, atol=1e-3)


def test_large_scores_are_stable(gen):
    """Scores of ±1000: a softmax without max subtraction overflows to inf/NaN.

    The tolerance is relative to the logits: float32 represents a score of 1000 to ~6e-5, and a
    few ulps of logit error move the (near one-hot) probabilities by ~1e-4 (the float32 reference
    itself is 3e-5 off the float64 one here).
    """
    q, k, v = make_qkv(8, 4, 32, gen)
    out = ops.temporal_attention(q * 30, k * 30, v, 4, 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference64(q * 30, k * 30, v, 4, 1, None, None),
                               atol=1e-3, rtol=1e-3)


@given(
    b=st.integers(1, 3), f=st.integers(1, 20), s=st.integers(1, 9), h=st.integers(1, 3),
    d=st.one_of(st.sampled_from([16, 32, 64, 128]), st.integers(1, 130)),
    layout=st.sampled_from(LAYOUTS), dtype=st.sampled_from(CPU_DTYPES),
    bias=st.sampled_from(BIASES + ["masked_row"]), seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_hypothesis(b, f, s, h, d, layout, bias, dtype, seed):
    check(b, f, s, h, d, torch.Generator().manual_seed(seed), layout=layout, bias=bias,
          dtype=dtype)




def test_inputs_untouched(gen):
    q, k, v = make_qkv(8, 5, 32, gen)
    bias = make_bias("random", 4, gen)
    before = [t.clone() for t in (q, k, v, bias)]
    ops.temporal_attention(q, k, v, 4, 2, bias=bias)
    for t, b in zip((q, k, v, bias), before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("shape", [(0, 5, 32), (4, 0, 32)])
def test_empty(shape):
    q = torch.empty(shape)
    out = ops.temporal_attention(q, q, q, 2, 2)
    assert out.shape == shape and out.numel() == 0


# ---- autograd, custom op ---------------------------------------------------------------------------


def test_requires_grad_raises_and_points_to_reference(gen):
    q, k, v = make_qkv(4, 3, 32, gen, layout="contiguous")
    q.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"q requires grad.*reference"):
        ops.temporal_attention(q, k, v, 2, 1)
    with torch.no_grad():
        ops.temporal_attention(q, k, v, 2, 1)


@pytest.mark.parametrize("layout", ["contiguous", "chunked"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_opcheck(layout, with_bias, gen):
    q, k, v = make_qkv(6, 5, 32, gen, layout=layout)
    bias = make_bias("causal", 3, gen) if with_bias else None
    torch.library.opcheck(torch.ops.vdengine.temporal_attention.default,
                          (q, k, v, 3, 2, bias, None))


def test_torch_export(gen):
    class Attn(torch.nn.Module):
        def forward(self, qkv, bias):
            q, k, v = qkv.chunk(3, dim=-1)  # strided views go into the op as they are
            return ops.temporal_attention(q, k, v, 3, 2, bias=bias)

    qkv = torch.randn(6, 5, 3 * 64, generator=gen)
    bias = make_bias("causal", 3, gen)
    ep = torch.export.export(Attn(), (qkv, bias))
    assert any(n.target is torch.ops.vdengine.temporal_attention.default for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(qkv, bias), Attn()(qkv, bias), atol=0, rtol=0)


def test_meta_tensors_give_shapes():
    q = torch.empty(6, 5, 3 * 32, device="meta").chunk(3, -1)[0]
    assert ops.temporal_attention(q, q, q, 3, 2).shape == (6, 5, 32)


# ---- argument validation ---------------------------------------------------------------------------


def _args(**over):
    q, k, v = make_qkv(8, 5, 64, torch.Generator().manual_seed(0))
    kw = {"q": q, "k": k, "v": v, "num_frames": 4, "num_heads": 2, "bias": None, "scale": None}
    kw.update(over)
    return kw


BAD = [
    ({"q": None}, TypeError, r"q must be a torch\.Tensor"),
    ({"k": [1.0]}, TypeError, r"k must be a torch\.Tensor"),
    ({"v": 2.0}, TypeError, r"v must be a torch\.Tensor"),
    ({"bias": [[0.0]]}, TypeError, r"bias must be a torch\.Tensor or None"),
    ({"q": torch.randn(8, 320)}, ValueError, r"q must be 3-D \[B·F, S, C\]"),
    ({"k": torch.randn(2, 4, 5, 64)}, ValueError, r"k must be 3-D"),
    ({"v": torch.randn(40, 64)}, ValueError, r"v must be 3-D"),
    ({"k": torch.randn(8, 6, 64)}, ValueError, r"k must have shape \[8, 5, 64\]"),
    ({"v": torch.randn(4, 5, 64)}, ValueError, r"v must have shape \[8, 5, 64\]"),
    ({"k": torch.randn(8, 5, 32)}, ValueError, r"k must have shape"),
    ({"num_frames": 0}, ValueError, r"num_frames must be in \[1, 128\], got"),
    ({"num_frames": -4}, ValueError, r"num_frames must be in \[1, 128\], got"),
    ({"num_frames": 4.0}, TypeError, r"num_frames must be an int"),
    ({"num_frames": True}, TypeError, r"num_frames must be an int"),
    ({"num_frames": 3}, ValueError, r"num_frames \(3\) must divide the rows of q \(B·F = 8\)"),
    ({"num_frames": 16}, ValueError, r"num_frames \(16\) must divide"),
    ({"q": torch.randn(130, 1, 64), "k": torch.randn(130, 1, 64), "v": torch.randn(130, 1, 64),
          "num_frames": 130}, ValueError, r"num_frames must be in \[1, 128\], got 130"),
    ({"num_heads": 0}, ValueError, r"num_heads must be >= 1, got"),
    ({"num_heads": 2.0}, TypeError, r"num_heads must be an int"),
    ({"num_heads": None}, TypeError, r"num_heads must be an int"),
    ({"num_heads": 3}, ValueError, r"num_heads \(3\) must divide the channels of q \(C = 64\)"),
    ({"num_heads": 128}, ValueError, r"num_heads \(128\) must divide the channels of q"),
    ({"q": torch.randn(8, 5, 128)[..., ::2]}, ValueError, r"q must have channel stride 1"),
    ({"k": torch.randn(8, 64, 5).transpose(1, 2)}, ValueError, r"k must have channel stride 1"),
    ({"v": torch.randn(64, 5, 8).permute(2, 1, 0)}, ValueError, r"v must have channel stride 1"),
    ({"bias": torch.zeros(4, 5)}, ValueError, r"bias must have shape \[4, 4\]"),
    ({"bias": torch.zeros(4)}, ValueError, r"bias must have shape \[4, 4\]"),
    ({"bias": torch.zeros(1, 4, 4)}, ValueError, r"bias must have shape \[4, 4\]"),
    ({"bias": torch.zeros(4, 4, dtype=torch.int64)}, TypeError,
     r"bias must be a floating-point tensor"),
    ({"bias": torch.zeros(4, 4, dtype=torch.bool)}, TypeError,
     r"bias must be a floating-point tensor"),
    ({"bias": torch.zeros(4, 4, device="meta")}, ValueError,
     r"bias must be on the same device as q \(cpu\)"),
    ({"k": torch.empty(8, 5, 64, device="meta")}, ValueError, r"k must be on the same device as q"),
    ({"q": torch.randn(8, 5, 64).double(), "k": torch.randn(8, 5, 64).double(),
          "v": torch.randn(8, 5, 64).double()}, TypeError,
     r"q has dtype torch\.float64, but the CPU kernels take float32 or bfloat16"),
    ({"q": torch.randn(8, 5, 64).half(), "k": torch.randn(8, 5, 64).half(),
          "v": torch.randn(8, 5, 64).half()}, TypeError,
     r"q has dtype torch\.float16, but the CPU kernels take float32 or bfloat16"),
    ({"q": torch.randn(8, 5, 64).bfloat16(), "v": torch.randn(8, 5, 64).bfloat16()}, TypeError,
     r"k must have the dtype of q \(torch\.bfloat16\), got torch\.float32"),
    ({"v": torch.randn(8, 5, 64).half()}, TypeError, r"v must have the dtype of q"),
    ({"k": torch.randn(8, 5, 64).double()}, TypeError, r"k must have the dtype of q"),
    ({"q": torch.ones(8, 5, 64, dtype=torch.int32)}, TypeError, r"q must be a floating-point"),
    ({"scale": "0.1"}, TypeError, r"scale must be a float or None"),
    ({"scale": float("nan")}, ValueError, r"scale must be finite"),
    ({"scale": float("inf")}, ValueError, r"scale must be finite"),
]


@pytest.mark.parametrize("over,exc,match", BAD, ids=[f"{i}-{next(iter(b[0]))}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, match):
    with pytest.raises(exc, match=match):
        ops.temporal_attention(**_args(**over))


def test_bad_arguments_direct_custom_op_call():
    kw = _args()
    with pytest.raises(ValueError, match="must divide the channels"):
        torch.ops.vdengine.temporal_attention(kw["q"], kw["k"], kw["v"], 4, 7, None, None)
    with pytest.raises(ValueError, match="channel stride 1"):
        q = torch.randn(8, 5, 128)[..., ::2]
        torch.ops.vdengine.temporal_attention(q, kw["k"], kw["v"], 4, 2, None, None)


# ---- CUDA ------------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}F{}S{}H{}D{}".format(*s))
@pytest.mark.parametrize("layout,bias", [("contiguous", None), ("chunked", "causal"),
                                         ("pixel_major", "random"), ("padded", "masked_row")])
def test_cuda_matches_reference(dtype, shape, layout, bias, gen, cuda_device):
    check(*shape, gen, layout=layout, bias=bias, dtype=dtype, device=cuda_device)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ODD_HEAD_SHAPES, ids=lambda s: "B{}F{}S{}H{}D{}".format(*s))
@pytest.mark.parametrize("layout,bias", [("contiguous", None), ("chunked", "causal"),
                                         ("padded", "masked_row")])
def test_cuda_any_head_dim_matches_reference(dtype, shape, layout, bias, gen, cuda_device):
    """Head dims between the compiled sizes run masked on the next one up (scalar when D % 4)."""
    check(*shape, gen, layout=layout, bias=bias, dtype=dtype, device=cuda_device)


@pytest.mark.cuda
def test_cuda_head_dim_above_128_is_refused(gen, cuda_device):
    q, k, v = make_qkv(4, 3, 160, gen, device=cuda_device)
    with pytest.raises(ValueError, match=r"head_dim = C / num_heads = 160 / 1 = 160 is not "
                                         r"supported on CUDA"):
        ops.temporal_attention(q, k, v, 2, 1)


def _grid_pixels(s: int, gen: torch.Generator) -> torch.Tensor:
    """Pixels to compare on a large grid: both ends, the middle and a random sample."""
    fixed = torch.tensor([0, 1, s // 2, s - 2, s - 1])
    rand = torch.randint(0, s, (59,), generator=gen)
    return torch.unique(torch.cat([fixed, rand]).clamp(0, s - 1))


@pytest.mark.cuda
@pytest.mark.parametrize("f", [1, 16, 128])
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_cuda_large_grid(f, d, gen, cuda_device):
    """B·S·heads = 65,536 for every supported F extreme and head_dim (fp16, chunked qkv)."""
    b = max(1, 64 // f)
    s = 65536 // b
    pixels = _grid_pixels(s, gen).to(cuda_device)
    check(b, f, s, 1, d, gen, layout="chunked", bias="causal" if f > 1 else None,
          dtype=torch.float16, device=cuda_device, pixels=pixels)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_large_grid_heads(dtype, gen, cuda_device):
    """B·S·heads = 2·8192·4 = 65,536 with several heads, each dtype."""
    pixels = _grid_pixels(8192, gen).to(cuda_device)
    check(2, 16, 8192, 4, 64, gen, layout="padded", bias="window", dtype=dtype,
          device=cuda_device, pixels=pixels)


@pytest.mark.cuda
def test_cuda_fully_masked_and_stream(gen, cuda_device):
    stream = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(stream):
        for dtype in DTYPES:
            out = check(2, 5, 7, 2, 32, gen, bias="masked_row", dtype=dtype, device=cuda_device)
            assert torch.equal(out.reshape(2, 5, 7, 64)[:, 0].float().cpu(), torch.zeros(2, 7, 64))
    stream.synchronize()


@pytest.mark.cuda
def test_cuda_opcheck(gen, cuda_device):
    q, k, v = make_qkv(6, 5, 64, gen, dtype=torch.bfloat16, device=cuda_device)
    bias = make_bias("causal", 3, gen).to(cuda_device)
    torch.library.opcheck(torch.ops.vdengine.temporal_attention.default,
                          (q, k, v, 3, 2, bias, None))


@pytest.mark.cuda
def test_cuda_mixed_devices(gen, cuda_device):
    q, k, v = make_qkv(6, 5, 64, gen, device=cuda_device)
    with pytest.raises(ValueError, match="v must be on the same device as q"):
        ops.temporal_attention(q, k, v.cpu(), 3, 2)
    with pytest.raises(ValueError, match="bias must be on the same device as q"):
        ops.temporal_attention(q, k, v, 3, 2, bias=torch.zeros(3, 3))

