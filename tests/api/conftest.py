"""A tiny trained-shape model saved to disk, so API/CLI tests run in seconds."""

from __future__ import annotations

import pytest
import torch

from vdengine.models import VideoUNet, save_model, tiny_config


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = VideoUNet(tiny_config(context=True))
    return str(save_model(model, tmp_path_factory.mktemp("tiny_model")))
