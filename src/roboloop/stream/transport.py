"""A shared-memory batch transport for DataLoader workers (used by `EpisodeStream.loader`).

PyTorch moves every tensor a worker yields into a fresh shared-memory segment and
passes its file descriptor through a socket: several milliseconds per batch on a busy
2-core machine, which caps a worker at a few hundred batches/s whatever their size.
Instead, each worker allocates one shared ring of `slots` batch-sized slots once, sends
it with its first batch, and afterwards yields only a small descriptor (slot, layout).
`ShmLoader` (main process) copies each batch out of its slot into ordinary tensors and
marks the slot consumed in the ring's header; a worker never overwrites a slot that has
not been consumed (it waits), so batches are never torn.

Only `EpisodeStream.loader()` turns this on; a plain `DataLoader(stream, ...)` receives
ordinary tensors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_ALIGN = 64
_HEADER = 64  # bytes: int64 consumed-sequence counter (+ padding)


@dataclass
class ShmBatch:
    """What a worker yields instead of a batch: where to find it in its ring."""

    worker: int
    seq: int
    offset: int
    layout: tuple[tuple[str, str, tuple[int, ...], int, int], ...]  # (name, dtype, shape, offset, nbytes)
    ring: torch.Tensor | None = None  # sent with the first batch only


class ShmWriter:
    """Worker side: pack batch dicts (numpy arrays) into the ring; yield descriptors."""

    def __init__(self, worker: int, slots: int) -> None:
        self.worker = worker
        self.slots = slots
        self.ring: torch.Tensor | None = None
        self.slot_bytes = 0
        self.seq = 0
        self._sent = False

    def _layout(self, arrays: dict[str, np.ndarray]) -> tuple[list, int]:
        layout, off = [], 0
        for k, a in arrays.items():
            layout.append((k, a.dtype.str, tuple(a.shape), off, a.nbytes))
            off += (a.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        return layout, off

    def write(self, arrays: dict[str, np.ndarray], max_rows: int) -> ShmBatch | dict[str, torch.Tensor]:
        layout, size = self._layout(arrays)
        if self.ring is None:
            rows = max(1, len(next(iter(arrays.values()))))
            per_row = sum((a.nbytes // rows) for a in arrays.values())
            self.slot_bytes = (per_row * max_rows + _ALIGN * (len(arrays) + 1)) // _ALIGN * _ALIGN + _ALIGN
            self.ring = torch.zeros(_HEADER + self.slots * self.slot_bytes, dtype=torch.uint8).share_memory_()
            self._buf = self.ring.numpy()
            self._consumed = self._buf[:8].view(np.int64)
            self._consumed[0] = -1
        if size > self.slot_bytes:  # cannot happen with fixed per-sample shapes; fall back to plain tensors
            return {k: torch.from_numpy(v) for k, v in arrays.items()}
        # wait until the slot's previous batch has been copied out by the main process
        while self.seq - self.slots > int(self._consumed[0]):
            time.sleep(0.0002)
        base = _HEADER + (self.seq % self.slots) * self.slot_bytes
        for (_name, _, _, off, nbytes), a in zip(layout, arrays.values()):
            self._buf[base + off : base + off + nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        msg = ShmBatch(self.worker, self.seq, base, tuple(layout), ring=None if self._sent else self.ring)
        self._sent = True
        self.seq += 1
        return msg


class ShmLoader:
    """Main-process side: iterate a DataLoader, turning ShmBatch descriptors into tensors."""

    def __init__(self, loader: torch.utils.data.DataLoader, pin_memory: bool = False) -> None:
        self.loader = loader
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # dataset, num_workers, ... of the DataLoader
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        rings: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        for item in self.loader:
            if not isinstance(item, ShmBatch):
                yield item
                continue
            if item.ring is not None:
                rings[item.worker] = (item.ring, item.ring.numpy())
            _, buf = rings[item.worker]
            out = {}
            for name, dtype, shape, off, nbytes in item.layout:
                start = item.offset + off
                arr = buf[start : start + nbytes].view(np.dtype(dtype)).reshape(shape).copy()
                t = torch.from_numpy(arr)
                out[name] = t.pin_memory() if self.pin_memory else t
            buf[:8].view(np.int64)[0] = item.seq  # slot free again
            yield out
