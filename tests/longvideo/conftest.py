"""Tiny saved models for the long-video tests: random (non-zero) weights, so every window's
output depends on its noise and context and mistakes in the plumbing show."""

from __future__ import annotations

import pytest
import torch

import vdengine
from vdengine.models import VideoUNet, save_model, tiny_config


def _random_model(**overrides) -> VideoUNet:
    gen = torch.Generator().manual_seed(7)
    model = VideoUNet(tiny_config(**overrides))
    with torch.no_grad():  # conv_out is zero-initialised: perturb everything
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="session")
def lv_model_dir(tmp_path_factory) -> str:
    """window 4, 16×16, context conditioning, 4 classes."""
    return str(save_model(_random_model(context=True), tmp_path_factory.mktemp("lv_tiny")))


@pytest.fixture(scope="session")
def lv_nocontext_dir(tmp_path_factory) -> str:
    return str(save_model(_random_model(context=False), tmp_path_factory.mktemp("lv_noctx")))


@pytest.fixture
def pipe(lv_model_dir):
    return vdengine.load(lv_model_dir, device="cpu")
