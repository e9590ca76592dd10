"""Long videos streamed to disk: written as windows finish, atomic, nothing left on failure."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

import vdengine
from vdengine import io as vio
from vdengine.cli import main
from vdengine.longvideo import Sliding


@pytest.mark.parametrize("strategy", ["autoregressive", "shared_noise", "sliding", "keyframes"])
def test_output_returns_the_path_with_every_frame(pipe, tmp_path, strategy):
    out = tmp_path / "long.mp4"
    path = pipe.generate(num_frames=23, steps=2, progress=False, long_video=strategy,
                         output=out)
    assert isinstance(path, Path) and path == out
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 23
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]  # no temp file left


def test_streamed_file_matches_the_in_memory_video(pipe, tmp_path):
    kw = {"num_frames": 10, "steps": 2, "batch_size": 2, "progress": False,
          "long_video": "autoregressive", "seed": 3}
    video = pipe.generate(**kw)
    path = pipe.generate(**kw, output=tmp_path / "v.png")  # lossless grid: videos x frames
    grid = iio.imread(path)[..., :3]
    sep = vio.SEPARATOR_PX
    assert grid.shape == (2 * 16 + sep, 10 * 16 + 9 * sep, 3)
    for b in range(2):
        for f in range(10):
            y, x = b * (16 + sep), f * (16 + sep)
            np.testing.assert_array_equal(grid[y : y + 16, x : x + 16], video.frames[b, f])


def test_frames_are_written_while_sampling_goes_on(pipe, tmp_path, monkeypatch):
    forwards, writes = [], []
    inner = pipe.model.forward

    def forward(*args, **kwargs):
        forwards.append(1)
        return inner(*args, **kwargs)

    real_write = vio.VideoWriter.write

    def write(self, frames):
        writes.append((len(forwards), frames.shape[1]))
        return real_write(self, frames)

    monkeypatch.setattr(pipe.model, "forward", forward)
    monkeypatch.setattr(vio.VideoWriter, "write", write)
    pipe.generate(num_frames=20, steps=2, progress=False, long_video="autoregressive",
                  output=tmp_path / "v.mp4")
    assert len(writes) == 9  # the first window (4 frames), then 2 new frames per window
    assert writes[0][0] == 2 < len(forwards)  # written after the first window's 2 steps
    assert [w[0] for w in writes] == sorted(w[0] for w in writes)
    assert sum(w[1] for w in writes) == 20


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_error_mid_video_leaves_no_file(pipe, tmp_path, monkeypatch, suffix):
    inner = pipe.model.forward
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # after a few windows have been written
            raise RuntimeError("denoiser exploded")
        return inner(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", failing)
    out = tmp_path / f"long{suffix}"
    with pytest.raises(RuntimeError, match="exploded"):
        pipe.generate(num_frames=30, steps=2, progress=False, long_video="autoregressive",
                      output=out)
    assert not list(tmp_path.iterdir())  # neither the final name nor a temporary file


def test_error_keeps_an_existing_file_untouched(pipe, tmp_path, monkeypatch):
    out = tmp_path / "long.mp4"
    out.write_bytes(b"previous video")

    def failing(*args, **kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(pipe.model, "forward", failing)
    with pytest.raises(RuntimeError):
        pipe.generate(num_frames=12, steps=2, progress=False, long_video="sliding", output=out)
    assert out.read_bytes() == b"previous video"
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def test_bad_output_path_fails_before_sampling(pipe, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("sampled before checking the output path")

    monkeypatch.setattr(pipe.model, "forward", never)
    with pytest.raises(ValueError, match="extension"):
        pipe.generate(num_frames=12, progress=False, long_video="sliding",
                      output=tmp_path / "v.avi")
    with pytest.raises(ValueError, match="does not exist"):
        pipe.generate(num_frames=3, progress=False, output=tmp_path / "no" / "v.mp4")


def test_plain_generate_with_output(lv_model_dir, tmp_path):
    path = vdengine.generate(lv_model_dir, num_frames=3, steps=2, progress=False,
                             device="cpu", output=tmp_path / "short.mp4")
    assert path == tmp_path / "short.mp4"
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 3


def test_cli_long_video(lv_model_dir, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    text = "keyframes(context_guidance=1)+shared_noise(lam=0.3)"
    rc = main(["generate", "--model", lv_model_dir, "--frames", "30", "--steps", "2",
               "--long-video", text, "--device", "cpu", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert text in capsys.readouterr().out
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 30
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def test_cli_settings_reach_the_strategy(lv_model_dir, tmp_path):
    # The CLI's text and the API's object give the same video (lossless .png grid).
    path = tmp_path / "cli.png"
    assert main(["generate", "--model", lv_model_dir, "--frames", "9", "--steps", "2",
                 "--seed", "3", "--long-video", "sliding(stride=3, blend=uniform)",
                 "--device", "cpu", "--out", str(path), "--no-progress"]) == 0
    api = vdengine.load(lv_model_dir, device="cpu").generate(
        num_frames=9, steps=2, seed=3, progress=False,
        long_video=Sliding(stride=3, blend="uniform"), output=tmp_path / "api.png")
    other = vdengine.load(lv_model_dir, device="cpu").generate(
        num_frames=9, steps=2, seed=3, progress=False, long_video=Sliding(stride=3),
        output=tmp_path / "other.png")
    np.testing.assert_array_equal(iio.imread(path), iio.imread(api))
    assert not np.array_equal(iio.imread(path), iio.imread(other))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--long-video", "zigzag"], "long_video: unknown strategy 'zigzag'"),
        (["--long-video", "sliding(stride=0)"], "Sliding.stride must be >= 1"),
        (["--long-video", "sliding(stride=9)"], "Sliding.stride must be in [1, window=4]"),
        (["--long-video", "autoregressive(blend=uniform)"],
         "autoregressive has no setting 'blend'"),
        (["--long-video", "autoregressive(context_frames=4)"],
         "Autoregressive.context_frames must be smaller than the window"),
        (["--long-video", "shared_noise(lam=2)"], "SharedNoise.lam (λ) must be in [0, 1]"),
        (["--long-video", "sliding+autoregressive"], "cannot be combined"),
    ],
)
def test_cli_long_video_errors(lv_model_dir, tmp_path, capsys, args, message):
    rc = main(["generate", "--model", lv_model_dir, "--frames", "30", "--steps", "2",
               "--device", "cpu", "--no-progress", "--out", str(tmp_path / "v.mp4"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_cli_has_no_separate_long_video_flags(lv_model_dir, tmp_path, capsys):
    # Settings travel inside --long-video's text; the old flags are unknown arguments.
    for flag in ("--stride", "--shared-noise-lambda", "--context-frames", "--blend"):
        with pytest.raises(SystemExit) as exit_:
            main(["generate", "--model", lv_model_dir, "--out", str(tmp_path / "v.mp4"),
                  "--long-video", "sliding", flag, "2"])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
