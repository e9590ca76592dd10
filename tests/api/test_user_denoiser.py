"""A user-written module (neither VideoUNet nor diffusers) through load()/generate(): guidance,
batching and a long-video strategy — the example of docs/denoisers.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vdengine
from vdengine.denoiser import Denoiser, DenoiserSpec
from vdengine.longvideo import Autoregressive, Sliding
from vdengine.schedules import NoiseSchedule


class Conv3dDenoiser(nn.Module):
    """ε-prediction with 3-D convolutions; labels 1..4, label 0 is "unconditional"."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.spec = DenoiserSpec(
            name="conv3d", channels=3, sample_size=(16, 16), window=8,
            prediction_type="epsilon", schedule=NoiseSchedule("linear"),
            conditioning=("label",), null_conditioning={"label": 0}, num_classes=5)
        self.embed = nn.Embedding(5, width)
        self.conv_in = nn.Conv3d(3, width, 3, padding=1)
        self.conv_out = nn.Conv3d(width, 3, 3, padding=1)

    def forward(self, x, t, label):  # x [B, F, C, H, W], t [1], label [B]
        h = self.conv_in(x.transpose(1, 2))  # Conv3d wants [B, C, F, H, W]
        h = h + self.embed(label)[:, :, None, None, None] + (t / 1000).view(-1, 1, 1, 1, 1)
        return self.conv_out(F.silu(h)).transpose(1, 2)


@pytest.fixture
def spied():
    torch.manual_seed(0)
    net = Conv3dDenoiser().eval()
    calls = []
    net.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((tuple(args[0].shape), kwargs["label"].tolist())),
        with_kwargs=True)
    return net, calls


def test_a_user_module_is_a_denoiser(spied):
    net, _ = spied
    assert isinstance(net, Denoiser)
    pipe = vdengine.load(net)
    assert pipe.model is net and pipe.window == 8 and pipe.backend == "module"


def test_guidance_batching_one_forward_per_step(spied):
    net, calls = spied
    pipe = vdengine.load(net)
    guided = pipe.generate(num_frames=8, steps=3, batch_size=2, label=[1, 3],
                           guidance_scale=3.0, seed=0, progress=False)
    assert guided.frames.shape == (2, 8, 16, 16, 3)
    # 3 steps, each one forward of [uncond; cond] rows: null labels first.
    assert calls == [((4, 8, 3, 16, 16), [0, 0, 1, 3])] * 3
    calls.clear()
    plain = pipe.generate(num_frames=8, steps=3, batch_size=2, label=[1, 3], seed=0,
                          progress=False)
    assert calls == [((2, 8, 3, 16, 16), [1, 3])] * 3
    assert not np.array_equal(guided.frames, plain.frames)


def test_sliding_long_video_streams_windows(spied, tmp_path):
    net, calls = spied
    pipe = vdengine.load(net)
    path = pipe.generate(num_frames=20, steps=2, label=2, long_video=Sliding(stride=4),
                         output=tmp_path / "long.mp4", progress=False)
    assert path.is_file() and path.stat().st_size > 0
    # Windows of the model's 8 frames; starts 0, 4, 8, 12: two per forward (window_batch 2).
    assert {shape[1] for shape, _ in calls} == {8}
    assert [shape[0] for shape, _ in calls] == [2, 2] * 2


def test_context_strategies_are_refused_without_context(spied):
    net, _ = spied
    with pytest.raises(ValueError, match="no context conditioning"):
        vdengine.load(net).generate(num_frames=20, steps=2, long_video=Autoregressive(),
                                    progress=False)


def test_a_module_without_spec_is_refused():
    with pytest.raises(TypeError, match="Denoiser"):
        vdengine.load(nn.Conv3d(3, 3, 1))
