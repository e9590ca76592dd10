"""load_diffusers: instances, save_pretrained model directories and pipeline directories, with no
network (socket connections fail during these tests), and one-line errors for bad sources."""

from __future__ import annotations

import json
import socket

import _diffusers_calls as _calls
import _diffusers_tiny as _tiny
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel

from vdengine.adapters.diffusers import DiffusersDenoiser, load_diffusers
from vdengine.adapters.diffusers.layers import (
    FusedSpatioTemporalTransformer,
    FusedTemporalTransformer,
)

F, H, W = 3, 8, 8
PIPELINES = {"unet3d": ("TextToVideoSDPipeline", "AutoencoderKL", _tiny.vae),
             "motion": ("AnimateDiffPipeline", "AutoencoderKL", _tiny.vae),
             "svd": ("StableVideoDiffusionPipeline", "AutoencoderKLTemporalDecoder",
                     _tiny.temporal_vae)}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def one_step(den, family, seed=0):
    x = _calls.rand(1, F, 4, H, W, seed=seed)
    cond, _ = den.prepare_conditioning(1, False, **_calls.user_inputs(family, 1, H, W))
    return den(x, torch.tensor([3.0]), **cond)


def write_pipeline(path, family, unet, scheduler):
    name, vae_name, make_vae = PIPELINES[family]
    index = {"_class_name": name, "_diffusers_version": "0.42.1",
             "unet": ["diffusers", type(unet).__name__],
             "scheduler": ["diffusers", type(scheduler).__name__],
             "vae": ["diffusers", vae_name], "text_encoder": [None, None]}
    path.mkdir()
    (path / "model_index.json").write_text(json.dumps(index))
    unet.save_pretrained(path / "unet")
    scheduler.save_pretrained(path / "scheduler")
    make_vae().save_pretrained(path / "vae")


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_model_directory(family, tiny_unets, tmp_path):
    unet = tiny_unets[family]
    unet.save_pretrained(tmp_path / "unet")
    den, scheduler, vae = load_diffusers(tmp_path / "unet")
    assert isinstance(den, DiffusersDenoiser) and vae is None
    assert scheduler["_class_name"] in ("DDIMScheduler", "EulerDiscreteScheduler")  # default
    reference, _, _ = load_diffusers(unet)
    torch.testing.assert_close(one_step(den, family), one_step(reference, family),
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_pipeline_directory(family, tiny_unets, tmp_path):
    unet = tiny_unets[family]
    if family == "svd":
        sched = EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True,
                                       timestep_type="continuous", beta_schedule="scaled_linear")
    else:
        sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    write_pipeline(tmp_path / "pipe", family, unet, sched)
    den, scheduler, vae = load_diffusers(str(tmp_path / "pipe"))
    assert scheduler["_class_name"] == type(sched).__name__
    assert den.spec.schedule.kind == sched.config.beta_schedule
    assert den.spec.prediction_type == sched.config.prediction_type
    assert type(vae).__name__ == PIPELINES[family][1]
    fused = FusedSpatioTemporalTransformer if family == "svd" else FusedTemporalTransformer
    assert any(isinstance(m, fused) for m in den.unet.modules())
    reference, _, _ = load_diffusers(unet)
    torch.testing.assert_close(one_step(den, family), one_step(reference, family),
                               atol=1e-6, rtol=1e-6)


def test_scheduler_and_vae_arguments(tiny_unets, tmp_path):
    sched = DDIMScheduler(beta_schedule="linear", prediction_type="v_prediction")
    sched.save_pretrained(tmp_path / "sched")
    den, scheduler, vae = load_diffusers(tiny_unets["unet3d"], scheduler=tmp_path / "sched")
    assert scheduler["prediction_type"] == "v_prediction"
    assert den.spec.prediction_type == "v_prediction"
    _, same, _ = load_diffusers(tiny_unets["unet3d"], scheduler=sched)
    assert same is sched
    _tiny.vae().save_pretrained(tmp_path / "vae")
    _, _, vae = load_diffusers(tiny_unets["unet3d"], vae=str(tmp_path / "vae"))
    assert type(vae).__name__ == "AutoencoderKL"


def test_instance_with_another_dtype_is_converted_in_a_copy(tiny_unets):
    unet = tiny_unets["unet3d"]
    den, _, _ = load_diffusers(unet, dtype=torch.float64)
    assert den.dtype == torch.float64
    assert next(unet.parameters()).dtype == torch.float32  # the user's model is untouched
    out = one_step(den, "unet3d")  # CPU kernels are float32: the PyTorch fallbacks run
    assert out.dtype == torch.float32 and den.report.fallbacks > 0
    reference, _, _ = load_diffusers(unet)
    torch.testing.assert_close(out, one_step(reference, "unet3d"), atol=1e-5, rtol=1e-5)


def test_errors_are_one_line(tiny_unets, tmp_path):
    cases = []

    def expect(exc, match, *args, **kwargs):
        with pytest.raises(exc, match=match) as info:
            load_diffusers(*args, **kwargs)
        assert "\n" not in str(info.value)
        cases.append(match)

    expect(ValueError, r"is not a directory", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    expect(ValueError, r"has neither model_index.json \(a pipeline\) nor config.json",
           tmp_path / "empty")
    unet2d = UNet2DConditionModel(block_out_channels=(32, 64), cross_attention_dim=16,
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                  layers_per_block=1, sample_size=8)
    expect(ValueError, r"expected a UNet3DConditionModel, UNetMotionModel or "
                       r"UNetSpatioTemporalConditionModel, got UNet2DConditionModel", unet2d)
    unet2d.save_pretrained(tmp_path / "unet2d")
    expect(ValueError, r"config.json names 'UNet2DConditionModel'; expected a UNet3D",
           tmp_path / "unet2d")
    tiny_unets["unet3d"].save_pretrained(tmp_path / "bin", safe_serialization=False)
    expect(ValueError, r"no .safetensors weights in .*bin", tmp_path / "bin")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text('{"_class_name": "X", "vae": [1, 2]}')
    expect(ValueError, r"has no unet component", tmp_path / "pipe")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    expect(ValueError, r"cannot read .*config.json", tmp_path / "bad")
    expect(TypeError, r"source must be a diffusers video UNet or a directory path, got int", 3)
    expect(TypeError, r"dtype must be a floating-point torch.dtype", tiny_unets["unet3d"],
           dtype=torch.int32)
    expect(ValueError, r"scheduler path .* is not a scheduler_config.json",
           tiny_unets["unet3d"], scheduler=tmp_path / "empty")
    expect(TypeError, r"scheduler must be a diffusers scheduler, a config dict, a path or None",
           tiny_unets["unet3d"], scheduler=3.0)
    expect(TypeError, r"vae must be a diffusers VAE", tiny_unets["unet3d"], vae=3)
    unet2d.save_pretrained(tmp_path / "vae2d")
    expect(ValueError, r"the VAE in .* is a 'UNet2DConditionModel'", tiny_unets["unet3d"],
           vae=tmp_path / "vae2d")
    expect(ValueError, r"trained_betas are not supported", tiny_unets["unet3d"],
           scheduler={"_class_name": "DDIMScheduler", "trained_betas": [0.1, 0.2]})
    assert len(cases) == 14
