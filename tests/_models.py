"""Tiny VideoUNets whose outputs depend on their inputs, shared by the test folders.

A fresh VideoUNet's output layers (conv_out, the temporal branches' projections) are
zero-initialised, so it predicts exactly zero whatever its input: labels, guidance, context
frames and noise would not change its videos, and tests built on it could not fail. These
layers are re-randomised here. (tests/ is on sys.path through its conftest.py: import this as
``from _models import live_tiny_model``.)
"""

from __future__ import annotations

import torch

from vdengine.models import VideoUNet, tiny_config


def live_tiny_model(context: bool = True, seed: int = 0, **overrides) -> VideoUNet:
    """tiny_config (window 4, 16×16, 4 classes), initialised from torch's RNG seeded with `seed`
    (the caller's RNG state is left as it was), its all-zero weight tensors drawn from
    N(0, 0.05²)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoUNet(tiny_config(context=context, **overrides))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1 and not p.any():
                    p.normal_(0.0, 0.05)
    return model
