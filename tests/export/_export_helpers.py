"""Helpers of the export tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch


def make_tiny_model(seed: int = 0):
    """A tiny_config VideoUNet whose zero-initialised layers are perturbed, so that every layer
    (PosGN tables, temporal branches, output conv) contributes to the output."""
    from vdengine.models import VideoUNet, tiny_config

    torch.manual_seed(seed)
    net = VideoUNet(tiny_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net.eval()
