"""Production ONNX export of a vdengine model, checked end to end.

    python export/export_onnx.py --model default --out-dir export/out
    python export/export_onnx.py --model default --out-dir export/out --fp16 --opset 21

Writes <out-dir>/<model name>-<dtype>-opset<N>.onnx with vdengine.export_onnx (the graph, its
metadata and a one-forward onnxruntime-vs-PyTorch check), then, for float32 graphs, generates
videos with the torch backend and with the onnxruntime backend from the same seed and reports the
largest uint8 pixel difference (must be <= 2), and prints the trtexec command that turns the file
into a TensorRT engine (export/build_trt_engine.py runs it). Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
try:
    import vdengine
except ImportError:  # run from a checkout without `pip install`: use the dev build in the tree
    sys.path.insert(0, str(REPO))
    import vdengine
from vdengine.export import DEFAULT_OPSET, read_metadata, trtexec_command
from vdengine.models.loading import load_config, resolve_model_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="shipped model name or model directory")
    p.add_argument("--out-dir", type=Path, default=REPO / "export" / "out")
    p.add_argument("--name", default=None, help="file stem (default <model>-<dtype>-opset<N>)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--batch", default="dynamic", help="fixed batch or 'dynamic'")
    p.add_argument("--frames", default="dynamic", help="fixed frames or 'dynamic'")
    p.add_argument("--check-steps", type=int, default=8,
                   help="steps of the torch-vs-onnxruntime generate check (0: skip)")
    p.add_argument("--check-batch", type=int, default=2,
                   help="videos of that check (one forward of 2x rows: label + guidance)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(resolve_model_dir(args.model))
    dtype = "float16" if args.fp16 else "float32"
    name = args.name or f"{cfg.name}-{dtype}-opset{args.opset}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{name}.onnx"

    start = time.perf_counter()
    vdengine.export_onnx(args.model, path, opset=args.opset, fp16=args.fp16, batch=args.batch,
                         frames=args.frames)
    meta = read_metadata(path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - start:.0f} s): {meta['model_name']}, window {meta['window']}, "
          f"{meta['prediction_type']}, {meta['schedule']}, {dtype}, batch {meta['batch']}, "
          f"frames {meta['frames']}, opset {meta['opset']}; one forward vs PyTorch: max abs "
          f"diff {meta.get('export_check_max_abs_diff', 'not checked')}")

    ok = True
    fixed = meta["batch"] != "dynamic" or meta["frames"] not in ("dynamic", meta["window"])
    if args.check_steps > 0 and not args.fp16 and not fixed:
        kw = {"num_frames": cfg.window, "steps": args.check_steps,
              "batch_size": args.check_batch, "seed": 0, "device": "cpu", "progress": False}
        if cfg.num_classes > 0:
            kw.update(label=[i % cfg.num_classes for i in range(args.check_batch)],
                      guidance_scale=3.0)
        ref = vdengine.generate(args.model, **kw).frames.astype(np.int16)
        got = vdengine.generate(args.model, backend="onnxruntime", onnx=path,
                                **kw).frames.astype(np.int16)
        diff = int(np.abs(got - ref).max())
        ok = diff <= 2
        print(f"generate check ({args.check_batch} videos, {args.check_steps} steps, seed 0): "
              f"max abs pixel difference torch vs onnxruntime = {diff} "
              f"({'ok' if ok else 'FAILED: > 2'})")
    engine = path.with_suffix(".plan")
    cmd = trtexec_command(path, engine, fp16=True,
                          timing_cache=args.out_dir / "trt-timing.cache", metadata=meta)
    print("TensorRT (untested here; see export/README.md):\n  " + " \\\n    ".join(cmd))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
