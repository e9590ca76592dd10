"""`vdengine serve` as a user runs it: one server process for this module (its own local Ray),
on 127.0.0.1. Good, bad and concurrent requests; SIGTERM shuts it and its Ray down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import vdengine

STEPS = 2
MAX_FRAMES = 16
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Live processes below pid (from /proc), e.g. the raylet and GCS a server started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


class Server:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.url, self.proc = f"http://127.0.0.1:{port}", proc

    def get(self, path: str) -> tuple[int, bytes, str]:
        return self._open(urllib.request.Request(self.url + path))

    def post(self, body) -> tuple[int, bytes, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._open(urllib.request.Request(
            self.url + "/generate", data=data, headers={"Content-Type": "application/json"}))

    @staticmethod
    def _open(request) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def stats(self) -> dict:
        return json.loads(self.get("/stats")[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    root = str(Path(vdengine.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH")] if p)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vdengine", "serve", "--host", "127.0.0.1", "--port",
             str(port), "--max-batch", "4", "--batch-wait", "1.0", "--max-frames",
             str(MAX_FRAMES)], stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=log.parent)  # not a checkout: Ray workers import from the driver's cwd first
    srv = Server(port, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            if srv.get("/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no /healthz:\n{log.read_text()[-3000:]}"
        time.sleep(1)
    yield srv
    if proc.poll() is None:  # the shutdown test did not run or failed: stop it anyway
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_healthz_once_the_model_is_loaded(server):
    status, body, _ = server.get("/healthz")
    assert status == 200 and json.loads(body)["model"] == "default"


@pytest.mark.parametrize("fmt, media_type", [("mp4", "video/mp4"), ("gif", "image/gif")])
def test_a_good_request_answers_the_video(server, tmp_path, fmt, media_type):
    status, body, content_type = server.post(
        {"seed": 1, "num_frames": 8, "steps": STEPS, "label": 2, "guidance_scale": 2.0,
         "format": fmt})
    assert status == 200 and content_type == media_type
    path = tmp_path / f"v.{fmt}"
    path.write_bytes(body)
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 8 and frames.shape[1:3] == (32, 32)


@pytest.mark.parametrize("body, field", [
    ({"num_frames": MAX_FRAMES + 1}, "num_frames"),
    ({"steps": 51}, "steps"),
    ({"seed": 1, "bogus": 2}, "bogus"),
    ({"label": 9}, "label"),
    ({"sampler": "nope"}, "sampler"),
    ({"format": "avi"}, "format"),
    ({"model": "other"}, "model"),
    ({"seed": "one"}, "seed"),
    (b"{not json", "JSON"),
    ([1, 2], "JSON object"),
])
def test_a_bad_request_is_a_400_naming_the_field_and_the_server_keeps_serving(
        server, body, field):
    status, answer, content_type = server.post(body)
    assert status == 400 and content_type == "application/json"
    assert field in json.loads(answer)["error"]
    assert server.post({"seed": 0, "num_frames": 4, "steps": STEPS})[0] == 200


def _concurrently(server, bodies) -> list[tuple[int, bytes, str]]:
    barrier, answers = threading.Barrier(len(bodies)), [None] * len(bodies)

    def send(i):
        barrier.wait()
        answers[i] = server.post(bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_concurrent_requests_share_batched_forwards(server, tmp_path):
    before = server.stats()
    bodies = [{"seed": s, "num_frames": 8, "steps": STEPS, "format": "gif"} for s in range(4)]
    answers = _concurrently(server, bodies)
    assert [a[0] for a in answers] == [200] * 4
    after = server.stats()
    calls = after["batch_sizes"][len(before["batch_sizes"]):]
    forwards = after["forwards"] - before["forwards"]
    # Alone, 4 requests cost 4 * STEPS forwards; coalesced (one --batch-wait window) STEPS.
    assert max(calls) >= 2 and forwards < 4 * STEPS, (calls, forwards)
    # Each answer is its own seed's video, not a copy of another's.
    frames = []
    for i, (_, body, _) in enumerate(answers):
        (tmp_path / f"{i}.gif").write_bytes(body)
        frames.append(iio.imread(tmp_path / f"{i}.gif", index=None))
    assert all(not np.array_equal(frames[0], f) for f in frames[1:])


def test_a_bad_request_among_concurrent_ones_fails_alone(server):
    bodies = [{"seed": s, "num_frames": 8, "steps": STEPS, "label": 1} for s in range(3)]
    bodies.insert(1, {"seed": 9, "num_frames": 8, "steps": STEPS, "label": 7})
    statuses = [a[0] for a in _concurrently(server, bodies)]
    assert statuses == [200, 400, 200, 200]


def test_sigterm_shuts_the_server_and_its_ray_down(server):
    processes = _descendants(server.proc.pid)
    assert processes  # the local Ray it started (raylet, GCS, workers)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=90) == 0
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in processes if _alive(p)]
    with pytest.raises(OSError):
        server.get("/healthz")
