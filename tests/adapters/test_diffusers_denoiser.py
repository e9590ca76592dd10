"""DiffusersDenoiser: its spec, the layout handling at its boundary, and the conditioning it
builds from user keywords (AnimateDiff's per-frame text embeddings, SVD's image latents)."""

from __future__ import annotations

import _diffusers_calls as _calls
import pytest
import torch

from vdengine.adapters.diffusers import DiffusersDenoiser
from vdengine.adapters.diffusers.families import FAMILIES
from vdengine.denoiser import Denoiser

CLASS = {"unet3d": "UNet3DConditionModel", "motion": "UNetMotionModel",
         "svd": "UNetSpatioTemporalConditionModel"}
N, F, H, W = 2, 3, 8, 8


@pytest.fixture(scope="module")
def dens(tiny_unets):
    return {k: DiffusersDenoiser(u, FAMILIES[CLASS[k]].default_scheduler)
            for k, u in tiny_unets.items()}


def spy_forward(den, monkeypatch):
    """Record what the UNet's forward receives (then run it)."""
    seen = {}
    real = den.unet.forward

    def forward(sample, timestep, **kwargs):
        seen.update(sample=sample, timestep=timestep, **kwargs)
        return real(sample, timestep, **kwargs)

    monkeypatch.setattr(den.unet, "forward", forward)
    return seen


def test_specs(dens):
    s = dens["unet3d"].spec
    assert isinstance(dens["unet3d"], Denoiser)
    assert (s.name, s.layout, s.channels, s.window, s.max_frames, s.sample_size) == (
        "UNet3DConditionModel", "BCFHW", 4, None, None, (16, 16))
    assert s.prediction_type == "epsilon" and s.schedule.kind == "scaled_linear"
    assert s.conditioning == ("encoder_hidden_states",) and not s.context
    m = dens["motion"].spec
    assert (m.layout, m.window, m.max_frames, m.schedule.kind) == ("BCFHW", None, 8, "linear")
    v = dens["svd"].spec
    assert (v.layout, v.channels, v.prediction_type) == ("BFCHW", 4, "v_prediction")
    assert v.conditioning == ("encoder_hidden_states", "image_latents", "added_time_ids")


def test_bcfhw_model_gets_a_view_and_returns_the_engine_layout(dens, monkeypatch):
    den = dens["unet3d"]
    seen = spy_forward(den, monkeypatch)
    x = _calls.rand(N, F, 4, H, W, seed=0)
    cond = _calls.forward_rows(den, N, False, _calls.user_inputs("unet3d", N, H, W), x.device)
    out = den(x, torch.tensor([5.0]), **cond)
    sample = seen["sample"]
    assert sample.shape == (N, 4, F, H, W) and sample.data_ptr() == x.data_ptr()  # no copy
    assert torch.equal(sample.permute(0, 2, 1, 3, 4), x)
    assert out.shape == x.shape and out.is_contiguous()


def test_animatediff_text_embeddings_repeated_per_frame(dens, monkeypatch):
    den = dens["motion"]
    seen = spy_forward(den, monkeypatch)
    x = _calls.rand(N, F, 4, H, W, seed=1)
    inputs = _calls.user_inputs("motion", N, H, W)
    cond = _calls.forward_rows(den, N, True, inputs, x.device)
    assert cond["encoder_hidden_states"].shape == (2 * N, _calls.TEXT_LEN, 16)  # per video
    den(torch.cat([x, x]), torch.tensor([5.0]), **cond)
    ehs = seen["encoder_hidden_states"]
    assert ehs.shape == (2 * N * F, _calls.TEXT_LEN, 16)
    videos = torch.cat([inputs["negative_prompt_embeds"], inputs["prompt_embeds"]])
    assert torch.equal(ehs.view(2 * N, F, _calls.TEXT_LEN, 16), videos[:, None].expand(
        2 * N, F, _calls.TEXT_LEN, 16))


def test_svd_image_latents_concatenated_and_zero_for_uncond(dens, monkeypatch):
    den = dens["svd"]
    seen = spy_forward(den, monkeypatch)
    x = _calls.rand(N, F, 4, H, W, seed=2)
    inputs = _calls.user_inputs("svd", N, H, W)
    cond = _calls.forward_rows(den, N, True, inputs, x.device)
    den(torch.cat([x, x]), torch.tensor([0.5]), **cond)
    sample = seen["sample"]
    assert sample.shape == (2 * N, F, 8, H, W)
    assert torch.equal(sample[:, :, :4], torch.cat([x, x]))
    assert torch.equal(sample[N:, :, 4:], inputs["image_latents"][:, None].expand(N, F, 4, H, W))
    assert not sample[:N, :, 4:].any()
    assert not seen["encoder_hidden_states"][:N].any()  # zero image embeddings for uncond
    ids = seen["added_time_ids"]
    assert ids.shape == (2 * N, 3)
    torch.testing.assert_close(ids, torch.tensor([[6.0, 127.0, 0.02]]).expand(2 * N, 3))


def test_svd_added_time_ids_given(dens):
    den = dens["svd"]
    inputs = _calls.user_inputs("svd", 1, H, W)
    for k in ("fps", "motion_bucket_id", "noise_aug_strength"):
        del inputs[k]
    ids = torch.tensor([[9.0, 30.0, 0.1]])
    cond, uncond = den.prepare_conditioning(2, True, added_time_ids=ids, **inputs)
    assert torch.equal(cond["added_time_ids"], ids.expand(2, 3))
    assert torch.equal(uncond["added_time_ids"], ids.expand(2, 3))
    assert cond["encoder_hidden_states"].shape == (2, 1, 32)  # one row expanded to the batch


def test_image_embeddings_without_sequence_axis(dens):
    inputs = _calls.user_inputs("svd", 1, H, W)
    inputs["image_embeddings"] = inputs["image_embeddings"][:, 0]  # [B, D]
    cond, uncond = dens["svd"].prepare_conditioning(1, False, **inputs)
    assert cond["encoder_hidden_states"].shape == (1, 1, 32) and uncond is None


BAD_CONDITIONING = [
    ("unet3d", {"negative_prompt_embeds": torch.zeros(1, 5, 16)}, True, ValueError,
     r"needs prompt_embeds="),
    ("unet3d", {"prompt_embeds": torch.zeros(1, 5, 16)}, True, ValueError,
     r"guidance_scale needs negative_prompt_embeds="),
    ("unet3d", {"prompt_embeds": torch.zeros(1, 5, 15)}, False, ValueError,
     r"prompt_embeds must be \[B or 1, L, 16\]"),
    ("unet3d", {"prompt_embeds": torch.zeros(5, 16)}, False, ValueError,
     r"prompt_embeds must be \[B or 1, L, 16\]"),
    ("unet3d", {"prompt_embeds": torch.zeros(3, 5, 16)}, False, ValueError,
     r"prompt_embeds must have 1 or batch_size=2 rows"),
    ("motion", {"prompt_embeds": [[0.0]]}, False, TypeError, r"prompt_embeds must be a tensor"),
    ("motion", {"prompt_embeds": torch.zeros(1, 5, 16), "label": 3}, False, ValueError,
     r"unexpected argument\(s\) label for UNetMotionModel"),
    ("svd", {"image_embeddings": torch.zeros(1, 1, 32)}, False, ValueError,
     r"needs image_embeddings= .* and image_latents="),
    ("svd", {"image_embeddings": torch.zeros(1, 1, 32), "image_latents": torch.zeros(1, 8, 8, 8)},
     False, ValueError, r"image_latents must be \[B or 1, 4, H, W\], got \[1, 8, 8, 8\]"),
    ("svd", {"image_embeddings": torch.zeros(1, 1, 32), "image_latents": torch.zeros(1, 4, 8, 8),
             "added_time_ids": torch.zeros(1, 3), "fps": 7}, False, ValueError,
     r"give added_time_ids= or fps=, not both"),
    ("svd", {"image_embeddings": torch.zeros(1, 1, 32), "image_latents": torch.zeros(1, 4, 8, 8),
             "added_time_ids": torch.zeros(1, 4)}, False, ValueError,
     r"added_time_ids must be \[B or 1, 3\]"),
    ("svd", {"prompt_embeds": torch.zeros(1, 5, 32)}, False, ValueError,
     r"unexpected argument\(s\) prompt_embeds for UNetSpatioTemporalConditionModel"),
]


@pytest.mark.parametrize("family,kwargs,guided,exc,match", BAD_CONDITIONING)
def test_bad_conditioning(family, kwargs, guided, exc, match, dens):
    with pytest.raises(exc, match=match) as info:
        dens[family].prepare_conditioning(2, guided, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_call_arguments(dens):
    den = dens["unet3d"]
    ehs = torch.zeros(1, 5, 16)
    with pytest.raises(ValueError, match=r"x must be \[N, F, 4, H, W\], got shape \[1, 4, 3, 8, 8\]"):
        den(torch.zeros(1, 4, 3, 8, 8), torch.tensor([1.0]), encoder_hidden_states=ehs)
    with pytest.raises(ValueError, match=r"unexpected conditioning label"):
        den(torch.zeros(1, 3, 4, 8, 8), torch.tensor([1.0]), encoder_hidden_states=ehs, label=ehs)
    with pytest.raises(ValueError, match=r"needs encoder_hidden_states"):
        den(torch.zeros(1, 3, 4, 8, 8), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"image_latents must be \[1, C, 8, 8\]"):
        dens["svd"](torch.zeros(1, 3, 4, 8, 8), torch.tensor([1.0]),
                    encoder_hidden_states=torch.zeros(1, 1, 32),
                    image_latents=torch.zeros(1, 4, 6, 6), added_time_ids=torch.zeros(1, 3))


def test_float64_input_comes_back_float64(dens):
    den = dens["unet3d"]
    x = _calls.rand(1, F, 4, H, W, seed=3).double()
    out = den(x, torch.tensor([5.0]), encoder_hidden_states=torch.zeros(1, 5, 16))
    assert out.dtype == torch.float64
