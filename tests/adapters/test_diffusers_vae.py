"""decode_latents: chunked decoding to frames in [-1, 1], as diffusers' video pipelines decode."""

from __future__ import annotations

import _diffusers_calls as _calls
import _diffusers_tiny as _tiny
import pytest
import torch

from vdengine.adapters.diffusers import decode_latents


@pytest.fixture(scope="module")
def vaes():
    return {"2d": _tiny.vae(), "temporal": _tiny.temporal_vae()}


def test_2d_vae_decodes_every_frame(vaes):
    vae = vaes["2d"]
    latents = _calls.rand(2, 3, 4, 4, 4, seed=0)
    frames = decode_latents(vae, latents, decode_chunk_size=2)
    assert frames.shape == (2, 3, 3, 4, 4)
    with torch.no_grad():
        expected = vae.decode(latents.flatten(0, 1) / vae.config.scaling_factor).sample
    torch.testing.assert_close(frames, expected.clamp(-1, 1).reshape(2, 3, 3, 4, 4),
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(decode_latents(vae, latents, 1), frames, atol=1e-6, rtol=1e-6)
    assert frames.min() >= -1 and frames.max() <= 1


def test_temporal_vae_gets_num_frames_per_chunk(vaes):
    """StableVideoDiffusionPipeline.decode_latents: chunks over the flattened B·F frames, each
    decoded with num_frames = its length."""
    vae = vaes["temporal"]
    latents = _calls.rand(2, 3, 4, 4, 4, seed=1)
    got = decode_latents(vae, latents, decode_chunk_size=4)
    flat = latents.flatten(0, 1) / vae.config.scaling_factor
    with torch.no_grad():
        chunks = [vae.decode(flat[i:i + 4], num_frames=flat[i:i + 4].shape[0]).sample
                  for i in range(0, 6, 4)]
    expected = torch.cat(chunks).clamp(-1, 1).reshape(2, 3, 3, 4, 4)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # the temporal decoder mixes frames: another chunking gives another result
    assert (decode_latents(vae, latents, 6) - got).abs().max() > 1e-4


def test_bad_arguments(vaes):
    with pytest.raises(ValueError, match=r"latents must be a \[B, F, C, H, W\] tensor"):
        decode_latents(vaes["2d"], torch.zeros(3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"decode_chunk_size must be a positive int"):
        decode_latents(vaes["2d"], torch.zeros(1, 1, 4, 4, 4), 0)
