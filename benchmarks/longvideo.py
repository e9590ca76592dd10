"""Long-video strategies: cost, time, peak memory, quality and seams versus video length.

    PYTHONPATH=. python benchmarks/longvideo.py                 # 4 strategies x 32, 64, 256, 1024
    PYTHONPATH=. python benchmarks/longvideo.py --quick         # 32 and 128 frames, 4 steps
    PYTHONPATH=. python benchmarks/longvideo.py --json benchmarks/results/longvideo-cpu.json
    PYTHONPATH=. python benchmarks/longvideo.py \
        --strategies "autoregressive(context_guidance=2), sliding(stride=4)+shared_noise(lam=0.3)"

--strategies takes strategies in the text form of generate(long_video=...) and the CLI's
--long-video (vdengine.longvideo.as_strategy), comma-separated; their settings go inside.

Each (strategy, length) runs in a fresh subprocess, so peaks never mix. In it: load the model,
warm up with one window, reset the peak (Linux /proc/self/clear_refs, else the lifetime peak
ru_maxrss is reported), then generate exactly as `generate(..., output="x.mp4")` does: chunks
from vdengine.longvideo.generate_chunks streamed into a VideoWriter mp4 and released. A copy of
each chunk goes to a raw file on disk (not memory) for the quality measurements, which run after
the peak has been read. The sampling loop is built as Pipeline.generate builds it
(vdengine.sampling.GuidedSampler with the conditioning rows of vdengine.denoiser).

Columns:
- evals/frame: denoiser frame-evaluations (rows x frames of every forward) per output frame.
- s/frame: wall seconds per output frame (generation and encoding; should be flat in length).
- peak MB: peak RSS during generation (CPU) or torch.cuda.max_memory_allocated (CUDA);
  peak ratio: versus the same strategy's run at two windows (32 frames for a 16-frame model).
- permanence .. background: vdengine.balls.metrics.evaluate over the whole video.
- boundaries: window boundaries per video (vdengine.longvideo.boundaries: frames f whose pair
  (f − 1, f) comes from two different windows); the diff ratio rests on all of them (× videos).
- seam bnd.: the boundaries (summed over videos) where at least one ball is measurable on both
  sides: what the seam ratio rests on. A ratio resting on 0-2 boundaries is anecdotal.
- seam ratio: mean ball-centroid jump (px) between consecutive frames from two different
  windows divided by the mean jump inside windows; 1 = no visible seam. Per colour, pairs where
  its blob is present and touches no other in both frames.
- diff ratio: the same ratio for the mean absolute frame difference (no ball detection needed).

Timings are taken side by side on one machine; the JSON records the device, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRATEGIES = ("autoregressive", "shared_noise", "sliding", "keyframes")
#: Settings recorded in each row (None where the strategy has no such setting).
SETTINGS = ("window", "context_frames", "context_guidance", "stride", "noise_lambda",
            "window_batch", "blend")


# ------------------------------------------------------------------------------ measurements
def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def seam_measure(frames, boundaries: list[int]) -> dict:
    """How much more the video changes across window boundaries than inside windows.

    frames: uint8 [B, F, H, W, 3]; boundaries: frames f whose pair (f − 1, f) crosses windows.
    Two measures, each as (mean at boundary pairs, mean at the other pairs, their ratio), and
    how many boundaries they rest on (``boundaries`` per video; ``seam_boundaries``: the
    (video, boundary) pairs with a clean centroid pair, the samples of the centroid ratio):
    - centroid jump (px): per palette colour whose largest blob is present and touches no other
      colour in both frames (a local track: no whole-video ball identity is needed);
    - frame difference: mean |frame_f − frame_{f−1}| over pixels and channels (0..255).
    """
    import numpy as np

    from vdengine.balls.metrics import ball_stats

    s = ball_stats(frames)
    cen, touching = s["centroid"], s["touching"]  # [B, F, K, 2], [B, F, K]
    f = cen.shape[1]
    clean = ~np.isnan(cen[..., 0]) & ~touching
    pair = clean[:, 1:] & clean[:, :-1]  # [B, F−1, K]: pair (f−1, f) at index f−1
    jump = np.hypot(*(cen[:, 1:] - cen[:, :-1]).transpose(3, 0, 1, 2))
    is_b = np.zeros(f - 1, bool)
    is_b[[x - 1 for x in boundaries if 1 <= x < f]] = True
    jb = jump[pair & is_b[None, :, None]]
    ji = jump[pair & ~is_b[None, :, None]]
    diff = np.stack([np.abs(frames[:, i].astype(np.int16) - frames[:, i - 1]).mean(axis=(1, 2, 3))
                     for i in range(1, f)], axis=1)  # [B, F − 1]
    db, di = diff[:, is_b], diff[:, ~is_b]

    def mean(x):
        return float(x.mean()) if x.size else math.nan

    def ratio(a, b):
        return a / b if b > 0 else math.nan  # NaN propagates from empty means

    measured = (pair & is_b[None, :, None]).any(axis=2)  # [B, F − 1]: a clean pair at a boundary
    out = {"boundaries": int(is_b.sum()), "seam_boundaries": int(measured.sum()),
           "boundary_jump": mean(jb), "inside_jump": mean(ji), "boundary_pairs": int(jb.size),
           "inside_pairs": int(ji.size), "boundary_diff": mean(db), "inside_diff": mean(di)}
    out["seam_ratio"] = ratio(out["boundary_jump"], out["inside_jump"])
    out["diff_ratio"] = ratio(out["boundary_diff"], out["inside_diff"])
    return out


def worker(spec: dict) -> dict:
    """One (strategy, length) run; returns its row."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    import vdengine
    from vdengine import longvideo as lv
    from vdengine.balls.metrics import evaluate
    from vdengine.denoiser import conditioning_rows
    from vdengine.io import VideoWriter
    from vdengine.sampling import GuidedSampler

    pipe = vdengine.load(spec["model"], device=spec["device"])
    strategy = lv.as_strategy(spec["strategy"]).resolve(pipe.spec)
    b, n = spec["batch"], spec["frames"]
    conditioning = {} if spec["label"] is None else {"label": spec["label"]}
    cuda = pipe.device.type == "cuda"

    def chunks(num_frames: int, seed: int):
        """Sampled as Pipeline.generate samples (its GuidedSampler), chunk by chunk."""
        guided = spec["guidance"] is not None
        cond, uncond = conditioning_rows(pipe.model, b, guided, conditioning, pipe.device)
        loop = GuidedSampler(pipe.model, pipe.schedule, steps=spec["steps"],
                             sampler=spec["sampler"], sampler_options=dict(pipe.sampler_options),
                             cond=cond, uncond=uncond, guidance_scale=spec["guidance"],
                             generator=torch.Generator().manual_seed(seed))
        it = lv.generate_chunks(loop, strategy, num_frames, b, pipe.latent_shape(None),
                                device=pipe.device, dtype=pipe.dtype)
        return loop.stats, it

    for _ in chunks(strategy.window, 12345)[1]:  # warm-up
        pass
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak_rss()
    rss_before = _status_kb("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "frames.u8"
        start = time.perf_counter()
        stats, it = chunks(n, spec["seed"])
        with open(raw_path, "wb") as raw, VideoWriter(Path(tmp) / "v.mp4", fps=8) as writer:
            for chunk in it:
                writer.write(chunk)
                raw.write(chunk.swapaxes(0, 1).tobytes())  # frame-major [n, B, H, W, 3]
                shape = chunk.shape
                del chunk
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
        frames = np.fromfile(raw_path, np.uint8).reshape(n, shape[0], *shape[2:])
    frames = np.ascontiguousarray(frames.swapaxes(0, 1))  # [B, N, H, W, 3]
    quality = evaluate(frames)
    quality.pop("per_video")
    seams = seam_measure(frames, lv.boundaries(strategy, n))
    return {
        "strategy": strategy.label, "long_video": spec["strategy"], "frames": n, "batch": b,
        "steps": spec["steps"], **{k: getattr(strategy, k, None) for k in SETTINGS},
        "frame_evals_per_frame": stats.frame_evals / (b * n),
        "forwards": stats.forwards, "max_rows": max(stats.rows), "windows": stats.windows,
        "wall_s": wall, "wall_s_per_frame": wall / n,
        "peak_mb": peak, "peak_kind": "cuda_max_allocated" if cuda else (
            "rss_hwm_after_reset" if reset else "rss_lifetime_max"),
        "rss_before_mb": (rss_before or 0) / 1024,
        **{k: v for k, v in quality.items()}, **seams,
    }


# ---------------------------------------------------------------------------------- driver
def _environment(device: str) -> dict:
    import torch
    from _environment import git_commit  # benchmarks/ is on sys.path

    git = git_commit()
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "commit": git["commit"], "dirty": git["dirty"],
           "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def table(rows: list[dict]) -> str:
    cols = [("long_video", "long_video", None), ("frames", "frames", None),
            ("evals/frame", "frame_evals_per_frame", 1), ("s/frame", "wall_s_per_frame", 4),
            ("peak MB", "peak_mb", 0), ("peak ratio", "peak_ratio", 2),
            ("permanence", "permanence_rate", 2), ("count cons.", "count_consistency_rate", 2),
            ("smooth", "smoothness", 3), ("speed", "speed", 2), ("purity", "purity", 3),
            ("jump in", "inside_jump", 2), ("jump seam", "boundary_jump", 2),
            ("boundaries", "boundaries", None), ("seam bnd.", "seam_boundaries", None),
            ("seam ratio", "seam_ratio", 2), ("diff ratio", "diff_ratio", 2)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [_fmt(r.get(key), d) if d is not None else _fmt(r.get(key)) for _, key, d in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_strategies(text: str) -> list[str]:
    """'a(x=1, y=2), b' → ['a(x=1, y=2)', 'b']: commas inside parentheses are settings."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated, in the text form of long_video= (settings inside, "
                        "e.g. 'sliding(stride=4, blend=uniform)+shared_noise(lam=0.3)')")
    p.add_argument("--lengths", default=None, help="frames, comma-separated "
                   "(default 2 windows, 64, 256, 1024; --quick: 2 windows, 128)")
    p.add_argument("--steps", type=int, default=None, help="default 8 (--quick: 4)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--quick", action="store_true", help="short lengths, 4 steps: a smoke run")
    p.add_argument("--json", help="write the rows and the environment here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print("ROW " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    from vdengine.longvideo import as_strategy
    from vdengine.models.loading import load_config, resolve_model_dir

    window = load_config(resolve_model_dir(args.model)).window
    strategies = split_strategies(args.strategies)
    for text in strategies:
        as_strategy(text)  # a bad strategy fails here, not in the first worker
    if args.lengths:
        lengths = [int(v) for v in args.lengths.split(",")]
    else:
        lengths = [2 * window, 128] if args.quick else [2 * window, 64, 256, 1024]
    steps = args.steps or (4 if args.quick else 8)
    rows = []
    for strategy in strategies:
        base_peak = None
        for n in lengths:
            spec = {"model": args.model, "device": args.device, "strategy": strategy,
                    "frames": n, "steps": steps, "sampler": args.sampler, "batch": args.batch,
                    "seed": args.seed, "label": args.label, "guidance": args.guidance,
                    "threads": args.threads}
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                  capture_output=True, text=True, env=env, check=False)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            if proc.returncode != 0 or not line:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker failed for {strategy} x {n}")
            row = json.loads(line[0][4:])
            if base_peak is None:
                base_peak = row["peak_mb"]
            row["peak_ratio"] = row["peak_mb"] / base_peak
            rows.append(row)
            print(f"{row['long_video']:>28} {n:5d} frames: {row['frame_evals_per_frame']:.1f} "
                  f"evals/frame, {row['wall_s_per_frame']:.4f} s/frame, "
                  f"peak {row['peak_mb']:.0f} MB (x{row['peak_ratio']:.2f}), "
                  f"seam ratio {row['seam_ratio']:.2f} ({row['seam_boundaries']} of "
                  f"{row['boundaries'] * row['batch']} boundaries), "
                  f"diff ratio {row['diff_ratio']:.2f}",
                  file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        out = {"benchmark": "longvideo", "model": args.model, "steps": steps,
               "lengths": lengths, "environment": _environment(args.device), "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
