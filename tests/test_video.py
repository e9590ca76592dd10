"""The Video result type (vdengine.video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vdengine.video import Video


def test_from_tensor_maps_range_and_layout():
    x = torch.zeros(2, 3, 3, 4, 5)  # [B, F, 3, H, W]
    x[0, 0, 0, 1, 2] = 1.0  # red channel of pixel (1, 2)
    x[0, 0, 1, 1, 2] = -1.0
    x[1, 2, 2, 3, 4] = 5.0  # clamped
    x[1, 2, 0, 3, 4] = -7.0
    v = Video.from_tensor(x, fps=12)
    assert v.frames.dtype == np.uint8 and v.frames.shape == (2, 3, 4, 5, 3)
    assert v.fps == 12.0
    assert tuple(v.frames[0, 0, 1, 2]) == (255, 0, 128)  # (0 + 1) * 127.5 = 127.5 -> 128
    assert tuple(v.frames[1, 2, 3, 4]) == (0, 128, 255)
    assert (v.frames[0, 1] == 128).all()


def test_from_tensor_rounds():
    vals = torch.tensor(
        [-1.0, -0.999, 0.004, 0.996, 1.0]
    )  # *127.5+127.5: 0, .1275, 128.01, 254.5, 255
    x = vals.view(1, 1, 1, 1, 5).expand(1, 1, 3, 1, 5)
    got = Video.from_tensor(x).frames[0, 0, 0, :, 0].tolist()
    assert got == [0, 0, 128, 254, 255]  # 254.49 -> 254


def test_from_tensor_single_video_and_dtypes():
    v = Video.from_tensor(torch.zeros(4, 3, 8, 8, dtype=torch.bfloat16))
    assert v.frames.shape == (1, 4, 8, 8, 3) and v.batch_size == 1


@pytest.mark.parametrize(
    ("x", "exc", "pattern"),
    [
        (np.zeros((1, 2, 3, 4, 4), np.float32), TypeError, r"^x: expected a torch.Tensor"),
        (torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8), ValueError, r"^x: expected a floating"),
        (torch.zeros(1, 2, 4, 4, 3), ValueError, r"^x: expected shape \[B, F, 3, H, W\]"),
        (torch.zeros(2, 4, 4), ValueError, r"^x: expected shape"),
        (torch.full((1, 1, 3, 2, 2), float("nan")), ValueError, r"^x: contains 12 NaN/inf"),
    ],
)
def test_from_tensor_validation(x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Video.from_tensor(x)


def test_to_tensor_round_trip():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 5, 6, 3), dtype=np.uint8)
    v = Video(frames, fps=8)
    x = v.to_tensor()
    assert x.shape == (2, 3, 3, 5, 6) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(Video.from_tensor(x).frames, frames)


def test_properties_and_repr():
    v = Video(np.zeros((2, 16, 32, 24, 3), np.uint8), fps=8)
    assert len(v) == v.num_frames == 16
    assert v.batch_size == 2 and v.height == 32 and v.width == 24
    assert v.duration == 2.0
    assert repr(v) == "Video(batch_size=2, num_frames=16, height=32, width=24, fps=8)"
    single = Video(np.zeros((4, 8, 8, 3), np.uint8))
    assert single.frames.shape == (1, 4, 8, 8, 3) and single.fps == 8.0


def test_getitem_selects_videos():
    frames = np.arange(3, dtype=np.uint8)[:, None, None, None, None] * np.ones(
        (3, 2, 4, 4, 3), np.uint8
    )
    v = Video(frames, fps=5)
    assert v[1].batch_size == 1 and (v[1].frames == 1).all() and v[1].fps == 5
    assert (v[-1].frames == 2).all()
    assert v[0:2].batch_size == 2
    with pytest.raises(IndexError):
        v[3]


@pytest.mark.parametrize(
    ("frames", "fps", "exc", "pattern"),
    [
        (np.zeros((1, 2, 4, 4, 3), np.float32), 8, ValueError, r"^frames must have dtype uint8"),
        (np.zeros((1, 2, 4, 4), np.uint8), 8, ValueError, r"^frames must have shape"),
        ([[0]], 8, TypeError, r"^frames must be a numpy uint8 array"),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), 0, ValueError, r"^fps must be "),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), "8", TypeError, r"^fps must be "),
    ],
)
def test_validation(frames, fps, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Video(frames, fps=fps)


def test_save(tmp_path):
    frames = np.zeros((2, 3, 8, 8, 3), np.uint8)
    for i in range(3):
        frames[:, i, i, i] = 255  # distinct frames
    out = Video(frames, fps=4).save(tmp_path / "v.gif", upscale=2)
    assert isinstance(out, Path) and out == tmp_path / "v.gif"
    im = Image.open(out)
    assert im.n_frames == 3 and im.size == (2 * 16 + 2, 16)
    out = Video(frames).save(str(tmp_path / "v.png"))
    assert Image.open(out).size == (3 * 8 + 2 * 2, 2 * 8 + 2)
