"""VideoUNet: shapes over configs, context and label paths, errors, fused-vs-reference parity."""

from __future__ import annotations

import pytest
import torch

from vdengine.models import ModelConfig, VideoUNet, default_config, tiny_config


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give zero-initialised weights random values so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "mix_factor" not in name and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _x(cfg: ModelConfig, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.window, cfg.channels, cfg.image_size, cfg.image_size, generator=g)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"patch_size": 1},
        {"context": False, "num_classes": 0},
        {"prediction_type": "epsilon", "schedule": "linear", "num_res_blocks": 2},
        {
            "channel_mult": (1, 2, 2),
            "attention_levels": (2,),
            "temporal_conv_levels": (1,),
            "image_size": 32,
            "window": 3,
        },
    ],
)
def test_shapes(overrides):
    cfg = tiny_config(**overrides)
    model = VideoUNet(cfg).set_ops("reference")
    x = _x(cfg)
    out = model(x, torch.tensor([10.0, 900.0]))
    assert out.shape == x.shape
    out.sum().backward()  # trains on the reference ops
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fewer_frames_than_window_and_errors():
    cfg = tiny_config()
    model = VideoUNet(cfg).eval()
    with torch.no_grad():
        assert model(_x(cfg)[:, :2], 5.0).shape[1] == 2
        with pytest.raises(ValueError, match="window"):
            model(torch.randn(1, cfg.window + 1, 3, 16, 16), 5.0)
        with pytest.raises(ValueError, match="context_mask"):
            model(_x(cfg), 5.0, context=_x(cfg))
        with pytest.raises(ValueError, match="t must be"):
            model(_x(cfg), torch.tensor([1.0, 2.0, 3.0]))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.randn(1, 2, 3, 14, 14), 5.0)
        unc = VideoUNet(tiny_config(num_classes=0, context=False)).eval()
        with pytest.raises(ValueError, match="unconditional"):
            unc(_x(cfg), 5.0, label=torch.tensor([1, 1]))
        with pytest.raises(ValueError, match="no context"):
            unc(_x(cfg), 5.0, context=_x(cfg), context_mask=torch.ones(2, cfg.window))


def test_context_path():
    cfg = tiny_config()
    assert cfg.in_channels == 7
    model = randomize_(VideoUNet(cfg)).eval().set_ops("reference")
    x, ctx, ctx2 = _x(cfg, seed=0), _x(cfg, seed=1), _x(cfg, seed=2)
    zeros = torch.zeros(2, cfg.window)
    first = zeros.clone()
    first[:, 0] = 1
    with torch.no_grad():
        base = model(x, 50.0)
        # Missing context == an all-zero mask, whatever the context values.
        torch.testing.assert_close(model(x, 50.0, context=ctx, context_mask=zeros), base)
        a = model(x, 50.0, context=ctx, context_mask=first)
        b = model(x, 50.0, context=ctx2, context_mask=first)
        assert not torch.allclose(a, base) and not torch.allclose(a, b)
        # Only the known frames' content matters.
        ctx3 = ctx.clone()
        ctx3[:, 1:] = 7.0
        torch.testing.assert_close(model(x, 50.0, context=ctx3, context_mask=first), a)


def test_label_path():
    cfg = tiny_config()
    model = randomize_(VideoUNet(cfg)).eval().set_ops("reference")
    x = _x(cfg)
    with torch.no_grad():
        null = model(x, 50.0, label=torch.full((2,), cfg.num_classes))
        torch.testing.assert_close(model(x, 50.0), null)  # label None → null class
        a = model(x, 50.0, label=torch.tensor([1, 2]))
        assert not torch.allclose(a, null)
        torch.testing.assert_close(model(x, 50.0, label=torch.tensor([1, 1]))[0], a[0])


def test_default_config_budget():
    cfg = default_config()
    model = VideoUNet(cfg)
    assert cfg.image_size == 32 and cfg.window == 16 and cfg.context and cfg.num_classes == 4
    n = model.num_parameters()
    assert n * 4 <= 25e6 and n < 3_000_000
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 16, 3, 32, 32), 500.0, label=torch.tensor([4, 2]))
    assert out.shape == (2, 16, 3, 32, 32)


def _count_op_calls(monkeypatch) -> dict[str, int]:
    """Count the calls of the fused ops (vdengine.ops.posgn / temporal_attention) from now on."""
    from vdengine import ops

    calls = {"posgn": 0, "temporal_attention": 0}
    for name in calls:
        op = getattr(ops, name)

        def counted(*args, _op=op, _name=name, **kwargs):
            calls[_name] += 1
            return _op(*args, **kwargs)

        monkeypatch.setattr(ops, name, counted)
    return calls


# The compiled CPU kernels are required (conftest fails the suite without them): an error raised by
# a fused op here is a kernel regression and fails the test.
@pytest.mark.parametrize("overrides", [{}, {"patch_size": 1, "head_dim": 32, "base_channels": 32}])
def test_fused_matches_reference(overrides, monkeypatch):
    cfg = tiny_config(**overrides)
    model = randomize_(VideoUNet(cfg), std=0.1).eval()
    x, ctx = _x(cfg, 3, seed=0), _x(cfg, 3, seed=1)
    mask = torch.zeros(3, cfg.window)
    mask[:, :2] = 1
    label = torch.tensor([0, 3, cfg.num_classes])
    calls = _count_op_calls(monkeypatch)
    with torch.no_grad():
        for t in (400.0, torch.tensor([5.0, 500.0, 995.0])):
            ref = model.set_ops("reference")(x, t, label, ctx, mask)
            assert calls == {"posgn": 0, "temporal_attention": 0}  # reference: no kernel
            fused = model.set_ops("fused")(x, t, label, ctx, mask)
            assert calls["posgn"] > 0 and calls["temporal_attention"] > 0  # the kernels ran
            calls.update(posgn=0, temporal_attention=0)
            torch.testing.assert_close(fused, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(dtype):
    # The PosGN coordinate grid is built in float32: it must follow the MLP's dtype (the CUDA
    # default is bfloat16). Reference ops here: the CPU kernels take no float16.
    cfg = tiny_config(context=True)
    model = randomize_(VideoUNet(cfg)).set_ops("reference")
    x = _x(cfg)
    expected = model(x, torch.tensor([300.0]))
    out = model.to(dtype)(x.to(dtype), torch.tensor([300.0]))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.1)
