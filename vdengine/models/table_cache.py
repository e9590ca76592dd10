"""A cache of PosGN tables across forward calls, keyed by timestep.

PosGN's (scale, shift) tables are a function of the layer weights and the (t, frame, h, w)
coordinates only — never of x. A sampler visits the same few timesteps in every call, so at
inference the tables of a timestep need computing once per process, not once per step: at batch 1
they are a quarter of the default model's FLOPs (10.7 MB of tables per timestep for 16 frames).

Entries are only added while there is room (no eviction: a 50-step sampler with room for 24 steps
keeps hitting its first 24 rather than thrashing an LRU), and a change to any table weight (an
optimizer step, load_state_dict, ``.to()``) changes the key, so stale tables are never used.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from torch import Tensor, nn

from vdengine.models.layers import PosGN, PosGNTables

#: Default bound of a model's table cache (bytes of tables kept).
DEFAULT_MAX_BYTES = 256 * 2**20


def tables_nbytes(tables: PosGNTables) -> int:
    return sum(s.nbytes + h.nbytes for s, h in tables._tables.values())


class TableCache:
    """PosGNTables by (timestep rows, frames, layout) and the table weights' identity."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[Hashable, PosGNTables] = {}
        self._weights_key: tuple | None = None
        self.hits = self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self._weights_key = None

    @property
    def nbytes(self) -> int:
        return sum(tables_nbytes(t) for t in self._entries.values())

    def get_or_make(self, model: nn.Module, t_rows: Tensor, key: Hashable,
                    make: Callable[[], PosGNTables]) -> PosGNTables:
        """The cached tables of ``key`` (t_rows' values on the CPU + the caller's extras), else
        ``make()`` — kept if the cache has room once its tables are filled (see ``admit``)."""
        if self.max_bytes <= 0:  # disabled
            return make()
        weights = _weights_key(model)
        if weights != self._weights_key:  # new or updated weights: every entry is stale
            self.clear()
            self._weights_key = weights
        full_key = (tuple(t_rows.tolist()), key)
        hit = self._entries.get(full_key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        tables = make()
        self._pending = (full_key, tables)
        return tables

    def admit(self) -> None:
        """After the forward that filled the tables of the latest miss: keep them if they fit."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None or self.max_bytes <= 0:
            return
        key, tables = pending
        if self.nbytes + tables_nbytes(tables) <= self.max_bytes:
            self._entries[key] = tables


def _weights_key(model: nn.Module) -> tuple:
    """Identity and version of every PosGN coordinate-MLP parameter: any in-place update bumps
    a version, any replacement (``.to()``, ``.data =``) changes a data pointer."""
    return tuple(
        (p.data_ptr(), p._version, p.dtype)
        for m in model.modules() if isinstance(m, PosGN)
        for p in (*m.fc1.parameters(), *m.fc2.parameters(), *m.fc3.parameters())
    )


__all__ = ["DEFAULT_MAX_BYTES", "TableCache"]
