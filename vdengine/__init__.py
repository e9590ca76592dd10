"""vdengine: a C++/CUDA-accelerated inference engine for video diffusion models.

    import vdengine
    video = vdengine.generate(num_frames=16, steps=8, batch_size=4, seed=0)
    video.save("demo.mp4")
"""

from vdengine import ops
from vdengine.ops._native import build_info

__version__ = "0.1.0"

# The pipeline API pulls in models, samplers and video I/O: imported on first use.
_LAZY = {"Pipeline": "vdengine.api", "generate": "vdengine.api", "load": "vdengine.api",
         "Video": "vdengine.video", "export_onnx": "vdengine.export",
         "Denoiser": "vdengine.denoiser", "DenoiserSpec": "vdengine.denoiser",
         "generate_many": "vdengine.distributed.batch"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vdengine' has no attribute {name!r}")


__all__ = [
    "Denoiser",
    "DenoiserSpec",
    "Pipeline",
    "Video",
    "__version__",
    "build_info",
    "export_onnx",
    "generate",
    "generate_many",
    "load",
    "ops",
]
