"""generate_many on a local Ray (one start for this module, 2 CPUs): videos and results rows for a
manifest of good and bad jobs, resuming, and workers that die under their jobs."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import ray

import vdengine
from vdengine.cli import main
from vdengine.distributed.batch import generate_many
from vdengine.distributed.runner import JobRunner

SMALL = {"num_frames": 8, "steps": 2}


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    # Workers import vdengine: from the checkout when the tests run from one (PYTHONPATH=.).
    path = os.pathsep.join(p for p in [str(Path(vdengine.__file__).parents[1]),
                                       os.environ.get("PYTHONPATH")] if p)
    # Ray puts the driver's working directory first on its workers' sys.path: started from a
    # clean checkout (CI), they would import its unbuilt vdengine/ instead of the installed one.
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray_cwd"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    # The dying runner below lives in this test module: ship it by value to the workers.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()
    os.chdir(cwd)


def _rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def test_manifest_of_good_and_bad_jobs_then_a_rerun_skips_finished_videos(tmp_path, capsys):
    lines = [
        json.dumps({"id": "a", "seed": 1, **SMALL}),
        json.dumps({"id": "b", "seed": 2, **SMALL}),  # same shape as a: may share a call
        "{not json",
        json.dumps({"id": "a", "seed": 3}),  # duplicate id
        json.dumps({"id": "bad-label", "seed": 4, "label": 9, **SMALL}),
        json.dumps({"id": "too-long", **SMALL, "num_frames": 40}),  # no long_video strategy
        json.dumps({"id": "solo", "seed": 5, "num_frames": 6, "steps": 3}),
        json.dumps({"id": "long", "seed": 6, "num_frames": 24, "steps": 2,
                    "long_video": {"strategy": "sliding", "stride": 8}}),
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["generate-many", str(manifest), "--out-dir", str(out), "--workers", "2",
            "--no-progress"]
    assert main(argv) == 1  # some jobs failed
    assert "4 ok, 4 failed, 0 skipped" in capsys.readouterr().out
    rows = _rows(out)
    assert [r["line"] for r in rows] == list(range(1, 9))
    by_line = {r["line"]: r for r in rows}
    assert [by_line[n]["status"] for n in range(1, 9)] == [
        "ok", "ok", "error", "error", "error", "error", "ok", "ok"]
    assert "not valid JSON" in by_line[3]["error"]
    assert "duplicate id 'a'" in by_line[4]["error"]
    assert "label must be in [0, 4)" in by_line[5]["error"]
    assert "num_frames=40 exceeds" in by_line[6]["error"]
    assert all("\n" not in (r["error"] or "") for r in rows)
    assert sorted(p.name for p in out.iterdir()) == [
        "a.mp4", "b.mp4", "long.mp4", "results.jsonl", "solo.mp4"]  # no temp files left
    assert iio.imread(out / "long.mp4", index=None).shape[0] == 24
    assert all(r["worker"] for r in rows if r["status"] == "ok")
    # A job that ran alone on a worker writes the very file generate() writes here.
    want = vdengine.generate(seed=5, num_frames=6, steps=3, device="cpu", progress=False,
                             output=tmp_path / "solo.mp4")
    assert (out / "solo.mp4").read_bytes() == want.read_bytes()

    # Rerun with b's video gone: only b is made again; the others are not rewritten.
    (out / "b.mp4").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert main(argv) == 1
    assert "1 ok, 4 failed, 3 skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4") if p.name in before} == before
    rows = _rows(out)
    assert len(rows) == 8
    assert [r["id"] for r in rows if r["skipped"]] == ["a", "solo", "long"]
    assert next(r for r in rows if r["id"] == "b")["status"] == "ok"


class DyingRunner(JobRunner):
    """Killed (SIGKILL, as the OOM killer does) while running job "poison", every time, and
    while running "victim" the first time only (a marker file remembers it across workers)."""

    def run(self, jobs, out_dir):
        ids = {job.id for job in jobs}
        marker = Path(out_dir) / ".victim-was-killed"
        if "poison" in ids or ("victim" in ids and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(jobs, out_dir)


def test_jobs_of_a_killed_worker_are_retried_and_a_job_that_kills_every_worker_fails(tmp_path):
    jobs = [{"id": "victim", "seed": 0, **SMALL}, {"id": "poison", "seed": 1, **SMALL}]
    jobs += [{"id": f"ok{i}", "seed": 10 + i, **SMALL} for i in range(3)]
    summary = generate_many(jobs, tmp_path, workers=2, max_attempts=2, progress=False,
                            runner=DyingRunner)
    rows = {r["id"]: r for r in summary.rows}
    assert (summary.ok, summary.failed, summary.exit_code) == (4, 1, 1)
    assert rows["poison"]["status"] == "error" and rows["poison"]["attempts"] == 2
    assert "its worker died 2 times" in rows["poison"]["error"]
    assert rows["victim"]["status"] == "ok" and rows["victim"]["attempts"] == 2
    assert all(rows[f"ok{i}"]["status"] == "ok" for i in range(3))
    made = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert made == ["ok0.mp4", "ok1.mp4", "ok2.mp4", "victim.mp4"]
    assert not list(tmp_path.glob(".*.tmp-*"))
