"""ONNX export of vdengine's denoisers: one graph of the whole VideoUNet forward.

    import vdengine
    from vdengine.runtime import load_graph
    vdengine.export_onnx("default", "balls32.onnx")            # opset 18, float32, dynamic B and F
    den = load_graph("balls32.onnx", "cpu")                    # the file alone is enough

The graph (docs/export.md has the long form; vdengine/runtime/contract.py owns the names, ranks
and metadata keys that export writes and the runtime reads):

- Inputs, in this order: ``x`` [B, F, C, H, W] noisy frames, ``t`` [1] float32 (one timestep
  shared by every row: the sampler's step), then ``label`` [B] int64 when the model has classes,
  then ``context`` [B, F, C, H, W] and ``context_mask`` [B, F] when it takes context frames.
  Output ``out`` [B, F, C, H, W] in the model's prediction type. B and F are dynamic by default
  (F up to the window); C, H, W are fixed.
- The model runs on its reference (pure PyTorch) ops, so the graph holds standard ONNX ops only:
  each PosGN is GroupNorm (opset 18-20: Reshape → InstanceNormalization → Reshape → Mul/Add,
  opset >= 21: GroupNormalization) followed by the (1 + scale)·y + shift modulation and SiLU;
  temporal attention is (Q·scale) → MatMul(Kᵀ) → Softmax → MatMul(V) on [B·H·W, heads, F, D],
  the pattern TensorRT's attention fusion matches (scale on Q before the first MatMul, 4-D
  operands, nothing between Softmax and the second MatMul).
- The PosGN coordinate tables are computed inside the graph from ``t``. They depend only on
  (t, frame, h, w), once per forward for M = F rows shared by the whole batch, exactly as the
  torch backend does. Passing them as inputs would add two inputs per PosGN layer (44 for the
  default model) with their own dynamic frame axes to bind, and would only save time if the
  caller cached them across calls (they change with t at every step); measured on the default
  model (CPU, 1 thread) they are ~20 ms of an ~80 ms batch-1 forward and ~5% at batch 8.
- Metadata (``metadata_props``): model name, window, prediction type, schedule and the whole
  ModelConfig, the dtype, the batch/frames spec, a digest of the weights, the opset, the
  versions that wrote it and the outcome of the export's verification (``export_check``); the
  runtime builds the denoiser from it without the model directory.
- Verification: onnxruntime runs the graph on a random input of its shape and dtype and is
  compared with the model's PyTorch float32 forward (VERIFY_TOLERANCE); when it cannot run, the
  metadata and a UserWarning say why (and `vdengine export` prints it).

``--fp16`` casts the weights and activations to float16 except the PosGN coordinate MLPs (their
sin() of a Linear of the coordinates wants float32) and the normalisation statistics (the
reference ops compute them in float32); inputs ``x``/``context``/``context_mask`` and the output
are then float16. Meant for CUDA and TensorRT; onnxruntime's CPU provider runs it too, slower
than float32.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vdengine.models.config import ModelConfig
from vdengine.models.layers import PosGN, ResBlock, TemporalAttention
from vdengine.models.unet import Block, VideoUNet
from vdengine.runtime.contract import (
    OUTPUT_NAME,
    config_from_metadata,
    first_line,
    graph_metadata,
    input_names,
    read_metadata,
    weights_digest,
)

DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch's ONNX exporter has no implementations below 18
#: max abs difference from the PyTorch float32 forward that verification accepts, by graph dtype
VERIFY_TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2}


# ------------------------------------------------------------------------------- export graph


class _AttentionForExport(nn.Module):
    """TemporalAttention.forward with the attention spelled as TensorRT's fusion pattern.

    The reference op (vdengine.ops.reference.temporal_attention) works on [B, S, H, F, D] and
    ends in nan_to_num (for rows fully masked by a bias, which this layer never passes); either
    hides the attention from TensorRT's MHA fusion. Same math: Q is scaled before the first
    MatMul, operands are [B·S, heads, F, D], Softmax feeds the second MatMul directly.
    """

    def __init__(self, layer: TemporalAttention) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, num_frames: int) -> Tensor:  # x [B·F, C, H, W]
        m = self.layer
        bf, c, h, w = x.shape
        f, s, heads = num_frames, h * w, m.num_heads
        b, d = bf // f, c // heads
        tok = m.norm(x).permute(0, 2, 3, 1).reshape(b, f, s, c)
        tok = tok + m.frame_pos[:f, None, :].to(tok.dtype)
        q, k, v = m.qkv(tok).chunk(3, dim=-1)  # [B, F, S, C] each

        def heads_first(z: Tensor) -> Tensor:  # [B, F, S, C] -> [B·S, heads, F, D]
            return z.reshape(b, f, s, heads, d).permute(0, 2, 3, 1, 4).reshape(b * s, heads, f, d)

        q = heads_first(q) * (d**-0.5)
        probs = torch.softmax(q @ heads_first(k).transpose(-1, -2), dim=-1)  # [B·S, heads, F, F]
        o = probs @ heads_first(v)  # [B·S, heads, F, D]
        o = o.reshape(b, s, heads, f, d).permute(0, 3, 1, 2, 4).reshape(bf, s, c)
        o = m.proj_out(o).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        return m.merge.merge_residual(x, o)


class _PosGNForExport(nn.Module):
    """PosGN.forward with the modulation broadcast over the batch instead of tiled.

    The reference op repeats the [M, C, H, W] tables to all B·F rows (a Tile per table in the
    graph) and casts every operand to its compute dtype; here the rows are viewed as
    [B·F / M, M, C, H, W] so the tables broadcast, and only float16 inputs are cast (GroupNorm
    statistics and the modulation in float32, as the reference op). Same math.
    """

    def __init__(self, layer: PosGN) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, tables, silu: bool = True) -> Tensor:  # x [N, C, H, W]
        m = self.layer
        scale, shift = tables.table(m, x.shape[-2], x.shape[-1])  # [M, C, H, W] float32
        w, b = m.norm.weight, m.norm.bias
        xf = x if x.dtype == scale.dtype else x.to(scale.dtype)
        if w.dtype != scale.dtype:
            w, b = w.to(scale.dtype), b.to(scale.dtype)
        y = torch.group_norm(xf, m.num_groups, w, b, m.eps)  # (see ops.reference.posgn)
        rows = scale.shape[0]
        y = (y.reshape(-1, rows, *y.shape[1:]) * (1 + scale) + shift).reshape(x.shape)
        if silu:
            y = F.silu(y)
        return y if y.dtype == x.dtype else y.to(x.dtype)


class _ExportGraph(nn.Module):
    """forward(x, t, *cond) with cond = the inputs after t in ``input_names(config)``."""

    def __init__(self, net: VideoUNet) -> None:
        super().__init__()
        self.net = net
        self.names = input_names(net.config)[2:]

    def forward(self, x: Tensor, t: Tensor, *cond: Tensor) -> Tensor:
        kw = dict(zip(self.names, cond))
        return self.net(x, t, label=kw.get("label"), context=kw.get("context"),
                        context_mask=kw.get("context_mask"))


def prepare_for_export(net: VideoUNet, fp16: bool = False) -> _ExportGraph:
    """A copy of ``net`` on the CPU and reference ops with the export attention, in eval mode."""
    net = copy.deepcopy(net).to("cpu", torch.float32).eval().requires_grad_(False)
    net.set_ops("reference")
    for blk in net.modules():
        if isinstance(blk, Block) and isinstance(blk.tattn, TemporalAttention):
            blk.tattn = _AttentionForExport(blk.tattn)
        if isinstance(blk, ResBlock):
            blk.norm1, blk.norm2 = _PosGNForExport(blk.norm1), _PosGNForExport(blk.norm2)
    if fp16:
        net.half()
        for m in net.modules():
            if isinstance(m, PosGN):  # coordinate MLP stays float32 (see the module docstring)
                for fc in (m.fc1, m.fc2, m.fc3):
                    fc.float()
    return _ExportGraph(net)


# ------------------------------------------------------------------------------- arguments


def _parse_axis(name: str, value, upper: int | None = None) -> int | None:
    """'dynamic' / None -> None, else a positive int (<= upper)."""
    if value is None or value == "dynamic":
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{name} must be a positive int or 'dynamic', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or 'dynamic', got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} exceeds the model window of {upper} frames")
    return value


def _check_opset(opset) -> int:
    onnx = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {newest} (this onnx "
                         f"{onnx.__version__}), got {opset!r}")
    return opset


def check_onnx_output_path(path) -> Path:
    """An output path ending in .onnx whose directory exists and is writable."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path).expanduser()
    if p.suffix.lower() != ".onnx":
        raise ValueError(f"output path must end in .onnx, got {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"output path {str(p)!r} is a directory, expected a file name")
    if not p.parent.is_dir():
        raise ValueError(f"cannot write {str(p)!r}: directory {str(p.parent)!r} does not exist")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(p)!r}: directory {str(p.parent)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"cannot write {str(p)!r}: the file exists and is not writable")
    return p


def _load(model) -> tuple[VideoUNet, str]:
    if isinstance(model, VideoUNet):
        return model, getattr(model, "source", None) or model.config.name
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model name, a model directory or a VideoUNet, "
                        f"got {type(model).__name__}")
    from vdengine.models.loading import load_model

    return load_model(model, device="cpu"), str(model)


# ---------------------------------------------------------------------------------- export


def example_inputs(config: ModelConfig, batch: int, frames: int,
                   dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs in graph order (x, t, [label], [context, context_mask])."""
    g = torch.Generator().manual_seed(seed)
    c, s = config.channels, config.image_size
    x = torch.randn(batch, frames, c, s, s, generator=g).to(dtype)
    t = torch.tensor([float(config.num_train_timesteps // 2 - 1)])
    out = [x, t]
    if config.num_classes > 0:
        out.append(torch.randint(0, config.num_classes + 1, (batch,), generator=g))
    if config.context:
        mask = (torch.rand(batch, frames, generator=g) < 0.5).to(dtype)
        out += [torch.randn(batch, frames, c, s, s, generator=g).to(dtype), mask]
    return tuple(out)


def export_onnx(
    model: str | os.PathLike | VideoUNet = "default",
    path: str | os.PathLike = "model.onnx",
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    batch: int | str | None = "dynamic",
    frames: int | str | None = "dynamic",
    verify: bool = True,
    optimize: bool = True,
) -> Path:
    """Export a denoiser's whole forward to an ONNX file; returns the path.

    The file runs on its own: ``vdengine.runtime.load_graph(path, device)`` needs nothing else.

    Args:
        model: a shipped model name, a model directory or a VideoUNet.
        path: the .onnx file to write (written to a temporary name, then renamed).
        opset: ONNX opset (>= 18; 18-20 express GroupNorm as Reshape/InstanceNormalization,
            >= 21 as GroupNormalization; TensorRT 10.0's parser reads opsets up to 20).
        fp16: float16 weights, activations and x/out (see the module docstring).
        batch: a fixed batch size, or "dynamic" (also None).
        frames: a fixed frame count (<= window), or "dynamic": 1..window.
        verify: run the graph on onnxruntime on a random input of the graph's shape and compare
            it with the model's PyTorch float32 forward; a max abs difference above
            VERIFY_TOLERANCE (1e-3 float32, 5e-2 float16) raises and nothing is written. The
            outcome is the metadata's ``export_check``; when the check cannot run (onnxruntime
            missing or unable to load the graph) the file is written, ``export_check`` says why
            and a UserWarning is issued.
        optimize: run the exporter's graph optimiser (constant folding, dead-node removal).

    Raises:
        ValueError naming the problem: unknown model, unwritable path, bad batch/frames/opset.
        RuntimeError: the graph differs from the PyTorch forward (verify).
    """
    onnx = _import_onnx()
    out_path = check_onnx_output_path(path)
    opset = _check_opset(opset)
    net, source = _load(model)
    cfg = net.config
    fixed_batch = _parse_axis("batch", batch)
    fixed_frames = _parse_axis("frames", frames, upper=cfg.window)
    if fixed_frames is None and cfg.window == 1:
        fixed_frames = 1  # nothing to make dynamic
    dtype = torch.float16 if fp16 else torch.float32
    start = time.perf_counter()

    graph = prepare_for_export(net, fp16=fp16)
    names = input_names(cfg)
    # Example sizes: a dynamic axis is traced at >= 2 (torch.export specialises size-1 axes).
    ex_b = fixed_batch or 2
    ex_f = fixed_frames or cfg.window
    args = example_inputs(cfg, ex_b, ex_f, dtype)
    bdim = None if fixed_batch else torch.export.Dim("batch", min=1)
    fdim = None if fixed_frames else torch.export.Dim("frames", min=1, max=cfg.window)

    def axes(*dims):
        spec = {i: d for i, d in enumerate(dims) if d is not None}
        return spec or None

    shapes = {"x": axes(bdim, fdim), "t": None, "label": axes(bdim),
              "context": axes(bdim, fdim), "context_mask": axes(bdim, fdim)}
    dynamic_shapes = (shapes["x"], None, tuple(shapes[n] for n in names[2:]))

    with warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph, args, dynamo=True, opset_version=opset, input_names=names,
            output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes, optimize=optimize,
            verbose=False, external_data=False,
        )
    proto = program.model_proto
    _rename_dynamic_dims(proto, fixed_batch, fixed_frames)

    meta = graph_metadata(cfg, source=source, dtype=dtype, batch=fixed_batch,
                          frames=fixed_frames, opset=opset,
                          weights_sha256=weights_digest(net.state_dict()))
    meta.update(vdengine_version=_version(), torch_version=torch.__version__,
                onnx_version=onnx.__version__)
    proto.producer_name = "vdengine"
    proto.producer_version = meta["vdengine_version"]
    proto.doc_string = (f"vdengine denoiser {cfg.name}: out = model(x, t, ...) in "
                        f"{cfg.prediction_type}; see docs/export.md")
    _set_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    if verify:
        meta.update(verify_graph(proto.SerializeToString(), net, args, names, dtype))
    else:
        meta["export_check"] = "not verified: verify=False (--no-verify)"
    meta["export_seconds"] = f"{time.perf_counter() - start:.1f}"
    _set_metadata(proto, meta)
    data = proto.SerializeToString()

    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out_path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write {str(out_path)!r}: {e.strerror or e}") from None
    return out_path


def verify_graph(data: bytes, net: VideoUNet, args: tuple[Tensor, ...], names: list[str],
                 dtype: torch.dtype) -> dict[str, str]:
    """Run a serialized graph on onnxruntime's CPU provider on ``args`` (graph order, the graph's
    shapes and dtypes) and compare it with ``net``'s float32 forward on its reference PyTorch
    ops. Returns the metadata keys of the outcome (``export_check``, and when it ran
    ``export_check_max_abs_diff``/``export_check_tolerance``); raises RuntimeError above the
    tolerance; warns (UserWarning) when the check cannot run."""
    try:
        import onnxruntime as ort
    except ImportError:
        return _unverified("onnxruntime is not installed (pip install onnxruntime)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/...
        return _unverified(f"onnxruntime {ort.__version__} cannot load the graph: "
                           f"{first_line(e)}")
    got = sess.run([OUTPUT_NAME], {n: a.numpy() for n, a in zip(names, args)})[0]
    ref_net = copy.deepcopy(net).to("cpu", torch.float32).eval().set_ops("reference")
    kw = dict(zip(names[2:], (a.float() if a.is_floating_point() else a for a in args[2:])))
    with torch.inference_mode():
        ref = ref_net(args[0].float(), args[1], **kw)
    diff = float((torch.from_numpy(got).float() - ref).abs().max())
    tol = VERIFY_TOLERANCE[dtype]
    if not diff <= tol:
        raise RuntimeError(f"exported graph differs from the PyTorch forward by {diff:.3g} "
                           f"(max abs, tolerance {tol:g}) on a random input of shape "
                           f"{list(args[0].shape)}")
    return {"export_check": f"verified: onnxruntime {ort.__version__} vs the PyTorch float32 "
                            f"forward on a random {list(args[0].shape)} input, max abs diff "
                            f"{diff:.2e} <= {tol:g}",
            "export_check_max_abs_diff": f"{diff:.3e}", "export_check_tolerance": f"{tol:g}"}


def _unverified(reason: str) -> dict[str, str]:
    warnings.warn(f"vdengine.export_onnx: the graph was NOT verified against PyTorch: {reason}",
                  UserWarning, stacklevel=3)
    return {"export_check": f"not verified: {reason}"}


def _import_onnx():
    """onnx, after checking that torch's exporter has what it needs (onnx and onnxscript)."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx and onnxscript packages "
                          f"(pip install 'vdengine[onnx]'): {e}") from None
    return onnx


def _version() -> str:
    import vdengine

    return vdengine.__version__


def _set_metadata(proto, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)


def _rename_dynamic_dims(proto, fixed_batch: int | None, fixed_frames: int | None) -> None:
    """Name the dynamic axes "batch" and "frames" on every input and the output."""
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                continue
            if i == 0 and fixed_batch is None:
                d.dim_param = "batch"
            elif i == 1 and fixed_frames is None:
                d.dim_param = "frames"


class _quiet_exporter_logs:
    """Silence the exporter's INFO/WARNING chatter (torchvision op registration, ...)."""

    _names = ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental")

    def __enter__(self):
        self._levels = {}
        for n in self._names:
            log = logging.getLogger(n)
            self._levels[n] = log.level
            log.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for n, lvl in self._levels.items():
            logging.getLogger(n).setLevel(lvl)
        return False


# ---------------------------------------------------------------------------------- TensorRT


def trtexec_command(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    fp16: bool = True,
    opt_batch: int = 2,
    max_batch: int = 16,
    min_frames: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """The trtexec command line that builds a TensorRT engine from an exported ONNX file.

    Shape profiles come from the file's metadata: a fixed batch/frames axis is the same in min,
    opt and max; a dynamic batch spans 1..max_batch (opt: opt_batch, e.g. 2 = one video with
    guidance), dynamic frames span min_frames (default: the window)..window with opt = window,
    what the sampler feeds.
    """
    meta = metadata if metadata is not None else read_metadata(onnx_path)
    cfg = config_from_metadata(meta, str(onnx_path))
    fb = None if meta.get("batch", "dynamic") == "dynamic" else int(meta["batch"])
    ff = None if meta.get("frames", "dynamic") == "dynamic" else int(meta["frames"])
    if fb is None and not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch} and {max_batch}")
    lo_f = ff or (min_frames if min_frames is not None else cfg.window)
    if not 1 <= lo_f <= cfg.window:
        raise ValueError(f"min_frames must be in [1, {cfg.window}], got {lo_f}")
    c, s = cfg.channels, cfg.image_size
    profiles = {}
    for which, b, f in (("min", fb or 1, lo_f), ("opt", fb or opt_batch, ff or cfg.window),
                        ("max", fb or max_batch, ff or cfg.window)):
        dims = {"x": (b, f, c, s, s), "label": (b,), "context": (b, f, c, s, s),
                "context_mask": (b, f)}
        names = [n for n in input_names(cfg) if n != "t"]
        profiles[which] = ",".join(f"{n}:" + "x".join(map(str, dims[n])) for n in names)
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if fp16:
        cmd.append("--fp16")
    if fb is None or ff is None:
        cmd += [f"--minShapes={profiles['min']}", f"--optShapes={profiles['opt']}",
                f"--maxShapes={profiles['max']}"]
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    return cmd


__all__ = [
    "DEFAULT_OPSET",
    "VERIFY_TOLERANCE",
    "check_onnx_output_path",
    "example_inputs",
    "export_onnx",
    "prepare_for_export",
    "trtexec_command",
    "verify_graph",
]
