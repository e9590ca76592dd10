"""vdengine.generate()/load(): shapes, determinism, guidance, conditioning, errors, the default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vdengine
from vdengine.api import DEFAULT_UPSCALE
from vdengine.longvideo import Autoregressive, SharedNoise, Sliding
from vdengine.models import available_models

FAST = {"steps": 2, "progress": False}


def test_generate_shapes_and_dtype(tiny_model_dir):
    video = vdengine.generate(tiny_model_dir, num_frames=4, batch_size=3, **FAST)
    assert video.frames.shape == (3, 4, 16, 16, 3)
    assert video.frames.dtype == np.uint8
    assert video.fps > 0


def test_fewer_frames_than_the_window_samples_the_window_and_keeps_a_prefix(tiny_model_dir):
    pipe = vdengine.load(tiny_model_dir)
    frames_seen = []
    handle = pipe.model.register_forward_hook(lambda m, a, o: frames_seen.append(a[0].shape[1]))
    try:
        short = pipe.generate(num_frames=2, seed=3, **FAST)
    finally:
        handle.remove()
    full = pipe.generate(num_frames=4, seed=3, **FAST)
    assert frames_seen == [4, 4]  # the model's window, what it was trained on
    np.testing.assert_array_equal(short.frames, full.frames[:, :2])
    # Not a trivially equal slice: the video changes along time.
    assert not np.array_equal(full.frames[:, :2], full.frames[:, 2:])


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "ddpm"])
def test_same_seed_same_frames(tiny_model_dir, sampler):
    kw = {"num_frames": 4, "steps": 3, "batch_size": 2, "sampler": sampler, "progress": False}
    a = vdengine.generate(tiny_model_dir, seed=11, **kw)
    b = vdengine.generate(tiny_model_dir, seed=11, **kw)
    c = vdengine.generate(tiny_model_dir, seed=12, **kw)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_generator_is_accepted_where_seed_is(tiny_model_dir):
    by_seed = vdengine.generate(tiny_model_dir, seed=5, **FAST)
    by_gen = vdengine.generate(tiny_model_dir, generator=torch.Generator().manual_seed(5), **FAST)
    np.testing.assert_array_equal(by_seed.frames, by_gen.frames)
    long_seed = vdengine.generate(tiny_model_dir, num_frames=7, long_video="sliding", seed=5,
                                  **FAST)
    long_gen = vdengine.generate(tiny_model_dir, num_frames=7, long_video="sliding",
                                 generator=torch.Generator().manual_seed(5), **FAST)
    np.testing.assert_array_equal(long_seed.frames, long_gen.frames)
    with pytest.raises(ValueError, match="seed= or generator="):
        vdengine.generate(tiny_model_dir, seed=1, generator=torch.Generator(), **FAST)


def test_load_is_cached(tiny_model_dir):
    assert vdengine.load(tiny_model_dir) is vdengine.load(tiny_model_dir)


def test_guidance_is_one_forward_and_changes_output(tiny_model_dir):
    pipe = vdengine.load(tiny_model_dir)
    calls = []
    handle = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        guided = pipe.generate(num_frames=4, batch_size=2, label=1, guidance_scale=3.0, **FAST)
    finally:
        handle.remove()
    assert calls == [4, 4]  # 2 steps, each one forward over [uncond; cond] = 2 × 2 videos
    plain = pipe.generate(num_frames=4, batch_size=2, label=1, **FAST)
    assert not np.array_equal(guided.frames, plain.frames)


def test_per_video_labels_condition_their_own_video(tiny_model_dir):
    kw = {"num_frames": 4, "batch_size": 2, "guidance_scale": 2.0, "seed": 4, **FAST}
    a = vdengine.generate(tiny_model_dir, label=[1, 3], **kw)
    b = vdengine.generate(tiny_model_dir, label=[1, 1], **kw)
    np.testing.assert_array_equal(a.frames[0], b.frames[0])  # same label, same noise
    assert not np.array_equal(a.frames[1], b.frames[1])  # label 3 vs 1


def test_long_video_strategy_objects_and_names_agree(tiny_model_dir):
    kw = {"num_frames": 9, "seed": 2, **FAST}
    by_object = vdengine.generate(tiny_model_dir, long_video=Sliding(stride=2), **kw)
    by_text = vdengine.generate(tiny_model_dir, long_video="sliding(stride=2)", **kw)
    np.testing.assert_array_equal(by_object.frames, by_text.frames)
    other = vdengine.generate(tiny_model_dir, long_video=Sliding(stride=3), **kw)
    assert not np.array_equal(by_object.frames, other.frames)
    ar = vdengine.generate(tiny_model_dir, label=2, long_video=Autoregressive(
        context_frames=1, noise=SharedNoise(0.5)), **kw)
    assert ar.frames.shape == (1, 9, 16, 16, 3)


def test_cli_and_api_upscale_defaults_agree():
    from vdengine.cli import build_parser

    args = build_parser().parse_args(["generate", "--out", "x.mp4"])
    assert args.upscale == DEFAULT_UPSCALE


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 99}, "num_frames"),
        ({"steps": 0}, "steps"),
        ({"steps": 5000}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "nope"}, "sampler"),
        ({"label": 7}, "label"),
        ({"label": [1, 2, 3]}, "label"),
        ({"guidance_scale": 2.0}, "label"),
        ({"dtype": "float16"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"prompt_embeds": 1}, "prompt_embeds"),
        ({"sampler": "dpmpp_2m", "eta": 0.5}, "eta"),
        ({"long_video": "sliding(strid=2)"}, "strid"),
        ({"long_video": Sliding(window=9)}, "window"),
        ({"output_type": "latents"}, "output_type"),
        ({"latents": torch.zeros(1, 3, 3, 16, 16)}, "latents"),
    ],
)
def test_bad_arguments(tiny_model_dir, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vdengine.generate(tiny_model_dir, progress=False, **{"num_frames": 4, **kwargs})


def test_latents_replace_the_drawn_noise(tiny_model_dir):
    pipe = vdengine.load(tiny_model_dir)
    noise = torch.randn((1, 4, 3, 16, 16), generator=torch.Generator().manual_seed(9))
    given = pipe.generate(latents=noise, **FAST)
    drawn = pipe.generate(seed=9, **FAST)  # the same draw
    np.testing.assert_array_equal(given.frames, drawn.frames)
    latent = pipe.generate(latents=noise, output_type="latent", **FAST)
    assert latent.shape == (1, 4, 3, 16, 16) and latent.dtype == torch.float32


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        vdengine.load("no-such-model")


def test_default_model_ships_and_generates():
    assert "default" in available_models()
    pipe = vdengine.load("default")
    assert pipe.window == 16 and pipe.spec.sample_size == (32, 32)
    video = pipe.generate(num_frames=16, **FAST)
    assert video.frames.shape == (1, 16, 32, 32, 3)


def test_bfloat16_on_the_cpu_follows_float32(tiny_model_dir):
    kw = {"num_frames": 4, "steps": 4, "batch_size": 2, "seed": 3, "label": 1,
          "guidance_scale": 2.0, "progress": False, "output_type": "pt"}
    fp32 = vdengine.generate(tiny_model_dir, dtype="float32", **kw)
    bf16_pipe = vdengine.load(tiny_model_dir, dtype="bfloat16")
    assert next(bf16_pipe.model.parameters()).dtype == torch.bfloat16
    bf16 = bf16_pipe.generate(**kw)
    assert bf16.shape == fp32.shape and torch.isfinite(bf16).all()
    # bf16 keeps 8 mantissa bits: the videos agree to a few percent of the [0, 1] range
    assert (bf16.float() - fp32.float()).abs().mean() < 0.02


def test_the_cpu_default_runs_channels_last():
    pipe = vdengine.load("default", device="cpu")
    assert pipe.model.channels_last
    assert pipe.model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_compiled_pipeline_matches_eager(tiny_model_dir):
    kw = {"num_frames": 4, "steps": 2, "batch_size": 1, "seed": 5, "progress": False,
          "output_type": "pt"}
    eager = vdengine.generate(tiny_model_dir, dtype="float32", **kw)  # float32: rounding-free
    compiled = vdengine.load(tiny_model_dir, dtype="float32", compile=True)
    assert compiled.backend == "torch-compiled" and compiled is not vdengine.load(tiny_model_dir)
    torch.testing.assert_close(compiled.generate(**kw), eager, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("compile_arg, error", [("yes", TypeError), (1, TypeError)])
def test_compile_argument_is_checked(tiny_model_dir, compile_arg, error):
    with pytest.raises(error, match="compile"):
        vdengine.load(tiny_model_dir, compile=compile_arg)


def test_compile_refuses_exported_graphs(tmp_path):
    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"not read")
    with pytest.raises(ValueError, match="compile=True applies to PyTorch models"):
        vdengine.load(str(graph), compile=True)
