"""diffusers' video UNets: diffusers' own loop vs torch.compile vs vdengine's accelerated UNet.

    python benchmarks/diffusers_models.py                       # 3 families, mid-size, 5 steps
    python benchmarks/diffusers_models.py --quick               # smoke: tiny configs, 2 steps
    python benchmarks/diffusers_models.py --models unet3d --threads 2 --json \
        benchmarks/results/diffusers-models-cpu.json

One run builds each family's model once (seeded, every zero-initialised parameter redrawn so
the temporal branches are live) and times, side by side, the same pipeline loop
(vdengine.adapters.diffusers.pipeline_loops: TextToVideoSD + DDIM, AnimateDiff + DPM-Solver++,
SVD + Euler with per-frame guidance) from the same noise, with classifier-free guidance:

  diffusers           the diffusers model, eager
  diffusers+compile   torch.compile(model) (default mode; compile time reported apart)
  vdengine            vdengine's accelerated copy of the model (fused temporal attention, group
                      norms, GEGLU, temporal convolutions: vdengine.adapters.diffusers) in the
                      same diffusers loop
  vdengine+sampler    the accelerated model as a Denoiser driven by vdengine's sampler
                      (from_diffusers(scheduler)), the engine's own loop
  diffusers bf16      the diffusers model in bfloat16 inside the same float32 loop (latents and
                      scheduler in float32, the model's input cast to bfloat16, its output back)
  vdengine bf16       the accelerated model in bfloat16, likewise (vdengine's CPU kernels take
                      bfloat16 with float32 accumulation)
  vdengine+compile    torch.compile of the accelerated model (vdengine's ops are custom ops with
                      fake implementations, so Inductor compiles around them); not run unless
                      named in --columns

"mid" configs: ~10-11 M parameters (block channels 64/128/128, attention on the two upper
levels), 16 frames of 32×32 latents, 77 text tokens. Each column: warmup runs (compiling, for
the compiled column), then repeats interleaved across columns so drift on a shared machine hits
them alike; the time per video is the median over repeats divided by the batch, in wall time and
in this process's CPU time (less sensitive to other processes on a shared machine; equal to the
wall time times the threads kept busy). Peak memory:
the peak increase of the heap in use during a column's timed runs (glibc mallinfo2 sampled every
2 ms; CPU), or torch.cuda.max_memory_allocated (CUDA). "max |diff|" is the largest difference of
the final latents from the diffusers column (float32 rounding only). Prints a markdown table;
--json PATH writes results with the device, versions, thread count and git commit.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
try:
    import vdengine
except ImportError:  # run from a checkout without `pip install`: use the dev build in the tree
    sys.path.insert(0, str(REPO))
    import vdengine
import diffusers
from _environment import cpu_name, git_commit
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet3DConditionModel,
    UNetMotionModel,
    UNetSpatioTemporalConditionModel,
)

from vdengine.adapters.diffusers import DiffusersDenoiser, accelerate
from vdengine.adapters.diffusers.pipeline_loops import pipeline_loop
from vdengine.denoiser import conditioning_rows, stack_guidance
from vdengine.samplers import from_diffusers

COLUMNS = ("diffusers", "diffusers+compile", "vdengine", "vdengine+sampler", "diffusers bf16",
           "vdengine bf16", "vdengine+compile")
DEFAULT_COLUMNS = COLUMNS[:6]
FAMILIES = ("unet3d", "motion", "svd")
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012}
TEXT_TOKENS = 77

# (block channels, cross-attention dim, heads) per size; attention on all but the last level.
SIZES = {"mid": ((64, 128, 128), 128, 4), "tiny": ((32, 64), 32, 2)}


def build_unet(family: str, size: str, seed: int) -> torch.nn.Module:
    """The family's UNet at this size, seeded; zero-initialised parameters redrawn N(0, 0.05²)."""
    channels, cross, heads = SIZES[size]
    n = len(channels)
    torch.manual_seed(seed)
    if family == "unet3d":
        model = UNet3DConditionModel(
            block_out_channels=channels, layers_per_block=1, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
            cross_attention_dim=cross, attention_head_dim=channels[0] // heads * 2)
    elif family == "motion":
        model = UNetMotionModel(
            block_out_channels=channels, layers_per_block=1, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlockMotion",) * (n - 1) + ("DownBlockMotion",),
            up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * (n - 1),
            cross_attention_dim=cross, num_attention_heads=heads)
    else:
        model = UNetSpatioTemporalConditionModel(
            block_out_channels=channels, layers_per_block=1,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (n - 1)
            + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",)
            + ("CrossAttnUpBlockSpatioTemporal",) * (n - 1),
            cross_attention_dim=cross, num_attention_heads=tuple([heads] * n),
            projection_class_embeddings_input_dim=96, addition_time_embed_dim=32)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def make_scheduler(family: str):
    """The family's pipeline scheduler (ModelScope DDIM, AnimateDiff DPM-Solver++, SVD Euler)."""
    if family == "unet3d":
        return DDIMScheduler(**SD_BETAS, beta_schedule="scaled_linear", clip_sample=False,
                             set_alpha_to_one=False, steps_offset=1)
    if family == "motion":
        return DPMSolverMultistepScheduler(**SD_BETAS, beta_schedule="linear", steps_offset=1,
                                           timestep_spacing="linspace")
    return EulerDiscreteScheduler(**SD_BETAS, beta_schedule="scaled_linear",
                                  prediction_type="v_prediction", use_karras_sigmas=True,
                                  sigma_min=0.002, sigma_max=700.0, timestep_type="continuous",
                                  timestep_spacing="leading", steps_offset=1)


def make_inputs(family: str, batch: int, size: int, cross: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    if family == "svd":
        return {"image_embeddings": torch.randn(batch, 1, cross, generator=g),
                "image_latents": torch.randn(batch, 4, size, size, generator=g),
                "fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02}
    return {"prompt_embeds": torch.randn(batch, TEXT_TOKENS, cross, generator=g),
            "negative_prompt_embeds": torch.randn(batch, TEXT_TOKENS, cross, generator=g)}


def _heap_in_use() -> Callable[[], int]:
    """A function giving the bytes malloc has handed out (glibc mallinfo2: heap + mmapped
    blocks, all arenas): PyTorch's CPU tensors come from malloc. Falls back to the resident set
    size, which misses memory the allocator reuses without returning it to the system."""
    try:
        libc = ctypes.CDLL("libc.so.6")

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc.mallinfo2.restype = MallInfo2

        def in_use() -> int:
            info = libc.mallinfo2()
            return info.uordblks + info.hblkhd

        in_use()
        return in_use
    except (OSError, AttributeError):
        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        return rss


HEAP_IN_USE = _heap_in_use()


@contextlib.contextmanager
def peak_memory(interval: float = 0.002) -> Iterator[list[int]]:
    """Yields [peak]: the peak increase of the process's heap in use while inside (sampled by a
    thread every ``interval`` seconds)."""
    base, peak, stop = HEAP_IN_USE(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], HEAP_IN_USE() - base)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


class BFloat16Model(torch.nn.Module):
    """A diffusers UNet in bfloat16 called from a float32 loop: floating inputs are cast to
    bfloat16, the prediction back to float32 (the scheduler's arithmetic stays float32)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.to(torch.bfloat16)

    def forward(self, sample: torch.Tensor, t, **kwargs):
        def cast(v):
            return v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v

        out = self.model(cast(sample), t, **{k: cast(v) for k, v in kwargs.items()})
        return SimpleNamespace(sample=out.sample.float())


def make_runs(family: str, args: argparse.Namespace) -> tuple[dict[str, Callable], dict]:
    """One zero-argument callable per column returning the final latents, and model info."""
    unet = build_unet(family, args.size, args.seed).to(args.device)
    _, cross, _ = SIZES[args.size]
    latent = 32 if args.size == "mid" else 16
    frames = args.frames if args.frames else (16 if args.size == "mid" else 4)
    noise = torch.randn(args.batch, frames, 4, latent, latent,
                        generator=torch.Generator().manual_seed(args.seed)).to(args.device)
    inputs = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v
              for k, v in make_inputs(family, args.batch, latent, cross, args.seed).items()}
    guidance = (1.0, 3.0) if family == "svd" else 7.5
    info = {"params_M": sum(p.numel() for p in unet.parameters()) / 1e6, "frames": frames,
            "latent": latent, "guidance": guidance}

    def loop_with(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            sched = make_scheduler(family)
            sched.set_timesteps(args.steps, device=args.device)
            return pipeline_loop(family, model, sched, noise, inputs, guidance)
        return run

    runs: dict[str, Callable[[], torch.Tensor]] = {}
    if "diffusers" in args.columns:
        runs["diffusers"] = loop_with(unet)
    if "diffusers+compile" in args.columns:
        runs["diffusers+compile"] = loop_with(torch.compile(unet))
    accelerated, report = accelerate(unet)
    info["replaced"] = dict(report.replaced)
    if "vdengine" in args.columns:
        runs["vdengine"] = loop_with(accelerated)
    if "vdengine+compile" in args.columns:
        runs["vdengine+compile"] = loop_with(torch.compile(accelerated))
    if "diffusers bf16" in args.columns:
        runs["diffusers bf16"] = loop_with(BFloat16Model(copy.deepcopy(unet)))
    if "vdengine bf16" in args.columns:
        runs["vdengine bf16"] = loop_with(BFloat16Model(copy.deepcopy(accelerated)))
    if "vdengine+sampler" in args.columns:
        den = DiffusersDenoiser(unet, make_scheduler(family))
        spec = from_diffusers(make_scheduler(family))
        cond = stack_guidance(*conditioning_rows(den, args.batch, True, inputs, noise.device))
        scale = torch.linspace(*guidance, frames) if family == "svd" else guidance

        def run_engine() -> torch.Tensor:
            return spec.sample(den, noise, args.steps, guidance_scale=scale, extra_args=cond,
                               disable=True)

        runs["vdengine+sampler"] = run_engine
    return runs, info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_columns(runs: dict[str, Callable], args: argparse.Namespace) -> dict[str, dict]:
    out: dict[str, dict] = {k: {"times_s": [], "cpu_s": [], "warmup_s": []} for k in runs}
    latents: dict[str, torch.Tensor] = {}
    for name, fn in runs.items():
        for _ in range(args.warmup):
            t0 = time.perf_counter()
            latents[name] = fn()
            sync(args.device)
            out[name]["warmup_s"].append(time.perf_counter() - t0)
    peaks: dict[str, int] = dict.fromkeys(runs, 0)
    for _ in range(args.repeats):
        for name, fn in runs.items():
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            with peak_memory() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                latents[name] = fn()
                sync(args.device)
                out[name]["times_s"].append(time.perf_counter() - t0)
                out[name]["cpu_s"].append(time.process_time() - c0)
            peak = (torch.cuda.max_memory_allocated() if args.device.startswith("cuda")
                    else mem[0])
            peaks[name] = max(peaks[name], peak)
    ref = latents.get("diffusers")
    for name in runs:
        out[name]["peak_memory_bytes"] = peaks[name]
        if ref is not None:
            out[name]["max_abs_diff_vs_diffusers"] = (latents[name] - ref).abs().max().item()
        out[name]["latent_abs_max"] = latents[name].abs().max().item()
    return out


def versions() -> dict:
    return {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version(), "vdengine": vdengine.__version__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(DEFAULT_COLUMNS))
    p.add_argument("--steps", type=int, default=None, help="sampling steps (5; --quick 2)")
    p.add_argument("--frames", type=int, default=None, help="frames (16; --quick 4)")
    p.add_argument("--batch", type=int, default=1, help="videos per run (guidance doubles it)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per column (3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per column (1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny configs, 2 steps, 4 frames, 1 repeat")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    args = p.parse_args(argv)
    args.size = "tiny" if args.quick else "mid"
    args.steps = args.steps or (2 if args.quick else 5)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if min(args.steps, args.batch, args.repeats) < 1 or args.warmup < 0:
        p.error("--steps, --batch and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    env = {"device": cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(),
           "device_type": args.device, "dtype": "float32", "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "versions": versions(),
           "platform": platform.platform(), "build_info": vdengine.build_info(),
           "git": git_commit(), "size": args.size, "steps": args.steps, "batch": args.batch,
           "warmup": args.warmup, "repeats": args.repeats, "quick": args.quick,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    commit = env["git"]["commit"] or "?"
    print(f"# diffusers video UNets on {env['device']} ({args.device}, float32, "
          f"{env['torch_threads']} threads, torch {torch.__version__}, diffusers "
          f"{diffusers.__version__}, commit {commit[:10]}{'+dirty' if env['git']['dirty'] else ''})")
    print(f"# {args.size} configs, {args.steps} steps, batch {args.batch} with guidance; median "
          f"of {args.repeats} interleaved runs after {args.warmup} warmup\n")
    print("| model | params | column | s / video | vs diffusers | CPU s / video | vs diffusers "
          "(CPU) | peak MiB | warmup s | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for family in args.models:
        runs, info = make_runs(family, args)
        timed = time_columns(runs, args)
        base = statistics.median(timed["diffusers"]["times_s"]) if "diffusers" in timed else None
        cbase = statistics.median(timed["diffusers"]["cpu_s"]) if "diffusers" in timed else None
        for name, row in timed.items():
            med, cpu = statistics.median(row["times_s"]), statistics.median(row["cpu_s"])
            row.update(model=family, column=name, median_s=med, s_per_video=med / args.batch,
                       cpu_s_per_video=cpu / args.batch,
                       speedup_vs_diffusers=(base / med) if base else None,
                       cpu_speedup_vs_diffusers=(cbase / cpu) if cbase else None, **info)
            results.append(row)
            vs = f"{base / med:.2f}x" if base else "-"
            cvs = f"{cbase / cpu:.2f}x" if cbase else "-"
            diff = row.get("max_abs_diff_vs_diffusers")
            print(f"| {family} | {info['params_M']:.1f} M | {name} | {med / args.batch:.2f} | "
                  f"{vs} | {cpu / args.batch:.2f} | {cvs} | "
                  f"{row['peak_memory_bytes'] / 2**20:.0f} | "
                  f"{max(row['warmup_s'], default=0):.1f} | "
                  f"{'-' if diff is None else f'{diff:.1e}'} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"env": env, "results": results}, indent=2, default=str) + "\n")
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
