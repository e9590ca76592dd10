"""vdengine.generate()/load(): shapes, determinism, guidance, errors, the shipped default."""

from __future__ import annotations

import numpy as np
import pytest

import vdengine
from vdengine.models import available_models


def test_generate_shapes_and_dtype(tiny_model_dir):
    video = vdengine.generate(tiny_model_dir, num_frames=4, steps=2, batch_size=3, progress=False)
    assert video.frames.shape == (3, 4, 16, 16, 3)
    assert video.frames.dtype == np.uint8
    assert video.fps > 0


def test_fewer_frames_than_window_is_a_prefix(tiny_model_dir):
    full = vdengine.generate(tiny_model_dir, num_frames=4, steps=2, seed=3, progress=False)
    short = vdengine.generate(tiny_model_dir, num_frames=2, steps=2, seed=3, progress=False)
    np.testing.assert_array_equal(short.frames, full.frames[:, :2])


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "ddpm"])
def test_same_seed_same_frames(tiny_model_dir, sampler):
    kw = {"num_frames": 4, "steps": 3, "batch_size": 2, "sampler": sampler, "progress": False}
    a = vdengine.generate(tiny_model_dir, seed=11, **kw)
    b = vdengine.generate(tiny_model_dir, seed=11, **kw)
    c = vdengine.generate(tiny_model_dir, seed=12, **kw)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_load_is_cached(tiny_model_dir):
    assert vdengine.load(tiny_model_dir) is vdengine.load(tiny_model_dir)


def test_guidance_is_one_forward_and_changes_output(tiny_model_dir):
    pipe = vdengine.load(tiny_model_dir)
    calls = []
    handle = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        pipe.generate(num_frames=4, steps=2, batch_size=2, label=1, guidance_scale=3.0,
                      progress=False)
    finally:
        handle.remove()
    assert calls == [4, 4]  # 2 steps, each one forward over [uncond; cond] = 2 × 2 videos


def test_per_video_labels(tiny_model_dir):
    video = vdengine.generate(tiny_model_dir, num_frames=4, steps=2, batch_size=2, label=[1, 3],
                              guidance_scale=2.0, progress=False)
    assert video.frames.shape[0] == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 99}, "num_frames"),
        ({"steps": 0}, "steps"),
        ({"steps": 5000}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "euler"}, "sampler"),
        ({"label": 7}, "label"),
        ({"label": [1, 2, 3]}, "label"),
        ({"guidance_scale": 2.0}, "label"),
        ({"dtype": "float16"}, "dtype"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments(tiny_model_dir, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vdengine.generate(tiny_model_dir, progress=False, **{"num_frames": 4, **kwargs})


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        vdengine.load("no-such-model")


def test_default_model_ships_and_generates():
    assert "default" in available_models()
    pipe = vdengine.load("default")
    assert pipe.window == 16 and pipe.config.image_size == 32
    video = pipe.generate(num_frames=16, steps=2, progress=False)
    assert video.frames.shape == (1, 16, 32, 32, 3)
