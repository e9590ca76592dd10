"""The TensorRT denoiser: a serialized engine built by trtexec from an exported ONNX graph.

UNTESTED IN THIS REPOSITORY: TensorRT cannot be installed on the machines that develop and test
vdengine, so this file has never run. It is kept small and follows TensorRT's documented Python
API (>= 10): named I/O tensors, ``set_input_shape`` + ``set_tensor_address`` with torch's device
pointers, and ``execute_async_v3`` on torch's current CUDA stream (no host sync).

The engine comes from export/build_trt_engine.py, which also writes ``<engine>.json`` beside it:
the ONNX file's metadata (config, dtype, batch/frames spec), which an engine does not carry
(vdengine.runtime.contract.metadata_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from vdengine.runtime.contract import OUTPUT_NAME, TensorSpec, check_graph, read_engine_metadata
from vdengine.runtime.graph import GraphDenoiser, graph_device


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise ImportError("backend='tensorrt' needs TensorRT's Python package (tensorrt >= 10, "
                          "NVIDIA's pip package `tensorrt`), which is not installed") from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise ImportError(f"backend='tensorrt' needs tensorrt >= 10, found {trt.__version__}")
    return trt


class TensorRTDenoiser(GraphDenoiser):
    """A denoiser running a TensorRT engine; same call as VideoUNet. Untested here (see above)."""

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cuda",
                 dtype: torch.dtype | None = None) -> None:
        self.path = Path(path)
        self.device = graph_device(device)
        source = repr(str(self.path))
        if self.device.type != "cuda":
            raise ValueError(f"backend='tensorrt' runs on CUDA devices, got device={self.device}")
        if not self.path.is_file():
            raise ValueError(f"TensorRT engine {source} does not exist")
        meta = read_engine_metadata(self.path)
        trt = _import_trt()
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32,
                  trt.DataType.INT64: torch.int64}
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ValueError(f"TensorRT cannot deserialize {source} (built by another "
                                 "TensorRT version or for another GPU?)")
            self.context = self.engine.create_execution_context()
        inputs, outputs, self._io_dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dt = dtypes.get(self.engine.get_tensor_dtype(name))
            self._io_dtypes[name] = dt
            dims = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            # TensorRT may carry the int64 label as int32: checked as int64, cast when bound.
            spec = TensorSpec(name, dims, torch.int64 if dt == torch.int32 else dt)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        self.graph = check_graph(source, meta, inputs, outputs)
        self._init_engine_side(dtype)

    def __call__(self, x: Tensor, t, label: Tensor | None = None, context: Tensor | None = None,
                 context_mask: Tensor | None = None) -> Tensor:
        feeds = self.graph_inputs(x, t, label, context, context_mask)
        for name, tensor in feeds.items():
            tensor = tensor.to(self._io_dtypes[name]).contiguous()
            feeds[name] = tensor  # keep the (possibly cast) tensor alive until the launch
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out = torch.empty(feeds["x"].shape, dtype=self._io_dtypes[OUTPUT_NAME], device=self.device)
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.graph.source}")
        return out if out.dtype == x.dtype else out.to(x.dtype)


__all__ = ["TensorRTDenoiser"]
