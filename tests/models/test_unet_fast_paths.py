"""The VideoUNet's CPU fast paths: channels-last activations, the temporal conv as a Conv2d, and
the PosGN table cache. Each must give the outputs of the plain path."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _models import live_tiny_model

from vdengine.models import VideoUNet
from vdengine.models.layers import TemporalConvBlock, frames_as_height, height_as_frames


def _inputs(cfg, batch: int, seed: int = 0, frames: int | None = None):
    g = torch.Generator().manual_seed(seed)
    f = frames or cfg.window
    shape = (batch, f, cfg.channels, cfg.image_size, cfg.image_size)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("ops", ["reference", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, frames", [(1, None), (3, None), (2, 3)])
def test_channels_last_matches_nchw(ops, dtype, batch, frames):
    model = live_tiny_model(seed=1).eval().to(dtype)
    x, ctx = _inputs(model.config, batch, frames=frames)
    x, ctx = x.to(dtype), ctx.to(dtype)
    mask = torch.zeros(batch, x.shape[1])
    mask[:, 0] = 1
    label = torch.arange(batch) % (model.config.num_classes + 1)
    with torch.no_grad():
        nchw = model.set_ops(ops)(x, torch.tensor([321.0]), label, ctx, mask)
        cl = copy.deepcopy(model).set_channels_last(True).set_ops(ops)
        out = cl(x, torch.tensor([321.0]), label, ctx, mask)
    tol = {torch.float32: 1e-4, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(out.float(), nchw.float(), atol=tol, rtol=tol)
    assert cl.last_tables.channels_last and not model.last_tables.channels_last


def test_set_channels_last_layouts_and_back():
    model = live_tiny_model().set_channels_last(True)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    model.set_channels_last(False)
    assert all(c.weight.is_contiguous() for c in convs) and not model.channels_last


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("b, f, c, h, w", [(1, 4, 8, 4, 4), (2, 3, 16, 5, 3), (3, 1, 8, 2, 6)])
def test_temporal_conv_block_is_the_conv3d(channels_last, b, f, c, h, w):
    torch.manual_seed(0)
    block = TemporalConvBlock(c, num_groups=4, mix_factor_init=0.3)
    torch.nn.init.normal_(block.conv2.weight, std=0.2)
    x = torch.randn(b * f, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def reference(x: torch.Tensor) -> torch.Tensor:  # the layer as Video LDM writes it: Conv3d
        z = x.unflatten(0, (b, f)).transpose(1, 2)
        r = block.conv1(F.silu(block.norm1(z)))
        r = block.conv2(F.silu(block.norm2(r)))
        return block.merge.merge_residual(x, r.transpose(1, 2).reshape(b * f, c, h, w))

    with torch.no_grad():
        expected = reference(x)
        for ops in ("reference", "fused"):
            block.ops_mode = ops
            torch.testing.assert_close(block(x, f), expected, atol=1e-5, rtol=1e-5)
    view = frames_as_height(x, f)
    assert view.shape == (b, c, f, h * w)
    torch.testing.assert_close(height_as_frames(view, h, w), x, atol=0, rtol=0)
    if channels_last:  # both are views of x's memory
        assert view.data_ptr() == x.data_ptr()


# ---- the PosGN table cache ---------------------------------------------------------------------


def _forward(model: VideoUNet, t: float, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, torch.tensor([t]))


def test_table_cache_hits_across_calls_and_gives_the_same_output():
    model = live_tiny_model().eval().set_ops("fused")
    x, _ = _inputs(model.config, 2)
    cache = model.table_cache
    first = {t: _forward(model, t, x) for t in (999.0, 500.0)}
    assert (cache.hits, cache.misses) == (0, 2) and cache.nbytes > 0
    tables = model.last_tables
    again = {t: _forward(model, t, x) for t in (999.0, 500.0)}
    assert (cache.hits, cache.misses) == (2, 2)
    assert model.last_tables is tables  # the 500 tables, not recomputed
    computed = tables.computed
    _forward(model, 500.0, x)
    assert tables.computed == computed
    for t, out in first.items():
        torch.testing.assert_close(again[t], out, atol=0, rtol=0)
    cold = copy.deepcopy(model)
    cold.table_cache.max_bytes = 0  # disabled: every call computes its tables
    hits = cold.table_cache.hits
    torch.testing.assert_close(_forward(cold, 500.0, x), first[500.0], atol=0, rtol=0)
    _forward(cold, 500.0, x)
    assert cold.table_cache.hits == hits and cold.last_tables is not tables


def test_table_cache_sees_every_weight_change():
    model = live_tiny_model().eval()
    x, _ = _inputs(model.config, 1)
    before = _forward(model, 700.0, x)
    posgn = model.down[0]["blocks"][0].res.norm1
    with torch.no_grad():
        posgn.fc3.weight.add_(0.5)  # in place: an optimizer step
    changed = _forward(model, 700.0, x)
    assert not torch.allclose(changed, before)
    fresh = copy.deepcopy(model)
    fresh.table_cache.max_bytes = 0
    torch.testing.assert_close(changed, _forward(fresh, 700.0, x), atol=0, rtol=0)
    state = live_tiny_model(seed=5).state_dict()
    model.load_state_dict(state)  # copies into the same tensors
    fresh.load_state_dict(state)
    torch.testing.assert_close(_forward(model, 700.0, x), _forward(fresh, 700.0, x), atol=0,
                               rtol=0)


def test_table_cache_is_bounded_and_unused_while_training():
    model = live_tiny_model().eval()
    x, _ = _inputs(model.config, 1)
    _forward(model, 100.0, x)
    one = model.table_cache.nbytes
    model.table_cache.clear()
    model.table_cache.max_bytes = 2 * one  # room for two timesteps, not three
    for t in (100.0, 200.0, 300.0, 100.0, 300.0):
        _forward(model, t, x)
    assert model.table_cache.nbytes == 2 * one
    assert model.table_cache.hits == 1  # 100 kept, 300 never admitted (no eviction)
    model.table_cache.clear()
    model.train()
    _forward(model, 100.0, x)
    model.eval()
    model(x, torch.tensor([100.0]))  # grad enabled: the autograd path computes its own
    assert model.table_cache.nbytes == 0


def test_table_cache_keys_per_video_timesteps():
    model = live_tiny_model().eval()
    x, _ = _inputs(model.config, 2)
    with torch.no_grad():
        a = model(x, torch.tensor([100.0, 900.0]))
        b = model(x, torch.tensor([900.0, 100.0]))
        fresh = copy.deepcopy(model)
        fresh.table_cache.max_bytes = 0
        torch.testing.assert_close(b, fresh(x, torch.tensor([900.0, 100.0])), atol=0, rtol=0)
    assert not torch.allclose(a, b)

