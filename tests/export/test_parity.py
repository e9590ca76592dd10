"""The issue's parity requirement: on the shipped default model at 8 steps, the same noise gives
videos within 2 uint8 levels (max abs pixel difference) on the torch backend (fused C++ ops) and
on its exported graph (onnxruntime's CPU provider, loaded from the file alone), through the
engine's DDIM loop and conditioning path."""

from __future__ import annotations

import numpy as np
import pytest
from _export_helpers import sample_frames

from vdengine.models import load_model
from vdengine.runtime import load_graph


@pytest.mark.parametrize("kwargs", [
    {"batch": 1},
    {"batch": 2, "label": [1, 3], "guidance_scale": 3.0},
], ids=["unconditional", "labels+guidance"])
def test_onnxruntime_matches_torch_default_model(default_onnx, kwargs):
    common = {"frames": 16, "steps": 8, "seed": 0, **kwargs}
    ref = sample_frames(load_model("default"), **common)
    got = sample_frames(load_graph(default_onnx, "cpu", check_against="default"), **common)
    assert got.shape == ref.shape
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 2, f"max abs pixel difference {diff.max()} (mean {diff.mean():.4f})"
