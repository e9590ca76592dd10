"""Manifests in, results out: one checked `Entry` per manifest line, one results row per entry.

A manifest is JSON lines; each non-blank line is one job::

    {"id": "balls-0", "seed": 0, "num_frames": 16, "steps": 8, "label": 2}
    {"id": "long-3", "num_frames": 64, "long_video": {"strategy": "sliding", "stride": 8}}

"id" names the video (``<out_dir>/<id>.mp4``); every other key is a keyword of
`vdengine.generate`. Parsing never raises for a bad line: the entry carries a one-line error
instead (not JSON, no id, duplicate id, unknown keyword, ...), which becomes its results row.
Whether the values are valid is decided by `generate()` itself when the job runs.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Keywords a manifest may not set: the runner decides them (one file per job, its own device).
RESERVED = {
    "output": "the video is written to <out_dir>/<id>.mp4",
    "progress": "generate-many shows one progress bar over jobs",
    "device": "each worker uses its own device (its GPU where there is one)",
}
#: Ids become file names: letters, digits, '.', '_', '-', not starting with '.' or '-'.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
RESULTS_NAME = "results.jsonl"


def one_line(error: BaseException | str) -> str:
    """An exception as one line; errors other than ValueError/TypeError keep their type name."""
    text = " ".join(str(error).split())
    if isinstance(error, BaseException) and not isinstance(error, (ValueError, TypeError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text


def generate_keywords() -> set[str]:
    """The keyword arguments a job may give: `vdengine.generate`'s loading keywords and
    `Pipeline.generate`'s named ones (read from their signatures), and `label`, the shipped
    models' conditioning (other conditioning inputs are tensors, which JSON cannot hold)."""
    from vdengine.api import Pipeline, generate

    named = [*inspect.signature(generate).parameters.values(),
             *inspect.signature(Pipeline.generate).parameters.values()]
    return {p.name for p in named
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"} | {"label"}


def long_video_kwargs(value: Any) -> dict[str, Any]:
    """A manifest's `long_video` as `generate()` keywords (the one place that maps it).

    Text stays as it is ("sliding", "sliding(stride=8)+shared_noise(lam=0.5)": the form
    `vdengine.longvideo.as_strategy` reads); {"strategy": "sliding", "stride": 8, "noise":
    {"lam": 0.5}} becomes the strategy object Sliding(stride=8, noise=SharedNoise(0.5)). None
    means a plain (window-length) video.
    """
    if value is None or isinstance(value, str):
        return {"long_video": value}
    if isinstance(value, dict):
        from vdengine.longvideo import STRATEGIES, SharedNoise

        options = dict(value)
        strategy = options.pop("strategy", None)
        if strategy not in STRATEGIES:
            raise TypeError('long_video: a dict needs "strategy": one of '
                            f'{", ".join(STRATEGIES)}, got {strategy!r}')
        if isinstance(options.get("noise"), dict):
            options["noise"] = SharedNoise(**options["noise"])
        return {"long_video": STRATEGIES[strategy](**options)}
    raise TypeError(f"long_video must be a strategy name or a dict with a \"strategy\", got "
                    f"{type(value).__name__}")


def job_kwargs(obj: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """A job object's keywords for `generate()` (no "id"), checked against `allowed` names.

    Raises a one-line ValueError/TypeError naming the offending key.
    """
    kwargs = {k: v for k, v in obj.items() if k != "id"}
    for key in kwargs:
        if key in RESERVED:
            raise ValueError(f"{key!r} cannot be set in a job: {RESERVED[key]}")
    if "long_video" in kwargs:
        value = kwargs.pop("long_video")
        mapped = long_video_kwargs(value)
        clash = sorted(set(mapped) & set(kwargs) - {"long_video"})
        if clash:
            raise ValueError(f"{clash[0]!r} is given twice: at top level and in long_video")
        kwargs.update(mapped)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown keyword {unknown[0]!r} (not an argument of vdengine.generate)")
    if "seed" in kwargs and (isinstance(kwargs["seed"], bool)
                             or not isinstance(kwargs["seed"], int)):
        raise TypeError(f"seed must be an int, got {type(kwargs['seed']).__name__}")
    return kwargs


@dataclass
class Entry:
    """One manifest line: a runnable job (kwargs) or the reason it cannot run (error)."""

    line: int  # 1-based line number in the manifest (index + 1 for a Python list of jobs)
    id: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def parse_job(line: int, obj: Any, seen: dict[str, int], allowed: set[str]) -> Entry:
    """Check one job object; `seen` maps ids already taken to their line (updated here)."""
    if not isinstance(obj, dict):
        return Entry(line, None, error=f"a job must be a JSON object, got {type(obj).__name__}")
    job_id = obj.get("id")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if job_id is None:
        return Entry(line, None, error='missing "id" (the name of the video file)')
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        return Entry(line, None, error=f'"id" must be a file-name-safe string (letters, digits, '
                                       f"'.', '_', '-'; at most 200), got {job_id!r}")
    if job_id in seen:
        return Entry(line, job_id, error=f"duplicate id {job_id!r} (first on line {seen[job_id]})")
    seen[job_id] = line
    try:
        return Entry(line, job_id, kwargs=job_kwargs(obj, allowed))
    except (ValueError, TypeError) as e:
        return Entry(line, job_id, error=one_line(e))


def parse_jobs(jobs: Iterable[Any]) -> list[Entry]:
    """Entries for a sequence of job objects (dicts), numbered from 1."""
    allowed, seen = generate_keywords(), {}
    return [parse_job(i, obj, seen, allowed) for i, obj in enumerate(jobs, start=1)]


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """Entries for each non-blank line of a JSON-lines manifest (line = its line number).

    Raises FileNotFoundError / IsADirectoryError / UnicodeDecodeError for a manifest that cannot
    be read at all; a bad line is an Entry with an error, never an exception.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist or is not a file")
    allowed, seen, entries = generate_keywords(), {}, []
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                entries.append(Entry(number, None, error=f"not valid JSON: {e.msg} "
                                                          f"(column {e.colno})"))
                continue
            entries.append(parse_job(number, obj, seen, allowed))
    return entries


def result_row(entry: Entry, status: str, *, path: str | None = None, error: str | None = None,
               seconds: float | None = None, worker: str | None = None, batch: int | None = None,
               attempts: int = 0, skipped: bool = False) -> dict[str, Any]:
    """The results.jsonl row of one entry.

    status: "ok" or "error". seconds: wall time of the generate() call that made the video,
    shared by the `batch` jobs it made at once. attempts: workers that ran the job (more than
    one when a worker died under it). skipped: the video was already there (not rewritten).
    """
    if status not in ("ok", "error"):
        raise ValueError(f"status must be 'ok' or 'error', got {status!r}")
    return {"line": entry.line, "id": entry.id, "status": status, "path": path,
            "error": error, "seconds": None if seconds is None else round(seconds, 3),
            "worker": worker, "batch": batch, "attempts": attempts, "skipped": skipped}


def write_results(out_dir: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows sorted by line to <out_dir>/results.jsonl atomically (temp file + rename)."""
    out_dir = Path(out_dir)
    final = out_dir / RESULTS_NAME
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{RESULTS_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in sorted(rows, key=lambda r: r["line"]):
                f.write(json.dumps(row) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are as readable as the videos
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create out_dir if needed; check a file can be written there (else PermissionError)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write to out_dir {str(out_dir)!r}: "
                              f"{e.strerror or e}") from None
    return out_dir
