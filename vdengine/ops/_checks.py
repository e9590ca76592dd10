"""Argument validation and kernel dispatch shared by the fused-op wrappers in vdengine/ops/.

Every check raises a ValueError (wrong value, shape, device, layout) or a TypeError (wrong type or
dtype) whose message names the argument and says what was expected. All checks read tensor
metadata only (shape, stride, dtype, device): none reads tensor values, so none syncs the host
with a device and all of them run unchanged on fake tensors while torch.compile traces.

The module also holds the two helpers every op implementation uses: ``new_output`` (allocation of
the outputs, which tests can make NaN-poisoned to catch elements a kernel forgets to write) and
``launch`` (the call into vdengine._C / vdengine._C_cuda by device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from numbers import Integral, Real

import numpy as np
import torch
from torch import Tensor

from vdengine._validate import check_real
from vdengine.ops import _native

#: dtypes the CUDA kernels take (fp32 accumulation inside).
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: dtypes the CPU kernels take (bfloat16: float32 arithmetic inside, fp32/fp64 accumulation).
CPU_DTYPES = (torch.float32, torch.bfloat16)

REFERENCE_HINT = "vdengine.ops.reference"


# ---- scalars ------------------------------------------------------------------------------------


def positive_int(value: object, name: str) -> int:
    """An int > 0 (numpy ints too; bools are not: True is no group count). SymInts pass while
    tracing."""
    if type(value) is int:  # the common case, without the ABC checks below
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, torch.SymInt)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value if isinstance(value, torch.SymInt) else int(value)


def real(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """A finite real number (Python or numpy int/float, not bool), returned as a Python float."""
    return check_real(name, value, allow_none=allow_none)


def positive_real(value: object, name: str, *, allow_none: bool = False) -> float | None:
    return check_real(name, value, positive=True, allow_none=allow_none)


def flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def prediction_type(value: object) -> str:
    if not isinstance(value, str) or value not in _native.PREDICTION_CODES:
        raise ValueError(
            f"prediction_type must be one of {tuple(_native.PREDICTION_CODES)}, got {value!r}"
        )
    return value


# ---- tensors ------------------------------------------------------------------------------------


def shape_str(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def tensor(value: object, name: str, *, allow_none: bool = False) -> Tensor | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, Tensor):
        what = "a torch.Tensor or None" if allow_none else "a torch.Tensor"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def rank(t: Tensor, name: str, expected: int, layout: str) -> None:
    if t.dim() != expected:
        raise ValueError(f"{name} must be {expected}-D {layout}, got shape {shape_str(t.shape)}")


def shape(t: Tensor, name: str, expected: Sequence[object], layout: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {shape_str(expected)} ({layout}), got {shape_str(t.shape)}"
        )


def contiguous(t: Tensor, name: str) -> None:
    if not t.is_contiguous():
        raise ValueError(
            f"{name} must be contiguous (got shape {shape_str(t.shape)} with strides "
            f"{tuple(t.stride())}); call .contiguous() first"
        )


def memory_format(channels_last: bool) -> torch.memory_format:
    """The torch memory format of a layout_4d result."""
    return torch.channels_last if channels_last else torch.contiguous_format


def layout_4d(tensors: dict[str, Tensor], ref: str) -> bool:
    """The memory layout of the 4-D tensors[ref], shared by every other tensor of `tensors`:
    contiguous NCHW (False) or channels-last, torch.channels_last (True). A tensor that is both
    (C == 1 or H·W == 1: the same memory order) counts as NCHW."""
    x = tensors[ref]
    if x.is_contiguous():
        fmt, channels_last, what = torch.contiguous_format, False, "contiguous (NCHW)"
    elif x.is_contiguous(memory_format=torch.channels_last):
        fmt, channels_last, what = torch.channels_last, True, "channels-last"
    else:
        raise ValueError(
            f"{ref} must be contiguous (NCHW) or channels-last (torch.channels_last), got shape "
            f"{shape_str(x.shape)} with strides {tuple(x.stride())}; call .contiguous() first"
        )
    for name, t in tensors.items():
        if name != ref and not t.is_contiguous(memory_format=fmt):
            raise ValueError(
                f"{name} must be {what} like {ref}, got shape {shape_str(t.shape)} with strides "
                f"{tuple(t.stride())}; call .contiguous("
                f"{'memory_format=torch.channels_last' if channels_last else ''}) first"
            )
    if channels_last and x.device.type == "cuda":
        raise ValueError(f"{ref} is channels-last, which only the CPU kernels read; pass "
                         f"contiguous NCHW tensors on CUDA (.contiguous())")
    return channels_last


def floating(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def same_device(tensors: dict[str, Tensor | None], ref: str) -> None:
    """Every non-None tensor on the device of tensors[ref]."""
    device = tensors[ref].device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(
                f"{name} must be on the same device as {ref} ({device}), got {t.device}"
            )


def same_dtype(tensors: dict[str, Tensor | None], ref: str) -> None:
    """Every non-None tensor with the dtype of tensors[ref]."""
    dtype = tensors[ref].dtype
    for name, t in tensors.items():
        if t is not None and t.dtype != dtype:
            raise TypeError(f"{name} must have the dtype of {ref} ({dtype}), got {t.dtype}")


def kernel_dtype(t: Tensor, name: str) -> None:
    """The dtype is floating point and one the kernels of t's device implement."""
    floating(t, name)
    kind = t.device.type
    if kind == "cpu":
        if t.dtype not in CPU_DTYPES:
            raise TypeError(
                f"{name} has dtype {t.dtype}, but the CPU kernels take float32 or bfloat16; "
                f"convert, or use {REFERENCE_HINT} for other dtypes"
            )
    elif kind in ("cuda", "meta"):
        if t.dtype not in CUDA_DTYPES:
            raise TypeError(
                f"{name} has dtype {t.dtype}, but the CUDA kernels take float32, float16 or "
                f"bfloat16; use {REFERENCE_HINT} for other dtypes"
            )
    else:
        raise ValueError(
            f"{name} is on device {t.device}, but vdengine's kernels run on cpu and cuda only; use "
            f"{REFERENCE_HINT} on other devices"
        )


def no_grad(op: str, tensors: dict[str, object]) -> None:
    """The fused ops are inference ops: refuse inputs that would need a backward pass.

    Raised at the call rather than at backward time, so a model that forgot torch.no_grad() /
    torch.inference_mode() fails where the problem is. Values that are not tensors are skipped.
    """
    if not torch.is_grad_enabled():
        return
    for name, t in tensors.items():
        if isinstance(t, Tensor) and t.requires_grad:
            raise RuntimeError(
                f"vdengine.ops.{op}: {name} requires grad, but the fused kernels have no backward. "
                f"Run inference under torch.no_grad() / torch.inference_mode(), or use "
                f"{REFERENCE_HINT}.{op} (same semantics, with autograd) for training"
            )


def coefficient(value: object, name: str, rows: int, like: Tensor, *, allow_one: bool = False
                ) -> Tensor:
    """A schedule coefficient ᾱ as the float32 tensor the step kernels read: [1] or [rows].

    value is a Python float (checked to lie in (0, 1), or (0, 1] with allow_one) or a tensor with
    1 element or one per sample row (any shape, flattened, as the reference does), on like's device
    or on the CPU (copied over, non-blocking).
    Tensor values are not range-checked: that would read them and sync the host with the device.
    The conversion never reads values either, so it is CUDA-graph capturable when the tensor is
    already on the device.
    """
    if isinstance(value, Tensor):
        return _coefficient_tensor(value, name, rows, like)
    v = real(value, name)
    hi_ok = v < 1.0 or (allow_one and v == 1.0)
    if not (v > 0.0 and hi_ok):
        rng = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must lie in {rng} (a cumulative ᾱ), got {v}")
    return torch.full((1,), v, dtype=torch.float32, device=like.device)


def sigma(value: object, name: str, rows: int, like: Tensor, *, allow_zero: bool = False
          ) -> Tensor:
    """A noise level σ as the float32 tensor the Euler kernel reads: [1] or [rows].

    As :func:`coefficient`, with a Python float checked to be > 0 (>= 0 with allow_zero).
    """
    if isinstance(value, Tensor):
        return _coefficient_tensor(value, name, rows, like)
    v = real(value, name)
    if not (v > 0.0 or (allow_zero and v == 0.0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} (a noise level σ), "
                         f"got {v}")
    return torch.full((1,), v, dtype=torch.float32, device=like.device)


def _coefficient_tensor(value: Tensor, name: str, rows: int, like: Tensor) -> Tensor:
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor or a float, got {value.dtype}")
    if value.numel() != 1 and value.numel() != rows:
        raise ValueError(
            f"{name} must have 1 element or one per sample row ({rows}), got shape "
            f"{shape_str(value.shape)}"
        )
    if value.device != like.device and value.device.type != "cpu":
        raise ValueError(
            f"{name} must be on the device of sample ({like.device}) or on the CPU, got "
            f"{value.device}"
        )
    return value.detach().to(device=like.device, dtype=torch.float32,
                             non_blocking=True).reshape(-1).contiguous()


def coefficient_tensor(t: Tensor, name: str, rows: int, like: Tensor) -> None:
    """What the op implementations accept for a coefficient: float32 [1] or [rows] on like's device."""
    tensor(t, name)
    if t.dtype != torch.float32 or t.dim() != 1 or t.numel() not in (1, rows):
        raise ValueError(
            f"{name} must be a float32 tensor of shape [1] or [{rows}], got dtype {t.dtype} and "
            f"shape {shape_str(t.shape)}"
        )
    if t.device != like.device:
        raise ValueError(f"{name} must be on the device of sample ({like.device}), got {t.device}")
    contiguous(t, name)


# ---- outputs and launches -----------------------------------------------------------------------

_poison_outputs = False


@contextlib.contextmanager
def poison_outputs() -> Iterator[None]:
    """Within this context every op output is filled with NaN before the kernel runs.

    Tests use it to catch elements a kernel forgets to write. Not thread-safe; test use only.
    """
    global _poison_outputs
    old, _poison_outputs = _poison_outputs, True
    try:
        yield
    finally:
        _poison_outputs = old


def new_output(shape: Sequence[int], like: Tensor, *,
               memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """An uninitialised tensor with like's dtype and device, contiguous in memory_format (e.g.
    torch.channels_last for 4-D shapes); NaN-filled under poison_outputs."""
    out = torch.empty(tuple(shape), dtype=like.dtype, device=like.device,
                      memory_format=memory_format)
    if _poison_outputs:
        out.fill_(float("nan"))
    return out


def ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


_modules: dict[str, object] = {}


def _module(kind: str):
    """vdengine._C / vdengine._C_cuda, imported through _native once (its errors explain)."""
    module = _modules.get(kind)
    if module is None:
        module = _modules[kind] = _native.cpu() if kind == "cpu" else _native.cuda()
    return module


def launch(kernel: str, like: Tensor, *args: object) -> None:
    """Call kernel `kernel` of the module for like's device with like's dtype code first (the
    storage type of every tensor argument but the float32 coefficients); CUDA calls also get the
    stream last."""
    if like.device.type == "cpu":
        getattr(_module("cpu"), kernel)(_native.DTYPE_CODES[like.dtype], *args)
    elif like.device.type == "cuda":
        module = _module("cuda")
        with torch.cuda.device(like.device):
            getattr(module, kernel)(_native.DTYPE_CODES[like.dtype], *args,
                                    _native.stream_of(like))
    else:  # pragma: no cover - kernel_dtype() refuses other devices first
        raise ValueError(f"no vdengine kernels for device {like.device}")


# ---- sampler steps ------------------------------------------------------------------------------


def step_tensors(
    sample: Tensor, model_output: Tensor, guided: bool, extra: dict[str, Tensor | None],
) -> tuple[int, int]:
    """Checks sample [N, ...], model_output [N, ...] ([2N, ...] when guided) and the optional
    per-element tensors in extra (each sample's shape). Returns (N, D) with D = elements per row."""
    if sample.dim() < 1:
        raise ValueError("sample must have at least one dimension [N, ...], got a 0-d tensor")
    tensors: dict[str, Tensor | None] = {"sample": sample, "model_output": model_output, **extra}
    for name, t in tensors.items():
        if t is not None:
            floating(t, name)
    same_device(tensors, "sample")
    same_dtype(tensors, "sample")
    kernel_dtype(sample, "sample")
    n = sample.shape[0]
    rest = tuple(sample.shape[1:])
    if not guided:
        if tuple(model_output.shape) != tuple(sample.shape):
            raise ValueError(
                f"model_output must have the shape of sample {shape_str(sample.shape)}, got "
                f"{shape_str(model_output.shape)} (a [2N, ...] output of stacked [uncond; cond] "
                f"rows needs guidance_scale)"
            )
    elif model_output.dim() != sample.dim() or tuple(model_output.shape) != (2 * n, *rest):
        raise ValueError(
            f"with guidance_scale, model_output must have 2N rows [uncond; cond]: shape "
            f"{shape_str((2 * n, *rest))}, got {shape_str(model_output.shape)}"
        )
    for name, t in extra.items():
        if t is not None:
            shape(t, name, sample.shape, "the shape of sample")
    for name, t in tensors.items():
        if t is not None:
            contiguous(t, name)
    d = 1
    for s in rest:
        d = d * s
    return n, d


def step_coefficients(
    coefs: dict[str, Tensor | None], rows: int
) -> tuple[list[Tensor | None], int]:
    """Gives the (checked, see coefficient_tensor) coefficients one common layout for the kernel.

    The kernels take one coef_stride for all coefficients: 0 when each holds one value, 1 when
    each holds one per row; a one-value coefficient beside per-row ones is expanded to [rows]
    (a tiny device copy, no host sync). Returns (coefficients, coef_stride).
    """
    per_row = rows != 1 and any(t is not None and t.numel() == rows for t in coefs.values())
    if not per_row:
        return list(coefs.values()), 0
    out = [None if t is None else t.expand(rows).contiguous() for t in coefs.values()]
    return out, 1


def eta_and_noise(eta: float, noise: Tensor | None) -> None:
    e = real(eta, "eta")
    if e < 0:
        raise ValueError(f"eta must be >= 0, got {e}")
    if e > 0 and noise is None:
        raise ValueError(f"noise (a tensor of sample's shape) is required when eta > 0 (eta = {e})")


# ---- guidance -----------------------------------------------------------------------------------


def guidance(value: object, sample: Tensor) -> tuple[float | None, Tensor | None]:
    """A public guidance_scale as (scale, per-frame scales): None → (None, None); a real number →
    (float, None); a 1-D float tensor of sample.shape[1] scales (samples laid out [N, F, ...]) on
    sample's device or the CPU → (None, float32 [F] on sample's device, copied non-blocking).
    Tensor values are not checked (no host sync)."""
    if not isinstance(value, Tensor):
        if value is not None and not isinstance(value, (Real, np.floating, np.integer)):
            raise TypeError(f"guidance_scale must be a float, a 1-D tensor of per-frame scales or "
                            f"None, got {type(value).__name__}")
        return real(value, "guidance_scale", allow_none=True), None
    if not value.is_floating_point():
        raise TypeError(f"guidance_scale as a tensor must be floating point, got {value.dtype}")
    frames = sample.shape[1] if sample.dim() >= 2 else None
    if value.dim() != 1 or frames is None or value.shape[0] != frames:
        raise ValueError(
            f"guidance_scale as a tensor must hold one scale per frame, shape [F] for sample "
            f"[N, F, ...]; got shape {shape_str(value.shape)} for sample {shape_str(sample.shape)}"
        )
    if value.device != sample.device and value.device.type != "cpu":
        raise ValueError(f"guidance_scale must be on the device of sample ({sample.device}) or on "
                         f"the CPU, got {value.device}")
    return None, value.detach().to(device=sample.device, dtype=torch.float32,
                                   non_blocking=True).contiguous()


def guidance_frames_tensor(t: Tensor | None, sample: Tensor, guidance_scale: float | None) -> None:
    """What the op implementations accept for per-frame scales: None, or float32 [F] on sample's
    device for sample [N, F, ...], and never together with a scalar guidance_scale."""
    if t is None:
        return
    tensor(t, "guidance_frames")
    if guidance_scale is not None:
        raise ValueError("give guidance_scale or guidance_frames, not both")
    if sample.dim() < 2 or t.dtype != torch.float32 or tuple(t.shape) != (sample.shape[1],):
        raise ValueError(
            f"guidance_frames must be a float32 tensor of shape [F] for sample [N, F, ...], got "
            f"dtype {t.dtype} and shape {shape_str(t.shape)} for sample {shape_str(sample.shape)}"
        )
    if t.device != sample.device:
        raise ValueError(f"guidance_frames must be on the device of sample ({sample.device}), "
                         f"got {t.device}")
    contiguous(t, "guidance_frames")


def guidance_launch_args(guidance_scale: float | None, guidance_frames: Tensor | None, d: int
                         ) -> tuple[bool, float, int, int, int]:
    """The kernels' guidance arguments: (has_guidance, guidance_scale, guidance_frames pointer,
    frames, frame_inner) for rows of d elements."""
    if guidance_frames is None:
        return guidance_scale is not None, guidance_scale or 0.0, 0, 0, 0
    frames = guidance_frames.numel()
    return True, 0.0, guidance_frames.data_ptr(), frames, d // frames
