"""vdengine's fused ops: validated wrappers over the C++ (CPU) and CUDA kernels.

Each op is a torch custom op (``torch.ops.vdengine.<name>``) with a fake implementation, so
torch.compile and torch.export trace through it; the public functions below validate their
arguments (ValueError/TypeError naming the argument), convert schedule coefficients to device
tensors without host syncs and dispatch by device: CPU kernels take float32/bfloat16 (posgn and
group_norm also channels-last inputs), CUDA kernels float32/float16/bfloat16. An eager call whose
signature (shapes, strides, dtypes, devices, scalars) passed the checks before skips them and
the custom op's dispatch (ops/_fastpath.py): a sampling loop validates once per shape.

The ops are inference ops and have no backward: with grad mode on, an input that requires grad
raises a RuntimeError. ``vdengine.ops.reference`` holds the pure-PyTorch specification of every op
(float32/float64, with autograd): use it for training and as the ground truth in tests.
"""

from vdengine.ops import reference
from vdengine.ops.ddim_step import ddim_step
from vdengine.ops.dpmpp_2m_step import dpmpp_2m_step
from vdengine.ops.euler_step import euler_step
from vdengine.ops.geglu import geglu
from vdengine.ops.group_norm import group_norm
from vdengine.ops.posgn import posgn
from vdengine.ops.temporal_attention import temporal_attention

__all__ = ["ddim_step", "dpmpp_2m_step", "euler_step", "geglu", "group_norm", "posgn", "reference",
           "temporal_attention"]
