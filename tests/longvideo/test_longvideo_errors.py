"""Bad long-video requests: a clear ValueError/TypeError naming the argument, before sampling."""

from __future__ import annotations

import pytest

import vdengine
from vdengine import longvideo as lv


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"long_video": "zigzag"}, ValueError, "long_video: unknown strategy 'zigzag'"),
        ({"long_video": "autoregressive+sliding"}, ValueError, "long_video"),
        ({"long_video": 3}, TypeError, "long_video"),
        ({"long_video": "autoregressive", "context_frames": 4}, ValueError,
         "context_frames must be smaller than the window"),
        ({"long_video": "keyframes", "context_frames": 9}, ValueError, "context_frames"),
        ({"long_video": "autoregressive", "context_frames": 0}, ValueError, "context_frames"),
        ({"long_video": "autoregressive", "window": 3, "context_frames": 3}, ValueError,
         "context_frames"),
        ({"long_video": "sliding", "stride": 0}, ValueError, "stride"),
        ({"long_video": "sliding", "stride": -2}, ValueError, "stride"),
        ({"long_video": "sliding", "stride": 5}, ValueError, "stride"),
        ({"long_video": "sliding", "window": 2, "stride": 3}, ValueError, "stride"),
        ({"long_video": "sliding", "stride": 1.5}, TypeError, "stride"),
        ({"long_video": "shared_noise", "shared_noise_lambda": -0.1}, ValueError,
         "shared_noise_lambda"),
        ({"long_video": "sliding+shared_noise", "shared_noise_lambda": 1.01}, ValueError,
         "shared_noise_lambda"),
        ({"long_video": "shared_noise", "shared_noise_lambda": float("nan")}, ValueError,
         "shared_noise_lambda"),
        ({"long_video": "autoregressive", "context_guidance": 0.5}, ValueError,
         "context_guidance"),
        ({"long_video": "sliding", "window": 5}, ValueError, "window"),
        ({"long_video": "keyframes", "window": 2}, ValueError, "window"),
        ({"long_video": "sliding", "window_batch": 0}, ValueError, "window_batch"),
        ({"long_video": "sliding", "blend": "gaussian"}, ValueError, "blend"),
        ({"long_video": "keyframes", "blend": "uniform"}, ValueError, "blend"),
        # Options that the strategy would silently ignore.
        ({"long_video": "autoregressive", "stride": 2}, ValueError, "stride"),
        ({"long_video": "sliding", "context_frames": 1}, ValueError, "context_frames"),
        ({"long_video": "autoregressive", "shared_noise_lambda": 0.5}, ValueError,
         "shared_noise_lambda"),
        ({"stride": 2}, ValueError, "long_video"),
    ],
)
def test_bad_long_video_arguments(lv_model_dir, kwargs, error, match):
    with pytest.raises(error, match=match):
        vdengine.generate(lv_model_dir, num_frames=20, steps=2, device="cpu", progress=False,
                          **kwargs)


@pytest.mark.parametrize("strategy", ["autoregressive", "keyframes",
                                      "autoregressive+shared_noise"])
def test_context_strategies_need_a_context_model(lv_nocontext_dir, strategy):
    with pytest.raises(ValueError, match=r"long_video=.*no context conditioning"):
        vdengine.generate(lv_nocontext_dir, num_frames=20, steps=2, device="cpu",
                          progress=False, long_video=strategy)


def test_too_long_without_a_strategy_still_fails(lv_model_dir):
    with pytest.raises(ValueError, match="long_video"):
        vdengine.generate(lv_model_dir, num_frames=5, device="cpu", progress=False)


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("strategy", ["autoregressive", "shared_noise", "sliding", "keyframes"])
def test_shorter_than_the_window_works(lv_model_dir, strategy, n):
    video = vdengine.generate(lv_model_dir, num_frames=n, steps=2, device="cpu", progress=False,
                              long_video=strategy)
    assert video.frames.shape == (1, n, 16, 16, 3)


def test_options_resolve_defaults(lv_model_dir):
    cfg = vdengine.load(lv_model_dir, device="cpu").config
    ar = lv.LongVideoOptions.resolve("autoregressive", cfg)
    assert (ar.window, ar.context_frames, ar.context_guidance, ar.stride, ar.noise_lambda) == (
        4, 2, 1.5, None, None)
    sl = lv.LongVideoOptions.resolve("sliding+shared_noise", cfg)
    assert (sl.strategy, sl.stride, sl.noise_lambda, sl.name, sl.blend) == (
        "sliding", 2, 0.5, "sliding+shared_noise", "triangular")
    sn = lv.LongVideoOptions.resolve(("shared_noise",), cfg, shared_noise_lambda=0.25)
    assert (sn.strategy, sn.noise_lambda, sn.name) == ("shared_noise", 0.25, "shared_noise")
    again = lv.LongVideoOptions.resolve(sl, cfg, stride=3)
    assert (again.stride, again.noise_lambda) == (3, 0.5)
