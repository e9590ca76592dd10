"""Fixtures for the training tests."""

from __future__ import annotations

import time

import pytest


@pytest.fixture
def fake_cpu_clock(monkeypatch):
    """install(module, step_fn, seconds): make time.process_time a clock that advances only by
    `seconds` per call of module.<step_fn> (once per training step), so a CPU-time budget stops
    at a known step."""

    def install(module, step_fn: str, seconds: float) -> None:
        clock = {"t": 1000.0}
        real = getattr(module, step_fn)

        def step(*args, **kwargs):
            clock["t"] += seconds
            return real(*args, **kwargs)

        monkeypatch.setattr(time, "process_time", lambda: clock["t"])
        monkeypatch.setattr(module, step_fn, step)

    return install
