"""Helpers shared by the diffusion step tests (test_ddim_step.py, test_dpmpp_2m_step.py): the
parameter grids, the ᾱ coefficient layouts a caller may pass, output checks against the float64
reference, and a guard that a CUDA call makes no host sync.

Imported as a plain module (tests/ops is on sys.path under pytest's default import mode); the name
is specific so that it cannot collide with a helper module of another test folder.
"""

from __future__ import annotations

import contextlib

import torch
from _dtype_helpers import assert_close_bf16

TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 4e-2)}
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
COEF_KINDS = ["float", "tensor0d", "tensor1", "per_row"]

SHAPES = [(1,), (3, 5), (2, 4, 3, 7, 5)]  # CPU parity
# Per-frame guidance: samples [N, F, ...] with frames F = shape[1] and inner = prod(shape[2:]),
# including inner = 1, inner not a multiple of any vector width, and SVD's 14 frames.
FRAME_SHAPES = [(2, 3), (1, 5, 7), (3, 4, 1, 3), (2, 14, 4, 6, 10), (2, 16, 3, 1, 1)]
CUDA_FRAME_SHAPES = [(2, 3), (3, 4, 1, 3), (2, 14, 4, 72, 128), (1, 25, 4, 9, 16), (4, 7, 5)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CUDA_SHAPES = [(1,), (3, 5), (2, 4, 3, 7, 5), (2, 4, 16, 64, 64), (1, 1_000_003)]


def coefficient(values: torch.Tensor, kind: str, device):
    """values [N] float32 as the given kind (float and scalar kinds use values[0] for all rows)."""
    if kind == "float":
        return float(values[0])
    if kind == "tensor0d":
        return values[0].clone().to(device)
    if kind == "tensor1":
        return values[:1].clone().to(device)
    if kind == "per_row":
        return values.clone().to(device)
    if kind == "per_row_cpu":  # on the CPU while sample is on the device: copied over
        return values.clone()
    if kind == "per_row_f64_col":  # float64, shape [N, 1]: converted and flattened
        return values.double().reshape(-1, 1).to(device)
    raise AssertionError(kind)


def used(values: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-row float32 values the kernel sees for coefficient(values, kind)."""
    return values.clone() if kind.startswith("per_row") else values[:1].expand(len(values))


def f64_cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    """t on the CPU in float64 (the reference's inputs), None stays None."""
    return None if t is None else t.cpu().double()


def reference_casts(sample: torch.Tensor):
    """(tensor cast, coefficient cast) for the reference's inputs: float64 on the CPU (ground
    truth), or, for bfloat16 on the CPU, the kernel's own bfloat16 tensors and float32
    coefficients: the reference then computes in float32 and rounds once as the kernel does, and
    assert_matches holds the two to one bfloat16 ulp (_dtype_helpers)."""
    if sample.dtype == torch.bfloat16 and sample.device.type == "cpu":
        return (lambda t: t), (lambda c: c.float())
    return f64_cpu, (lambda c: c.double())


def assert_fresh_output(t: torch.Tensor, sample: torch.Tensor) -> None:
    """An op output: sample's shape, dtype and device, contiguous, and every element written."""
    assert t.shape == sample.shape and t.dtype == sample.dtype and t.device == sample.device
    assert t.is_contiguous()
    assert torch.isfinite(t).all(), "unwritten (NaN-poisoned) or non-finite outputs"


def assert_matches(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """got (any device and dtype) against the float64 reference, within TOL[dtype]; against a
    bfloat16 reference (see reference_casts) within the float32 tolerance + 1 bfloat16 ulp."""
    if ref.dtype == torch.bfloat16:
        assert_close_bf16(got, ref, *TOL[torch.float32])
        return
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got.cpu().double(), ref, atol=atol, rtol=rtol)


@contextlib.contextmanager
def no_host_sync():
    """Inside: a CUDA call that synchronizes with the host raises (CUDA-graph friendliness)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def guidance_arg(guidance, shape, gen: torch.Generator, device):
    """(the op's guidance_scale, the reference's): None, a float, or with "frames" F = shape[1]
    random per-frame scales in [0, 8) (the op's on `device`, the reference's float64 on the CPU)."""
    if guidance != "frames":
        return guidance, guidance
    scales = 8 * torch.rand(shape[1], generator=gen)
    return scales.to(device), scales.double()


def random_sample_and_model_output(shape, gen: torch.Generator, guided: bool):
    """Standard normal sample [shape] and model output ([2N, ...] [uncond; cond] when guided),
    drawn from gen in that order."""
    sample = torch.randn(shape, generator=gen)
    rows = 2 * shape[0] if guided else shape[0]
    return sample, torch.randn((rows, *shape[1:]), generator=gen)


def check_export(module: torch.nn.Module, args: tuple, op) -> None:
    """torch.export keeps `op` (an OpOverload) in the graph and the exported module equals eager
    bit for bit."""
    ep = torch.export.export(module, args)
    assert any(n.target is op for n in ep.graph.nodes)
    for got, want in zip(ep.module()(*args), module(*args)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
