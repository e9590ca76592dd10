"""save_model / load_model round trip and every loading error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vdengine.models import (
    VideoUNet,
    available_models,
    load_model,
    loading,
    save_model,
    tiny_config,
)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give zero-initialised weights random values so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "mix_factor" not in name and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture
def saved(tmp_path):
    model = randomize_(VideoUNet(tiny_config())).eval()
    d = save_model(model, tmp_path / "m", extra_metadata={"steps": 3, "hardware": "test"})
    return model, d


def test_round_trip(saved):
    model, d = saved
    assert {p.name for p in d.iterdir()} == {"model.safetensors", "config.json", "training.json"}
    loaded = load_model(d)
    assert loaded.config == model.config and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert loaded.metadata["steps"] == 3
    x = torch.randn(1, 4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 20.0), model.set_ops("reference")(x, 20.0))
    assert load_model(str(d), dtype=torch.float64).conv_in.weight.dtype == torch.float64


def test_shipped_names(saved, tmp_path, monkeypatch):
    _, d = saved
    weights = tmp_path / "weights"
    weights.mkdir()
    d.rename(weights / "balls")
    (weights / "not-a-model").mkdir()
    monkeypatch.setattr(loading, "WEIGHTS_DIR", weights)
    assert available_models() == ["balls"]
    assert isinstance(load_model("balls"), VideoUNet)
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*available: balls"):
        load_model("nope")


def test_missing_files(saved, tmp_path):
    _, d = saved
    (d / "config.json").unlink()
    with pytest.raises(ValueError, match="missing config.json"):
        load_model(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="missing model.safetensors"):
        load_model(empty)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a model directory"):
        load_model(f)


def test_corrupted_weights(saved):
    _, d = saved
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted safetensors"):
        load_model(d)
    (d / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="corrupted safetensors"):
        load_model(d)


def test_invalid_config(saved):
    _, d = saved
    cfg = json.loads((d / "config.json").read_text())
    cfg["prediction_type"] = "x0"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="invalid .*prediction_type"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid"):
        load_model(d)


def _edit(d, fn):
    p = d / "model.safetensors"
    state = load_file(str(p))
    fn(state)
    save_file(state, str(p))


def test_config_weights_mismatch(saved):
    _, d = saved
    _edit(d, lambda s: s.pop("conv_in.weight"))
    with pytest.raises(ValueError, match="missing key 'conv_in.weight'"):
        load_model(d)
    _edit(
        d,
        lambda s: s.update(
            {"conv_in.weight": torch.zeros(16, 28, 3, 3), "extra.w": torch.zeros(1)}
        ),
    )
    with pytest.raises(ValueError, match="unexpected key 'extra.w'"):
        load_model(d)
    _edit(d, lambda s: (s.pop("extra.w"), s.update({"conv_in.weight": torch.zeros(16, 7, 3, 3)})))
    with pytest.raises(
        ValueError, match=r"'conv_in.weight' has shape \(16, 7, 3, 3\), expected \(16, 28, 3, 3\)"
    ):
        load_model(d)
    # A different config with these weights is a mismatch too.
    cfg = json.loads((d / "config.json").read_text())
    cfg["base_channels"] = 32
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config"):
        load_model(d)
