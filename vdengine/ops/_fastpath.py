"""Validate once per call signature: the eager fast path of the fused-op wrappers.

A fused-op call pays its argument checks (the public wrapper's and the custom op's own) and the
torch.library dispatcher: ~70 µs per call on this project's CPU against ~40 µs for the kernel
launch itself on a small tensor, and a denoiser forward makes dozens of such calls. A sampling
loop repeats the same few signatures (shapes, strides, dtypes, devices, scalar arguments) at
every step, so after a signature has passed the full checks once, later calls with it go
straight to the kernel.

The fast path applies only where skipping the dispatcher changes nothing observable: plain
tensors (no FakeTensor or other subclass), not while torch.compile / torch.export traces (they
must see the custom op), not under the autograd profiler (its per-op rows), and not when an input
requires grad while grad mode is on (that must raise, every time).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

_profiler_enabled = torch._C._autograd._profiler_enabled  # a cheap C probe


class ValidatedCalls:
    """The call signatures one op has validated (bounded: cleared when it grows past maxsize)."""

    def __init__(self, maxsize: int = 512) -> None:
        self.maxsize = maxsize
        self._seen: set[Hashable] = set()

    def key(self, tensors: Sequence[Tensor | None], scalars: Sequence[object]) -> tuple | None:
        """The call's signature, or None when the call must take the full path."""
        if torch.compiler.is_compiling() or _profiler_enabled():
            return None
        grad = torch.is_grad_enabled()
        parts: list[object] = []
        for t in tensors:
            if t is None:
                parts.append(None)
                continue
            if type(t) is not Tensor or (grad and t.requires_grad):
                return None
            parts.append((t.shape, t.stride(), t.dtype, t.device))
        # the type too: 2 and 2.0 and True hash alike but are not the same argument
        parts.extend((type(s), s) for s in scalars)
        return tuple(parts)

    def __contains__(self, key: tuple | None) -> bool:
        return key is not None and key in self._seen

    def add(self, key: tuple | None) -> None:
        """Record a signature that passed the full checks."""
        if key is None:
            return
        if len(self._seen) >= self.maxsize:
            self._seen.clear()
        self._seen.add(key)


__all__ = ["ValidatedCalls"]
