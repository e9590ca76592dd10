"""Build a TensorRT engine from a vdengine ONNX export with trtexec.

    python export/build_trt_engine.py export/out/balls32-float32-opset18.onnx
    python export/build_trt_engine.py model.onnx --engine model.plan --max-batch 8 --print-only

UNTESTED IN THIS REPOSITORY: TensorRT cannot be installed on the machines vdengine is developed
and tested on; this script has only been run with --print-only.

The shape profiles come from the ONNX file's metadata (vdengine.export.trtexec_command): fixed
axes are fixed, a dynamic batch spans 1..--max-batch (opt --opt-batch: 2 rows = one video with
guidance), dynamic frames span --min-frames (default: the window)..window with opt = window.
After a successful build it writes <engine>.json, the ONNX metadata that
vdengine's tensorrt backend reads (an engine does not carry it):

    vdengine.runtime.load_graph("model.plan", "cuda")      # or vdengine.load("model.plan")
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
try:
    import vdengine  # noqa: F401
except ImportError:  # run from a checkout without `pip install`
    sys.path.insert(0, str(REPO))
from vdengine.export import trtexec_command
from vdengine.runtime.contract import metadata_path, read_metadata


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", type=Path, help="an .onnx file written by vdengine export")
    p.add_argument("--engine", type=Path, default=None, help="output engine (default .plan)")
    p.add_argument("--no-fp16", action="store_true", help="leave out trtexec's --fp16")
    p.add_argument("--opt-batch", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--min-frames", type=int, default=None)
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="trtexec --timingCacheFile (default: trt-timing.cache beside the ONNX)")
    p.add_argument("--trtexec", default="trtexec", help="the trtexec executable")
    p.add_argument("--print-only", action="store_true", help="print the command, run nothing")
    args = p.parse_args(argv)

    try:
        meta = read_metadata(args.onnx)
        engine = args.engine or args.onnx.with_suffix(".plan")
        cache = args.timing_cache or args.onnx.with_name("trt-timing.cache")
        cmd = trtexec_command(args.onnx, engine, fp16=not args.no_fp16, opt_batch=args.opt_batch,
                              max_batch=args.max_batch, min_frames=args.min_frames,
                              timing_cache=cache, metadata=meta)
    except ValueError as e:
        print(f"build_trt_engine: error: {e}", file=sys.stderr)
        return 2
    cmd[0] = args.trtexec
    print(" ".join(shlex.quote(c) for c in cmd))
    if args.print_only:
        return 0
    if shutil.which(args.trtexec) is None:
        print(f"build_trt_engine: error: {args.trtexec!r} not found on PATH (it ships with "
              "TensorRT); run the command above where TensorRT is installed", file=sys.stderr)
        return 2
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        print(f"build_trt_engine: trtexec failed with exit code {rc}", file=sys.stderr)
        return rc
    side = metadata_path(engine)
    side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {engine} and {side}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
