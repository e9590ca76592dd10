"""`vdengine serve`: generate() over HTTP on Ray Serve, concurrent requests batched together.

    POST /generate   JSON body of generate() keywords (seed, num_frames, steps, sampler, label,
                     guidance_scale, upscale, long_video, ...) plus "format": "mp4" | "gif".
                     200: the video bytes (video/mp4 or image/gif).
                     400: {"error": "..."} naming the field (bad JSON, unknown field, over a
                     limit, or a value generate() rejects). The server keeps serving.
    GET  /healthz    200 {"status": "ok", "model": ...} once the replica has loaded its model.
    GET  /stats      {"requests", "generate_calls", "batch_sizes", "forwards"} of the replica
                     that answers: how requests were coalesced (forwards: denoiser calls).

Each replica loads the model once. Requests reaching a replica within `batch_wait_s` of each
other (up to `max_batch`) are handed over together (``@serve.batch``); among them, jobs of one
shape run as one batched generate() call (`jobs.plan_batches`: per-request seeds kept), so N
concurrent requests cost about one denoiser forward per step instead of N.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures' types
# (Request) at run time, and Serve's class-based ingress cannot resolve string annotations.
import asyncio
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from vdengine.distributed.jobs import LOAD_KEYWORDS, Job, plan_batches, run_group
from vdengine.distributed.manifest import generate_keywords, job_kwargs, one_line

MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif"}
#: generate() keywords a request may not set: the server decides them.
NOT_PER_REQUEST = set(LOAD_KEYWORDS) | {"device", "output", "progress", "batch_size"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how requests are coalesced."""

    max_frames: int = 64
    max_steps: int = 50
    max_upscale: int = 8
    max_batch: int = 8  # requests (videos) in one batched generate() call; 1 = no batching
    batch_wait_s: float = 0.05  # how long a request waits for others to batch with

    def __post_init__(self):
        for name in ("max_frames", "max_steps", "max_upscale", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.batch_wait_s <= 10:
            raise ValueError(f"batch_wait_s must be in [0, 10] seconds, got {self.batch_wait_s}")


def _limit(kwargs: dict[str, Any], name: str, most: int) -> None:
    value = kwargs.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value > most:
        raise ValueError(f"{name} must be <= {most} (this server's limit), got {value}")


def parse_request(body: Any, limits: Limits) -> tuple[Job, str]:
    """A request body as (Job, format); a one-line ValueError/TypeError naming the field."""
    if not isinstance(body, dict):
        raise TypeError(f"the body must be a JSON object, got {type(body).__name__}")
    body = dict(body)
    fmt = body.pop("format", "mp4")
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"format must be one of {sorted(MEDIA_TYPES)}, got {fmt!r}")
    for key in body:
        if key in NOT_PER_REQUEST or key == "id":
            raise ValueError(f"{key!r} cannot be set per request (the server decides it)")
    kwargs = job_kwargs(body, generate_keywords() - NOT_PER_REQUEST)
    _limit(kwargs, "num_frames", limits.max_frames)
    _limit(kwargs, "steps", limits.max_steps)
    _limit(kwargs, "upscale", limits.max_upscale)
    return Job("request", kwargs), fmt


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


app = FastAPI(title="vdengine")


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(app)
class VideoServer:
    """One replica: the loaded model, the request batcher and its counters."""

    def __init__(self, model: str = "default", limits: Limits | None = None,
                 threads: int | None = None):
        import torch

        import vdengine

        if threads is not None:
            torch.set_num_threads(threads)
        self.model, self.limits = model, limits or Limits()
        self.pipe = vdengine.load(model)
        self.requests, self.forwards, self.batch_sizes = 0, 0, []
        if isinstance(self.pipe.model, torch.nn.Module):  # count denoiser forwards for /stats
            self.pipe.model.register_forward_hook(lambda *_: self._count_forward())
        self._generate_batch.set_max_batch_size(self.limits.max_batch)
        self._generate_batch.set_batch_wait_timeout_s(self.limits.batch_wait_s)

    def _count_forward(self) -> None:
        self.forwards += 1

    @app.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model, "device": str(self.pipe.device)}

    @app.get("/stats")
    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "generate_calls": len(self.batch_sizes),
                "batch_sizes": self.batch_sizes, "forwards": self.forwards,
                "limits": asdict(self.limits)}

    @app.post("/generate")
    async def generate(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as e:
            return _error(400, f"the body must be JSON: {one_line(e)}")
        try:
            job, fmt = parse_request(body, self.limits)
        except (ValueError, TypeError) as e:
            return _error(400, one_line(e))
        self.requests += 1
        result = await self._generate_batch((job, fmt))
        if isinstance(result, (ValueError, TypeError)):
            return _error(400, one_line(result))
        if isinstance(result, Exception):
            return _error(500, one_line(result))
        return Response(content=result, media_type=MEDIA_TYPES[fmt])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)  # set from Limits in __init__
    async def _generate_batch(self, requests: list[tuple[Job, str]]) -> list[bytes | Exception]:
        # The forward runs in a thread: the replica keeps accepting (and queueing) requests.
        return await asyncio.to_thread(self._run, requests)

    def _run(self, requests: list[tuple[Job, str]]) -> list[bytes | Exception]:
        """Each request's video bytes or its error; equal-shape requests share one call."""
        jobs = [Job(str(i), job.kwargs, line=i) for i, (job, _) in enumerate(requests)]
        results: list[bytes | Exception] = [RuntimeError("not run")] * len(jobs)
        with tempfile.TemporaryDirectory(prefix="vdengine-serve-") as tmp:
            for call in plan_batches(jobs, self.limits.max_batch):
                paths = [Path(tmp) / f"{job.id}.{requests[job.line][1]}" for job in call]
                self.batch_sizes.append(len(call))
                for job, path, error in zip(call, paths, run_group(call, paths)):
                    results[job.line] = error if error is not None else path.read_bytes()
        return results


def build_app(model: str = "default", limits: Limits | None = None, replicas: int = 1,
              options: dict[str, Any] | None = None, threads: int | None = None):
    """The Serve application: `replicas` copies of VideoServer with Ray `options` each."""
    deployment = VideoServer.options(num_replicas=replicas, ray_actor_options=options or {})
    return deployment.bind(model, limits or Limits(), threads)


def serve_forever(model: str = "default", host: str = "127.0.0.1", port: int = 8000,
                  replicas: int | None = 1, limits: Limits | None = None,
                  address: str | None = None, ready=print) -> None:
    """Run the server until SIGTERM or Ctrl-C, then shut Serve and the Ray it started down.

    replicas None: one per GPU, else one per ~4 cores (see resources.actor_shape). ready(text)
    is called once the replicas have loaded the model and the HTTP proxy listens.
    """
    import logging
    import signal
    import time

    import vdengine
    from vdengine.distributed import require_ray
    from vdengine.distributed.resources import actor_shape

    ray = require_ray()
    vdengine.load(model, device="cpu")  # a bad model is a one-line error now, not replica retries

    def interrupt(*_):
        raise KeyboardInterrupt

    stops = (signal.SIGTERM, signal.SIGINT)  # SIGTERM stops it as Ctrl-C does
    previous = {sig: signal.signal(sig, interrupt) for sig in stops}
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
            for sig in stops:  # again: Ray's core worker installs handlers that abort
                signal.signal(sig, interrupt)
        replicas, options, threads = actor_shape(ray, replicas, "replicas")
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(model, limits, replicas, options, threads), name="vdengine",
                  route_prefix="/")
        ready(f"vdengine serve: model {model!r} on http://{host}:{port} ({replicas} "
              f"replica(s); POST /generate, GET /healthz); SIGTERM or Ctrl-C stops it")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass  # the stop that was asked for
    finally:
        for sig, handler in previous.items():  # a second signal during shutdown kills
            signal.signal(sig, handler)
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            if started:
                ray.shutdown()
