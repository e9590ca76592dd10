"""Bouncing-balls data: palette, ball counts, geometry, motion with reflections, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vdengine.balls.data import (
    MAX_BALLS,
    PALETTE,
    _fold,
    batch_iterator,
    from_model_range,
    generate_clips,
    to_model_range,
)


@pytest.fixture(scope="module")
def clips32():
    return generate_clips(64, num_frames=16, size=32, generator=1, return_info=True)


def test_palette_is_the_six_fixed_colours():
    assert PALETTE.dtype == np.uint8 and PALETTE.shape == (6, 3)
    assert {tuple(c) for c in PALETTE.tolist()} == {
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (0, 255, 255),
        (255, 0, 255),
    }


def test_shapes_dtypes_labels(clips32):
    frames, labels, info = clips32
    assert frames.shape == (64, 16, 32, 32, 3) and frames.dtype == np.uint8
    assert labels.shape == (64,) and labels.dtype == np.int64
    assert set(labels.tolist()) <= {1, 2, 3} and len(set(labels.tolist())) == 3
    assert info["centers_xy"].shape == (64, 16, MAX_BALLS, 2)
    np.testing.assert_array_equal(info["present"].sum(1), labels)


def test_only_black_or_palette_colours(clips32):
    frames = clips32[0]
    allowed = {(0, 0, 0)} | {tuple(c) for c in PALETTE.tolist()}
    seen = {tuple(c) for c in np.unique(frames.reshape(-1, 3), axis=0).tolist()}
    assert seen <= allowed and len(seen) == 7


def test_ball_count_equals_label_and_colours_distinct(clips32):
    frames, labels, info = clips32
    exact = 0
    for i in range(len(labels)):
        cols = info["colors"][i][info["present"][i]]
        assert len(set(cols.tolist())) == labels[i]  # distinct colours
        seen = {tuple(c) for c in np.unique(frames[i].reshape(-1, 3), axis=0).tolist()} - {
            (0, 0, 0)
        }
        assert seen <= {tuple(PALETTE[c]) for c in cols}
        exact += len(seen) == labels[i]
    assert exact >= 0.9 * len(labels)  # a ball can hide under a bigger one in every frame, rarely


def test_radius_area_and_centroid_of_single_balls():
    frames, labels, info = generate_clips(200, 8, 32, generator=5, return_info=True)
    r = info["radius"][info["present"]]
    assert r.min() >= 3.0 and r.max() <= 6.0
    ones = np.flatnonzero(labels == 1)[:20]
    assert len(ones) > 5
    for i in ones:
        for f in range(8):
            m = frames[i, f].any(-1)
            rad = info["radius"][i, 0]
            assert abs(m.sum() - np.pi * rad**2) <= 2 * np.pi * rad
            ys, xs = np.nonzero(m)
            np.testing.assert_allclose(
                [xs.mean(), ys.mean()], info["centers_xy"][i, f, 0], atol=0.4
            )


def test_size_64_scales_radius_and_speed():
    frames, _labels, info = generate_clips(50, 4, 64, generator=2, return_info=True)
    assert frames.shape == (50, 4, 64, 64, 3)
    r = info["radius"][info["present"]]
    speed = np.linalg.norm(info["velocity_xy"][info["present"]], axis=-1)
    assert r.min() >= 6.0 and r.max() <= 12.0
    assert speed.min() >= 1.0 and speed.max() <= 5.0


def test_velocity_and_elastic_reflection(clips32):
    _frames, _labels, info = clips32
    size = 32
    c, v, r, present = info["centers_xy"], info["velocity_xy"], info["radius"], info["present"]
    speed = np.linalg.norm(v, axis=-1)[present]
    assert speed.min() >= 0.5 and speed.max() <= 2.5
    lo = r[:, None, :, None]
    hi = size - 1 - lo
    cp = np.where(present[:, None, :, None], c, lo)
    assert (cp >= lo - 1e-9).all() and (cp <= hi + 1e-9).all()
    # A step-by-step simulation with explicit bounces agrees with the analytic fold.
    for i in range(8):
        for k in np.flatnonzero(present[i]):
            p = c[i, 0, k].copy()
            vel = v[i, k].copy()
            lo_k, hi_k = r[i, k], size - 1 - r[i, k]
            for f in range(1, 16):
                p = p + vel
                for ax in range(2):
                    while p[ax] < lo_k or p[ax] > hi_k:
                        if p[ax] > hi_k:
                            p[ax] = 2 * hi_k - p[ax]
                        else:
                            p[ax] = 2 * lo_k - p[ax]
                        vel[ax] = -vel[ax]
                np.testing.assert_allclose(p, c[i, f, k], atol=1e-9)
    # Displacement per frame never exceeds the speed; it equals the velocity away from walls.
    d = np.linalg.norm(np.diff(c, axis=1), axis=-1)  # NaN for absent balls
    assert np.nanmax(d) <= 2.5 + 1e-9
    assert _fold(np.array([12.0]), np.array([2.0]), np.array([10.0]))[0] == pytest.approx(8.0)
    bounced = np.sign(np.diff(c[..., 0], axis=1))
    assert (np.nan_to_num(bounced[:, 1:] * bounced[:, :-1]) < 0).any()  # some x-velocity flips


def test_determinism_and_generators():
    a = generate_clips(8, 16, 32, generator=123)
    b = generate_clips(8, 16, 32, generator=np.random.default_rng(123))
    c = generate_clips(8, 16, 32, generator=124)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_batch_iterator_and_ranges():
    it = batch_iterator(3, num_frames=4, size=32, generator=0)
    x, y = next(it)
    assert x.shape == (3, 4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    x2, _ = next(it)
    assert not torch.equal(x, x2)
    frames, _ = generate_clips(2, 4, 32, generator=9)
    np.testing.assert_array_equal(from_model_range(to_model_range(frames)), frames)
