"""`generate_many`: a manifest of jobs → one video per job, on a pool of Ray actors.

    summary = vdengine.generate_many("jobs.jsonl", "out/", workers=2)
    print(summary.line())          # 62 ok, 2 failed, 0 skipped in 40.1 s (1.55 videos/s)

How it runs:

- Jobs are planned into calls (`jobs.plan_batches`): jobs of one shape share a batched
  generate() call, up to `max_batch` videos, each keeping its own seed.
- A pool of `workers` actors (`runner.JobRunner`), each loading the pipeline once and holding it;
  one GPU per actor where the cluster has GPUs, else an even share of the CPU cores
  (torch.set_num_threads per actor). The driver hands each idle actor the next call.
- A worker that dies (killed, out of memory, node lost) loses no job: the actor is replaced, and
  its jobs go back to the queue one by one (so a job that kills workers is found alone); a job
  whose worker died `max_attempts` times ends as an error row instead of killing more workers.
- `<out_dir>/results.jsonl` gets exactly one row per manifest line (see manifest.result_row),
  also when the run is interrupted. Videos are written under a temporary name and renamed, so a
  video that exists is complete: a rerun skips those jobs and does not rewrite them.

Why Ray core actors and not Ray Data's ActorPoolStrategy: Ray Data retries a task whose actor
died on a restarted actor but does not say which row of a block killed it, so a job that always
kills its worker either retries forever or fails the whole dataset (and its results with it).
Driving the pool here keeps a per-job attempt count, isolates the culprit by rerunning a failed
batch job by job, and streams each finished job to the progress bar and results.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vdengine.distributed import require_ray
from vdengine.distributed.jobs import Job, plan_batches
from vdengine.distributed.manifest import (
    RESULTS_NAME,
    Entry,
    check_out_dir,
    one_line,
    parse_jobs,
    read_manifest,
    result_row,
    write_results,
)
from vdengine.distributed.resources import actor_shape
from vdengine.distributed.runner import JobRunner

DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class Summary:
    """What a generate_many run did. rows: the results.jsonl rows, by line."""

    ok: int
    failed: int
    skipped: int
    seconds: float
    results: Path
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def videos_per_second(self) -> float:
        """Videos made by this run (skipped ones excluded) per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every job has its video, 1 when some failed."""
        return 0 if self.failed == 0 else 1

    def line(self) -> str:
        return (f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped in "
                f"{self.seconds:.1f} s ({self.videos_per_second:.2f} videos/s); "
                f"results: {self.results}")


def _entries(jobs: str | os.PathLike | Iterable[dict[str, Any]]) -> list[Entry]:
    if isinstance(jobs, (str, os.PathLike)):
        return read_manifest(jobs)
    return parse_jobs(jobs)


class _Pool:
    """`workers` actors; replaces a dead one. submit/wait drive one call per idle actor."""

    def __init__(self, ray, runner: type, workers: int, options: dict[str, Any],
                 threads: int | None, out_dir: Path):
        self.ray, self.out_dir = ray, str(out_dir)
        actor_class = ray.remote(max_restarts=0)(runner)  # replaced by us, not restarted by Ray
        self._new = lambda: actor_class.options(**options).remote(threads)
        self.idle = [self._new() for _ in range(workers)]
        self.busy: dict[Any, tuple[Any, list[Job]]] = {}  # ObjectRef -> (actor, jobs)

    def submit(self, jobs: list[Job]) -> None:
        actor = self.idle.pop()
        self.busy[actor.run.remote(jobs, self.out_dir)] = (actor, jobs)

    def wait(self) -> tuple[list[Job], list[dict] | None, BaseException | None, bool]:
        """The next finished call: (its jobs, worker rows, error, whether the worker died)."""
        ray = self.ray
        [ref], _ = ray.wait(list(self.busy), num_returns=1)
        actor, jobs = self.busy.pop(ref)
        try:
            rows = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError) as e:
            ray.kill(actor)
            self.idle.append(self._new())
            return jobs, None, e, True
        except ray.exceptions.RayError as e:  # run() itself raised: the actor is fine
            self.idle.append(actor)
            return jobs, None, e, False
        self.idle.append(actor)
        return jobs, rows, None, False

    def close(self) -> None:
        for actor in self.idle + [a for a, _ in self.busy.values()]:
            self.ray.kill(actor)


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def generate_many(
    jobs: str | os.PathLike | Iterable[dict[str, Any]],
    out_dir: str | os.PathLike,
    workers: int | None = None,
    address: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    progress: bool = True,
    runner: type = JobRunner,
) -> Summary:
    """Make one video per job as <out_dir>/<id>.mp4 on Ray workers; see the module docstring.

    jobs: a JSON-lines manifest path, or job dicts ({"id": ..., **generate keywords}).
    workers: actors in the pool (default: one per GPU, else one per ~4 CPU cores).
    address: the Ray cluster to join ("auto", "ray://host:10001", ...); default: the one this
    process is connected to, else $RAY_ADDRESS, else a local one started (and stopped) here.
    max_batch: most videos in one batched generate() call. max_attempts: workers a job may
    lose (die under it) before it ends as an error row. runner: the actor class (JobRunner).
    Returns a Summary; `<out_dir>/results.jsonl` holds one row per job.
    """
    for name, value in (("max_batch", max_batch), ("max_attempts", max_attempts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    start = time.perf_counter()
    entries = _entries(jobs)
    out_dir = check_out_dir(out_dir)
    rows: dict[int, dict[str, Any]] = {}
    todo: list[Job] = []
    for entry in entries:
        path = out_dir / f"{entry.id}.mp4"
        if entry.error is not None:
            rows[entry.line] = result_row(entry, "error", error=entry.error)
        elif path.is_file():  # complete: videos are renamed into place when fully written
            rows[entry.line] = result_row(entry, "ok", path=str(path), skipped=True)
        else:
            for stale in out_dir.glob(f".{entry.id}.mp4.tmp-*"):  # left by a killed worker
                stale.unlink(missing_ok=True)
            todo.append(Job(entry.id, entry.kwargs, line=entry.line))
    skipped = sum(row["skipped"] for row in rows.values())
    bar = tqdm(total=len(entries), initial=len(rows), unit="job", disable=not progress,
               desc="generate-many")
    try:
        if todo:
            _run_pool(todo, entries, rows, out_dir, workers, address, max_batch, max_attempts,
                      runner, bar)
    except BaseException as e:  # interrupted: the rows so far, and the rest marked as not run
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"not run: {one_line(e)}"
        for entry in entries:
            rows.setdefault(entry.line, result_row(entry, "error", error=why))
        raise
    finally:
        bar.close()
        results = write_results(out_dir, rows.values())
    failed = sum(row["status"] == "error" for row in rows.values())
    return Summary(ok=len(rows) - failed - skipped, failed=failed, skipped=skipped,
                   seconds=time.perf_counter() - start, results=results,
                   rows=sorted(rows.values(), key=lambda r: r["line"]))


def _run_pool(todo: list[Job], entries: list[Entry], rows: dict[int, dict[str, Any]],
              out_dir: Path, workers: int | None, address: str | None, max_batch: int,
              max_attempts: int, runner: type, bar: tqdm) -> None:
    """Run the jobs on an actor pool, filling `rows` as they finish."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    pool = None
    try:
        workers, options, threads = actor_shape(ray, workers)
        by_line = {entry.line: entry for entry in entries}
        queue = deque(plan_batches(todo, max_batch, workers))
        pool = _Pool(ray, runner, workers, options, threads, out_dir)
        deaths: Counter[int] = Counter()  # line -> workers that died running it

        def finish(line: int, row: dict[str, Any]) -> None:
            rows[line] = row
            bar.update(1)

        while queue or pool.busy:
            while queue and pool.idle:
                pool.submit(queue.popleft())
            jobs, results, error, died = pool.wait()
            if results is not None:
                for job, res in zip(jobs, results):
                    ok = res["error"] is None
                    finish(job.line, result_row(
                        by_line[job.line], "ok" if ok else "error",
                        path=str(out_dir / f"{job.id}.mp4") if ok else None, error=res["error"],
                        seconds=res["seconds"], worker=res["worker"], batch=res["batch"],
                        attempts=deaths[job.line] + 1))
            elif not died:
                for job in jobs:
                    finish(job.line, result_row(by_line[job.line], "error",
                                                error=_first_line(error),
                                                attempts=deaths[job.line] + 1))
            else:
                for job in jobs:
                    deaths[job.line] += 1
                    if deaths[job.line] >= max_attempts:
                        finish(job.line, result_row(
                            by_line[job.line], "error", attempts=deaths[job.line],
                            error=f"its worker died {deaths[job.line]} times (killed or out of "
                                  f"memory?); last: {_first_line(error)}"))
                    else:  # alone, at the front: a batch that died is retried job by job
                        queue.appendleft([job])
    finally:
        if pool is not None:
            pool.close()
        if started:
            ray.shutdown()


__all__ = ["RESULTS_NAME", "Summary", "generate_many"]
