"""A tiny model saved to disk, so API/CLI tests run in seconds. Its zero-initialised output
layers are re-randomised (see tests/_models.py): its videos depend on labels, guidance and
noise, so the tests below can fail."""

from __future__ import annotations

import pytest
from _models import live_tiny_model

from vdengine.models import save_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(save_model(live_tiny_model(), tmp_path_factory.mktemp("tiny_model")))
