"""How many actors, and what each one asks Ray for: a GPU each, or a share of the cores."""

from __future__ import annotations

from typing import Any


def actor_shape(ray, count: int | None, name: str = "workers"
                ) -> tuple[int, dict[str, Any], int | None]:
    """(actors, their Ray resource options, torch CPU threads each) on the connected cluster.

    count None: one actor per GPU, else one per ~4 CPU cores (a small model's CPU forward
    scales poorly past that, so more processes beat more threads). With GPUs each actor takes
    one (more actors than GPUs share them) and its device is that GPU; without, the cores are
    split evenly (fractional shares, so every actor is scheduled) and `threads` is the share.
    """
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if count is None:
        count = gpus if gpus else max(1, int(cpus) // 4)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{name} must be an int >= 1, got {count!r}")
    if gpus:  # the CPU side only feeds the GPU and encodes video
        return count, {"num_gpus": min(1.0, gpus / count), "num_cpus": 1}, None
    share = cpus / count
    return count, {"num_cpus": share}, max(1, int(share))
