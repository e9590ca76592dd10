"""What the seed families cost per video: VideoFusion's efficiency claim, measured.

VideoFusion (Luo et al. 2023) claims less latency and memory than a plain video denoiser because
its base generator runs on one frame per video instead of all F. Measured here against a plain
video denoiser of the same size (a VideoUNet with at least as many parameters as the base and
residual generators together), per video and denoising step:

- frame evaluations of each sub-network (counted with forward hooks during one generate() call);
- matmul/conv FLOPs of one forward (torch.utils.flop_counter, reference ops: normalisation and
  elementwise work is not counted);
- wall time of one forward at --batch videos, the two models interleaved --reps times (median;
  a ratio measured side by side, the machine may be shared);

and the same counts for VIDM (content generator on frame 0, motion generator on each later
frame, one frame per evaluation) against the plain denoiser of its size.

    python benchmarks/families.py --json benchmarks/results/families-efficiency-cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from _environment import cpu_name, git_commit  # benchmarks/ is on sys.path
from quality import write_json
from torch.utils.flop_counter import FlopCounterMode

from vdengine.models import ModelConfig, VideoUNet
from vdengine.models.families import count_evaluations, load_family, load_family_model


def plain_denoiser(params: int, template: ModelConfig) -> VideoUNet:
    """The smallest VideoUNet of `template`'s shape (base_channels grown in steps of 8) with at
    least `params` parameters: "a plain video denoiser of the same size"."""
    d = template.to_dict()
    for width in range(8, 257, 8):
        d.update(base_channels=width, head_dim=16, num_groups=8)
        net = VideoUNet(ModelConfig.from_dict(d))
        if net.num_parameters() >= params:
            return net.eval().requires_grad_(False)
    raise ValueError(f"no VideoUNet up to 256 base channels has {params} parameters")


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def interleaved_ms(fns: dict[str, Any], reps: int) -> dict[str, float]:
    """Median wall time (ms) of each function, called in turn `reps` times after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def counted_generate(model_dir: str, frames: int, steps: int) -> dict[str, float]:
    """Frame evaluations per video and step of each sub-network in one generate() call."""
    pipe = load_family(model_dir)
    with count_evaluations(pipe.model.networks()) as calls:
        pipe.generate(num_frames=frames, steps=steps, batch_size=2, progress=False)
    return {k: c.frame_evals / (2 * steps) for k, c in calls.items()}


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videofusion", default="videofusion", help="model name or directory")
    p.add_argument("--vidm", default="vidm", help="model name or directory")
    p.add_argument("--batch", type=int, default=8, help="videos per timed forward")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"benchmark": "families", "config": vars(args),
                           "environment": {"cpu": cpu_name(), "torch": torch.__version__,
                                           "threads": args.threads, **git_commit()}}

    vf = load_family_model(args.videofusion)
    cfg = vf.config
    f = cfg.window
    plain = plain_denoiser(vf.num_parameters(), cfg.residual_config())
    plain.set_ops("fused")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, f, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([500.0])
    with count_evaluations(vf.networks()) as calls:
        vf(x, t)
    per_video = {k: c.frame_evals / args.batch for k, c in calls.items()}
    ms = interleaved_ms({"videofusion": lambda: vf(x, t), "plain": lambda: plain(x, t)},
                        args.reps)
    vf.set_ops("reference")
    plain.set_ops("reference")
    fl = {"videofusion": flops(lambda: vf(x, t)) / args.batch,
          "base": flops(lambda: vf.base(x[:, f // 2], *_base_args(vf, t, args.batch)))
          / args.batch,
          "plain": flops(lambda: plain(x, t)) / args.batch}
    fl["residual"] = fl["videofusion"] - fl["base"]
    out["videofusion"] = {
        "frames": f,
        "parameters": {"base": sum(q.numel() for q in vf.base.parameters()),
                       "residual": vf.residual.num_parameters(),
                       "plain": plain.num_parameters()},
        "plain_config": plain.config.to_dict(),
        "frame_evals_per_video_per_step": per_video,
        "frame_evals_per_video_per_step_in_generate": counted_generate(args.videofusion, f, 2),
        "plain_frame_evals_per_video_per_step": f,
        "flops_per_video_per_step": fl,
        "flops_ratio_vs_plain": fl["videofusion"] / fl["plain"],
        "forward_ms_median": ms,
        "forward_time_ratio_vs_plain": ms["videofusion"] / ms["plain"],
    }

    vidm = load_family_model(args.vidm)
    vc = vidm.config
    n = vc.num_frames
    plain_v = plain_denoiser(vidm.num_parameters(), cfg.residual_config())
    xs = torch.randn(args.batch, 1, vc.channels, vc.image_size, vc.image_size, generator=g)
    fr = xs[:, 0]
    vidm.set_ops("reference")
    plain_v.set_ops("reference")
    xv = torch.randn(args.batch, n, vc.channels, vc.image_size, vc.image_size, generator=g)
    fl_c = flops(lambda: vidm.content(xs, t)) / args.batch
    fl_m = flops(lambda: vidm.motion(xs, t, first_frame=fr, prev_frame=fr,
                                     frame_index=1)) / args.batch
    fl_p = flops(lambda: plain_v(xv[:, :min(n, plain_v.config.window)], t)) / args.batch
    out["vidm"] = {
        "frames": n,
        "parameters": {"content": sum(q.numel() for q in vidm.content.parameters()),
                       "motion": sum(q.numel() for q in vidm.motion.parameters()),
                       "plain": plain_v.num_parameters()},
        "frame_evals_per_video_per_step_in_generate": counted_generate(args.vidm, n, 2),
        "flops_per_video_per_step": {"content (frame 0)": fl_c, "motion (each later frame)": fl_m,
                                     "all frames": fl_c + (n - 1) * fl_m,
                                     "plain (all frames at once)": fl_p},
        "flops_ratio_vs_plain": (fl_c + (n - 1) * fl_m) / fl_p,
    }
    for key in ("videofusion", "vidm"):
        print(key, {k: v for k, v in out[key].items() if k != "plain_config"})
    if args.json:
        from pathlib import Path

        write_json(Path(args.json), out)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _base_args(vf, t, batch):
    from vdengine.models.imageunet import RowTables

    tables = RowTables(t, torch.zeros_like(t), vf.config.num_train_timesteps)
    return tables, vf.base.class_embedding(None, batch, t.device)


if __name__ == "__main__":
    sys.exit(main())
