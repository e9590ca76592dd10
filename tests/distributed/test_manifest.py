"""Manifest parsing, results rows and usage errors: no Ray started here."""

from __future__ import annotations

import json
import os

import pytest

from vdengine.cli import main
from vdengine.distributed.manifest import (
    RESULTS_NAME,
    check_out_dir,
    long_video_kwargs,
    parse_jobs,
    read_manifest,
    result_row,
    write_results,
)
from vdengine.longvideo import SharedNoise, Sliding


def _manifest(tmp_path, lines: list[str]):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_lines_become_jobs_with_their_line_numbers(tmp_path):
    path = _manifest(tmp_path, [
        '{"id": "a", "seed": 1, "num_frames": 8}',
        "",  # blank lines are skipped but keep the numbering
        '{"id": 7, "long_video": "sliding"}',
    ])
    a, b = read_manifest(path)
    assert (a.line, a.id, a.kwargs, a.error) == (1, "a", {"seed": 1, "num_frames": 8}, None)
    assert (b.line, b.id, b.kwargs, b.error) == (3, "7", {"long_video": "sliding"}, None)


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"seed": 1}', 'missing "id"'),
    ('{"id": "../escape"}', "file-name-safe"),
    ('{"id": ""}', "file-name-safe"),
    ('{"id": "x", "bogus": 1}', "unknown keyword 'bogus'"),
    ('{"id": "x", "output": "y.mp4"}', "'output' cannot be set"),
    ('{"id": "x", "device": "cuda"}', "'device' cannot be set"),
    ('{"id": "x", "seed": "1"}', "seed must be an int"),
    ('{"id": "x", "long_video": 3}', "long_video must be"),
    ('{"id": "x", "long_video": {"stride": 4}}', '"strategy"'),
    ('{"id": "x", "stride": 2, "long_video": {"strategy": "sliding", "stride": 4}}',
     "unknown keyword 'stride'"),
    ('{"id": "x", "long_video": {"strategy": "sliding", "strid": 4}}', "strid"),
])
def test_a_bad_line_is_a_one_line_error_not_an_exception(tmp_path, line, message):
    [entry] = read_manifest(_manifest(tmp_path, [line]))
    assert entry.error is not None and message in entry.error
    assert "\n" not in entry.error


def test_duplicate_ids_keep_the_first(tmp_path):
    first, second = read_manifest(_manifest(tmp_path, ['{"id": "a"}', '{"id": "a", "seed": 2}']))
    assert first.error is None
    assert second.error == "duplicate id 'a' (first on line 1)"


def test_long_video_shorthand_and_dict_map_to_generate_keywords():
    assert long_video_kwargs("sliding") == {"long_video": "sliding"}
    assert long_video_kwargs(None) == {"long_video": None}
    assert long_video_kwargs({"strategy": "sliding", "stride": 4}) == {
        "long_video": Sliding(stride=4)}
    assert long_video_kwargs({"strategy": "sliding", "noise": {"lam": 0.3}}) == {
        "long_video": Sliding(noise=SharedNoise(0.3))}


def test_python_jobs_are_numbered_from_one():
    entries = parse_jobs([{"id": "a"}, "nope", {"id": "b", "steps": 2}])
    assert [(e.line, e.id, e.error is None) for e in entries] == [
        (1, "a", True), (2, None, False), (3, "b", True)]


def test_results_are_sorted_by_line_and_written_atomically(tmp_path):
    a, b = parse_jobs([{"id": "a"}, {"id": "b"}])
    path = write_results(tmp_path, [result_row(b, "error", error="boom"),
                                    result_row(a, "ok", path="a.mp4", seconds=1.23456)])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["seconds"] == 1.235 and rows[1]["error"] == "boom"
    assert sorted(os.listdir(tmp_path)) == [RESULTS_NAME]  # no temporary file left


def test_out_dir_must_be_a_writable_directory(tmp_path):
    assert check_out_dir(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(PermissionError, match="cannot write"):
        check_out_dir(tmp_path / "file" / "below")


@pytest.mark.parametrize("case", ["no manifest", "out-dir is a file", "bad --workers"])
def test_usage_errors_exit_2_in_one_line(tmp_path, capsys, case):
    manifest = _manifest(tmp_path, ['{"id": "a"}'])
    out = tmp_path / "out"
    argv = {"no manifest": [str(tmp_path / "missing.jsonl"), "--out-dir", str(out)],
            "out-dir is a file": [str(manifest), "--out-dir", str(manifest)],
            "bad --workers": [str(manifest), "--out-dir", str(out), "--workers", "0"]}[case]
    if case == "bad --workers":  # argparse's own usage error
        with pytest.raises(SystemExit) as e:
            main(["generate-many", *argv])
        assert e.value.code == 2
        return
    assert main(["generate-many", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vdengine: error:") and len(err.splitlines()) == 1
    assert not out.exists()


def test_manifest_of_only_bad_lines_needs_no_worker_and_exits_1(tmp_path, capsys):
    # Every line fails before any job runs: no Ray is started, results still one row per line.
    manifest = _manifest(tmp_path, ["nope", '{"seed": 1}'])
    assert main(["generate-many", str(manifest), "--out-dir", str(tmp_path / "out"),
                 "--no-progress"]) == 1
    rows = (tmp_path / "out" / RESULTS_NAME).read_text().splitlines()
    assert [json.loads(r)["status"] for r in rows] == ["error", "error"]
    assert "0 ok, 2 failed, 0 skipped" in capsys.readouterr().out


def test_generate_many_is_exported_lazily():
    import vdengine
    from vdengine.distributed.batch import generate_many

    assert vdengine.generate_many is generate_many
