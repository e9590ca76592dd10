"""The vdengine CLI: a working run, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest

from vdengine.cli import main


def test_generate_writes_video(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "demo.gif"
    rc = main(["generate", "--model", tiny_model_dir, "--frames", "4", "--steps", "2",
               "--batch", "2", "--out", str(out), "--upscale", "1", "--no-progress"])
    assert rc == 0
    assert out.is_file()
    assert "wrote" in capsys.readouterr().out
    assert iio.imread(out, index=None).shape[0] == 4
    assert not [p for p in tmp_path.iterdir() if p.name != "demo.gif"]  # no temp files left


def test_info_lists_models_and_build(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["build"]["cpu"] is True
    assert "default" in info["models"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "0"], "num_frames"),
        (["--steps", "0"], "steps"),
        (["--model", "no-such-model"], "unknown model"),
        (["--sampler", "heun"], "sampler"),
        (["--out", "video.avi"], "extension"),
        (["--out", "/no/such/dir/v.mp4"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2(tiny_model_dir, tmp_path, capsys, args, message):
    argv = ["generate", "--model", tiny_model_dir, "--frames", "4", "--steps", "2",
            "--no-progress", "--out", str(tmp_path / "v.mp4")]
    argv += args  # later flags win in argparse
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_corrupted_weights_is_a_user_error(tiny_model_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad_model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    rc = main(["generate", "--model", str(bad), "--frames", "4", "--steps", "2",
               "--no-progress", "--out", str(tmp_path / "v.mp4")])
    assert rc == 2
    assert "safetensors" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    # `python -m vdengine` is the same program as the `vdengine` script.
    proc = subprocess.run([sys.executable, "-m", "vdengine", "generate", "--frames", "0",
                           "--out", str(tmp_path / "v.mp4")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("vdengine: error:")
