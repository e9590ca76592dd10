"""Loading of the compiled kernels: vdengine._C (CPU, always) and vdengine._C_cuda (lazily)."""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

_cuda_module: ModuleType | None = None
_cuda_error: str | None = None

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
PREDICTION_CODES = {"epsilon": 0, "v_prediction": 1, "sample": 2}


def cpu() -> ModuleType:
    """The CPU kernel module. Raises ImportError with a rebuild hint when it is missing."""
    try:
        return importlib.import_module("vdengine._C")
    except ImportError as e:  # pragma: no cover - only on a broken install
        raise ImportError(
            "vdengine's compiled CPU kernels (vdengine._C) are missing: reinstall with `pip install .`"
        ) from e


def cuda() -> ModuleType:
    """The CUDA kernel module, imported on first use so `import vdengine` needs no GPU driver."""
    global _cuda_module, _cuda_error
    if _cuda_module is None:
        try:
            _cuda_module = importlib.import_module("vdengine._C_cuda")
        except ImportError as e:
            _cuda_error = str(e)
            raise RuntimeError(
                "vdengine was built without its CUDA kernels (no CUDA compiler at build time, or "
                "VDENGINE_CUDA=OFF); rebuild with nvcc on PATH to run the ops on a GPU"
            ) from e
    return _cuda_module


def cuda_available() -> bool:
    """True when the CUDA kernels were built and import."""
    try:
        cuda()
    except RuntimeError:
        return False
    return True


def stream_of(t: torch.Tensor) -> int:
    """The raw cudaStream_t of the current torch stream on t's device."""
    return torch.cuda.current_stream(t.device).cuda_stream


def build_info() -> dict:
    """What this installation compiled: CPU kernels, OpenMP, CUDA kernels and their archs."""
    from vdengine import _build_config as cfg

    info: dict = {
        "cpu": True,
        "cxx_compiler": cfg.CXX_COMPILER,
        "build_type": cfg.BUILD_TYPE,
        "openmp": cfg.OPENMP,
        "cuda_built": cfg.CUDA_BUILT,
        "cuda_archs": [a for a in cfg.CUDA_ARCHS.split(",") if a],
        "cuda_compiler_version": cfg.CUDA_COMPILER_VERSION or None,
        "torch": torch.__version__,
    }
    info.update({f"cpu_{k}": v for k, v in cpu().build_info().items()})
    if cfg.CUDA_BUILT:
        info["cuda_loadable"] = cuda_available()
        if info["cuda_loadable"]:
            mod = cuda()
            info["cuda_runtime_version"] = mod.build_info()["cuda_runtime_version"]
            info["cuda_devices"] = mod.device_count()
        else:
            info["cuda_load_error"] = _cuda_error
    return info
