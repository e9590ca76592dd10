"""The onnxruntime denoiser: an exported graph (vdengine.export_onnx) in an InferenceSession.

    den = OnnxRuntimeDenoiser("balls32.onnx", device="cpu")   # or vdengine.runtime.load_graph
    out = den(x, t[:1], label=labels)          # same call as VideoUNet, same sampler loop

Tensors stay where the sampler keeps them: every call binds the device pointers of the torch
inputs and of a torch output tensor (I/O binding), so nothing is copied through numpy and
nothing waits on the host. The CPU provider runs with torch's thread count. On CUDA the session
runs on the CUDA provider with torch's current stream as its compute stream (the stream current
when the session is created: keep using it) and without onnxruntime's end-of-run host sync, so
the sampler's fused kernels and the graph are ordered on one stream. The CUDA path has not run
in this repository's CI (no GPU there).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vdengine.runtime.contract import (
    ELEMENT_TYPES,
    OUTPUT_NAME,
    TensorSpec,
    check_graph,
    first_line,
)
from vdengine.runtime.graph import GraphDenoiser, graph_device

_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("backend='onnxruntime' needs the onnxruntime package: "
                          "pip install onnxruntime (or onnxruntime-gpu for CUDA)") from None
    return ort


def default_providers(device: torch.device) -> list:
    """The providers for a device: CPU, or CUDA (on torch's current stream) then CPU."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    idx = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(idx).cuda_stream
    return [("CUDAExecutionProvider", {"device_id": str(idx),
                                       "user_compute_stream": str(stream)}),
            "CPUExecutionProvider"]


def _spec(arg) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or []))
    elem = arg.type[len("tensor("):-1] if arg.type.startswith("tensor(") else arg.type
    return TensorSpec(arg.name, dims, ELEMENT_TYPES.get(elem))


class OnnxRuntimeDenoiser(GraphDenoiser):
    """A denoiser running an exported ONNX graph on onnxruntime.

    Args:
        path: the .onnx file written by vdengine.export_onnx / `vdengine export`.
        device: where the sampler's tensors live: cpu (CPU provider) or cuda[:i] (CUDA provider).
        providers: override the provider list (names or (name, options) pairs); each must be in
            onnxruntime.get_available_providers().
        threads: intra-op threads of the CPU provider (default: torch.get_num_threads()).
        dtype: the engine-side dtype of x and the prediction (GraphDenoiser; default float32).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 providers: list | None = None, threads: int | None = None,
                 dtype: torch.dtype | None = None) -> None:
        ort = _import_ort()
        self.path = Path(path)
        self.device = graph_device(device)
        source = repr(str(self.path))
        if not self.path.is_file():
            raise ValueError(f"ONNX file {source} does not exist")
        if providers is None:
            providers = default_providers(self.device)
        available = ort.get_available_providers()
        for p in providers:
            name = p[0] if isinstance(p, (tuple, list)) else p
            if name not in available:
                hint = (" (install onnxruntime-gpu for CUDA, or use device='cpu')"
                        if name == "CUDAExecutionProvider" else "")
                raise ValueError(f"onnxruntime provider {name!r} is not available in this "
                                 f"onnxruntime {ort.__version__} (available: "
                                 f"{', '.join(available)}){hint}")
        first = providers[0][0] if isinstance(providers[0], (tuple, list)) else providers[0]
        if (first == "CPUExecutionProvider") != (self.device.type == "cpu"):
            raise ValueError(f"provider {first!r} does not run on device {self.device}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/...
            raise ValueError(f"onnxruntime cannot load {source}: {first_line(e)}") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.graph = check_graph(source, meta,
                                [_spec(a) for a in self.session.get_inputs()],
                                [_spec(a) for a in self.session.get_outputs()])
        self.providers = self.session.get_providers()
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise ValueError(f"onnxruntime did not enable the CUDA provider for {source} "
                             f"(enabled: {self.providers})")
        self._run_options = ort.RunOptions()
        if self.device.type == "cuda":
            # The session computes on torch's stream: no host wait at the end of each run.
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._ort_device = "cuda" if self.device.type == "cuda" else "cpu"
        self._device_id = (self.device.index or 0) if self.device.type == "cuda" else 0
        self._init_engine_side(dtype)

    def __call__(self, x: Tensor, t, label: Tensor | None = None, context: Tensor | None = None,
                 context_mask: Tensor | None = None) -> Tensor:
        """out [B, F, C, H, W] in x's dtype, in the model's prediction type."""
        feeds = self.graph_inputs(x, t, label, context, context_mask)
        out = torch.empty(feeds["x"].shape, dtype=self.graph.dtype, device=self.device)
        binding = self.session.io_binding()
        for name, tensor in feeds.items():
            binding.bind_input(name, self._ort_device, self._device_id, _NUMPY[tensor.dtype],
                               tuple(tensor.shape), tensor.data_ptr())
        binding.bind_output(OUTPUT_NAME, self._ort_device, self._device_id,
                            _NUMPY[out.dtype], tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding, self._run_options)
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def __repr__(self) -> str:
        return (f"OnnxRuntimeDenoiser({str(self.path)!r}, device={self.device}, "
                f"providers={self.providers})")


__all__ = ["OnnxRuntimeDenoiser", "default_providers"]
