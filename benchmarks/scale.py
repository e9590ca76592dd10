"""Scale-out throughput: generate_many with 1 and 2 workers; the server with batching on and off.

    PYTHONPATH=. python benchmarks/scale.py                 # 64 jobs, 16 frames, 4 steps
    PYTHONPATH=. python benchmarks/scale.py --json benchmarks/results/scale-cpu.json

One local Ray for the whole run (all cores). Two parts, each measured side by side, interleaved
(A, B, A, B, ...) so load from other processes hits both columns alike:

- batch: `generate_many` of --jobs jobs (same shape, seeds 0..N-1) into a fresh directory, with
  1 and with 2 workers (each worker an actor holding the model, the cores split between them;
  --max-batch videos per batched call). videos/s = jobs / wall time of the whole call, actor
  start-up and model load included (what a user of `vdengine generate-many` sees).
- serve: two Serve applications side by side, one replica each: "on" coalesces concurrent
  requests (max_batch --max-batch, 50 ms wait), "off" has max_batch 1. --requests requests
  from --concurrency client threads; requests/s = requests / wall time, and the median latency.

Ratios (2 workers / 1 worker, batching on / off) are the figures to read; absolute numbers
depend on the machine and its load. The JSON records the device, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _environment import cpu_name, git_commit  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def _ray_init(cpus: int):
    import ray

    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return ray


def batch_rounds(args, jobs: list[dict]) -> list[dict]:
    from vdengine.distributed.batch import generate_many

    rows = []
    for repeat in range(args.repeats):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory(prefix="vdengine-scale-") as out:
                summary = generate_many(jobs, out, workers=workers, max_batch=args.max_batch,
                                        progress=False)
            assert summary.failed == 0, summary.rows
            rows.append({"part": "batch", "workers": workers, "repeat": repeat,
                         "videos": summary.ok, "seconds": round(summary.seconds, 3),
                         "videos_per_s": round(summary.videos_per_second, 3)})
            print(f"batch  workers={workers} repeat={repeat}: {summary.ok} videos in "
                  f"{summary.seconds:.1f} s = {summary.videos_per_second:.2f} videos/s",
                  flush=True)
    return rows


def _post(url: str, body: dict) -> float:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
        r.read()
    return time.perf_counter() - start


def serve_rounds(args, cpus: int) -> list[dict]:
    from ray import serve

    from vdengine.distributed.serve import Limits, build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # One replica per mode, both holding all the cores' threads: only one is busy at a time.
    options = {"num_cpus": cpus / 2}
    for mode, max_batch in (("on", args.max_batch), ("off", 1)):
        serve.run(build_app(args.model, Limits(max_batch=max_batch), 1, options, cpus),
                  name=mode, route_prefix=f"/{mode}")
    body = {"num_frames": args.frames, "steps": args.steps}
    rows = []
    try:
        for repeat in range(args.repeats):
            for mode in ("on", "off"):
                url = f"http://127.0.0.1:{port}/{mode}/generate"
                _post(url, {**body, "seed": 0})  # warm: first request through the proxy
                start = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    latencies = list(pool.map(lambda s, u=url: _post(u, {**body, "seed": s}),
                                              range(args.requests)))
                seconds = time.perf_counter() - start
                rows.append({"part": "serve", "batching": mode, "repeat": repeat,
                             "requests": args.requests, "concurrency": args.concurrency,
                             "seconds": round(seconds, 3),
                             "requests_per_s": round(args.requests / seconds, 3),
                             "median_latency_s": round(statistics.median(latencies), 3)})
                print(f"serve  batching={mode:3s} repeat={repeat}: {args.requests / seconds:.2f} "
                      f"requests/s, median latency {statistics.median(latencies):.2f} s",
                      flush=True)
    finally:
        serve.shutdown()
    return rows


def _ratio(rows: list[dict], key: str, field: str, a, b) -> float:
    mean = {v: statistics.mean(r[field] for r in rows if r.get(key) == v) for v in (a, b)}
    return round(mean[a] / mean[b], 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--jobs", type=int, default=64, help="generate_many jobs per run (64)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8, help="videos per batched call (8)")
    p.add_argument("--requests", type=int, default=32, help="server requests per round (32)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds per column (2)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = p.parse_args(argv)

    import ray
    import torch

    import vdengine

    cpus = os.cpu_count() or 1
    jobs = [{"id": f"v{i:03d}", "seed": i, "num_frames": args.frames, "steps": args.steps,
             "model": args.model} for i in range(args.jobs)]
    _ray_init(cpus)
    try:
        rows = batch_rounds(args, jobs) + serve_rounds(args, cpus)
    finally:
        ray.shutdown()
    batch = [r for r in rows if r["part"] == "batch"]
    served = [r for r in rows if r["part"] == "serve"]
    ratios = {"batch_2_workers_over_1": _ratio(batch, "workers", "videos_per_s", 2, 1),
              "serve_batching_on_over_off": _ratio(served, "batching", "requests_per_s",
                                                   "on", "off")}
    print(f"ratios: 2 workers / 1 worker = {ratios['batch_2_workers_over_1']:.2f}x videos/s; "
          f"batching on / off = {ratios['serve_batching_on_over_off']:.2f}x requests/s")
    if args.json:
        env = {"device": cpu_name(), "device_type": "cpu", "cpu_count": cpus,
               "versions": {"torch": torch.__version__, "ray": ray.__version__,
                            "python": platform.python_version(),
                            "vdengine": vdengine.__version__},
               "platform": platform.platform(), "git": git_commit(),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
        config = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "config": config,
                                         "ratios": ratios, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
