"""Fixtures for the diffusers adapter tests: a seeded generator and the tiny UNets (_diffusers_tiny.py)."""

from __future__ import annotations

import _diffusers_tiny as _tiny
import pytest


@pytest.fixture(scope="module")
def tiny_unets():
    """One tiny live model per family, built once per test module (tests must not modify them)."""
    return {name: make() for name, make in _tiny.UNETS.items()}
