"""Streamed video writing: formats, atomic output, validation (vdengine.io)."""

from __future__ import annotations

import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from vdengine import io as vio
from vdengine.io import MAX_PNG_SIDE, SEPARATOR_PX, VideoWriter, save_video


def _frames(f=8, h=32, w=32, b=None, seed=0) -> np.ndarray:
    """Distinct frames (a moving bright square on a noisy background) so no encoder merges them."""
    rng = np.random.default_rng(seed)
    shape = (f, h, w, 3) if b is None else (b, f, h, w, 3)
    x = rng.integers(0, 64, shape, dtype=np.uint8)
    for i in range(f):
        y0, x0 = (2 * i) % max(h - 4, 1), (3 * i) % max(w - 4, 1)
        x[..., i, y0 : y0 + 4, x0 : x0 + 4, :] = 255
    return x


def _probe(path) -> str:
    """The 'Video:' stream line of `ffmpeg -i path`."""
    r = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
        check=False,  # `ffmpeg -i` without an output exits 1 by design
    )
    lines = [line for line in r.stderr.splitlines() if "Video:" in line]
    assert lines, r.stderr
    return lines[0]


def _mp4_size(path) -> tuple[int, int]:
    m = re.search(r", (\d+)x(\d+)", _probe(path))
    return int(m.group(1)), int(m.group(2))


def _listing(d) -> list[str]:
    return sorted(os.listdir(d))


# -- mp4 ------------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_faststart_and_keeps_32x32(tmp_path):
    out = save_video(_frames(16), tmp_path / "a.mp4", fps=8)
    assert out == tmp_path / "a.mp4"
    line = _probe(out)
    assert "h264" in line and "yuv420p" in line, line
    assert _mp4_size(out) == (32, 32)  # not resized to a macro-block multiple
    n, secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert n == 16 and secs == pytest.approx(2.0, abs=0.01)
    data = out.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart: index first
    assert _listing(tmp_path) == ["a.mp4"]


def test_mp4_streamed_in_windows_and_colours_survive(tmp_path):
    path = tmp_path / "s.mp4"
    solid = np.zeros((4, 16, 16, 3), np.uint8)
    solid[:, :, :8] = (255, 0, 0)
    solid[:, :, 8:] = (0, 255, 255)
    with VideoWriter(path, fps=8, upscale=4) as w:
        for _ in range(3):
            w.write(solid)
            assert not path.exists()  # only the temp file exists while streaming
            tmps = [p for p in _listing(tmp_path) if p.startswith(".s.mp4.tmp-")]
            assert len(tmps) == 1 and tmps[0].endswith(".mp4")
        assert w.frames_written == 12
    assert _listing(tmp_path) == ["s.mp4"]
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 12
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["size"] == (64, 64)
    frame = np.frombuffer(next(reader), np.uint8).reshape(64, 64, 3)
    reader.close()
    assert np.abs(frame[32, 10].astype(int) - (255, 0, 0)).max() < 12
    assert np.abs(frame[32, 54].astype(int) - (0, 255, 255)).max() < 12


def test_mp4_odd_size_padded_to_even(tmp_path):
    out = save_video(_frames(4, h=17, w=33), tmp_path / "odd.mp4")
    assert _mp4_size(out) == (34, 18)


def test_mp4_upscale_and_batch_grid(tmp_path):
    assert _mp4_size(save_video(_frames(4), tmp_path / "u.mp4", upscale=4)) == (128, 128)
    # 2 videos: side by side; 4 videos: 2x2; 3 videos: 2x2 with one empty cell
    two = save_video(_frames(4, b=2), tmp_path / "b2.mp4", upscale=2)
    assert _mp4_size(two) == (2 * 64 + SEPARATOR_PX, 64)
    four = save_video(_frames(4, b=4), tmp_path / "b4.mp4")
    assert _mp4_size(four) == (2 * 32 + SEPARATOR_PX, 2 * 32 + SEPARATOR_PX)
    three = save_video(_frames(4, b=3), tmp_path / "b3.mp4")
    assert _mp4_size(three) == (2 * 32 + SEPARATOR_PX, 2 * 32 + SEPARATOR_PX)


def test_tile_batch_layout():
    x = np.zeros((3, 1, 2, 2, 3), np.uint8)
    for i in range(3):
        x[i] = 10 * (i + 1)
    g = vio.tile_batch(x, sep=1)
    assert g.shape == (1, 5, 5, 3)
    assert (g[0, 0:2, 0:2] == 10).all() and (g[0, 0:2, 3:5] == 20).all()
    assert (g[0, 3:5, 0:2] == 30).all()
    assert (g[0, 2] == vio.SEPARATOR_RGB).all() and (g[0, 3:5, 3:5] == vio.SEPARATOR_RGB).all()


# -- gif / png ------------------------------------------------------------------------------


def test_gif_frames_fps_loop_upscale(tmp_path):
    out = save_video(_frames(10), tmp_path / "a.gif", fps=8, upscale=2)
    im = Image.open(out)
    assert im.n_frames == 10
    assert im.size == (64, 64)
    assert im.info["loop"] == 0  # loop forever
    durations = []
    for i in range(im.n_frames):
        im.seek(i)
        durations.append(im.info["duration"])
    assert sum(durations) / len(durations) == pytest.approx(125, abs=3)  # 8 fps
    assert set(durations) <= {120, 130}
    assert _listing(tmp_path) == ["a.gif"]


def test_gif_batch_grid(tmp_path):
    im = Image.open(save_video(_frames(3, b=2), tmp_path / "b.gif"))
    assert im.n_frames == 3 and im.size == (2 * 32 + SEPARATOR_PX, 32)


def test_gif_delays_track_fps():
    d = vio._gif_delays_ms(30, 30.0)
    assert all(x % 10 == 0 and x >= 20 for x in d)
    assert sum(d) == pytest.approx(1000, abs=10)
    assert vio._gif_delays_ms(5, 100.0) == [20] * 5  # browsers clamp shorter delays


def test_png_grid_rows_videos_columns_frames(tmp_path):
    frames = _frames(5, b=3)
    with VideoWriter(tmp_path / "g.png", upscale=2) as w:
        w.write(frames[:, :2])  # streamed in two windows
        w.write(frames[:, 2:])
    im = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    cell = 64 + SEPARATOR_PX
    assert im.shape == (3 * cell - SEPARATOR_PX, 5 * cell - SEPARATOR_PX, 3)
    up = vio.upscale_frames(frames, 2)
    assert (im[1 * cell : 1 * cell + 64, 4 * cell : 4 * cell + 64] == up[1, 4]).all()
    assert _listing(tmp_path) == ["g.png"]


def test_png_too_large_is_a_clear_error(tmp_path):
    n = MAX_PNG_SIDE // 32 + 1
    with pytest.raises(ValueError, match=r"^frames: the png grid would be"):
        save_video(np.zeros((n, 32, 32, 3), np.uint8), tmp_path / "big.png")
    assert _listing(tmp_path) == []


def test_upscale_frames_nearest():
    x = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    y = vio.upscale_frames(x, 3)
    assert y.shape == (1, 6, 6, 3)
    assert (y[0, :3, :3] == x[0, 0, 0]).all() and (y[0, 3:, 3:] == x[0, 1, 1]).all()


# -- atomic output and failures -------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp4", "gif", "png"])
def test_exception_mid_stream_leaves_nothing(tmp_path, ext):
    path = tmp_path / f"out.{ext}"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path) as w:
        w.write(_frames(4))
        w.write(_frames(4))
        raise RuntimeError("boom")
    assert _listing(tmp_path) == []  # no final file, no temp file


@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_failure_keeps_preexisting_file(tmp_path, ext):
    path = tmp_path / f"keep.{ext}"
    path.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt), VideoWriter(path) as w:
        w.write(_frames(4))
        raise KeyboardInterrupt
    assert path.read_bytes() == b"previous"
    assert _listing(tmp_path) == [f"keep.{ext}"]


def test_success_replaces_preexisting_file(tmp_path):
    path = tmp_path / "r.gif"
    path.write_bytes(b"previous")
    save_video(_frames(2), path)
    assert path.read_bytes()[:6] == b"GIF89a"


def test_encoder_failure_raises_and_cleans_up(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="ffmpeg"):
        save_video(_frames(4), path, preset="nosuchpreset")
    assert path.read_bytes() == b"previous"
    assert _listing(tmp_path) == ["bad.mp4"]


def test_size_change_mid_stream(tmp_path):
    path = tmp_path / "c.mp4"
    with (
        pytest.raises(ValueError, match=r"^frames: size changed mid-stream"),
        VideoWriter(path) as w,
    ):
        w.write(_frames(2))
        w.write(_frames(2, h=16))
    assert _listing(tmp_path) == []
    with pytest.raises(ValueError, match=r"^frames: size changed"), VideoWriter(path) as w:
        w.write(_frames(2))
        w.write(_frames(2, b=2))  # batch size is part of the frame size
    assert _listing(tmp_path) == []


def test_no_frames_is_an_error_and_writes_nothing(tmp_path):
    with (
        pytest.raises(ValueError, match=r"^frames: no frames were written"),
        VideoWriter(tmp_path / "e.mp4"),
    ):
        pass
    assert _listing(tmp_path) == []


def test_write_after_close(tmp_path):
    w = VideoWriter(tmp_path / "x.gif")
    w.write(_frames(2))
    assert w.close() == tmp_path / "x.gif"
    with pytest.raises(ValueError, match="closed"):
        w.write(_frames(2))


def test_abort_without_context_manager(tmp_path):
    w = VideoWriter(tmp_path / "x.mp4")
    w.write(_frames(2))
    w.abort()
    assert _listing(tmp_path) == []


# -- validation (before anything is written) --------------------------------------------------


def test_unsupported_extension_lists_supported(tmp_path):
    with pytest.raises(
        ValueError, match=r"^path: unsupported extension '\.avi'.*\.mp4, \.gif, \.png"
    ):
        VideoWriter(tmp_path / "a.avi")
    with pytest.raises(ValueError, match=r"^path: unsupported extension '\(none\)'"):
        VideoWriter(tmp_path / "noext")
    VideoWriter(tmp_path / "UPPER.MP4").abort()  # extension is case-insensitive


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match=r"^path: directory .* does not exist"):
        VideoWriter(tmp_path / "nope" / "a.mp4")


def test_path_is_a_directory(tmp_path):
    d = tmp_path / "dir.mp4"
    d.mkdir()
    with pytest.raises(ValueError, match=r"^path: .* is a directory"):
        VideoWriter(d)


def test_directory_not_writable(tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode)
    )
    with pytest.raises(ValueError, match=r"^path: directory .* is not writable"):
        VideoWriter(tmp_path / "a.mp4")


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf")])
def test_bad_fps(tmp_path, fps):
    with pytest.raises(ValueError, match=r"^fps must be "):
        VideoWriter(tmp_path / "a.mp4", fps=fps)


@pytest.mark.parametrize("fps", ["8", None, True])
def test_fps_wrong_type(tmp_path, fps):
    with pytest.raises(TypeError, match=r"^fps must be "):
        VideoWriter(tmp_path / "a.mp4", fps=fps)


@pytest.mark.parametrize(("upscale", "exc"), [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_bad_upscale(tmp_path, upscale, exc):
    with pytest.raises(exc, match=r"^upscale must be "):
        VideoWriter(tmp_path / "a.mp4", upscale=upscale)


def test_bad_crf(tmp_path):
    with pytest.raises(ValueError, match=r"^crf must be in \[0, 51\], got 60"):
        VideoWriter(tmp_path / "a.mp4", crf=60)


@pytest.mark.parametrize(
    ("frames", "pattern"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), r"^frames must have dtype uint8"),
        (np.zeros((8, 8, 3), np.uint8), r"^frames must have shape \[F, H, W, 3\] or \[B, F, H, W, 3\]"),
        (np.zeros((1, 1, 2, 8, 8, 3), np.uint8), r"^frames must have shape"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"^frames must have shape .*RGB last"),
        (np.zeros((2, 3, 8, 8), np.uint8), r"^frames must have shape .*RGB last"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"^frames must have no empty dimension"),
    ],
)
def test_bad_frames(tmp_path, frames, pattern):
    with pytest.raises(ValueError, match=pattern):
        save_video(frames, tmp_path / "a.mp4")
    w = VideoWriter(tmp_path / "b.mp4")
    with pytest.raises(ValueError, match=pattern):
        w.write(frames)
    w.abort()
    assert _listing(tmp_path) == []


def test_frames_not_an_array(tmp_path):
    with pytest.raises(TypeError, match=r"^frames must be a numpy uint8 array.*from_tensor"):
        save_video(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), tmp_path / "a.mp4")
    assert _listing(tmp_path) == []
