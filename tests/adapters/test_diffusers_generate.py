"""diffusers models through the public API: vdengine.load(instance | directory, scheduler=)
.generate(...) reproduces diffusers' own pipeline loops (UNet3D + DDIM, AnimateDiff +
DPM-Solver++, SVD + Euler with per-frame guidance), long videos beyond AnimateDiff's 32-frame
table run with Sliding windows, and bad input is a one-line error."""

from __future__ import annotations

import _diffusers_calls as _calls
import pytest
import torch
from test_diffusers_sampling import GUIDANCE, SCHEDULERS, STEPS

import vdengine
from vdengine.adapters.diffusers.pipeline_loops import pipeline_loop
from vdengine.longvideo import Autoregressive, SharedNoise, Sliding

F, H, W = 4, 16, 16
REL = 2e-5


def _native(x, family):  # [B, F, C, H, W] → the model's layout
    return x if family == "svd" else x.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
@pytest.mark.parametrize("guided", [False, True])
def test_generate_matches_the_pipeline_loop(family, guided, tiny_unets):
    unet, batch = tiny_unets[family], 2
    scheduler = SCHEDULERS[family]()
    scheduler.set_timesteps(STEPS)
    noise = _calls.rand(batch, F, 4, H, W, seed=11)
    inputs = _calls.user_inputs(family, batch, H, W)
    guidance = GUIDANCE[family] if guided else None
    expected = pipeline_loop(family, unet, scheduler, noise, inputs, guidance)

    pipe = vdengine.load(unet, scheduler=SCHEDULERS[family](), device="cpu")
    assert pipe.backend == "diffusers" and pipe.spec.layout == ("BFCHW" if family == "svd"
                                                               else "BCFHW")
    kw = dict(inputs)
    if guided and family == "svd":
        kw.update(min_guidance_scale=guidance[0], max_guidance_scale=guidance[1])
    elif guided:
        kw.update(guidance_scale=guidance)
    if not guided and family != "svd":
        kw.pop("negative_prompt_embeds")
    got = pipe.generate(steps=STEPS, batch_size=batch, latents=_native(noise, family),
                        output_type="latent", progress=False, **kw)
    got = _native(got, family)  # back to [B, F, C, H, W]
    err = (got - expected).abs().max().item()
    assert err <= REL * max(1.0, expected.abs().max().item()), err


def test_a_saved_model_directory_loads_offline(tiny_unets, tmp_path):
    unet = tiny_unets["unet3d"]
    unet.save_pretrained(tmp_path / "unet3d")
    pipe = vdengine.load(tmp_path / "unet3d", scheduler=SCHEDULERS["unet3d"](), device="cpu")
    inputs = _calls.user_inputs("unet3d", 1, H, W)
    out = pipe.generate(num_frames=F, steps=2, progress=False, latents=torch.zeros(1, 4, F, H, W),
                        prompt_embeds=inputs["prompt_embeds"], output_type="latent")
    assert out.shape == (1, 4, F, H, W)


def test_animatediff_beyond_its_position_table_with_sliding_windows(tiny_unets, tmp_path):
    """diffusers' AnimateDiff fails past its 32-entry position table; vdengine streams a longer
    video with Sliding windows (no context training needed), decoded by the VAE per chunk."""
    import _diffusers_tiny as _tiny

    pipe = vdengine.load(tiny_unets["motion"], scheduler=SCHEDULERS["motion"](),
                         vae=_tiny.vae(), device="cpu")
    limit = pipe.spec.max_frames
    prompt = {"prompt_embeds": _calls.user_inputs("motion", 1, H, W)["prompt_embeds"]}
    with pytest.raises(ValueError, match="long_video"):
        pipe.generate(num_frames=limit + 4, steps=1, progress=False, **prompt)
    frames_per_forward = []
    inner = pipe.model.unet.forward

    def spy(sample, *args, **kwargs):
        frames_per_forward.append(sample.shape[2])
        return inner(sample, *args, **kwargs)

    pipe.model.unet.forward = spy
    try:
        path = pipe.generate(num_frames=limit + 4, steps=1, long_video=Sliding(window=8),
                             output=tmp_path / "long.gif", progress=False, **prompt)
    finally:
        pipe.model.unet.forward = inner
    assert path.is_file() and path.stat().st_size > 0
    assert set(frames_per_forward) == {8}  # windows within the table


def test_bad_input_is_one_line(tiny_unets):
    pipe = vdengine.load(tiny_unets["unet3d"], scheduler=SCHEDULERS["unet3d"](), device="cpu")
    cases = [
        ({"latents": torch.zeros(1, 6, 4, H, W), "num_frames": 6}, "latents"),  # BFCHW, not BCFHW
        ({"latents": torch.zeros(1, 4, F, H, W), "guidance_scale": 3.0}, "negative"),
        ({"latents": torch.zeros(1, 4, F, H, W), "long_video": Autoregressive()}, ""),
    ]
    prompt = _calls.user_inputs("unet3d", 1, H, W)["prompt_embeds"]
    for kwargs, match in cases:
        with pytest.raises((ValueError, TypeError), match=match) as info:
            pipe.generate(steps=1, progress=False, output_type="latent", prompt_embeds=prompt,
                          **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="scheduler"):
        vdengine.load("default", scheduler=SCHEDULERS["unet3d"]())
    from diffusers import PNDMScheduler

    with pytest.raises(ValueError, match="PNDM"):
        vdengine.load(tiny_unets["unet3d"], scheduler=PNDMScheduler(), device="cpu")
    assert SharedNoise  # the noise strategy needs no context: usable by every model type
