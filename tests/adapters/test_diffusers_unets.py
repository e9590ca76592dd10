"""Full-model parity: the accelerated DiffusersDenoiser against diffusers' own forward, called as
the pipelines call it (batch 1 and 2, with and without guidance-stacked conditioning), and a spy
on scaled_dot_product_attention showing that nothing attends over the frame axis on vdengine's
path. Tolerance: fp32, atol 5e-5 / rtol 1e-5 on outputs of magnitude ~1 (measured max |diff|
~5e-6)."""

from __future__ import annotations

from dataclasses import fields

import _diffusers_calls as _calls
import pytest
import torch
import torch.nn.functional as F

from vdengine.adapters.diffusers import (
    AccelerationOptions,
    DiffusersDenoiser,
    accelerate,
    acceleration_report,
)
from vdengine.adapters.diffusers.families import FAMILIES
from vdengine.adapters.diffusers.layers import FusedTemporalTransformer

FAMILY_CLASS = {"unet3d": "UNet3DConditionModel", "motion": "UNetMotionModel",
                "svd": "UNetSpatioTemporalConditionModel"}
TOL = {"atol": 5e-5, "rtol": 1e-5}
FRAMES, HEIGHT, WIDTH = 7, 16, 16


def denoiser_for(unet, family, **kw):
    return DiffusersDenoiser(unet, FAMILIES[FAMILY_CLASS[family]].default_scheduler, **kw)


def engine_forward(den, family, latents, t, inputs, guided):
    """The engine's path: conditioning_rows + stack_guidance ([uncond; cond]), one forward."""
    cond = _calls.forward_rows(den, latents.shape[0], guided, inputs, latents.device)
    rows = torch.cat([latents, latents]) if guided else latents
    t_in = t.expand(rows.shape[0])
    return den(rows, t_in, **cond)


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("guided", [False, True])
def test_denoiser_matches_diffusers_forward(family, batch, guided, tiny_unets):
    unet = tiny_unets[family]
    den = denoiser_for(unet, family)
    latents = _calls.rand(batch, FRAMES, 4, HEIGHT, WIDTH, seed=batch)
    t = torch.tensor([37.0]) if family != "svd" else torch.tensor([0.25 * 2.3])
    inputs = _calls.user_inputs(family, batch, HEIGHT, WIDTH)
    expected = _calls.pipeline_forward(unet, family, latents, t, inputs, guided)
    got = engine_forward(den, family, latents, t, inputs, guided)
    assert got.shape == expected.shape == ((2 if guided else 1) * batch, FRAMES, 4, HEIGHT, WIDTH)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, **TOL)
    if guided:  # the two halves differ: the conditioning reached the model
        assert (got[:batch] - got[batch:]).abs().max() > 1e-2
    assert acceleration_report(den.unet).fallbacks == 0


def _spy(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_no_attention_over_frames_on_the_vdengine_path(family, tiny_unets, monkeypatch):
    """FRAMES = 7 differs from every spatial (256, 64) and text (5) or image (1) sequence length:
    an SDPA call with a sequence of 7 attends over frames."""
    unet = tiny_unets[family]
    den = denoiser_for(unet, family)
    latents = _calls.rand(1, FRAMES, 4, HEIGHT, WIDTH, seed=0)
    t = torch.tensor([10.0])
    inputs = _calls.user_inputs(family, 1, HEIGHT, WIDTH)
    calls = _spy(monkeypatch)
    _calls.pipeline_forward(unet, family, latents, t, inputs, guided=True)
    assert any(FRAMES in c for c in calls), "the spy must see diffusers' temporal attention"
    calls.clear()
    engine_forward(den, family, latents, t, inputs, guided=True)
    assert calls, "spatial attention still runs on SDPA"
    assert not any(FRAMES in c for c in calls), f"attention over frames on SDPA: {calls}"


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
@pytest.mark.parametrize("switch", ["temporal_attention", "temporal_conv", "group_norm",
                                    "feed_forward", "spatial_attention"])
def test_each_replacement_alone(family, switch, tiny_unets):
    unet = tiny_unets[family]
    only = AccelerationOptions(**{f.name: f.name == switch for f in fields(AccelerationOptions)})
    den = denoiser_for(unet, family, options=only)
    latents = _calls.rand(2, FRAMES, 4, HEIGHT, WIDTH, seed=3)
    t = torch.tensor([500.0])
    inputs = _calls.user_inputs(family, 2, HEIGHT, WIDTH)
    expected = _calls.pipeline_forward(unet, family, latents, t, inputs, guided=True)
    torch.testing.assert_close(engine_forward(den, family, latents, t, inputs, True), expected,
                               **TOL)


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_no_replacement_is_diffusers_exactly(family, tiny_unets):
    unet = tiny_unets[family]
    den = denoiser_for(unet, family, options=AccelerationOptions.none())
    assert not den.report.replaced
    latents = _calls.rand(1, FRAMES, 4, HEIGHT, WIDTH, seed=4)
    t = torch.tensor([250.0])
    inputs = _calls.user_inputs(family, 1, HEIGHT, WIDTH)
    expected = _calls.pipeline_forward(unet, family, latents, t, inputs, guided=True)
    assert torch.equal(engine_forward(den, family, latents, t, inputs, True), expected)


def test_report_counts_replacements(tiny_unets):
    report = denoiser_for(tiny_unets["unet3d"], "unet3d").report
    # UNet3D tiny: transformer_in + 2 down/up/mid temp_attentions, 8 TemporalConvLayers
    assert report.replaced["TransformerTemporalModel"] == 5
    assert report.replaced["TemporalConvLayer"] == 8
    assert report.replaced["ResnetBlock2D"] == 8
    assert report.kept == [] and report.fallbacks == 0


def test_users_model_is_left_as_diffusers_built_it(tiny_unets):
    unet = tiny_unets["unet3d"]
    latents = _calls.rand(1, FRAMES, 4, HEIGHT, WIDTH, seed=5)
    t = torch.tensor([100.0])
    inputs = _calls.user_inputs("unet3d", 1, HEIGHT, WIDTH)
    before = _calls.pipeline_forward(unet, "unet3d", latents, t, inputs, guided=False)
    accelerated, _ = accelerate(unet)
    assert not any(isinstance(m, FusedTemporalTransformer) for m in unet.modules())
    assert any(isinstance(m, FusedTemporalTransformer) for m in accelerated.modules())
    # the copy shares the weights: no parameter memory duplicated (the fused q/k/v aside)
    shared = {p.data_ptr() for p in unet.parameters()}
    assert sum(p.data_ptr() in shared for p in accelerated.parameters()) > 0.9 * len(shared)
    after = _calls.pipeline_forward(unet, "unet3d", latents, t, inputs, guided=False)
    assert torch.equal(before, after)


def test_options_are_checked():
    with pytest.raises(TypeError, match="AccelerationOptions.group_norm must be a bool"):
        AccelerationOptions(group_norm=1)


# ---- CUDA ------------------------------------------------------------------------------------------


def _to(inputs: dict, device, dtype) -> dict:
    return {k: v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()}


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_denoiser_matches_diffusers(family, dtype, cuda_device):
    """On the GPU kernels: fp32 to float32 rounding, fp16 within fp16 noise of diffusers' fp16
    forward (both compared with the fp32 forward)."""
    import _diffusers_tiny as _tiny

    unet = _tiny.UNETS[family]().to(cuda_device)
    latents = _calls.rand(2, FRAMES, 4, HEIGHT, WIDTH, seed=6).to(cuda_device)
    t = torch.tensor([300.0], device=cuda_device)
    inputs = _to(_calls.user_inputs(family, 2, HEIGHT, WIDTH), cuda_device, torch.float32)
    exact = _calls.pipeline_forward(unet, family, latents, t, inputs, guided=True)
    half = unet.to(dtype)
    reference = _calls.pipeline_forward(half, family, latents.to(dtype), t,
                                        _to(inputs, cuda_device, dtype), guided=True).float()
    den = denoiser_for(half, family)
    got = engine_forward(den, family, latents.to(dtype), t, _to(inputs, cuda_device, dtype),
                         True).float()
    assert den.report.fallbacks == 0
    if dtype == torch.float32:
        torch.testing.assert_close(got, exact, **TOL)
    else:
        ref_err = (reference - exact).abs().max().item()
        assert (got - exact).abs().max().item() <= 2 * ref_err + 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_cuda_forward_has_no_host_sync(family, cuda_device):
    """The denoiser's forward (diffusers' UNet code with vdengine's modules) never waits for the
    GPU: torch raises on any synchronising call in "error" sync-debug mode."""
    import _diffusers_tiny as _tiny

    den = denoiser_for(_tiny.UNETS[family]().to(cuda_device), family)
    latents = _calls.rand(1, FRAMES, 4, HEIGHT, WIDTH, seed=8).to(cuda_device)
    inputs = _to(_calls.user_inputs(family, 1, HEIGHT, WIDTH), cuda_device, torch.float32)
    cond = _calls.forward_rows(den, 1, True, inputs, latents.device)
    x, t = torch.cat([latents, latents]), torch.full((2,), 300.0, device=cuda_device)
    den(x, t, **cond)  # warm up (lazy CUDA initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        den(x, t, **cond)
    finally:
        torch.cuda.set_sync_debug_mode("default")
