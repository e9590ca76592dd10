"""The worker of `generate_many`: a Ray actor holding loaded pipelines, one call per job group."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vdengine.distributed.jobs import Job, run_group
from vdengine.distributed.manifest import one_line


class JobRunner:
    """Runs groups of jobs in one process; `vdengine.load` caches each pipeline it loads.

    threads: torch CPU threads for this process (its share of the node's cores), or None to
    leave torch's default. device: "auto" picks the GPU Ray gave this actor, if any.
    Plain class: `generate_many` turns it into an actor with ``ray.remote`` (tests subclass it).
    """

    def __init__(self, threads: int | None = None, device: str = "auto"):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.device = device
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, jobs: Sequence[Job], out_dir: str) -> list[dict[str, Any]]:
        """Make the jobs' videos as <out_dir>/<id>.mp4; per job {line, error, seconds, worker,
        batch} (error None when the video was written)."""
        start = time.perf_counter()
        errors = run_group(jobs, [Path(out_dir) / f"{job.id}.mp4" for job in jobs],
                           device=self.device)
        seconds = time.perf_counter() - start
        return [{"line": job.line, "error": None if error is None else one_line(error),
                 "seconds": seconds, "worker": self.name,
                 "batch": len(jobs)} for job, error in zip(jobs, errors)]
