"""Layers: PosGN tables (shapes, sharing, caching), α merge, temporal layers, ops switch."""

from __future__ import annotations

import math

import pytest
import torch

import vdengine.ops
from vdengine.models import (
    AlphaMerge,
    PosGN,
    PosGNTables,
    TemporalAttention,
    TemporalConvBlock,
    VideoUNet,
    tiny_config,
)
from vdengine.models import layers as L
from vdengine.ops import reference


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give zero-initialised weights random values so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "mix_factor" in name:
                continue
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def test_posgn_tables_shared_over_batch_match_repeated_tables():
    torch.manual_seed(0)
    layer = L.set_ops(randomize_(PosGN(16, 4)), "reference")
    f, b = 4, 3
    shared = PosGNTables(torch.tensor([250.0]), f, window=8, num_train_timesteps=1000)
    scale, shift = shared.table(layer, 8, 8)
    assert scale.shape == shift.shape == (f, 16, 8, 8) and shared.rows == f
    assert scale.is_contiguous() and shift.is_contiguous() and scale.abs().sum() > 0
    per_video = PosGNTables(torch.full((b,), 250.0), f, window=8, num_train_timesteps=1000)
    assert per_video.table(layer, 8, 8)[0].shape == (b * f, 16, 8, 8)
    x = torch.randn(2 * b * f, 16, 8, 8)  # e.g. two guidance halves of b videos
    with torch.no_grad():
        y_shared = layer(x, shared)
        per_all = PosGNTables(torch.full((2 * b,), 250.0), f, window=8, num_train_timesteps=1000)
        y_full = layer(x, per_all)
    torch.testing.assert_close(y_shared, y_full)


def test_posgn_coordinates_cover_minus_one_to_one():
    tab = PosGNTables(torch.tensor([0.0, 999.0]), 4, window=4, num_train_timesteps=1000)
    g = tab.grid(5, 3)
    assert g.shape == (8, 5, 3, 4)
    assert g[:4, ..., 0].eq(-1).all() and g[4:, ..., 0].eq(1).all()  # t, period-major rows
    torch.testing.assert_close(g[:4, 0, 0, 1], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))  # frame
    assert g[..., 2].min() == -1 and g[..., 2].max() == 1 and g[..., 3].max() == 1  # h, w


def test_posgn_fresh_layer_is_groupnorm_and_silu():
    layer = PosGN(8, 2)
    x = torch.randn(4, 8, 5, 5)
    tab = PosGNTables(torch.tensor([10.0]), 4, 4, 1000)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, tab), torch.nn.functional.silu(layer.norm(x)))


def test_tables_computed_once_per_layer_and_forward():
    tab = PosGNTables(torch.tensor([3.0]), 2, 2, 1000)
    layer = PosGN(8, 2)
    a = tab.table(layer, 4, 4)
    b = tab.table(layer, 4, 4)
    assert a[0] is b[0] and tab.computed == 1


@pytest.mark.parametrize(
    "t, rows_per_frame",
    [
        (500.0, 1),
        (torch.tensor([7.0]), 1),
        (torch.tensor([9.0] * 4), 1),
        (torch.tensor([1.0, 2.0, 1.0, 2.0]), 2),
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), 4),
    ],
)
def test_unet_table_rows(t, rows_per_frame):
    cfg = tiny_config()
    model = VideoUNet(cfg).eval().set_ops("reference")
    x = torch.randn(4, cfg.window, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        model(x, t)
    tabs = model.last_tables
    assert tabs.rows == rows_per_frame * cfg.window
    n_posgn = sum(isinstance(m, PosGN) for m in model.modules())
    assert tabs.computed == n_posgn  # each layer's table exactly once per forward


def test_shared_t_equals_per_video_t():
    cfg = tiny_config()
    model = randomize_(VideoUNet(cfg)).eval().set_ops("reference")
    x = torch.randn(3, cfg.window, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        a = model(x, 321.0, label=torch.tensor([1, 2, 3]))
        b = model(x, torch.tensor([321.0] * 3), label=torch.tensor([1, 2, 3]))
        c = model(x[:1], torch.tensor([321.0]), label=torch.tensor([1]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:1], c, atol=1e-5, rtol=1e-5)


def test_alpha_merge_formula():
    m = AlphaMerge(0.5)
    assert float(m.alpha.detach()) == pytest.approx(1 / (1 + math.exp(-0.5)))
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(m(s, t), m.alpha * s + (1 - m.alpha) * t)
    torch.testing.assert_close(m.merge_residual(s, t - s), m(s, t))


@pytest.mark.parametrize("kind", ["attn", "conv"])
def test_alpha_one_disables_temporal_layers(kind):
    f = 4
    layer = (
        TemporalAttention(32, 16, 4, window=f, mix_factor_init=0.0)
        if kind == "attn"
        else TemporalConvBlock(32, 4, mix_factor_init=0.0)
    )
    L.set_ops(randomize_(layer, std=0.5), "reference")
    x = torch.randn(2 * f, 32, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(layer(x, f), x)
        layer.merge.mix_factor.fill_(float("inf"))  # α = sigmoid(∞) = 1
        torch.testing.assert_close(layer(x, f), x, rtol=0, atol=0)


def test_alpha_one_makes_frames_independent():
    cfg = tiny_config(context=False)
    model = randomize_(VideoUNet(cfg), std=0.2).eval().set_ops("reference")
    x = torch.randn(1, cfg.window, 3, cfg.image_size, cfg.image_size)
    x2 = x.clone()
    x2[:, 1:] += torch.randn_like(x2[:, 1:])  # change every frame but the first
    with torch.no_grad():
        assert not torch.allclose(model(x, 100.0)[:, 0], model(x2, 100.0)[:, 0])
        for m in model.alpha_merges():
            m.mix_factor.fill_(float("inf"))
        torch.testing.assert_close(model(x, 100.0)[:, 0], model(x2, 100.0)[:, 0])


def test_temporal_attention_gets_strided_qkv_chunks(monkeypatch):
    seen = {}
    original = reference.temporal_attention

    def spy(q, k, v, num_frames, num_heads, bias=None, scale=None):
        seen.update(q=q, k=k, v=v, f=num_frames, h=num_heads)
        return original(q, k, v, num_frames, num_heads, bias, scale)

    monkeypatch.setattr(reference, "temporal_attention", spy)
    layer = L.set_ops(TemporalAttention(32, 16, 4, window=4, mix_factor_init=0.0), "reference")
    layer(torch.randn(8, 32, 3, 3), 4)
    q, k, v = seen["q"], seen["k"], seen["v"]
    assert q.shape == (8, 9, 32) and seen["h"] == 2 and seen["f"] == 4
    assert q.stride() == (9 * 96, 96, 1) and not q.is_contiguous()
    assert k.data_ptr() - q.data_ptr() == 32 * 4 and v.data_ptr() - q.data_ptr() == 64 * 4


def test_ops_switch(monkeypatch):
    calls = []
    fused_posgn = vdengine.ops.posgn

    def spy(*a, **k):  # stands in for the fused op (its kernel may not be built yet)
        calls.append("fused")
        return reference.posgn(*a, **k)

    monkeypatch.setattr(vdengine.ops, "posgn", spy)
    cfg = tiny_config()
    model = VideoUNet(cfg)
    x = torch.randn(1, cfg.window, 3, cfg.image_size, cfg.image_size)
    model.set_ops("reference")
    with torch.no_grad():
        model(x, 1.0)
    assert calls == []
    model.set_ops("fused")
    with torch.no_grad():
        model(x, 1.0)
    assert len(calls) > 0
    calls.clear()
    model.set_ops("auto")
    model(x, 1.0).sum().backward()  # autograd needed → reference
    assert calls == []
    with torch.no_grad():
        model(x, 1.0)  # inference → fused
    assert len(calls) > 0
    with pytest.raises(ValueError, match="ops mode"):
        model.set_ops("cuda")
    assert fused_posgn is not None
