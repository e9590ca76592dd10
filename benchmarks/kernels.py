"""Per-op benchmark: each fused vdengine op against the PyTorch composition it replaces.

    python benchmarks/kernels.py                                 # CPU, float32, video shapes
    python benchmarks/kernels.py --quick                         # smaller shapes, fewer repeats
    python benchmarks/kernels.py --dtype bfloat16                # CPU bfloat16 kernels vs PyTorch
    python benchmarks/kernels.py --compare dtype                 # ours: bfloat16 vs float32
    python benchmarks/kernels.py --compare layout                # posgn/group_norm: NHWC vs NCHW
    python benchmarks/kernels.py --device cuda --dtype bfloat16 --json benchmarks/results/kernels-cuda.json

For every case both implementations get the same inputs and run side by side in one process,
alternating (ours, torch, ours, torch, ...) after a warmup so that drift on a shared machine hits
both alike; each reported time is the median of the repeats. The PyTorch compositions:

  posgn               F.group_norm → ·(1 + scale) + shift → SiLU, the [M, ...] tables repeated
                      over the batch (what a model without the op does)
  temporal_attention  permute q, k, v to [B·S, H, F, D] → F.scaled_dot_product_attention →
                      permute back to [B·F, S, C]
  ddim_step           the elementwise chain: guidance combine, x0, direction, noise term
  dpmpp_2m_step       the elementwise chain: guidance combine, x0, 2M correction, update
  euler_step          the elementwise chain of diffusers' EulerDiscreteScheduler.step after the
                      pipeline's guidance combine (v-prediction: c_out, c_skip, derivative, update;
                      per-frame: SVD's linspace guidance scales broadcast over [B, F, ...])
  group_norm          F.group_norm of the [B, C, F, H, W] view (permute copies in and out) → SiLU
  geglu               bias add → chunk → gelu → multiply

--compare dtype times our kernels only, in float32 and in bfloat16 on the same values, side by
side (interleaved); the table gives both times and bfloat16/float32 (< 1: bfloat16 is faster).
--compare layout does the same for posgn and group_norm on contiguous NCHW inputs and on
channels-last (torch.channels_last) inputs (nhwc/nchw < 1: channels-last is faster), in --dtype.

The "floor" of a case is its minimal bytes (every input read once, every output written once)
over the copy bandwidth measured at the start of the same run (a large tensor copy:
read + write bytes / time); "%floor" = floor / ours: how close the op gets to moving its bytes
at copy speed. Prints a markdown table; --json PATH writes the results with the device, torch
version, CPU count, thread count, build info and git commit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
try:
    import vdengine
except ImportError:  # run from a checkout without `pip install`: use the dev build in the tree
    sys.path.insert(0, str(REPO))
    import vdengine
from _environment import cpu_name, git_commit  # benchmarks/ is on sys.path

from vdengine import ops

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OPS = ["posgn", "temporal_attention", "ddim_step", "dpmpp_2m_step", "euler_step", "group_norm",
       "geglu"]
#: dtypes of the CPU kernels.
CPU_DTYPES = ("float32", "bfloat16")


# ---- timing -----------------------------------------------------------------------------------------


class Timer:
    """Milliseconds per call of fn: CUDA events on a GPU, perf_counter on the CPU. Each sample
    runs fn `inner` times, inner chosen once so that a sample lasts at least min_sample_ms."""

    def __init__(self, device: torch.device, min_sample_ms: float):
        self.device = device
        self.min_sample_ms = min_sample_ms

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) * 1e3 / inner

    def calibrate(self, fn: Callable[[], object]) -> int:
        self.sync()
        once = self.sample(fn, 1)
        return max(1, math.ceil(self.min_sample_ms / max(once, 1e-4)))

    def compare(self, fns: dict[str, Callable[[], object]], warmup: int, repeats: int
                ) -> dict[str, float]:
        """Median ms per call of each fn, sampled interleaved."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        inner = {k: self.calibrate(fn) for k, fn in fns.items()}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                self.sync()
                times[k].append(self.sample(fn, inner[k]))
        self.last_min = {k: min(v) for k, v in times.items()}
        return {k: statistics.median(v) for k, v in times.items()}


def copy_bandwidth(device: torch.device, dtype: torch.dtype, nbytes: int, timer: Timer,
                   repeats: int) -> float:
    """GB/s of dst.copy_(src) for a large tensor: (read + write) bytes / median time."""
    n = nbytes // torch.finfo(dtype).bits * 8
    src = torch.randn(n, device=device).to(dtype)
    dst = torch.empty_like(src)
    ms = timer.compare({"copy": lambda: dst.copy_(src)}, warmup=2, repeats=repeats)["copy"]
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


# ---- cases ------------------------------------------------------------------------------------------


@dataclass
class Case:
    op: str
    shape: str
    ours: Callable[[], object]
    torch: Callable[[], object]
    min_bytes: int
    outputs: Callable[[], tuple[torch.Tensor, torch.Tensor]] = field(repr=False, default=None)


def _rand(gen: torch.Generator, shape, device, dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, device=device) * scale).to(dtype)


def _in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t [N, C, H, W] contiguous (nchw) or channels-last (nhwc), as a model lays it out."""
    return t.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else t


def posgn_case(b, f, c, h, w, groups, per_video, device, dtype, gen, layout="nchw") -> Case:
    n = b * f
    m = n if per_video else f  # tables per frame shared by the videos, or one per (video, frame)
    x = _in_layout(_rand(gen, (n, c, h, w), device, dtype), layout)
    scale = _in_layout(_rand(gen, (m, c, h, w), device, dtype, 0.3), layout)
    shift = _in_layout(_rand(gen, (m, c, h, w), device, dtype, 0.3), layout)
    weight = 1 + _rand(gen, (c,), device, dtype, 0.1)
    bias = _rand(gen, (c,), device, dtype, 0.1)

    def ours():
        return ops.posgn(x, scale, shift, groups, weight, bias, silu=True)

    def composed():
        y = F.group_norm(x, groups, weight, bias, 1e-5)
        reps = n // m
        y = y * (1 + scale.repeat(reps, 1, 1, 1)) + shift.repeat(reps, 1, 1, 1)
        return F.silu(y)

    e = x.element_size()
    return Case("posgn", f"N={n} M={m} C={c} {h}x{w} G={groups}", ours, composed,
                min_bytes=e * (2 * n * c * h * w + 2 * m * c * h * w + 2 * c),
                outputs=lambda: (ours(), composed()))


def attention_case(b, f, s, heads, d, causal, device, dtype, gen) -> Case:
    c = heads * d
    qkv = _rand(gen, (b * f, s, 3 * c), device, dtype)
    q, k, v = qkv.chunk(3, dim=-1)  # strided views, as a fused qkv projection produces them
    bias = None
    if causal:
        bias = torch.full((f, f), float("-inf"), device=device).triu(1)
    mask = None if bias is None else bias.to(dtype)

    def ours():
        return ops.temporal_attention(q, k, v, f, heads, bias=bias)

    def composed():
        def split(t):  # [B·F, S, C] -> [B·S, H, F, D]
            return t.reshape(b, f, s, heads, d).permute(0, 2, 3, 1, 4).reshape(b * s, heads, f, d)

        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return o.reshape(b, s, heads, f, d).permute(0, 3, 1, 2, 4).reshape(b * f, s, c)

    e = qkv.element_size()
    label = f"B={b} F={f} S={s} H={heads} D={d}" + (" causal" if causal else "")
    return Case("temporal_attention", label, ours, composed,
                min_bytes=4 * b * f * s * c * e + (0 if bias is None else 4 * f * f),
                outputs=lambda: (ours(), composed()))


def _guided(out, n, g):
    if g is None:
        return out
    uncond, cond = out[:n], out[n:]
    return uncond + g * (cond - uncond)


def ddim_case(shape, guidance, eta, device, dtype, gen) -> Case:
    n = shape[0]
    rows = 2 * n if guidance is not None else n
    x = _rand(gen, shape, device, dtype)
    out = _rand(gen, (rows, *shape[1:]), device, dtype)
    noise = _rand(gen, shape, device, dtype) if eta > 0 else None
    ab_t, ab_p = 0.35, 0.55

    def ours():
        return ops.ddim_step(x, out, ab_t, ab_p, eta=eta, noise=noise, guidance_scale=guidance)

    def composed():
        eps = _guided(out, n, guidance)
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        sigma = eta * math.sqrt((1 - ab_p) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_p)
        x_prev = math.sqrt(ab_p) * x0 + math.sqrt(max(1 - ab_p - sigma**2, 0.0)) * eps
        if eta > 0:
            x_prev = x_prev + sigma * noise
        return x_prev

    numel = x.numel()
    reads = numel * (1 + rows // n + (1 if eta > 0 else 0))
    label = "x".join(map(str, shape)) + (f" cfg={guidance}" if guidance else "") + f" eta={eta}"
    return Case("ddim_step", label, ours, composed,
                min_bytes=(reads + numel) * x.element_size(),
                outputs=lambda: (ours(), composed()))


def dpmpp_case(shape, guidance, second_order, device, dtype, gen) -> Case:
    n = shape[0]
    rows = 2 * n if guidance is not None else n
    x = _rand(gen, shape, device, dtype)
    out = _rand(gen, (rows, *shape[1:]), device, dtype)
    x0_prev = _rand(gen, shape, device, dtype) if second_order else None
    ab_p, ab_t, ab_n = 0.2, 0.35, 0.55
    ab_prev = ab_p if second_order else None

    def ours():
        return ops.dpmpp_2m_step(x, out, ab_t, ab_n, x0_prev=x0_prev, alpha_bar_prev=ab_prev,
                                 guidance_scale=guidance)

    def lam(ab):
        return 0.5 * (math.log(ab) - math.log(1 - ab))

    def composed():
        eps = _guided(out, n, guidance)
        a_t, s_t = math.sqrt(ab_t), math.sqrt(1 - ab_t)
        a_n, s_n = math.sqrt(ab_n), math.sqrt(1 - ab_n)
        x0 = (x - s_t * eps) / a_t
        h = lam(ab_n) - lam(ab_t)
        d = x0
        if x0_prev is not None:
            r = (lam(ab_t) - lam(ab_p)) / h
            d = x0 + (x0 - x0_prev) / (2 * r)
        return (s_n / s_t) * x + (a_n * (1 - math.exp(-h))) * d, x0

    numel = x.numel()
    reads = numel * (1 + rows // n + (1 if second_order else 0))
    label = ("x".join(map(str, shape)) + (f" cfg={guidance}" if guidance else "")
             + (" 2nd order" if second_order else " 1st order"))
    return Case("dpmpp_2m_step", label, ours, composed,
                min_bytes=(reads + 2 * numel) * x.element_size(),
                outputs=lambda: (ours(), composed()))


def euler_case(shape, guidance, device, dtype, gen, per_frame=False) -> Case:
    """per_frame: SVD's guidance, linspace(1, guidance, F) over the frames of [B, F, ...]."""
    n = shape[0]
    rows = 2 * n if guidance is not None else n
    x = _rand(gen, shape, device, dtype, scale=8.0)  # σ-space latents, x0 + σ·ε
    out = _rand(gen, (rows, *shape[1:]), device, dtype)
    sigma, sigma_next = 7.0, 4.0
    scale = guidance
    if per_frame:
        scale = torch.linspace(1.0, guidance, shape[1], device=device)
    composed_scale = scale.reshape(1, -1, *[1] * (len(shape) - 2)) if per_frame else scale

    def ours():
        return ops.euler_step(x, out, sigma, sigma_next, prediction_type="v_prediction",
                              guidance_scale=scale)

    def composed():
        v = _guided(out, n, composed_scale)
        x0 = v * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
        return x + (x - x0) / sigma * (sigma_next - sigma)

    numel = x.numel()
    reads = numel * (1 + rows // n)
    label = ("x".join(map(str, shape)) + (f" cfg={guidance}" if guidance else "")
             + (" per-frame" if per_frame else "") + " v")
    return Case("euler_step", label, ours, composed, min_bytes=(reads + numel) * x.element_size(),
                outputs=lambda: (ours(), composed()))


def group_norm_case(b, f, c, h, w, groups, device, dtype, gen, layout="nchw") -> Case:
    """A temporal layer's norm: statistics of each group over the F frames of a video."""
    n = b * f
    x = _in_layout(_rand(gen, (n, c, h, w), device, dtype), layout)
    weight = 1 + _rand(gen, (c,), device, dtype, 0.1)
    bias = _rand(gen, (c,), device, dtype, 0.1)

    def ours():
        return ops.group_norm(x, groups, weight, bias, silu=True, frames=f)

    def composed():
        video = x.reshape(b, f, c, h, w).transpose(1, 2)  # [B, C, F, H, W]
        y = F.silu(F.group_norm(video, groups, weight, bias, 1e-5))
        return y.transpose(1, 2).reshape(n, c, h, w)

    e = x.element_size()
    return Case("group_norm", f"B={b} F={f} C={c} {h}x{w} G={groups}", ours, composed,
                min_bytes=e * (2 * n * c * h * w + 2 * c), outputs=lambda: (ours(), composed()))


def geglu_case(rows, hidden, device, dtype, gen) -> Case:
    x = _rand(gen, (rows, 2 * hidden), device, dtype)
    bias = _rand(gen, (2 * hidden,), device, dtype, 0.1)

    def ours():
        return ops.geglu(x, bias)

    def composed():
        h, g = (x + bias).chunk(2, dim=-1)
        return h * F.gelu(g)

    e = x.element_size()
    return Case("geglu", f"rows={rows} H={hidden}", ours, composed,
                min_bytes=e * (3 * rows * hidden + 2 * hidden),
                outputs=lambda: (ours(), composed()))


def build_cases(device: torch.device, dtype: torch.dtype, quick: bool, only: set[str] | None,
                layout: str = "nchw") -> list[Case]:
    """The benchmark cases; layout (nchw | nhwc) is the memory layout of posgn's and group_norm's
    inputs."""
    gen = torch.Generator(device).manual_seed(0)
    gpu = device.type == "cuda"
    cases: list[Case] = []

    def want(op):
        return only is None or op in only

    if want("posgn"):
        if gpu:
            shapes = [(2, 16, 320, 64, 64, 32, False), (2, 16, 320, 64, 64, 32, True)]
            shapes = shapes[:1] if quick else shapes + [(2, 16, 640, 32, 32, 32, False)]
        elif quick:
            shapes = [(2, 16, 64, 16, 16, 32, False)]
        else:  # 2 videos × 16 frames, C 128, 32×32
            shapes = [(2, 16, 128, 32, 32, 32, False), (2, 16, 128, 32, 32, 32, True)]
        cases += [posgn_case(*s, device, dtype, gen, layout) for s in shapes]
    if want("temporal_attention"):
        if gpu:
            shapes = [(2, 16, 64 * 64, 5, 64, False), (2, 16, 64 * 64, 5, 64, True)]
            shapes = shapes[:1] if quick else shapes + [(1, 64, 32 * 32, 8, 64, False)]
        elif quick:
            shapes = [(2, 16, 16 * 16, 2, 64, False)]
        else:
            shapes = [(2, 16, 32 * 32, 2, 64, False), (2, 16, 32 * 32, 4, 32, True)]
        cases += [attention_case(*s, device, dtype, gen) for s in shapes]
    latent = (4, 4, 16, 128, 128) if gpu else ((2, 4, 16, 32, 32) if quick else (2, 4, 16, 64, 64))
    if want("ddim_step"):
        cases.append(ddim_case(latent, 7.5, 1.0, device, dtype, gen))
        if not quick:
            cases.append(ddim_case(latent, None, 0.0, device, dtype, gen))
    if want("dpmpp_2m_step"):
        cases.append(dpmpp_case(latent, 7.5, True, device, dtype, gen))
        if not quick:
            cases.append(dpmpp_case(latent, None, False, device, dtype, gen))
    if want("euler_step"):  # SVD-like [B, F, C, H, W]: 14 frames (72×128 latents at 576×1024)
        svd = (2, 14, 4, 72, 128) if gpu else ((1, 14, 4, 16, 32) if quick else (2, 14, 4, 36, 64))
        cases.append(euler_case(svd, 2.5, device, dtype, gen, per_frame=True))
        if not quick:
            cases.append(euler_case(svd, 2.5, device, dtype, gen))
            cases.append(euler_case(svd, None, device, dtype, gen))
    if want("group_norm"):  # 2 videos × 16 frames; CPU: C 128 at 32×32 (UNet's temporal norms)
        shape = ((2, 16, 320, 64, 64, 32) if gpu else
                 ((1, 8, 64, 16, 16, 32) if quick else (2, 16, 128, 32, 32, 32)))
        cases.append(group_norm_case(*shape, device, dtype, gen, layout))
        if not quick and not gpu:  # per-frame statistics (the spatial norms of a UNet)
            cases.append(group_norm_case(32, 1, 128, 32, 32, 32, device, dtype, gen, layout))
    if want("geglu"):  # a transformer feed-forward: 2·16 frames × 32×32 tokens or fewer, H 4·C
        shape = (2 * 16 * 64 * 64, 1280) if gpu else ((2048, 256) if quick else (8192, 512))
        cases.append(geglu_case(*shape, device, dtype, gen))
    return cases


# ---- environment ------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def max_abs_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        return max(max_abs_diff(x, y) for x, y in zip(a, b))
    return float((a.float() - b.float()).abs().max())


# ---- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="default float32 on cpu (float32 or bfloat16), bfloat16 on cuda")
    p.add_argument("--compare", choices=["torch", "dtype", "layout"], default="torch",
                   help="torch: ours vs the PyTorch composition (default); dtype: ours in "
                        "bfloat16 vs ours in float32; layout: posgn/group_norm on channels-last "
                        "vs NCHW inputs")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    p.add_argument("--ops", nargs="+", choices=OPS, default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed samples per case")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per case")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    dtype_name = args.dtype or ("float32" if device.type == "cpu" else "bfloat16")
    dtype = DTYPES[dtype_name]
    if device.type == "cpu" and dtype_name not in CPU_DTYPES:
        print("error: the CPU kernels take float32 or bfloat16", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    timer = Timer(device, min_sample_ms=1.0 if device.type == "cpu" else 2.0)

    torch.set_grad_enabled(False)
    copy_bytes = (1 << 30) if device.type == "cuda" else (128 << 20 if args.quick else 512 << 20)
    bandwidth = copy_bandwidth(device, dtype, copy_bytes, timer, repeats)
    env = {
        "device": device_name(device), "device_type": device.type, "dtype": dtype_name,
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "vdengine": vdengine.__version__,
        "build_info": vdengine.build_info(), "git": git_commit(),
        "copy_bandwidth_GBps": bandwidth, "copy_bytes": copy_bytes,
        "repeats": repeats, "warmup": warmup, "quick": args.quick, "compare": args.compare,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"# vdengine kernels vs PyTorch on {env['device']} ({device.type}, {dtype_name}, "
          f"{env['torch_threads']} threads, torch {torch.__version__}, "
          f"commit {(env['git']['commit'] or '?')[:10]}{'+dirty' if env['git']['dirty'] else ''})")
    print(f"# copy bandwidth: {bandwidth:.1f} GB/s ({copy_bytes >> 20} MiB copy); "
          f"median of {repeats} interleaved samples after {warmup} warmup calls\n")

    only = set(args.ops) if args.ops else None
    if args.compare == "dtype":
        other = dtype_name if args.dtype and dtype_name != "float32" else "bfloat16"
        results = compare_variants(
            "float32", build_cases(device, torch.float32, args.quick, only),
            other, build_cases(device, DTYPES[other], args.quick, only), timer, warmup, repeats)
        return write_results(args.json, env, results)
    if args.compare == "layout":
        norms = {"posgn", "group_norm"} & (only or {"posgn", "group_norm"})
        results = compare_variants(
            "nchw", build_cases(device, dtype, args.quick, norms, "nchw"),
            "nhwc", build_cases(device, dtype, args.quick, norms, "nhwc"), timer, warmup, repeats)
        return write_results(args.json, env, results)

    results = []
    header = ("| op | shape | ours ms | torch ms | speedup | ours GB/s | floor ms | %floor "
              "| max abs diff |")
    print(header)
    print("|" + "---|" * 9)
    for case in build_cases(device, dtype, args.quick, only):
        row = {"op": case.op, "shape": case.shape, "min_bytes": case.min_bytes}
        floor_ms = case.min_bytes / (bandwidth * 1e9) * 1e3
        try:
            got, ref = case.outputs()
            row["max_abs_diff"] = max_abs_diff(got, ref)
            t = timer.compare({"ours": case.ours, "torch": case.torch}, warmup, repeats)
            row.update(ours_min_ms=timer.last_min["ours"], torch_min_ms=timer.last_min["torch"])
            row.update(ours_ms=t["ours"], torch_ms=t["torch"], speedup=t["torch"] / t["ours"],
                       ours_GBps=case.min_bytes / (t["ours"] * 1e-3) / 1e9, floor_ms=floor_ms,
                       pct_floor=100 * floor_ms / t["ours"])
            print(f"| {case.op} | {case.shape} | {t['ours']:.3f} | {t['torch']:.3f} | "
                  f"{row['speedup']:.2f}x | {row['ours_GBps']:.1f} | {floor_ms:.3f} | "
                  f"{row['pct_floor']:.0f}% | {row['max_abs_diff']:.1e} |", flush=True)
        except Exception as e:  # noqa: BLE001 - a kernel not built yet or failing: report, go on
            row["error"] = f"{type(e).__name__}: {e}"
            t = timer.compare({"torch": case.torch}, warmup, repeats)
            row.update(torch_ms=t["torch"], floor_ms=floor_ms)
            print(f"| {case.op} | {case.shape} | error | {t['torch']:.3f} | - | - | "
                  f"{floor_ms:.3f} | - | {row['error'][:60]} |", flush=True)
        results.append(row)

    return write_results(args.json, env, results)


def compare_variants(a: str, cases_a: list[Case], b: str, cases_b: list[Case], timer: Timer,
                     warmup: int, repeats: int) -> list[dict]:
    """Our kernels in two variants of the same cases (same ops, shapes and values; e.g. float32
    and bfloat16) timed side by side, interleaved; prints a table with both times and b/a."""
    print(f"| op | shape | {a} ms | {b} ms | {b}/{a} | {a} GB/s | {b} GB/s | max abs diff |")
    print("|" + "---|" * 8)
    results = []
    for ca, cb in zip(cases_a, cases_b):
        row = {"op": ca.op, "shape": ca.shape, f"{a}_min_bytes": ca.min_bytes,
               f"{b}_min_bytes": cb.min_bytes}
        try:
            row["max_abs_diff"] = max_abs_diff(ca.ours(), cb.ours())
            t = timer.compare({a: ca.ours, b: cb.ours}, warmup, repeats)
        except Exception as e:  # noqa: BLE001 - report, go on
            row["error"] = f"{type(e).__name__}: {e}"
            print(f"| {ca.op} | {ca.shape} | error | | | | | {row['error'][:60]} |", flush=True)
            results.append(row)
            continue
        gbps = {k: c.min_bytes / (t[k] * 1e-3) / 1e9 for k, c in ((a, ca), (b, cb))}
        row.update({f"{a}_ms": t[a], f"{b}_ms": t[b], f"{b}_over_{a}": t[b] / t[a],
                    f"{a}_GBps": gbps[a], f"{b}_GBps": gbps[b]})
        print(f"| {ca.op} | {ca.shape} | {t[a]:.3f} | {t[b]:.3f} | {t[b] / t[a]:.2f} | "
              f"{gbps[a]:.1f} | {gbps[b]:.1f} | {row['max_abs_diff']:.1e} |", flush=True)
        results.append(row)
    return results


def write_results(path: Path | None, env: dict, results: list[dict]) -> int:
    """Writes {"env", "results"} to path (if given); the exit status: 1 if a case failed."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"env": env, "results": results}, indent=2, default=str) + "\n")
        tmp.replace(path)
        print(f"\nwrote {path}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
