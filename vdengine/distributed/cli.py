"""`vdengine generate-many` and `vdengine serve`: argparse setup and the commands.

vdengine/cli.py registers them with `add_generate_many_parser(sub)` / `add_serve_parser(sub)`;
each parser sets ``run`` (the command function, returning the exit code). Nothing here imports
Ray until a command runs, so `vdengine --help` stays fast without it.
"""

from __future__ import annotations

import argparse


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value!r}")
    return n


def _require_ray() -> None:
    from vdengine.cli import UserError
    from vdengine.distributed import require_ray

    try:
        require_ray()
    except ImportError as e:
        raise UserError(str(e)) from None


def add_generate_many_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate-many", help="make one video per manifest line on Ray workers (docs/scale.md)",
        description="Each line of MANIFEST (JSON lines) is a job: \"id\" plus vdengine.generate "
                    "keywords. Writes OUT_DIR/<id>.mp4 and OUT_DIR/results.jsonl (one row per "
                    "line). Exit 0 when every job succeeded, 1 when some failed, 2 on a usage "
                    "error. A rerun skips the videos already there.")
    p.add_argument("manifest", metavar="MANIFEST", help="JSON-lines file of jobs")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where videos and results go")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="actors, each holding the model (default: one per GPU, else one per "
                        "~4 CPU cores)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (auto, ray://host:10001, ...; default: "
                        "$RAY_ADDRESS, else a local Ray started for this run)")
    p.add_argument("--max-batch", type=_positive_int, default=8, metavar="N",
                   help="most videos of one shape in one batched forward (default 8)")
    p.add_argument("--max-attempts", type=_positive_int, default=3, metavar="N",
                   help="workers a job may lose (die under it) before it is an error (default 3)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run_generate_many)
    return p


def run_generate_many(args) -> int:
    _require_ray()
    from vdengine.distributed.batch import generate_many

    summary = generate_many(args.manifest, args.out_dir, workers=args.workers,
                            address=args.address, max_batch=args.max_batch,
                            max_attempts=args.max_attempts, progress=not args.no_progress)
    print(f"generate-many: {summary.line()}")
    return summary.exit_code


def add_serve_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", help="serve generate() over HTTP with Ray Serve (docs/scale.md)",
        description="POST /generate (JSON generate() keywords, \"format\": mp4|gif) answers the "
                    "video; GET /healthz. Concurrent requests are batched into one forward.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="default", help="shipped model name or model directory")
    p.add_argument("--replicas", type=_positive_int, default=1, metavar="N",
                   help="copies of the model, each on its own GPU / share of cores (default 1)")
    p.add_argument("--address", default=None, metavar="ADDR", help="Ray cluster to join")
    limits = p.add_argument_group("limits per request and batching")
    limits.add_argument("--max-batch", type=_positive_int, default=8, metavar="N",
                        help="requests coalesced into one generate() call (1 = no batching)")
    limits.add_argument("--batch-wait", type=float, default=0.05, metavar="SECONDS",
                        help="how long a request waits for others to batch with (default 0.05)")
    limits.add_argument("--max-frames", type=_positive_int, default=64, metavar="N")
    limits.add_argument("--max-steps", type=_positive_int, default=50, metavar="N")
    p.set_defaults(run=run_serve)
    return p


def run_serve(args) -> int:
    _require_ray()
    from vdengine.distributed.serve import Limits, serve_forever

    limits = Limits(max_frames=args.max_frames, max_steps=args.max_steps,
                    max_batch=args.max_batch, batch_wait_s=args.batch_wait)
    serve_forever(args.model, host=args.host, port=args.port, replicas=args.replicas,
                  limits=limits, address=args.address,
                  ready=lambda text: print(text, flush=True))
    return 0
