"""vdengine: a C++/CUDA-accelerated inference engine for video diffusion models."""

from vdengine import ops
from vdengine.ops._native import build_info

__version__ = "0.1.0"

__all__ = ["ops", "build_info", "__version__"]
