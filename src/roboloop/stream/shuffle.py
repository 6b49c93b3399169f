"""A vectorized shuffle buffer that emits ready-made batches.

Samples live in preallocated slot arrays (one per output field, `capacity` rows), so
memory is fixed: `(buffer + block + batch) * bytes_per_sample`. A block's samples are
copied into free slots; the list of occupied slots is permuted (indices only, never the
data) and batches are gathered from its tail until only `buffer` samples remain. Each
emitted sample is a uniformly random member of the buffer, like the classic streaming
shuffle buffer, but with one numpy gather per field per batch instead of Python per sample.
With `shuffle=False` the same slots work first-in first-out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np


class BatchShuffleBuffer:
    def __init__(
        self,
        *,
        batch_size: int,
        buffer: int,
        max_block: int,
        shuffle: bool,
        rng: np.random.Generator | None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.buffer = buffer if shuffle else 0
        self.max_block = max_block
        self.shuffle = shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.drop_last = drop_last
        self.capacity = self.buffer + max_block + batch_size
        self._storage: dict[str, np.ndarray] | None = None
        self._free = np.arange(self.capacity, dtype=np.int64)[::-1].copy()
        self._nfree = self.capacity
        self._occ = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._occ)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._storage or {}).values())

    def _allocate(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._storage = {k: np.empty((self.capacity,) + v.shape[1:], dtype=v.dtype) for k, v in arrays.items()}

    def push(self, arrays: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """Add a block of samples (all arrays share the first dimension); yield the batches now due.

        A block may also come as a list of pieces (dicts with the same keys): the same as pushing
        their concatenation (same slots, same random draws), without making it.
        """
        pieces = [arrays] if isinstance(arrays, Mapping) else [p for p in arrays if len(next(iter(p.values())))]
        n = sum(len(next(iter(p.values()))) for p in pieces)
        if n == 0:
            return
        if n > self.max_block:
            raise ValueError(f"block of {n} samples exceeds max_block={self.max_block}")
        if self._storage is None:
            self._allocate(pieces[0])
        slots = self._free[self._nfree - n : self._nfree]
        self._nfree -= n
        at = 0
        for piece in pieces:
            m = len(next(iter(piece.values())))
            for k, v in piece.items():  # rows as flat vectors: a faster scatter, the same bytes
                width = int(np.prod(v.shape[1:], dtype=np.int64))
                self._storage[k].reshape(self.capacity, width)[slots[at : at + m]] = v.reshape(m, width)
            at += m
        self._occ = np.concatenate([self._occ, slots])
        if self.shuffle:
            self.rng.shuffle(self._occ)
        B = self.batch_size
        while len(self._occ) >= self.buffer + B:
            yield self._emit(B)

    def finish(self) -> Iterator[dict[str, np.ndarray]]:
        """Drain what is left (a last partial batch unless drop_last)."""
        B = self.batch_size
        while len(self._occ) >= B:
            yield self._emit(B)
        if len(self._occ) and not self.drop_last:
            yield self._emit(len(self._occ))
        self._occ = np.empty(0, dtype=np.int64)

    def _emit(self, b: int) -> dict[str, np.ndarray]:
        if self.shuffle:
            take, self._occ = self._occ[-b:], self._occ[:-b]
        else:
            take, self._occ = self._occ[:b], self._occ[b:]
        if b > 1 and not self.shuffle and take[-1] - take[0] == b - 1 and np.all(np.diff(take) == 1):
            out = {k: v[take[0] : take[0] + b].copy() for k, v in self._storage.items()}
        else:
            out = {k: np.take(v, take, axis=0) for k, v in self._storage.items()}
        self._free[self._nfree : self._nfree + b] = take
        self._nfree += b
        return out
