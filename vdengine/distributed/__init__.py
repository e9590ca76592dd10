"""Scale out on Ray: many videos from a manifest (`generate_many`) and an HTTP server (`serve`).

Modules, one job each:

- ``manifest``: read a JSON-lines manifest into checked entries; write ``results.jsonl``.
- ``jobs``: a job's keywords, which jobs may share one batched ``generate()`` call (per-video
  seeds kept), and ``run_group`` that runs such a group and writes each job's video.
- ``runner``: the worker actor's class (one loaded pipeline per process).
- ``batch``: ``generate_many``: the driver loop (actor pool, retries of jobs whose worker died,
  progress bar, resumable results).
- ``serve``: the Ray Serve deployment (``@serve.batch`` coalesces concurrent requests).
- ``cli``: the ``vdengine generate-many`` / ``vdengine serve`` subcommands.

Ray is an optional dependency: ``pip install "vdengine[ray]"``. Only ``batch``, ``runner`` and
``serve`` import it.
"""

from __future__ import annotations


def require_ray():
    """Import ray, or raise a one-line ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            'vdengine.distributed needs Ray: pip install "vdengine[ray]"') from None
    return ray
