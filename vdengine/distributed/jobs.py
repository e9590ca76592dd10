"""Jobs, and which of them may share one batched `generate()` call.

A `Job` is one video request: an id and `vdengine.generate` keywords. Jobs whose keywords agree
on everything that shapes the computation (model, frames, steps, sampler, guidance, ...) differ
only in *per-video* keywords (seed, label, batch_size, fps, upscale) and are stacked on the batch
axis of one `generate()` call: one denoiser forward per step for the whole group.

Seeds stay per video. `Pipeline.generate` draws all its initial noise from one generator, so
`generate(batch_size=3, seed=s)` is not three seeded videos. A batched group therefore passes
`latents=`: each job's rows drawn from the job's own seed by `Pipeline.initial_noise`, exactly as
`generate(seed=seed, batch_size=rows)` alone would. That is all the randomness only when the
sampler draws no noise after the first step (DDIM with eta = 0, DPM-Solver++(2M)) and no
long-video strategy runs; any other job runs alone. The frames then match the job run alone up
to floating-point rounding of the batched matmuls (at most one uint8 level; see
tests/distributed/test_jobs.py).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vdengine.api import Pipeline, load
from vdengine.video import Video

#: Keywords that may differ between the videos of one batched call.
PER_VIDEO = ("seed", "label", "batch_size", "fps", "upscale")
#: Keywords that choose the pipeline (vdengine.load's arguments, less the device).
LOAD_KEYWORDS = ("model", "dtype", "backend", "check_against")


@functools.cache
def generate_defaults() -> dict[str, Any]:
    """The keyword defaults of `vdengine.generate` and `Pipeline.generate` (fps, eta, ...), so
    an omitted keyword and its default agree."""
    from vdengine.api import generate

    defaults = {}
    for fn in (Pipeline.generate, generate):
        defaults.update({name: p.default for name, p in inspect.signature(fn).parameters.items()
                         if p.default is not inspect.Parameter.empty})
    return defaults


@dataclass
class Job:
    """One video to make: `id` names it, `kwargs` are keywords of `vdengine.generate`."""

    id: str
    kwargs: dict[str, Any]
    line: int = 0  # its manifest line (0 when it does not come from a manifest)

    @property
    def rows(self) -> int:
        """Videos this job adds to a batched call (its batch_size, tiled into one file)."""
        n = self.kwargs.get("batch_size", 1)
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1

    def load_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.kwargs.items() if k in LOAD_KEYWORDS}

    def generate_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.kwargs.items() if k not in LOAD_KEYWORDS}

    def setting(self, name: str) -> Any:
        return self.kwargs.get(name, generate_defaults().get(name))


def _draws_noise_only_at_start(job: Job) -> bool:
    """True when the initial noise is the job's only random draw (its seed is all it needs)."""
    sampler, eta = job.setting("sampler"), job.kwargs.get("eta")
    return job.setting("long_video") is None and (  # sampler None: the default, DDIM
        sampler == "dpmpp_2m" or (sampler in (None, "ddim") and eta in (None, 0)))


def group_key(job: Job) -> str | None:
    """Jobs with equal keys may share one batched call; None: this job runs alone."""
    if not _draws_noise_only_at_start(job):
        return None
    shared = {**generate_defaults(), **job.kwargs}
    for name in PER_VIDEO:
        shared.pop(name, None)
    shared["labelled"] = job.kwargs.get("label") is not None  # labels stack only with labels
    return json.dumps(shared, sort_keys=True, default=repr)


def plan_batches(jobs: Sequence[Job], max_rows: int, workers: int = 1) -> list[list[Job]]:
    """Split jobs into calls: equal-key jobs together, at most `max_rows` videos per call.

    A key's jobs are spread over at least `workers` calls when there are enough of them, so a
    small run still uses every worker. Order: by first appearance of each key.
    """
    groups: dict[str | int, list[Job]] = {}
    for i, job in enumerate(jobs):
        key = group_key(job)
        groups.setdefault(i if key is None else key, []).append(job)
    calls: list[list[Job]] = []
    for members in groups.values():
        total = sum(job.rows for job in members)
        size = max(1, min(max_rows, math.ceil(total / max(1, workers))))
        current: list[Job] = []
        for job in members:
            if current and sum(j.rows for j in current) + job.rows > size:
                calls.append(current)
                current = []
            current.append(job)
        calls.append(current)
    return calls


def _labels(jobs: Sequence[Job]) -> list[int] | None:
    """The batched call's labels: each job's label (an int or one per video) in row order."""
    if jobs[0].kwargs.get("label") is None:
        return None
    labels: list[int] = []
    for job in jobs:
        label = job.kwargs["label"]
        labels += [label] * job.rows if isinstance(label, int) else list(label)
    return labels


def generate_group(pipe: Pipeline, jobs: Sequence[Job]) -> list[Video]:
    """Run equal-key jobs as one batched generate() call; one Video per job.

    Raises what generate() raises (ValueError/TypeError for a bad keyword of any job).
    """
    for job in jobs:  # the per-video keywords generate() does not see in a batched call
        seed, rows = job.setting("seed") or 0, job.kwargs.get("batch_size", 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if rows != job.rows:
            raise ValueError(f"batch_size must be an int >= 1, got {rows!r}")
    shared = {k: v for k, v in jobs[0].generate_kwargs().items() if k not in PER_VIDEO}
    # The same draw as generate(seed=seed, batch_size=rows) makes for each job, stacked.
    latents = torch.cat([pipe.initial_noise(job.rows, shared.get("num_frames"),
                                            seed=job.setting("seed") or 0) for job in jobs])
    labels = _labels(jobs)
    video = pipe.generate(**shared, batch_size=sum(job.rows for job in jobs), latents=latents,
                          progress=False, **({} if labels is None else {"label": labels}))
    videos, start = [], 0
    for job in jobs:
        frames = video.frames[start:start + job.rows]
        videos.append(Video(frames, fps=job.setting("fps")))
        start += job.rows
    return videos


def _run_alone(pipe: Pipeline, job: Job, path: Path) -> Exception | None:
    try:
        # With output=, long videos are streamed to the file window by window.
        pipe.generate(**job.generate_kwargs(), output=path, progress=False)
    except Exception as e:  # noqa: BLE001 - any error is this job's row, not the worker's death
        return e
    return None


def run_group(jobs: Sequence[Job], paths: Sequence[str | os.PathLike],
              device: str = "auto") -> list[Exception | None]:
    """Make each job's video at its path (written atomically); each job's error, or None.

    Equal-key jobs (see `plan_batches`) run as one batched call. If that call fails, the group
    is halved and each half tried again, down to single jobs: a bad job (its keywords are
    rejected before any forward) costs its group a few cheap failed calls, not its batching,
    and a batch too big for memory is split until it fits.
    """
    try:
        pipe = load(**jobs[0].load_kwargs(), device=device)
    except Exception as e:  # noqa: BLE001 - a model that cannot load fails its jobs, not the worker
        return [e] * len(jobs)
    return _run_halving(pipe, list(jobs), [Path(p) for p in paths])


def _run_halving(pipe: Pipeline, jobs: list[Job], paths: list[Path]) -> list[Exception | None]:
    if len(jobs) == 1:
        return [_run_alone(pipe, jobs[0], paths[0])]
    try:
        videos = generate_group(pipe, jobs)
    except Exception:  # noqa: BLE001 - which job (or the batch size) failed is found by halving
        half = len(jobs) // 2
        return (_run_halving(pipe, jobs[:half], paths[:half])
                + _run_halving(pipe, jobs[half:], paths[half:]))
    return [_save(video, path, job.setting("upscale"))
            for job, video, path in zip(jobs, videos, paths)]


def _save(video: Video, path: Path, upscale: Any) -> Exception | None:
    try:
        video.save(path, upscale=upscale)
    except Exception as e:  # noqa: BLE001 - e.g. a bad upscale, a full disk: this job's error
        return e
    return None
