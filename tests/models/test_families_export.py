"""ONNX export of the families' networks: parity through onnxruntime on new inputs and batch
sizes (the graphs are traced at batch 2)."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from _families import live_family_model

from vdengine.models.families_export import export_family_onnx, graphs, max_abs_diff

GRAPHS = {"vidm": ("content", "motion"), "videofusion": ("base", "residual", "denoiser")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    for family in GRAPHS:
        model = live_family_model(family, seed=3)
        out[family] = (model, export_family_onnx(model, tmp_path_factory.mktemp(family)))
    return out


@pytest.mark.parametrize("family, name", [(f, n) for f, names in GRAPHS.items() for n in names])
@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_matches_pytorch(exported, family, name, batch):
    model, results = exported[family]
    assert set(results) == set(GRAPHS[family])
    path, diff_at_export = results[name]
    assert diff_at_export is not None and diff_at_export < 1e-4
    module, args, names = graphs(model, batch=batch)[name]
    # fresh inputs, not the traced ones
    g = torch.Generator().manual_seed(batch)
    args = tuple(a if not a.is_floating_point() or n == "t" else torch.randn(
        a.shape, generator=g) for a, n in zip(args, names))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == names
    diff = max_abs_diff(path, module, args, names)
    assert diff < 1e-4
    with torch.no_grad():
        assert module(*args).abs().mean() > 1e-3  # a live network: the comparison can fail


def test_graph_inputs_follow_the_engine_call():
    model = live_family_model("vidm")
    module, args, names = graphs(model, batch=2)["motion"]
    assert names == ["x", "t", "label", "first_frame", "prev_frame", "frame_index"]
    kw = dict(zip(names[2:], args[2:]))
    with torch.no_grad():  # the graph module computes what the Denoiser call computes
        expect = model.set_ops("reference").motion(args[0], args[1], **kw)
        torch.testing.assert_close(module(*args), expect, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="VIDM or a VideoFusion"):
        graphs(torch.nn.Linear(2, 2))
