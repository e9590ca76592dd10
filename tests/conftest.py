"""Shared test configuration.

- The compiled CPU kernels (vdengine._C) are required: without them every test errors at setup
  with a rebuild hint. A broken build must fail the suite, never turn it into skips.
- ``@pytest.mark.cuda`` marks tests that need a GPU: skipped when torch sees no CUDA device. With
  a GPU present they run, and fail if vdengine._C_cuda was not built (rebuild with nvcc on PATH).
- Skip guard: the one allowed skip is ``CUDA_SKIP_REASON`` (a GPU test on a machine without one).
  Any other skip (``pytest.skip``, ``skipif``, ``importorskip``, a module-level skip) and any
  ``xfail`` turns into a failure, so a missing dependency or a broken kernel cannot pass for a skip.
- Hypothesis runs a bounded number of examples without deadlines (CI machines are small and
  shared); HYPOTHESIS_PROFILE=thorough raises the budget locally.
- Fixtures: ``gen`` (a seeded torch.Generator), ``poison_outputs`` (op outputs pre-filled with NaN,
  so an element a kernel forgets to write cannot pass for a correct one), ``cuda_device``.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

pytest_plugins = ["pytester"]  # tests/test_skip_guard.py runs the guard below on small suites

#: The only reason a test may skip: it needs a GPU and torch sees none.
CUDA_SKIP_REASON = "needs a CUDA GPU (torch.cuda.is_available() is False)"

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.register_profile(
        "thorough", max_examples=500, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test dependency; tests that use it import it themselves
    pass


def _native_import_error() -> str | None:
    try:
        importlib.import_module("vdengine._C")
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped when torch sees none)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# ---- skip guard ----------------------------------------------------------------------------------


def _forbidden(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """Why this report must fail instead of skipping (None when it is allowed to stand)."""
    if hasattr(report, "wasxfail"):  # xfailed, or xpassed without strict
        return f"xfail is not allowed (reason: {report.wasxfail or 'none given'})"
    if not report.skipped:
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason == CUDA_SKIP_REASON:
        return None
    return f"skip not allowed (the only allowed reason is {CUDA_SKIP_REASON!r}): {reason}"


def _fail_forbidden(report: pytest.TestReport | pytest.CollectReport) -> None:
    why = _forbidden(report)
    if why is not None:
        report.outcome = "failed"
        report.longrepr = f"{report.nodeid}: {why}"
        if hasattr(report, "wasxfail"):
            del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_forbidden(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield  # a module-level skip or importorskip skips the whole file at collection
    _fail_forbidden(outcome.get_result())


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _require_native_kernels() -> None:
    """Every test fails (does not skip) when the compiled CPU kernels are missing."""
    err = _native_import_error()
    if err is not None:
        pytest.fail(
            f"vdengine._C, the compiled CPU kernels, does not import ({err}). Build them with "
            f"`pip install .` or `scripts/dev_build.sh`; the test suite fails without them.",
            pytrace=False,
        )


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator with a fixed seed: every random draw in a test is reproducible."""
    return torch.Generator().manual_seed(20240601)


@pytest.fixture
def poison_outputs():
    """Fill every vdengine op output with NaN before its kernel runs (for this test)."""
    from vdengine.ops import _checks

    with _checks.poison_outputs():
        yield


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP_REASON)
    return torch.device("cuda", torch.cuda.current_device())
