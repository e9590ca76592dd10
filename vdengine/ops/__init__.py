"""vdengine's fused ops. Until the native wrappers land these are the reference definitions."""

from vdengine.ops import reference
from vdengine.ops.reference import ddim_step, dpmpp_2m_step, posgn, temporal_attention

__all__ = ["reference", "posgn", "temporal_attention", "ddim_step", "dpmpp_2m_step"]
