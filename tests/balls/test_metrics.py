"""Quality metrics for bouncing-balls videos (vdengine.balls.metrics) on real and corrupted clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vdengine.balls import data as bb
from vdengine.balls import metrics as M

N_CLIPS = 32


@pytest.fixture(scope="module")
def real():
    frames, labels, info = bb.generate_clips(
        N_CLIPS, num_frames=16, size=32, generator=1234, return_info=True
    )
    return frames, labels, info


@pytest.fixture(scope="module")
def real_result(real):
    return M.evaluate(real[0])


def _clip(centers_xy, radius, colors, size=32):
    """Render one clip from explicit ball centres [F, K, 2] with the dataset's own renderer."""
    f, k = centers_xy.shape[:2]
    params = {
        "radius": np.asarray(radius, float)[None],
        "colors": np.asarray(colors)[None],
        "present": np.ones((1, k), bool),
    }
    pad = bb.MAX_BALLS - k  # render() iterates over MAX_BALLS slots
    if pad:
        params = {
            "radius": np.pad(params["radius"], ((0, 0), (0, pad)), constant_values=1.0),
            "colors": np.pad(params["colors"], ((0, 0), (0, pad))),
            "present": np.pad(params["present"], ((0, 0), (0, pad))),
        }
        centers_xy = np.concatenate([centers_xy, np.full((f, pad, 2), np.nan)], axis=1)
    return bb.render(params, centers_xy[None], size)


def test_palette_comes_from_the_dataset():
    assert np.array_equal(M.PALETTE, bb.PALETTE)


def test_classify_pixels():
    px = np.array(
        [
            [0, 0, 0],  # background
            [255, 0, 0],  # red
            [150, 10, 20],  # dim red: still red
            [100, 0, 0],  # too dark: background
            [200, 180, 30],  # yellowish
            [30, 200, 190],  # cyan-ish
            [240, 240, 240],  # white: other
            [128, 128, 128],  # grey: other
            [255, 60, 255],  # magenta
            [20, 30, 255],  # blue
        ],
        np.uint8,
    )
    cls = M.classify_pixels(px)
    names = ["bg" if c == 0 else "other" if c == M.OTHER else M.PALETTE_NAMES[c - 1] for c in cls]
    assert names == [
        "bg",
        "red",
        "red",
        "bg",
        "yellow",
        "cyan",
        "other",
        "other",
        "magenta",
        "blue",
    ]


def test_real_clips_are_the_ceiling(real, real_result):
    _, labels, _ = real
    r, pv = real_result, real_result["per_video"]
    assert r["num_videos"] == N_CLIPS
    assert r["permanence_rate"] >= 0.96
    assert r["count_consistency_rate"] >= 0.96
    assert np.mean(pv["num_balls"] == labels) >= 0.96
    assert r["smoothness"] < 0.35  # centroid quantisation of hard-edged discs only
    assert r["measurable_rate"] > 0.7
    assert 0.5 <= r["speed"] <= 2.6  # the dataset's speed range
    assert r["purity"] > 0.999 and r["background"] == 0.0
    assert pv["counts"].shape == (N_CLIPS, 16)
    assert (pv["counts"][:, 0] == labels).mean() >= 0.96


def test_ball_stats_match_ground_truth(real):
    frames, _, info = real
    s = M.ball_stats(frames)
    for v in range(N_CLIPS):
        for k in np.flatnonzero(info["present"][v]):
            col = info["colors"][v, k]
            free = ~s["touching"][v, :, col] & ~np.isnan(s["centroid"][v, :, col, 0])
            if not free.any():
                continue
            err = s["centroid"][v, free, col] - info["centers_xy"][v, free, k]
            assert np.abs(err).max() < 0.5
            expected = math.pi * info["radius"][v, k] ** 2
            assert np.all(np.abs(s["area"][v, free, col] - expected) < 0.25 * expected + 4)


def test_constant_velocity_is_exactly_smooth_and_bounces_are_excused():
    f = 16
    # integer positions: exact centroids. Ball 0 glides; ball 1 bounces off the right wall.
    t = np.arange(f)
    glide = np.stack([6.0 + t, np.full(f, 8.0)], -1)
    raw = 20.0 + 2 * t
    lo, hi = 4.0, 31 - 4.0
    span = hi - lo
    u = np.mod(raw - lo, 2 * span)
    bounce_x = lo + np.where(u <= span, u, 2 * span - u)
    bounce = np.stack([bounce_x, np.full(f, 24.0)], -1)
    clip = _clip(np.stack([glide, bounce], 1), radius=[3.0, 4.0], colors=[0, 2])
    r = M.evaluate(clip)
    pv = r["per_video"]
    assert pv["permanence"][0] and pv["count_consistent"][0] and pv["num_balls"][0] == 2
    assert r["smoothness"] == 0.0
    # the raw second difference at the bounce is large: it must have been excluded
    assert np.abs(np.diff(bounce_x, 2)).max() >= 2


def test_ball_removed_from_some_frames_breaks_permanence(real, real_result):
    frames, labels, _ = real
    singles = np.flatnonzero(labels == 1)
    assert singles.size >= 3
    x = frames[singles].copy()
    x[:, 6:9] = 0  # the only ball vanishes for three frames
    r = M.evaluate(x)
    assert r["permanence_rate"] == 0.0
    assert r["count_consistency_rate"] == 0.0
    assert real_result["per_video"]["permanence"][singles].all()


def test_ball_removed_in_multi_ball_clips(real):
    frames, labels, info = real
    multi = np.flatnonzero(labels >= 2)
    x = frames[multi].copy()
    for i, v in enumerate(multi):
        col = bb.PALETTE[info["colors"][v, 0]]
        hit = (x[i, 6:9] == col).all(-1)
        x[i, 6:9][hit] = 0
    # a ball passing under another ball is excused, a ball gone from open space is not
    assert M.evaluate(x)["permanence_rate"] <= 0.2


def test_jitter_worsens_smoothness(real, real_result):
    _, _, info = real
    rng = np.random.default_rng(0)
    c = info["centers_xy"] + rng.normal(0, 0.7, info["centers_xy"].shape)
    r = info["radius"][:, None, :, None]
    jittered = bb.render(info, np.clip(c, r, 31 - r), 32)
    rj = M.evaluate(jittered)
    assert rj["smoothness"] > 4 * real_result["smoothness"]
    assert rj["smoothness"] > 1.0
    both = ~np.isnan(rj["per_video"]["smoothness"]) & ~np.isnan(
        real_result["per_video"]["smoothness"]
    )
    assert (
        np.mean(rj["per_video"]["smoothness"][both] > real_result["per_video"]["smoothness"][both])
        > 0.9
    )


def test_noise_is_inconsistent():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (8, 16, 32, 32, 3), dtype=np.uint8)
    r = M.evaluate(noise)
    assert r["count_consistency_rate"] == 0.0
    assert r["permanence_rate"] == 0.0
    assert r["purity"] < 0.2 and r["background"] > 0.2


def test_duplicated_ball_breaks_counts(real):
    frames, labels, info = real
    v = int(np.flatnonzero(labels == 1)[0])
    x = frames[v].copy()
    # paste a copy of the ball, shifted away from it, in frames 4..7
    for t in range(4, 8):
        cx = info["centers_xy"][v, t, 0, 0]
        dx = -14 if cx > 16 else 14
        src = x[t].copy()
        x[t] = np.maximum(x[t], np.roll(src, dx, axis=1))
    pv = M.evaluate(x)["per_video"]
    assert not pv["count_consistent"][0]
    assert pv["counts"][0, 0] == 1 and pv["counts"][0, 5] == 2


def test_frozen_video_has_zero_speed():
    frames, _ = bb.generate_clips(1, num_frames=1, size=32, generator=5)
    frozen = np.repeat(frames, 12, axis=1)
    r = M.evaluate(frozen)
    assert r["per_video"]["permanence"][0]
    assert r["speed"] == 0.0
    assert r["smoothness"] == 0.0 or math.isnan(r["smoothness"])


def test_empty_black_video_fails_permanence():
    r = M.evaluate(np.zeros((2, 8, 32, 32, 3), np.uint8))
    assert r["permanence_rate"] == 0.0 and r["mean_balls"] == 0.0
    assert math.isnan(r["smoothness"]) and r["measurable_rate"] == 0.0
    assert r["count_consistency_rate"] == 1.0  # zero objects throughout is consistent


def test_chunking_gives_the_same_result(real):
    frames = real[0][:6]
    a, b = M.evaluate(frames), M.evaluate(frames, chunk=4)
    for key in a["per_video"]:
        np.testing.assert_array_equal(a["per_video"][key], b["per_video"][key])


def test_evaluate_validation():
    with pytest.raises(ValueError, match=r"^frames: expected dtype uint8"):
        M.evaluate(np.zeros((1, 2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"^frames: expected shape"):
        M.evaluate(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"^chunk: "):
        M.evaluate(np.zeros((1, 2, 8, 8, 3), np.uint8), chunk=0)


def test_format_table(real_result):
    rows = [
        M.summary_row("real clips", real_result, **{"time (s)": 1.25}),
        {"videos": "a|b", "n": 3, "smoothness (px/frame²)": float("nan")},
    ]
    table = M.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| videos") and "permanence" in lines[0] and "time (s)" in lines[0]
    assert set(lines[1]) <= set("|-:")
    assert "100.0%" in lines[2] and "1.250" in lines[2]
    assert "a\\|b" in lines[3] and "n/a" in lines[3]
    assert all(line.count("|") - line.count("\\|") == lines[0].count("|") for line in lines)
    assert M.format_table([{"x": 1}], columns=["x", "y"]).splitlines()[2] == "| 1 | n/a |"
