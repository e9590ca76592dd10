"""`vdengine` command line: generate, info, train."""

from __future__ import annotations

import argparse
import json
import sys
import time


class UserError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="sample videos with a shipped or local model")
    p.add_argument("--model", default="default", help="shipped model name or model directory")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--steps", type=int, default=8, help="denoising steps")
    p.add_argument("--sampler", default="ddim", help="ddim, dpmpp_2m or ddpm")
    p.add_argument("--batch", type=int, default=1, help="videos sampled together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--label", type=int, default=None, help="class label (number of balls)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscale of the file")
    p.add_argument("--out", required=True, help="output file: .mp4, .gif or .png (frame grid)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_generate(args) -> int:
    import vdengine
    from vdengine.io import check_output_path

    # Fail on a bad output path before spending time sampling.
    check_output_path(args.out)
    start = time.perf_counter()
    pipe = vdengine.load(args.model, device=args.device, dtype=args.dtype)
    video = pipe.generate(
        num_frames=args.frames, steps=args.steps, sampler=args.sampler, batch_size=args.batch,
        seed=args.seed, guidance_scale=args.guidance, label=args.label,
        progress=not args.no_progress, fps=args.fps)
    path = video.save(args.out, upscale=args.upscale)
    elapsed = time.perf_counter() - start
    print(f"wrote {path} ({video.batch_size} video(s) x {video.num_frames} frames, "
          f"{args.steps} steps, {elapsed:.1f} s)")
    return 0


def _run_info(args) -> int:
    import vdengine
    from vdengine.models import available_models

    info = {"version": vdengine.__version__, "build": vdengine.build_info(),
            "models": available_models()}
    print(json.dumps(info, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdengine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    sub.add_parser("info", help="print build info and the shipped models")
    from vdengine import train

    train.add_arguments(sub.add_parser("train", help="train a VideoUNet on bouncing balls"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runners = {"generate": _run_generate, "info": _run_info}
    try:
        if args.command == "train":
            from vdengine import train

            return train.run(args) or 0
        return runners[args.command](args)
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"vdengine: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vdengine: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

