"""Denoiser backends behind one interface: the callable the samplers drive.

    denoiser(x [B, F, C, H, W], t [1], label=[B] | None, context=None, context_mask=None)
        -> [B, F, C, H, W] in config.prediction_type;   denoiser.config -> ModelConfig

- "torch": the VideoUNet itself on vdengine's fused ops (vdengine.models.load_model).
- "onnxruntime": an exported ONNX graph in an onnxruntime session (CPU or CUDA provider),
  tensors bound in place (OnnxRuntimeDenoiser).
- "tensorrt": a TensorRT engine built with trtexec from that graph (TensorRTDenoiser; untested in
  this repository: TensorRT cannot be installed on its machines).

The graph backends take their ModelConfig from the exported file's metadata and check that the
model named alongside (``model=``) has the same config and weights, so a graph exported from
other weights (say, before the shipped model was retrained) is refused rather than silently used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def check_backend(backend: str, path: str | os.PathLike | None) -> tuple[str, str | None]:
    """Validate a (backend, file) pair; returns (backend, absolute file path or None)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        if path is not None:
            raise ValueError("onnx= is only used by backend='onnxruntime' (an .onnx file) or "
                             "backend='tensorrt' (an engine); the torch backend loads the model")
        return backend, None
    what = "an exported .onnx file" if backend == "onnxruntime" else "a TensorRT engine file"
    if path is None:
        raise ValueError(f"backend={backend!r} needs onnx= {what} "
                         "(write one with `vdengine export --onnx PATH`)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"onnx must be a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.is_file():
        kind = "ONNX file" if backend == "onnxruntime" else "TensorRT engine"
        raise ValueError(f"{kind} {str(p)!r} does not exist")
    return backend, str(p.resolve())


def load_denoiser(model: str | os.PathLike, device: torch.device, dtype: torch.dtype,
                  backend: str = "torch", path: str | os.PathLike | None = None):
    """The denoiser of ``model`` on ``backend`` (see the module docstring)."""
    backend, path = check_backend(backend, path)
    if backend == "torch":
        from vdengine.models import load_model

        net = load_model(model, device=device, dtype=dtype)
        net.set_ops("fused")
        return net.eval()
    if backend == "onnxruntime":
        from vdengine.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

        den = OnnxRuntimeDenoiser(path, device=device)
    else:
        from vdengine.runtime.tensorrt_backend import TensorRTDenoiser

        den = TensorRTDenoiser(path, device=device)
    check_same_model(den, model)
    return den


def check_same_model(denoiser, model: str | os.PathLike) -> None:
    """Raise ValueError unless ``model`` resolves to the config and weights the graph holds."""
    from vdengine.export import weights_digest
    from vdengine.models.loading import WEIGHTS_FILE, load_config, load_state, resolve_model_dir

    spec = denoiser.spec
    d = resolve_model_dir(model)  # ValueError for an unknown model
    exported_from = spec.metadata.get("model_source", "?")
    cfg = load_config(d)
    if cfg.to_dict() != spec.config.to_dict():
        raise ValueError(f"{spec.source} was exported from model {exported_from!r}, whose "
                         f"config differs from model {str(model)!r}'s: use it with the model it "
                         f"was exported from, or re-export it from {str(model)!r}")
    if spec.weights_sha256 is not None:
        digest = weights_digest(load_state(Path(d) / WEIGHTS_FILE))
        if digest != spec.weights_sha256:
            raise ValueError(f"{spec.source} was exported from other weights than model "
                             f"{str(model)!r} has now (exported from {exported_from!r}): use it "
                             f"with the model it was exported from, or re-export it from "
                             f"{str(model)!r}")


__all__ = ["BACKENDS", "check_backend", "check_same_model", "load_denoiser"]
