"""Batching jobs into one generate() call: per-video seeds kept, only compatible jobs grouped.

No Ray here: these run the batching code in this process on the shipped "default" model.
"""

from __future__ import annotations

import numpy as np
import pytest

import vdengine
from vdengine.distributed.jobs import Job, generate_group, group_key, plan_batches, run_group

STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    return vdengine.load("default", device="cpu")


def _job(name: str, **kwargs) -> Job:
    return Job(name, {"num_frames": 8, "steps": STEPS, **kwargs})


def _alone(pipe, job: Job) -> np.ndarray:
    return pipe.generate(**job.generate_kwargs(), progress=False).frames


def _assert_same_video(got: np.ndarray, want: np.ndarray) -> None:
    # Batched matmuls round differently from batch-1 ones (float32 reassociation), so a few
    # pixels may land one uint8 level apart; a different seed changes most pixels by far more.
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"max diff {diff.max()}"
    assert (diff > 0).mean() < 1e-3, f"{(diff > 0).mean():.2%} of values differ"


@pytest.mark.parametrize("sampler, guided", [("ddim", False), ("dpmpp_2m", True)])
def test_a_job_batched_with_others_makes_the_video_it_makes_alone(pipe, sampler, guided):
    extra = {"sampler": sampler, **({"guidance_scale": 2.0} if guided else {})}
    jobs = [_job("a", seed=3, **extra, **({"label": 1} if guided else {})),
            _job("b", seed=17, batch_size=2, **extra, **({"label": [2, 3]} if guided else {})),
            _job("c", seed=5, **extra, **({"label": 0} if guided else {}))]
    assert len({group_key(j) for j in jobs}) == 1
    videos = generate_group(pipe, jobs)
    assert [v.batch_size for v in videos] == [1, 2, 1]
    for job, video in zip(jobs, videos):
        _assert_same_video(video.frames, _alone(pipe, job))


def test_control_one_seed_for_the_whole_batch_would_not_match(pipe):
    # What generate_group avoids: generate(batch_size=2, seed=s) draws the second video's noise
    # from the first one's generator, so it is not the video seed 17 makes.
    naive = pipe.generate(num_frames=8, steps=STEPS, batch_size=2, seed=3, progress=False)
    alone = _alone(pipe, _job("b", seed=17))
    diff = np.abs(naive.frames[1:].astype(int) - alone.astype(int))
    assert (diff > 1).mean() > 0.05


def test_only_jobs_whose_seed_is_all_their_randomness_are_grouped():
    base = _job("x", seed=1)
    assert group_key(base) == group_key(_job("y", seed=2, batch_size=3))
    assert group_key(base) != group_key(_job("y", seed=2, steps=STEPS + 1))
    assert group_key(base) != group_key(_job("y", num_frames=4))
    assert group_key(base) != group_key(_job("y", label=1))  # labels stack only with labels
    assert group_key(base) == group_key(Job("y", {"num_frames": 8, "steps": STEPS,
                                                  "eta": None}))  # default == omitted
    assert group_key(_job("y", sampler="ddpm")) is None  # draws noise at every step
    assert group_key(_job("y", long_video="sliding", num_frames=24)) is None


def test_plan_respects_the_batch_limit_and_spreads_over_workers():
    jobs = [_job(str(i), seed=i) for i in range(10)] + [_job("solo", sampler="ddpm")]
    calls = plan_batches(jobs, max_rows=4)
    assert [len(c) for c in calls] == [4, 4, 2, 1]
    assert [len(c) for c in plan_batches(jobs, max_rows=8, workers=2)] == [5, 5, 1]
    wide = [_job("w", batch_size=3), _job("v", batch_size=3)]
    assert [len(c) for c in plan_batches(wide, max_rows=4)] == [1, 1]


def test_a_bad_job_in_a_group_fails_alone(pipe, tmp_path):
    jobs = [_job("a", seed=1, label=1), _job("bad", seed=2, label=9), _job("c", seed=3, label=2)]
    paths = [tmp_path / f"{job.id}.png" for job in jobs]  # png: lossless, to compare frames
    errors = run_group(jobs, paths, device="cpu")
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], ValueError) and "label must be in [0, 4)" in str(errors[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]
    from vdengine.video import Video

    Video(_alone(pipe, jobs[2])).save(tmp_path / "want.png")
    import imageio.v3 as iio

    _assert_same_video(iio.imread(paths[2]), iio.imread(tmp_path / "want.png"))


def test_a_model_that_cannot_load_fails_each_job():
    errors = run_group([Job("a", {"model": "no-such-model"}), Job("b", {"model": "no-such-model"})],
                       ["a.mp4", "b.mp4"], device="cpu")
    assert all(isinstance(e, ValueError) and "no-such-model" in str(e) for e in errors)


def test_per_video_keywords_are_still_checked_in_a_batch(tmp_path):
    jobs = [_job("a", seed=1), _job("b", seed=2, batch_size=0), _job("c", seed=3, upscale=0)]
    errors = run_group(jobs, [tmp_path / f"{job.id}.mp4" for job in jobs], device="cpu")
    assert errors[0] is None
    assert "batch_size" in str(errors[1]) and "upscale" in str(errors[2])
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
