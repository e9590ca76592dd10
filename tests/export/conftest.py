"""Fixtures of the export tests: the shipped default model's graph (the production export:
opset 18, float32, dynamic batch and frames) and a tiny random model saved to a temporary
directory with its graph written through the CLI. Each is exported once per session: an export
takes most of this folder's time."""

from __future__ import annotations

import pytest
from _export_helpers import make_tiny_model

# onnx, onnxruntime and onnxscript are test dependencies (pyproject [test]): no importorskip, so a
# missing one fails these tests instead of hiding them.


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from vdengine.models import save_model

    return save_model(make_tiny_model(), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_dir, tmp_path_factory):
    """`vdengine export` of the tiny model with every non-default option: opset 21, float16,
    fixed batch 2 (one video with guidance) and frames 4 (its window). A fixed-shape export is
    2-3x faster than a dynamic one; the dynamic axes are tested on the default model's graph."""
    from vdengine import cli

    path = tmp_path_factory.mktemp("onnx") / "tiny16.onnx"
    argv = ["export", "--model", str(tiny_dir), "--onnx", str(path), "--opset", "21", "--fp16",
            "--batch", "2", "--frames", "4"]
    assert cli.main(argv) == 0
    return path


@pytest.fixture(scope="session")
def default_onnx(tmp_path_factory):
    """The shipped default model exported with the defaults of vdengine.export_onnx."""
    from vdengine.export import export_onnx

    return export_onnx("default", tmp_path_factory.mktemp("onnx") / "default.onnx")
