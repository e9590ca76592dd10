"""A tiny model saved to disk, so API/CLI tests run in seconds.

Its zero-initialised output layers (conv_out, the temporal branches' projections) are
re-randomised: a fresh VideoUNet predicts exactly zero whatever its input, so labels, guidance
and noise would not change its videos and the tests below could not fail."""

from __future__ import annotations

import pytest
import torch

from vdengine.models import VideoUNet, save_model, tiny_config


def live_tiny_model(**overrides) -> VideoUNet:
    torch.manual_seed(0)
    model = VideoUNet(tiny_config(context=True, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(save_model(live_tiny_model(), tmp_path_factory.mktemp("tiny_model")))
