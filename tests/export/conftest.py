"""Fixtures of the export tests: the shipped default model's graph (the production export:
opset 18, float32, dynamic batch and frames), a tiny random model saved to a temporary
directory with its graph written through the CLI, and a standalone graph whose model directory
was deleted after the export. Each is exported once per session: an export takes most of this
folder's time."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from _export_helpers import make_tiny_model

# onnx, onnxruntime and onnxscript are test dependencies (pyproject [test]): no importorskip, so a
# missing one fails these tests instead of hiding them.


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from vdengine.models import save_model

    return save_model(make_tiny_model(), tmp_path_factory.mktemp("tiny") / "model")


@dataclass
class CliExport:
    path: Path
    stdout: str


@pytest.fixture(scope="session")
def tiny_export(tiny_dir, tmp_path_factory):
    """`vdengine export` of the tiny model with every non-default option: opset 21, float16,
    fixed batch 2 (one video with guidance) and frames 4 (its window). A fixed-shape export is
    2-3x faster than a dynamic one; the dynamic axes are tested on the default model's graph."""
    from vdengine import cli

    path = tmp_path_factory.mktemp("onnx") / "tiny16.onnx"
    argv = ["export", "--model", str(tiny_dir), "--onnx", str(path), "--opset", "21", "--fp16",
            "--batch", "2", "--frames", "4"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return CliExport(path, out.getvalue())


@pytest.fixture(scope="session")
def tiny_onnx(tiny_export):
    return tiny_export.path


@pytest.fixture(scope="session")
def default_onnx(tmp_path_factory):
    """The shipped default model exported with the defaults of vdengine.export_onnx."""
    from vdengine.export import export_onnx

    return export_onnx("default", tmp_path_factory.mktemp("onnx") / "default.onnx")


@dataclass
class Standalone:
    path: Path  # the .onnx file; its model directory no longer exists
    model: object  # the PyTorch model (loaded from the directory before it was deleted)
    model_dir: Path  # where the directory was


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """A tiny random model (other weights than ``tiny_dir``) saved with save_model, exported to
    float32 ONNX with vdengine.export_onnx (fixed batch 2: one video with guidance; frames 4,
    its window), then its directory deleted."""
    from vdengine.export import export_onnx
    from vdengine.models import load_model, save_model

    model_dir = save_model(make_tiny_model(seed=7), tmp_path_factory.mktemp("standalone") / "m")
    path = export_onnx(model_dir, tmp_path_factory.mktemp("onnx") / "standalone.onnx",
                       batch=2, frames=4)
    model = load_model(model_dir)  # the torch backend's model: fused ops
    shutil.rmtree(model_dir)
    return Standalone(path, model, model_dir)
