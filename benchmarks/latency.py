"""End-to-end generate latency and throughput: vdengine's backends vs what a user would write.

    python benchmarks/latency.py                                  # default model, 8 steps, batch 1 and 8
    python benchmarks/latency.py --quick                          # batch 1, fewer repeats
    python benchmarks/latency.py --steps 8 --batch 1 8 --json benchmarks/results/latency-cpu.json

Columns, all on the same model (same weights, same seed, same initial noise), the same number of
DDIM steps with the same timesteps ("trailing" spacing, what vdengine.generate uses on the CPU),
one video = the model's window of frames, no guidance:

  default        vdengine.generate as shipped: vdengine.load(model) with no options, i.e. the
                 CPU default dtype, channels-last activations, fused C++ ops (PosGN, group norm,
                 temporal attention, the DDIM update) and PosGN tables cached by timestep
  cold tables    the same, with the table cache emptied before every call: what the first call
                 of a new step schedule costs
  fp32 / bf16    the default path in the other dtype (whichever is not the default)
  compiled       vdengine.load(model, compile=True): torch.compile (Inductor, frozen weights) of
                 the model with vdengine's ops inside the graph; compile time reported apart
  reference      the same model class on its reference (pure PyTorch) ops, float32, NCHW, no
                 table cache, in vdengine's sampler: what the PyTorch model runs like eagerly
  ref compiled   torch.compile(reference model) (Inductor defaults), in vdengine's sampler
  diffusers      the reference model driven by diffusers' DDIMScheduler in the loop a user would
                 write: for t in timesteps: x = sched.step(model(x, t), t, x).prev_sample
  onnxruntime    vdengine.load(the exported .onnx file).generate: the ONNX graph in onnxruntime
                 on the CPU provider (torch's thread count), I/O-bound to the sampler's tensors

Each column starts from the same initial noise (drawn once from --seed, passed as latents=) and
generates the same videos; "max px diff" is the largest uint8 difference from the default
column's videos, "default speedup" the column's time over the default column's. Timing: warmup
calls, then repeats interleaved across the columns (default, cold tables, ..., onnxruntime,
default, ...) so drift on a shared machine hits them alike; each time is the median of the repeats, from the initial noise to the uint8 frames on the host.
Model loading and the ONNX export (once, into a temporary folder, unless --onnx is given) are not
timed. Prints a markdown table; --json PATH writes the results with the device, versions, thread
count and git commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
try:
    import vdengine
except ImportError:  # run from a checkout without `pip install`: use the dev build in the tree
    sys.path.insert(0, str(REPO))
    import vdengine
from _environment import cpu_name, git_commit

from vdengine.api import Pipeline
from vdengine.models import load_model
from vdengine.video import Video

COLUMNS = ("default", "cold tables", "other dtype", "compiled", "reference", "ref compiled",
           "diffusers", "onnxruntime")
SLOW_COLUMNS = ("compiled", "ref compiled")  # minutes of compilation per batch size


def diffusers_scheduler(config, steps: int, spacing: str):
    """diffusers' DDIMScheduler configured as the model's schedule, with vdengine's timesteps."""
    from diffusers import DDIMScheduler

    kind = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[config.schedule]
    sched = DDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=kind,
                          prediction_type=config.prediction_type, clip_sample=False,
                          set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    return sched


def make_runs(model: str, onnx_path: Path, steps: int, batch: int, seed: int,
              columns: tuple[str, ...]) -> tuple[dict[str, Callable[[], Video]], dict]:
    """One zero-argument callable per column, each returning the generated videos."""
    spacing = "trailing"
    default = vdengine.load(model, device="cpu")
    ref_net = load_model(model, device="cpu").set_ops("reference").eval()
    ref_net.table_cache.max_bytes = 0  # plain PyTorch: tables computed in every forward
    cfg = ref_net.config

    def pipeline(net) -> Pipeline:
        return Pipeline(model=net, schedule=default.schedule, device=default.device,
                        dtype=torch.float32, name=default.name)

    # One initial noise for every column: the draw generate() would make from `seed`.
    noise = torch.randn((batch, cfg.window, *default.latent_shape(None)),
                        generator=torch.Generator().manual_seed(seed))
    kw = {"num_frames": cfg.window, "steps": steps, "batch_size": batch, "latents": noise,
          "progress": False, "spacing": spacing}
    runs: dict[str, Callable[[], Video]] = {}
    model_dtype = next(default.model.parameters()).dtype  # (the latents stay float32)
    info: dict = {"default_model_dtype": str(model_dtype).removeprefix("torch.")}
    if "default" in columns:
        runs["default"] = lambda: default.generate(**kw)
    if "cold tables" in columns:
        cold = copy.deepcopy(default)
        cold.model.table_cache.max_bytes = 0  # disabled
        runs["cold tables"] = lambda: cold.generate(**kw)
    if "other dtype" in columns:
        other = torch.float32 if model_dtype == torch.bfloat16 else torch.bfloat16
        other_pipe = vdengine.load(model, device="cpu", dtype=other)
        runs[str(other).removeprefix("torch.")] = lambda: other_pipe.generate(**kw)
    if "compiled" in columns:
        compiled = vdengine.load(model, device="cpu", compile=True)
        info[f"compile_s_batch{batch}"] = _first_call_s(lambda: compiled.generate(**kw))
        runs["compiled"] = lambda: compiled.generate(**kw)
    if "reference" in columns:
        ref = pipeline(ref_net)
        runs["reference"] = lambda: ref.generate(**kw)
    if "ref compiled" in columns:
        ref_c = pipeline(torch.compile(copy.deepcopy(ref_net)))
        info[f"ref_compile_s_batch{batch}"] = _first_call_s(lambda: ref_c.generate(**kw))
        runs["ref compiled"] = lambda: ref_c.generate(**kw)
    if "diffusers" in columns:
        sched = diffusers_scheduler(cfg, steps, spacing)
        ours = default.schedule.timesteps(steps, spacing).tolist()
        info["diffusers_timesteps"] = sched.timesteps.tolist()
        info["vdengine_timesteps"] = ours
        if sched.timesteps.tolist() != ours:
            raise SystemExit(f"diffusers timesteps {sched.timesteps.tolist()} differ from "
                             f"vdengine's {ours}: pick --steps dividing "
                             f"{cfg.num_train_timesteps}")

        @torch.inference_mode()
        def run_diffusers() -> Video:
            x = noise.clone()
            for t in sched.timesteps:
                out = ref_net(x, t.float().reshape(1))
                x = sched.step(out, t, x, eta=0.0).prev_sample
            return Video.from_tensor(x.float().cpu(), fps=8)

        runs["diffusers"] = run_diffusers
    if "onnxruntime" in columns:
        ort_pipe = vdengine.load(onnx_path, device="cpu")  # the runtime its suffix picks
        runs["onnxruntime"] = lambda: ort_pipe.generate(**kw)
    return runs, info


def _first_call_s(fn: Callable[[], object]) -> float:
    """Seconds of a first call (a compiling one)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_columns(runs: dict[str, Callable[[], Video]], warmup: int, repeats: int
                 ) -> tuple[dict[str, list[float]], dict[str, Video]]:
    outputs = {}
    for name, fn in runs.items():
        for _ in range(warmup):
            outputs[name] = fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, outputs


# ---- environment ------------------------------------------------------------------------------


def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version(),
           "vdengine": vdengine.__version__}
    for pkg in ("onnxruntime", "onnx", "onnxscript", "diffusers"):
        try:
            out[pkg] = __import__(pkg).__version__
        except ImportError:
            out[pkg] = None
    return out


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="shipped model name or model directory")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (1 8)")
    p.add_argument("--quick", action="store_true", help="batch 1 only, 1 warmup, 3 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per column (5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per column (1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--columns", nargs="+", choices=COLUMNS,
                   default=[c for c in COLUMNS if c not in SLOW_COLUMNS],
                   help="default: all but the compiled ones (minutes of compilation each)")
    p.add_argument("--onnx", type=Path, default=None,
                   help="an ONNX export of --model to time (default: export one to a temp dir)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = [1] if args.quick else [1, 8]
    if any(b < 1 for b in args.batch) or args.steps < 1:
        p.error("--batch and --steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else 1
    columns = tuple(args.columns)
    torch.set_grad_enabled(False)

    tmp = None
    onnx_path = args.onnx
    export_s = None
    if "onnxruntime" in columns and onnx_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="vdengine-latency-")
        onnx_path = Path(tmp.name) / "model.onnx"
        t0 = time.perf_counter()
        vdengine.export_onnx(args.model, onnx_path)
        export_s = time.perf_counter() - t0

    cfg = load_model(args.model).config
    env = {
        "device": cpu_name(), "device_type": "cpu",
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": versions(), "platform": platform.platform(),
        "build_info": vdengine.build_info(), "git": git_commit(),
        "model": args.model, "model_name": cfg.name, "frames": cfg.window,
        "image_size": cfg.image_size, "steps": args.steps, "sampler": "ddim",
        "spacing": "trailing", "warmup": warmup, "repeats": repeats, "quick": args.quick,
        "onnx": str(args.onnx) if args.onnx else "exported to a temp dir",
        "onnx_export_seconds": export_s, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    commit = env["git"]["commit"] or "?"
    print(f"# vdengine generate latency on {env['device']} (cpu, "
          f"{env['torch_threads']} threads, torch {torch.__version__}, onnxruntime "
          f"{env['versions']['onnxruntime']}, commit {commit[:10]}"
          f"{'+dirty' if env['git']['dirty'] else ''})")
    print(f"# model {args.model!r} ({cfg.name}, {cfg.window} frames of {cfg.image_size}x"
          f"{cfg.image_size}), DDIM {args.steps} steps (trailing); median of {repeats} "
          f"interleaved runs after {warmup} warmup\n")
    print("| batch | column | ms / generate | videos/s | frames/s | default speedup | max px diff |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for batch in args.batch:
        runs, info = make_runs(args.model, onnx_path, args.steps, batch, args.seed, columns)
        env.update(info)
        times, outputs = time_columns(runs, warmup, repeats)
        base = statistics.median(times["default"]) if "default" in times else None
        for name in runs:
            med = statistics.median(times[name])
            row = {"batch": batch, "column": name, "median_s": med, "min_s": min(times[name]),
                   "times_s": times[name], "videos_per_s": batch / med,
                   "frames_per_s": batch * cfg.window / med,
                   "ms_per_step": 1e3 * med / args.steps}
            if base is not None:
                row["default_speedup"] = med / base  # how many times faster the default is
                ref = outputs["default"].frames.astype(np.int16)
                row["max_px_diff_vs_default"] = int(np.abs(
                    outputs[name].frames.astype(np.int16) - ref).max())
            results.append(row)
            vs = f"{med / base:.2f}x" if base else "-"
            px = row.get("max_px_diff_vs_default", "-")
            print(f"| {batch} | {name} | {1e3 * med:.0f} | {row['videos_per_s']:.2f} | "
                  f"{row['frames_per_s']:.1f} | {vs} | {px} |", flush=True)
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = args.json.with_suffix(args.json.suffix + ".tmp")
        out.write_text(json.dumps({"env": env, "results": results}, indent=2, default=str)
                       + "\n")
        out.replace(args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
