"""ONNX export (vdengine.export_onnx / `vdengine export`), its verification, the onnxruntime
backend, the trtexec recipe, and every bad input the issue lists. Exports shared by the folder
(see conftest.py): ``default_onnx`` (the production export of the shipped model), ``tiny_onnx``
(a tiny model, float16, opset 21, fixed shapes, through the CLI) and ``standalone``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import onnx
import pytest
import torch
from _export_helpers import make_tiny_model

from vdengine import cli
from vdengine.export import (
    _AttentionForExport,
    _PosGNForExport,
    example_inputs,
    export_onnx,
    trtexec_command,
    verify_graph,
)
from vdengine.models import PosGNTables, load_model, save_model
from vdengine.models.layers import PosGN, TemporalAttention
from vdengine.models.loading import WEIGHTS_FILE, load_state, resolve_model_dir
from vdengine.runtime import load_graph
from vdengine.runtime.contract import (
    FORMAT,
    TensorSpec,
    check_graph,
    input_names,
    read_metadata,
    weights_digest,
)
from vdengine.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

CPU = torch.device("cpu")


def _dims(value_info) -> list:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


# --------------------------------------------------------------------------- the graph


def test_export_writes_a_checked_graph_with_metadata(default_onnx):
    model = onnx.load(str(default_onnx))
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(default_onnx)
    net = load_model("default")
    cfg = net.config
    assert meta["vdengine_format"] == FORMAT
    assert meta["model_name"] == cfg.name and meta["model_source"] == "default"
    assert meta["window"] == str(cfg.window)
    assert meta["prediction_type"] == cfg.prediction_type
    assert meta["schedule"] == cfg.schedule
    assert json.loads(meta["config"]) == cfg.to_dict()
    weights = resolve_model_dir("default") / WEIGHTS_FILE
    assert meta["weights_sha256"] == weights_digest(load_state(weights))
    assert (meta["batch"], meta["frames"], meta["opset"], meta["dtype"]) == (
        "dynamic", "dynamic", "18", "float32")
    assert float(meta["export_check_max_abs_diff"]) < 1e-4
    assert meta["export_check"].startswith("verified: onnxruntime ")

    s, c = cfg.image_size, cfg.channels
    inputs = {i.name: _dims(i) for i in model.graph.input}
    assert list(inputs) == input_names(cfg)
    expect = {"x": ["batch", "frames", c, s, s], "t": [1], "label": ["batch"],
              "context": ["batch", "frames", c, s, s], "context_mask": ["batch", "frames"]}
    assert inputs == {k: expect[k] for k in inputs}
    assert [(o.name, _dims(o)) for o in model.graph.output] == [
        ("out", ["batch", "frames", c, s, s])]


def test_graph_uses_standard_ops_in_tensorrt_friendly_patterns(default_onnx):
    graph = onnx.load(str(default_onnx)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    ops = [n.op_type for n in graph.node]
    net = load_model("default")
    n_gn = sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules())  # PosGN.norm included
    # opset 18: GroupNorm as Reshape → InstanceNormalization → Reshape (→ affine, modulation)
    assert ops.count("InstanceNormalization") == n_gn
    assert "IsNaN" not in ops and "Tile" not in ops  # no nan_to_num; tables broadcast
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == sum(isinstance(m, TemporalAttention) for m in net.modules()) > 0
    for sm in softmaxes:
        bmm1 = producer[sm.input[0]]
        assert bmm1.op_type == "MatMul"  # scores straight from Q·Kᵀ: the scale is on Q
        assert producer[bmm1.input[0]].op_type == "Mul"
        assert [n.op_type for n in consumers[sm.output[0]]] == ["MatMul"]


def test_cli_export_opset21_fp16_fixed_shapes(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "GroupNormalization" in ops and "InstanceNormalization" not in ops
    x = model.graph.input[0]
    assert x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert _dims(x) == [2, 4, 3, 16, 16]
    meta = read_metadata(tiny_onnx)
    assert (meta["dtype"], meta["batch"], meta["frames"], meta["opset"]) == (
        "float16", "2", "4", "21")
    assert float(meta["export_check_max_abs_diff"]) < 5e-2  # vs the float32 forward


def test_export_layers_match_the_model_layers():
    """The export-only spellings of TemporalAttention and PosGN compute the same thing."""
    torch.manual_seed(0)
    attn = TemporalAttention(32, 16, 4, window=5, mix_factor_init=0.0)
    norm = PosGN(32, 4)
    for layer in (attn, norm):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * 0.2)
        layer.ops_mode = "reference"
    x = torch.randn(2 * 5, 32, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(_AttentionForExport(attn)(x, 5), attn(x, 5),
                                   rtol=1e-5, atol=1e-5)
        tables = PosGNTables(torch.tensor([321.0]), 5, 5, 1000)
        torch.testing.assert_close(_PosGNForExport(norm)(x, tables), norm(x, tables),
                                   rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- onnxruntime backend


@pytest.mark.parametrize("batch,frames,cond", [(1, 16, False), (3, 5, True)])
def test_onnxruntime_matches_torch_dynamic_axes(default_onnx, batch, frames, cond):
    den = load_graph(default_onnx, CPU, check_against="default")
    net = load_model("default").set_ops("fused")
    cfg = net.config
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, frames, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
    kw = {}
    if cond:
        kw["label"] = torch.randint(0, cfg.num_classes + 1, (batch,), generator=gen)
        kw["context"] = torch.randn(x.shape, generator=gen)
        kw["context_mask"] = (torch.rand(batch, frames, generator=gen) < 0.5).float()
    t = torch.tensor([617.0])
    with torch.inference_mode():
        ref = net(x, t, **kw)
    got = den(x, t, **kw)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_fixed_shape_graph(tiny_onnx, tiny_dir):
    den = load_graph(tiny_onnx, CPU, check_against=tiny_dir)
    x = torch.randn(2, 4, 3, 16, 16)
    t = torch.tensor([10.0])
    ref = load_model(tiny_dir).set_ops("reference")(x, t)
    got = den(x, t)
    assert got.dtype == torch.float32  # cast back from the graph's float16
    torch.testing.assert_close(got, ref, rtol=0, atol=5e-2)
    with pytest.raises(ValueError, match="fixed batch of 2 rows but is fed 4"):
        den(torch.randn(4, 4, 3, 16, 16), t)
    with pytest.raises(ValueError, match="exported for 4 frames but is fed 3"):
        den(torch.randn(2, 3, 3, 16, 16), t)
    with pytest.raises(ValueError, match=r"one timestep shared by all rows \(t \[1\]"):
        den(x, torch.tensor([10.0, 20.0]))


# ------------------------------------------------------------------------------ TensorRT


def test_trtexec_command_from_metadata(default_onnx, tiny_onnx, tmp_path):
    cfg = load_model("default").config
    f, s = cfg.window, cfg.image_size
    cmd = trtexec_command(default_onnx, tmp_path / "e.plan", timing_cache=tmp_path / "t.cache")
    assert cmd[:4] == ["trtexec", f"--onnx={default_onnx}",
                       f"--saveEngine={tmp_path / 'e.plan'}", "--fp16"]
    assert (f"--minShapes=x:1x{f}x3x{s}x{s},label:1,context:1x{f}x3x{s}x{s},"
            f"context_mask:1x{f}") in cmd
    assert (f"--optShapes=x:2x{f}x3x{s}x{s},label:2,context:2x{f}x3x{s}x{s},"
            f"context_mask:2x{f}") in cmd
    assert (f"--maxShapes=x:16x{f}x3x{s}x{s},label:16,context:16x{f}x3x{s}x{s},"
            f"context_mask:16x{f}") in cmd
    assert cmd[-1] == f"--timingCacheFile={tmp_path / 't.cache'}"
    low = trtexec_command(default_onnx, "e.plan", min_frames=1, max_batch=8)
    assert f"--minShapes=x:1x1x3x{s}x{s}" in low[4] and f"--maxShapes=x:8x{f}" in low[6]
    # a fixed-shape graph needs no profiles
    assert trtexec_command(tiny_onnx, "t.plan", fp16=False) == [
        "trtexec", f"--onnx={tiny_onnx}", "--saveEngine=t.plan"]


def test_tensorrt_backend_errors_are_clear(tmp_path, tiny_onnx):
    from vdengine.runtime.contract import metadata_path
    from vdengine.runtime.tensorrt_backend import TensorRTDenoiser

    engine = tmp_path / "m.plan"
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        TensorRTDenoiser(engine, device="cpu")
    with pytest.raises(ValueError, match="does not exist"):
        TensorRTDenoiser(engine, device="cuda")
    engine.write_bytes(b"not an engine")
    with pytest.raises(ValueError, match="build engines with export/build_trt_engine.py"):
        TensorRTDenoiser(engine, device="cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        metadata_path(engine).write_text(json.dumps(read_metadata(tiny_onnx)))
        with pytest.raises(ImportError, match="needs TensorRT's Python package"):
            TensorRTDenoiser(engine, device="cuda")


# ----------------------------------------------------------------------------- bad input


def test_export_bad_arguments(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        export_onnx("no-such-model", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="directory .* does not exist"):
        export_onnx(tiny_dir, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tiny_dir, tmp_path / "m.onx")
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        export_onnx(tiny_dir, tmp_path / "d.onnx")
    with pytest.raises(ValueError, match="exceeds the model window of 4"):
        export_onnx(tiny_dir, tmp_path / "m.onnx", frames=5)
    with pytest.raises(ValueError, match="batch must be a positive int or 'dynamic'"):
        export_onnx(tiny_dir, tmp_path / "m.onnx", batch="lots")
    with pytest.raises(ValueError, match="opset must be an int from 18"):
        export_onnx(tiny_dir, tmp_path / "m.onnx", opset=17)
    with pytest.raises(TypeError, match="model must be a model name"):
        export_onnx(3, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_unwritable_path(tiny_dir, tmp_path, monkeypatch):
    real_access = os.access  # (tests run as root here, so chmod cannot make a dir unwritable)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path
                        else real_access(p, mode))
    with pytest.raises(ValueError, match="is not writable"):
        export_onnx(tiny_dir, tmp_path / "m.onnx")


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = cli.main(["export", "--model", "no-such-model", "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "unknown model 'no-such-model'" in err
    with pytest.raises(SystemExit):
        cli.main(["export", "--onnx", str(tmp_path / "m.onnx"), "--batch", "0"])
    assert "expected a positive int or 'dynamic'" in capsys.readouterr().err


def test_unavailable_provider(tiny_onnx):
    with pytest.raises(ValueError, match="provider 'CUDAExecutionProvider' is not available"):
        OnnxRuntimeDenoiser(tiny_onnx, device="cpu", providers=["CUDAExecutionProvider"])
    with pytest.raises(ValueError, match="provider 'NoSuchExecutionProvider'"):
        OnnxRuntimeDenoiser(tiny_onnx, device="cpu", providers=["NoSuchExecutionProvider"])


def test_foreign_or_damaged_onnx_files(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 3, 16, 16])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=10), foreign)
    with pytest.raises(ValueError, match="was not exported by vdengine"):
        OnnxRuntimeDenoiser(foreign, device="cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="onnxruntime cannot load"):
        OnnxRuntimeDenoiser(junk, device="cpu")
    with pytest.raises(ValueError, match="is not a readable ONNX file"):
        read_metadata(junk)


def _with_metadata(src: Path, dst: Path, **values) -> Path:
    model = onnx.load(str(src))
    for e in model.metadata_props:
        if e.key in values:
            e.value = values[e.key]
    onnx.save(model, str(dst))
    return dst


def test_graph_that_does_not_match_the_sampler(tiny_onnx, tmp_path):
    meta = read_metadata(tiny_onnx)
    cfg = json.loads(meta["config"])
    # a config without classes: the sampler would not feed `label`
    no_cls = _with_metadata(tiny_onnx, tmp_path / "a.onnx",
                            config=json.dumps(dict(cfg, num_classes=0)), num_classes="0")
    with pytest.raises(ValueError, match=r"graph inputs are \['x', 't', 'label', 'context', "
                                         r"'context_mask'\], but .* is fed \['x', 't', 'context'"):
        OnnxRuntimeDenoiser(no_cls, device="cpu")
    # metadata window contradicting the graph's config
    bad_window = _with_metadata(tiny_onnx, tmp_path / "b.onnx", window="8")
    with pytest.raises(ValueError, match="metadata window='8' contradicts"):
        OnnxRuntimeDenoiser(bad_window, device="cpu")
    # a larger image than the graph was exported for
    big = _with_metadata(tiny_onnx, tmp_path / "c.onnx",
                         config=json.dumps(dict(cfg, image_size=32)))
    with pytest.raises(ValueError, match="input 'x' has size 16 on axis 3, the model feeds 32"):
        OnnxRuntimeDenoiser(big, device="cpu")
    # ranks, sizes and types, checked on the signature alone
    x = TensorSpec("x", (None, None, 3, 16, 16), torch.float32)
    rest = [TensorSpec("t", (1,), torch.float32), TensorSpec("label", (None,), torch.int64),
            TensorSpec("context", (None, None, 3, 16, 16), torch.float32),
            TensorSpec("context_mask", (None, None), torch.float32)]
    out = [TensorSpec("out", (None, None, 3, 16, 16), torch.float32)]
    check_graph("'m'", meta, [x, *rest], out)  # the good one passes
    with pytest.raises(ValueError, match="input 'x' has rank 4, the sampler feeds rank 5"):
        check_graph("'m'", meta, [TensorSpec("x", (None, 3, 16, 16), torch.float32), *rest], out)
    with pytest.raises(ValueError, match="has 6 frames, more than the model window of 4"):
        check_graph("'m'", meta, [TensorSpec("x", (1, 6, 3, 16, 16), torch.float32),
                                  *rest], out)
    with pytest.raises(ValueError, match="input 't' is torch.int64, expected torch.float32"):
        check_graph("'m'", meta, [x, TensorSpec("t", (1,), torch.int64), *rest[1:]], out)
    with pytest.raises(ValueError, match="expected one rank-5 output 'out'"):
        check_graph("'m'", meta, [x, *rest], [TensorSpec("y", (None,), torch.float32)])


def test_graph_of_other_weights_is_refused(tiny_onnx, tmp_path):
    other = save_model(make_tiny_model(seed=1), tmp_path / "other")
    with pytest.raises(ValueError, match="exported from other weights than model"):
        load_graph(tiny_onnx, CPU, check_against=other)


# ---------------------------------------------------------------------------- verification


def test_unverifiable_export_says_so(tiny_dir, tmp_path, capsys, monkeypatch):
    """Without onnxruntime the export is written and the CLI prints that it was not verified."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises
    path = tmp_path / "m.onnx"
    rc = cli.main(["export", "--model", str(tiny_dir), "--onnx", str(path), "--batch", "1",
                   "--frames", "2"])
    out = capsys.readouterr().out
    reason = "not verified: onnxruntime is not installed (pip install onnxruntime)"
    assert rc == 0 and out.splitlines()[-1] == reason
    assert read_metadata(path)["export_check"] == reason
    assert "export_check_max_abs_diff" not in read_metadata(path)


def test_verify_graph_outcomes(standalone, tiny_dir, monkeypatch):
    """verify_graph passes the graph's own model, raises for other weights, warns without
    onnxruntime (the export's verification, without an export)."""
    data = standalone.path.read_bytes()
    cfg = standalone.model.config
    names = input_names(cfg)
    args = example_inputs(cfg, 2, 4)
    ok = verify_graph(data, standalone.model, args, names, torch.float32)
    assert float(ok["export_check_max_abs_diff"]) < 1e-4 and ok["export_check_tolerance"] == "0.001"
    with pytest.raises(RuntimeError, match="differs from the PyTorch forward by"):
        verify_graph(data, load_model(tiny_dir), args, names, torch.float32)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.warns(UserWarning, match="NOT verified against PyTorch: onnxruntime is not"):
        got = verify_graph(data, standalone.model, args, names, torch.float32)
    assert got == {"export_check": "not verified: onnxruntime is not installed "
                                   "(pip install onnxruntime)"}


def test_cli_prints_the_verification(tiny_export):
    """`vdengine export` prints the check's outcome: the float16 graph verified with its looser
    tolerance, fed its fixed [2, 4, ...] shape."""
    last = tiny_export.stdout.splitlines()[-1]
    assert last.startswith("verified: onnxruntime ")
    assert "random [2, 4, 3, 16, 16] input" in last and last.endswith("<= 0.05")
    assert last == read_metadata(tiny_export.path)["export_check"]
