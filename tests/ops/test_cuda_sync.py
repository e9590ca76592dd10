"""VDENGINE_CUDA_SYNC=1: every CUDA launch waits for its kernel and reports a fault by kernel name.

Each check runs in a fresh interpreter: the variable is read once per process, and a kernel fault
leaves the CUDA context unusable for the rest of that process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VDENGINE_CUDA_SYNC": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.cuda
def test_fault_is_reported_at_its_kernel():
    # posgn on unmapped addresses: with the sync the illegal access raises at this very call.
    result = _run("""
import torch
from vdengine.ops import _native

torch.zeros(1, device="cuda")  # the context exists before the launch
bad = 1 << 44
stream = torch.cuda.current_stream().cuda_stream
try:
    _native.cuda().posgn(0, bad, bad, bad, 0, 0, bad, 2, 8, 64, 1, 2, 1e-5, False, stream)
except RuntimeError as e:
    print("RAISED:", e)
""")
    assert "RAISED: posgn: CUDA error after this kernel" in result.stdout, result.stdout + result.stderr


@pytest.mark.cuda
def test_results_and_graph_capture_unchanged():
    # With the sync on, the ops still match the reference, and a CUDA graph still captures them
    # (check_launch does not synchronise while the stream is capturing).
    result = _run("""
import torch
from vdengine import ops
from vdengine.ops import reference

g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(4, 8, 6, 6, device="cuda", generator=g)
scale, shift = (torch.randn(2, 8, 6, 6, device="cuda", generator=g) for _ in range(2))
torch.testing.assert_close(ops.posgn(x, scale, shift, 2), reference.posgn(x, scale, shift, 2),
                           atol=1e-5, rtol=1e-5)
q = torch.randn(8, 5, 32, device="cuda", generator=g)
torch.testing.assert_close(ops.temporal_attention(q, q, q, 4, 1),
                           reference.temporal_attention(q, q, q, 4, 1), atol=1e-5, rtol=1e-5)
graph = torch.cuda.CUDAGraph()
ops.posgn(x, scale, shift, 2)  # warm-up outside the capture
with torch.cuda.graph(graph):
    y = ops.posgn(x, scale, shift, 2)
x.mul_(2.0)
graph.replay()
torch.testing.assert_close(y, reference.posgn(x, scale, shift, 2), atol=1e-5, rtol=1e-5)
print("OK")
""")
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr
