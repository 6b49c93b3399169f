"""Epoch-ahead batch prefetch: iterate a stream's epochs in a background thread, a few batches ahead.

`EpisodeStream` fetches an epoch's first block from the catalog when that epoch's
iterator starts, so without help the training thread waits for it at every epoch
boundary (~0.1 s per 50 short episodes here), and within an epoch it resamples each
block in the training thread. `EpochsAhead` runs the epochs' iterators in one background
thread that crosses epoch boundaries on its own (calling `set_epoch` first, as the stream
requires), so catalog queries (Rust, no GIL) and most resampling overlap training. The
batches and their order are exactly those of iterating the loader epoch by epoch: the
loss curve does not change.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from roboloop.stream.blocks import put_unless_stopped

_END = object()


class EpochsAhead:
    """`for epoch in range(start, stop): for batch in ahead.epoch(epoch): ...`, prefetched `depth` batches ahead."""

    def __init__(self, stream, loader, start: int, stop: int, depth: int = 8) -> None:
        self.stream, self.loader = stream, loader
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(start, stop), name="roboloop-epochs-ahead", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        return put_unless_stopped(self.q, item, self.stop_event)

    def _run(self, start: int, stop: int) -> None:
        try:
            for epoch in range(start, stop):
                self.stream.set_epoch(epoch)
                for batch in self.loader:
                    if not self._put((epoch, batch)):
                        return
                if not self._put((epoch, _END)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread
            self._put((None, exc))

    def epoch(self, epoch: int) -> Iterator[Any]:
        """The batches of `epoch` (epochs must be consumed in order)."""
        while True:
            e, item = self.q.get()
            if isinstance(item, BaseException):
                raise item
            if e != epoch:
                raise RuntimeError(f"prefetch out of step: expected epoch {epoch}, got {e}")
            if item is _END:
                return
            yield item

    def close(self) -> None:
        """Stop the background thread (it may be waiting on a full queue or on the catalog)."""
        self.stop_event.set()
        self.thread.join(timeout=10)
