"""vdengine.runtime.load_graph: an exported graph runs on its own, as a vdengine Denoiser."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from _export_helpers import make_tiny_model, sample_frames

from vdengine.denoiser import Denoiser
from vdengine.models import VideoUNet, save_model, tiny_config
from vdengine.runtime import load_graph
from vdengine.runtime.contract import metadata_path, read_metadata
from vdengine.runtime.onnxruntime_backend import OnnxRuntimeDenoiser


def test_deleted_model_dir_still_generates_from_the_onnx_file(standalone, capsys):
    """A model directory exported to ONNX, then deleted, still generates from the .onnx file
    alone with pixels within 2 levels of the PyTorch model (same noise, same DDIM loop)."""
    assert not standalone.model_dir.exists()
    assert read_metadata(standalone.path)["export_check"].startswith(
        "verified: onnxruntime")  # the fixed [2, 4, ...] shape was fed to the check
    den = load_graph(standalone.path, "cpu")
    kw = {"batch": 1, "frames": 4, "steps": 8, "seed": 0, "label": [2], "guidance_scale": 3.0}
    got = sample_frames(den, **kw).astype(np.int16)
    ref = sample_frames(standalone.model, **kw).astype(np.int16)
    assert got.shape == ref.shape == (1, 4, 16, 16, 3)
    diff = np.abs(got - ref)
    with capsys.disabled():  # the figure the report quotes
        print(f"\nstandalone graph vs PyTorch, 8 DDIM steps: max abs pixel difference "
              f"{diff.max()} (mean {diff.mean():.4f})")
    assert diff.max() <= 2
    assert np.abs(ref - ref.mean()).max() > 10  # a video with content, not a flat frame


def test_the_graph_is_a_denoiser_built_from_its_metadata(standalone):
    den = load_graph(standalone.path, "cpu")
    assert isinstance(den, Denoiser)
    assert den.spec == standalone.model.spec  # DenoiserSpec from the config in the metadata
    assert den.config.to_dict() == standalone.model.config.to_dict()
    assert den.graph.dtype == torch.float32 and (den.graph.batch, den.graph.frames) == (2, 4)
    assert den.dtype == torch.float32 and den.backend == "onnxruntime"


def test_needs_only_onnxruntime(standalone, monkeypatch):
    """A deployment with onnxruntime but without the onnx package loads and runs the graph."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    assert read_metadata(standalone.path)["vdengine_format"] == "vdengine-denoiser/1"
    den = load_graph(standalone.path, "cpu")
    x = torch.randn(2, 4, 3, 16, 16)
    out = den(x, torch.tensor([500.0]))
    with torch.inference_mode():
        ref = standalone.model(x, torch.tensor([500.0]))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_timestep_rows_must_be_shared(standalone):
    den = load_graph(standalone.path, "cpu")
    x = torch.randn(2, 4, 3, 16, 16)
    same = den(x, torch.tensor([300.0, 300.0]))  # [B] with equal rows: the sampler's t_in
    torch.testing.assert_close(same, den(x, torch.tensor([300.0])), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"one timestep shared by all rows \(t \[1\], or \[B\]"):
        den(x, torch.tensor([300.0, 200.0]))


# --------------------------------------------------------------------- backend dispatch


def test_suffix_picks_the_backend(standalone, tmp_path):
    assert isinstance(load_graph(standalone.path, "cpu"), OnnxRuntimeDenoiser)
    for suffix in (".plan", ".engine"):
        engine = tmp_path / f"m{suffix}"
        shutil.copy(standalone.path, engine)
        with pytest.raises(ValueError, match="backend='tensorrt' runs on CUDA devices"):
            load_graph(engine, "cpu")


def test_backend_overrides_the_suffix(standalone, tmp_path):
    renamed = tmp_path / "model.plan"  # an ONNX file under an engine's suffix
    shutil.copy(standalone.path, renamed)
    den = load_graph(renamed, "cpu", backend="onnxruntime")
    assert isinstance(den, OnnxRuntimeDenoiser)
    no_suffix = tmp_path / "model"
    shutil.copy(standalone.path, no_suffix)
    assert load_graph(no_suffix, "cpu", backend="onnxruntime").config.name == "tiny"
    with pytest.raises(ValueError, match="backend='tensorrt' runs on CUDA devices"):
        load_graph(standalone.path, "cpu", backend="tensorrt")
    with pytest.raises(ValueError, match=r"backend must be one of \('onnxruntime', 'tensorrt'\)"):
        load_graph(standalone.path, "cpu", backend="torch")


def test_unknown_suffix_needs_backend(standalone, tmp_path):
    odd = tmp_path / "model.bin"
    shutil.copy(standalone.path, odd)
    with pytest.raises(ValueError) as err:
        load_graph(odd, "cpu")
    msg = str(err.value)
    assert "\n" not in msg and "cannot tell the backend" in msg and "'.bin'" in msg
    assert "backend=" in msg


def test_missing_file(tmp_path):
    for name, kind in (("gone.onnx", "ONNX file"), ("gone.plan", "TensorRT engine")):
        with pytest.raises(ValueError) as err:
            load_graph(tmp_path / name, "cpu")
        assert str(err.value) == f"{kind} {str(tmp_path / name)!r} does not exist"
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_graph(3, "cpu")


def test_engine_without_its_metadata_sidecar(standalone, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        load_graph(engine, "cpu")
    # the sidecar is checked before TensorRT is imported (and before any CUDA call)
    with pytest.raises(ValueError, match="build engines with export/build_trt_engine.py") as err:
        load_graph(engine, "cuda")
    assert str(metadata_path(engine)) in str(err.value)


def test_bad_device_and_dtype(standalone):
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        load_graph(standalone.path, "tpu")
    with pytest.raises(ValueError, match="dtype torch.bfloat16 is not supported on the CPU"):
        load_graph(standalone.path, "cpu", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        load_graph(standalone.path, "cpu", dtype=torch.int64)


# ------------------------------------------------------------------------- check_against


def test_check_against_the_source_model(standalone, tmp_path):
    same = save_model(standalone.model, tmp_path / "same")
    assert load_graph(standalone.path, "cpu", check_against=same).config.name == "tiny"
    other = save_model(make_tiny_model(seed=8), tmp_path / "other")
    with pytest.raises(ValueError) as err:
        load_graph(standalone.path, "cpu", check_against=other)
    msg = str(err.value)
    assert "\n" not in msg and "was exported from other weights than model" in msg
    cfg = tiny_config()
    cfg.num_classes = 0
    torch.manual_seed(0)
    no_classes = save_model(VideoUNet(cfg), tmp_path / "no_classes")
    with pytest.raises(ValueError, match="whose config differs from model") as err:
        load_graph(standalone.path, "cpu", check_against=no_classes)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        load_graph(standalone.path, "cpu", check_against="no-such-model")
