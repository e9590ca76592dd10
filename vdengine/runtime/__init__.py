"""Exported graphs as denoisers: ``load_graph`` runs a file written by `vdengine export` alone.

    from vdengine.runtime import load_graph
    den = load_graph("m.onnx", "cpu")               # onnxruntime, from the suffix
    den = load_graph("m.plan", "cuda")              # TensorRT (.plan / .engine; needs m.plan.json)
    den = load_graph("m.onnx", "cpu", check_against="path/to/model_dir")   # opt-in weights check
    out = den(x [B, F, C, H, W], t [1], label=[B] | None, context=None, context_mask=None)

The returned object implements vdengine.denoiser.Denoiser: ``den.spec`` is the DenoiserSpec of
the exported model, built from the ModelConfig in the graph's metadata, so nothing but the file is
needed (and, for TensorRT, the metadata sidecar the engine build writes). ``den.graph`` is the
checked signature and metadata (vdengine.runtime.contract.GraphSpec).

- "onnxruntime": an InferenceSession (CPU or CUDA provider), tensors bound in place.
- "tensorrt": an engine built with trtexec from the graph (untested in this repository:
  TensorRT cannot be installed on its machines).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vdengine.runtime.contract import check_against as _check_against

#: file suffix -> the backend that runs it
GRAPH_SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")


def graph_backend(path: str | os.PathLike, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` when given, else the one of its suffix."""
    if backend is not None:
        if backend not in GRAPH_BACKENDS:
            raise ValueError(f"backend must be one of {GRAPH_BACKENDS} (or None: from the file "
                             f"suffix), got {backend!r}")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        raise ValueError(f"cannot tell the backend of {str(path)!r} from its suffix "
                         f"{suffix or '(none)'!r}: expected one of {sorted(GRAPH_SUFFIXES)}, "
                         f"or pass backend= one of {GRAPH_BACKENDS}")
    return GRAPH_SUFFIXES[suffix]


def load_graph(path: str | os.PathLike, device: str | torch.device,
               dtype: torch.dtype | None = None, backend: str | None = None,
               check_against: str | os.PathLike | None = None):
    """An exported graph as a Denoiser, from the file alone.

    Args:
        path: an .onnx file from `vdengine export` / vdengine.export_onnx, or a TensorRT engine
            (.engine / .plan) from export/build_trt_engine.py with its ``<engine>.json`` beside it.
        device: "cpu" or "cuda[:i]" (TensorRT: CUDA only): where the engine's tensors live.
        dtype: the dtype of the x the engine feeds and of the prediction it gets back (the graph
            casts to and from its own I/O dtype, ``den.graph.dtype``). None: float32.
        backend: "onnxruntime" or "tensorrt"; None picks it from the suffix.
        check_against: a model directory (or shipped model name); when given, a graph whose
            config or weights (metadata ``weights_sha256``) differ from it is refused.

    Returns:
        an OnnxRuntimeDenoiser or TensorRTDenoiser (vdengine.denoiser.Denoiser).

    Raises:
        ValueError in one line: a missing file, an unknown suffix without backend=, a file that
        is not a vdengine export or does not match what the engine feeds, a check_against
        mismatch. ImportError when the backend's package is not installed.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path).expanduser()
    backend = graph_backend(p, backend)
    if not p.is_file():
        kind = "ONNX file" if backend == "onnxruntime" else "TensorRT engine"
        raise ValueError(f"{kind} {str(p)!r} does not exist")
    if backend == "onnxruntime":
        from vdengine.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

        den = OnnxRuntimeDenoiser(p, device=device, dtype=dtype)
    else:
        from vdengine.runtime.tensorrt_backend import TensorRTDenoiser

        den = TensorRTDenoiser(p, device=device, dtype=dtype)
    if check_against is not None:
        _check_against(den.graph, check_against)
    return den


# ------------------------------------------------------------------------------------------
# Transitional: what vdengine/api.py calls until `vdengine.load("m.onnx")` goes to load_graph.

BACKENDS = ("torch", *GRAPH_BACKENDS)


__all__ = ["GRAPH_BACKENDS", "GRAPH_SUFFIXES", "graph_backend", "load_graph"]
