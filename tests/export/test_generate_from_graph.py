"""vdengine.load("m.onnx") / generate(model="m.onnx") / `vdengine generate --model m.onnx`: an
exported graph alone is a model, through the public API and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vdengine
from vdengine import cli


def test_generate_from_the_onnx_file_alone_matches_pytorch(standalone):
    """The model directory is gone; the .onnx file generates within 2 levels of PyTorch."""
    assert not standalone.model_dir.exists()
    kw = {"num_frames": 4, "steps": 8, "seed": 0, "label": 2, "guidance_scale": 3.0,
          "progress": False}
    got = vdengine.generate(standalone.path, **kw).frames.astype(np.int16)
    ref = vdengine.load(standalone.model).generate(**kw).frames.astype(np.int16)
    assert np.abs(got - ref).max() <= 2
    assert np.abs(ref - ref.mean()).max() > 10  # a video with content, not a flat frame


def test_pipeline_reports_the_graph_backend(standalone):
    pipe = vdengine.load(standalone.path)
    assert pipe.backend == "onnxruntime" and pipe.dtype == torch.float32
    assert pipe.window == 4 and pipe.spec.sample_size == (16, 16)
    assert vdengine.load(standalone.path) is pipe  # cached per file


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "tensorrt"}, "tensorrt"),  # a backend that is not installed here
        ({"check_against": "no-such-model"}, "no-such-model"),
    ],
)
def test_graph_argument_errors(standalone, kwargs, match):
    with pytest.raises((ValueError, ImportError), match=match):
        vdengine.load(standalone.path, **kwargs)


def test_backend_and_check_against_need_a_graph(tiny_dir):
    with pytest.raises(ValueError, match="check_against"):
        vdengine.load(tiny_dir, check_against=tiny_dir)
    with pytest.raises(ValueError, match="does not exist"):
        vdengine.load(str(tiny_dir) + "/missing.onnx")


def test_cli_generate_from_an_onnx_file(standalone, tmp_path, capsys):
    out = tmp_path / "graph.gif"
    argv = ["generate", "--model", str(standalone.path), "--steps", "2", "--label", "1",
            "--guidance", "2",  # the graph has a fixed batch of 2: one video with guidance
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
