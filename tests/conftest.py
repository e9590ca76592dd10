"""Shared test configuration.

- The compiled CPU kernels (vdengine._C) are required: without them every test errors at setup
  with a rebuild hint. A broken build must fail the suite, never turn it into skips.
- ``@pytest.mark.cuda`` marks tests that need a GPU: skipped when torch sees no CUDA device. With
  a GPU present they run, and fail if vdengine._C_cuda was not built (rebuild with nvcc on PATH).
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
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda", torch.cuda.current_device())
