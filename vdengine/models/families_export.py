"""ONNX export of the seed families' networks: one graph per sub-network, checked on onnxruntime.

    from vdengine.models.families_export import export_family_onnx
    paths = export_family_onnx("vidm", "onnx/vidm/")     # content.onnx, motion.onnx

Graphs (inputs in this order; B dynamic, everything else fixed; float32; reference ops, so only
standard ONNX ops):

- VIDM ``content``: x [B, 1, C, H, W], t [1], label [B] int64 → ε̂ [B, 1, C, H, W].
- VIDM ``motion``: x [B, 1, C, H, W], t [1], label [B], first_frame [B, C, H, W], prev_frame
  [B, C, H, W], frame_index [B] int64 → ε̂ [B, 1, C, H, W]. The PosGN tables are computed in the
  graph per row (the torch path shares one row when all frame indices agree; same values).
- VideoFusion ``base``: x_mid [B, C, H, W], t [1], label [B] → b̂ [B, C, H, W];
  ``residual``: x [B, F, C, H, W] (base part removed), t [1], label [B] → r̂ [B, F, C, H, W];
  ``denoiser``: the whole decomposed denoiser x [B, F, C, H, W], t [1], label [B] → ε̂.

Unconditional models (num_classes = 0) have no label input. Each export runs the graph on
onnxruntime against the PyTorch module (``verify``) and raises above a 1e-3 max abs difference.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from vdengine.models.imageunet import RowTables
from vdengine.models.videofusion import VideoFusion
from vdengine.models.vidm import VIDM

DEFAULT_OPSET = 18
TOLERANCE = 1e-3


class _Content(nn.Module):
    def __init__(self, model: VIDM) -> None:
        super().__init__()
        self.content = model.content

    def forward(self, x: Tensor, t: Tensor, *label: Tensor) -> Tensor:
        c = self.content
        tables = RowTables(t, torch.full_like(t, -1.0), c.config.num_train_timesteps)
        emb = c.unet.class_embedding(label[0] if label else None, x.shape[0], x.device)
        return c.denoise(x[:, 0], tables, emb)[:, None]


class _Motion(nn.Module):
    def __init__(self, model: VIDM) -> None:
        super().__init__()
        self.motion = model.motion

    def forward(self, x: Tensor, t: Tensor, *inputs: Tensor) -> Tensor:
        m = self.motion
        label = inputs[0] if len(inputs) == 4 else None
        first, prev, frame_index = inputs[-3:]
        b = x.shape[0]
        tables = RowTables(t.expand(b), m.config.frame_coord(frame_index),
                           m.config.num_train_timesteps)
        emb = m.unet.class_embedding(label, b, x.device)
        return m.denoise(x[:, 0], tables, emb, first, prev)[:, None]


class _Base(nn.Module):
    def __init__(self, model: VideoFusion) -> None:
        super().__init__()
        self.base = model.base
        self.timesteps = model.config.num_train_timesteps

    def forward(self, x: Tensor, t: Tensor, *label: Tensor) -> Tensor:
        tables = RowTables(t, torch.zeros_like(t), self.timesteps)
        emb = self.base.class_embedding(label[0] if label else None, x.shape[0], x.device)
        return self.base(x, tables, emb)


class _Called(nn.Module):
    """forward(x, t, *label) → module(x, t, label) (the residual VideoUNet, the denoiser)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, t: Tensor, *label: Tensor) -> Tensor:
        return self.module(x, t, label[0] if label else None)


def graphs(model: VIDM | VideoFusion, batch: int = 2
           ) -> dict[str, tuple[nn.Module, tuple[Tensor, ...], list[str]]]:
    """name → (module, example inputs, input names) of every graph of `model` (a float32 CPU
    copy on reference ops, eval mode)."""
    if not isinstance(model, (VIDM, VideoFusion)):
        raise TypeError(f"model must be a VIDM or a VideoFusion, got {type(model).__name__}")
    model = copy.deepcopy(model).to("cpu", torch.float32).eval().requires_grad_(False)
    model.set_ops("reference")
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    c, s = cfg.channels, cfg.image_size

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    t = torch.tensor([431.0])
    label = ([torch.arange(batch) % cfg.num_classes] if cfg.num_classes > 0 else [])
    lname = ["label"] if label else []
    if isinstance(model, VIDM):
        frame = [rand(batch, c, s, s), rand(batch, c, s, s),
                 torch.arange(1, batch + 1, dtype=torch.long)]
        return {
            "content": (_Content(model), (rand(batch, 1, c, s, s), t, *label),
                        ["x", "t", *lname]),
            "motion": (_Motion(model), (rand(batch, 1, c, s, s), t, *label, *frame),
                       ["x", "t", *lname, "first_frame", "prev_frame", "frame_index"]),
        }
    x = rand(batch, cfg.window, c, s, s)
    return {
        "base": (_Base(model), (x[:, cfg.window // 2].contiguous(), t, *label),
                 ["x", "t", *lname]),
        "residual": (_Called(model.residual), (x, t, *label), ["x", "t", *lname]),
        "denoiser": (_Called(model), (x, t, *label), ["x", "t", *lname]),
    }


def export_graph(module: nn.Module, args: tuple[Tensor, ...], names: list[str],
                 path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """torch.onnx.export (dynamo) with a dynamic batch axis on every input but t."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    # every graph module is forward(x, t, *rest): the *rest inputs form one nested tuple
    shapes = ({0: batch}, None, tuple({0: batch} for _ in names[2:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                    input_names=names, output_names=["out"],
                                    dynamic_shapes=shapes, verbose=False,
                                    external_data=False)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    program.save(str(tmp))
    os.replace(tmp, path)
    return path


def max_abs_diff(path: str | os.PathLike, module: nn.Module, args: tuple[Tensor, ...],
                 names: list[str]) -> float:
    """Run the .onnx file on onnxruntime (CPU) and the module on the same inputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: a.numpy() for n, a in zip(names, args)}
    (out,) = sess.run(["out"], feeds)
    with torch.no_grad():
        ref = module(*args)
    return float((torch.from_numpy(out) - ref).abs().max())


def export_family_onnx(model: str | os.PathLike | VIDM | VideoFusion,
                       out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                       verify: bool = True) -> dict[str, tuple[Path, float | None]]:
    """Export every network of a family model (a module, model directory or shipped name) into
    out_dir/<name>.onnx; returns name → (path, max abs difference vs PyTorch on a batch other
    than the traced one, or None without verify)."""
    if not isinstance(model, nn.Module):
        from vdengine.models.families import load_family_model

        model = load_family_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    checks = graphs(model, batch=3)
    for name, (module, args, names) in graphs(model, batch=2).items():
        path = export_graph(module, args, names, out / f"{name}.onnx", opset=opset)
        diff = None
        if verify:
            _, check_args, _ = checks[name]
            diff = max_abs_diff(path, module, check_args, names)
            if not diff <= TOLERANCE:
                raise RuntimeError(f"{name}.onnx differs from the PyTorch network by {diff:.3g} "
                                   f"(max abs, tolerance {TOLERANCE})")
        results[name] = (path, diff)
    return results


__all__ = ["export_family_onnx", "export_graph", "graphs", "max_abs_diff"]
