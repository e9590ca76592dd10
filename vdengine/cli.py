"""`vdengine` command line: generate, export, info, train."""

from __future__ import annotations

import argparse
import json
import sys
import time

from vdengine.distributed.cli import add_generate_many_parser, add_serve_parser


class UserError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


def _add_generate(sub) -> None:
    from vdengine.api import DEFAULT_FPS, DEFAULT_UPSCALE

    p = sub.add_parser("generate", help="sample videos with a shipped or local model")
    p.add_argument("--model", default="default",
                   help="shipped model name, model directory, or exported .onnx/.engine file")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per video (default: the model's window)")
    p.add_argument("--steps", type=int, default=8, help="denoising steps")
    p.add_argument("--sampler", default=None, help="ddim, dpmpp_2m or ddpm (default: ddim)")
    p.add_argument("--batch", type=int, default=1, help="videos sampled together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--label", type=int, default=None, help="class label (number of balls)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    p.add_argument("--backend", default=None, choices=["torch", "onnxruntime", "tensorrt"],
                   help="override the runtime an exported graph's suffix picks")
    p.add_argument("--fps", type=int, default=DEFAULT_FPS)
    p.add_argument("--upscale", type=int, default=DEFAULT_UPSCALE,
                   help=f"nearest-neighbour upscale of the file (default {DEFAULT_UPSCALE})")
    p.add_argument("--out", required=True, help="output file: .mp4, .gif or .png (frame grid)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--long-video", default=None, metavar="STRATEGY",
                   help="a long-video strategy for --frames beyond the model's window, streamed "
                        "to --out: autoregressive, sliding, keyframes or shared_noise, with "
                        "optional settings and +shared_noise, e.g. 'sliding(stride=4)' or "
                        "'autoregressive(context_frames=2)+shared_noise(lam=0.5)' "
                        "(see docs/long_videos.md)")


def _run_generate(args) -> int:
    import vdengine
    from vdengine.io import check_output_path

    # Fail on a bad output path before spending time sampling.
    check_output_path(args.out)
    start = time.perf_counter()
    try:
        pipe = vdengine.load(args.model, device=args.device, dtype=args.dtype,
                             backend=args.backend)
    except ImportError as e:  # a backend's package is missing: a one-line user error
        raise UserError(str(e)) from None
    conditioning = {} if args.label is None else {"label": args.label}
    path = pipe.generate(
        num_frames=args.frames, steps=args.steps, sampler=args.sampler, batch_size=args.batch,
        seed=args.seed, guidance_scale=args.guidance, progress=not args.no_progress,
        fps=args.fps, long_video=args.long_video, output=args.out, upscale=args.upscale,
        **conditioning)
    frames = args.frames or pipe.window
    how = f"{args.long_video}, " if args.long_video else ""
    print(f"wrote {path} ({args.batch} video(s) x {frames} frames, {how}{args.steps} steps, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def _axis(value: str) -> int | str:
    """--batch/--frames: a positive int or 'dynamic'."""
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'dynamic', got {value!r}")
    return n


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model's denoiser to ONNX (see docs/export.md)")
    p.add_argument("--model", default="default", help="shipped model name or model directory")
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=18,
                   help="ONNX opset >= 18 (default 18; >= 21 writes GroupNormalization nodes)")
    p.add_argument("--fp16", action="store_true",
                   help="float16 weights and I/O (for CUDA/TensorRT)")
    p.add_argument("--batch", type=_axis, default="dynamic", metavar="B|dynamic",
                   help="fixed batch size, or dynamic (default)")
    p.add_argument("--frames", type=_axis, default="dynamic", metavar="F|dynamic",
                   help="fixed frame count <= window, or dynamic (default: 1..window)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch check on a random input")


def _run_export(args) -> int:
    import warnings

    from vdengine.export import export_onnx
    from vdengine.runtime.contract import read_metadata

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # an unverified graph is printed below, not warned
            warnings.simplefilter("ignore", UserWarning)
            path = export_onnx(args.model, args.onnx, opset=args.opset, fp16=args.fp16,
                               batch=args.batch, frames=args.frames, verify=not args.no_verify)
    except ImportError as e:
        raise UserError(str(e)) from None
    meta = read_metadata(path)
    print(f"wrote {path} ({meta['model_name']} from {meta['model_source']!r}, opset "
          f"{meta['opset']}, {meta['dtype']}, batch {meta['batch']}, frames {meta['frames']} "
          f"(window {meta['window']}), {path.stat().st_size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - start:.1f} s)")
    print(meta["export_check"])
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
    _add_export(sub)
    sub.add_parser("info", help="print build info and the shipped models")
    from vdengine.balls import train

    train.add_arguments(sub.add_parser("train", help="train a VideoUNet on bouncing balls"))
    add_generate_many_parser(sub)  # generate-many and serve set args.run (vdengine.distributed)
    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runners = {"generate": _run_generate, "info": _run_info, "export": _run_export}
    try:
        if args.command == "train":
            from vdengine.balls import train

            return train.run(args) or 0
        return (getattr(args, "run", None) or runners[args.command])(args)  # run: distributed
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"vdengine: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vdengine: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

