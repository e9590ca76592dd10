"""Tiny VIDM / VideoFusion models whose outputs depend on their inputs (shared by the tests).

Their output convolutions, PosGN modulation MLPs and temporal branches are zero-initialised, so
fresh models would predict the same thing for every label, frame index or conditioning frame;
every all-zero weight tensor is re-randomised here (as tests/_models.py does for VideoUNet).
"""

from __future__ import annotations

import torch

from vdengine.balls.train_families import tiny_family_config
from vdengine.models.families import build_model


def live_family_model(family: str, seed: int = 0, **overrides):
    """A tiny `family` model (16×16, 4 frames, 4 classes), all-zero weights drawn from
    N(0, 0.05²), the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(tiny_family_config(family, **overrides))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1 and not p.any():
                    p.normal_(0.0, 0.05)
    return model.eval()
