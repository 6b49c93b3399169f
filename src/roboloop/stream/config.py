"""`StreamConfig`: how an `EpisodeStream` samples, batches and shuffles (the loader's stage config)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roboloop import schema
from roboloop.config import Config, check
from roboloop.stream.fields import Field, as_field

ON_MISSING = ("error", "skip")
MAX_RATE_HZ = 1e6
"""Highest output grid rate (1 us steps); time is stored in integer nanoseconds."""


@dataclass(frozen=True)
class StreamConfig(Config):
    """What to load and how to batch it; see `roboloop.stream.dataset` for the semantics."""

    fields: dict[str, Field] = field(default_factory=dict)
    "Output name -> field (an entity path string, a Field, or a dict of Field arguments)."
    rate_hz: float = float(schema.CONTROL_HZ)
    "Output grid rate: every field is resampled onto `start + k / rate_hz`."
    batch_size: int | None = None
    "Samples per batch (None: single samples)."
    shuffle: bool = True
    "Permute segments per epoch and mix samples through the shuffle buffer."
    shuffle_buffer: int | None = None
    "Samples held for shuffling (None: sized from ~256 MB, at least 4 batches)."
    block_samples: int | None = None
    "Samples per catalog query (None: 128 with cameras, 16384 without)."
    prefetch: int = 2
    "Blocks fetched ahead by the background thread."
    cache_mb: float = 512.0
    """Memory (MB) for keeping fetched segments as ready samples (resampled, windows, decoded frames) across epochs, so
    that epochs after the first neither query nor decode them: the total of this stream's process, split evenly over
    its DataLoader workers (each caches its own shard); 0 = off. Batches are identical either way."""
    seed: int = 0
    "Seed of the segment order and the shuffle buffer (with the epoch)."
    drop_last: bool = False
    "Drop each worker's last partial batch."
    on_missing: str = "error"
    "Segment without data for a field: 'error' (raise) or 'skip' (warn, leave it out)."
    include_meta: bool = True
    "Add episode_index, frame_index and timestamp to every batch."
    rank: int | None = None
    "DDP rank (None: from torch.distributed, else 0)."
    world_size: int | None = None
    "DDP world size (None: from torch.distributed, else 1)."
    time_tolerance_s: float = 1e-6
    "Rows this close after a grid time count as at it."
    timeline: str = schema.TIMELINE
    "Timeline the grid is laid on."

    def __post_init__(self) -> None:
        check(isinstance(self.fields, Mapping), f"fields must be a mapping name -> field, got {type(self.fields).__name__}")
        object.__setattr__(self, "fields", {str(k): as_field(v) for k, v in self.fields.items()})
        super().__post_init__()
        check(
            isinstance(self.rate_hz, (int, float)) and not isinstance(self.rate_hz, bool) and math.isfinite(self.rate_hz) and self.rate_hz > 0,
            f"rate_hz must be a finite number > 0 (samples per second), got {self.rate_hz!r}",
        )
        check(self.rate_hz <= MAX_RATE_HZ, f"rate_hz must be at most {MAX_RATE_HZ:g} (the grid step is 1/rate_hz seconds), got {self.rate_hz!r}")
        object.__setattr__(self, "rate_hz", float(self.rate_hz))
        check(self.on_missing in ON_MISSING, f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1 or None, got {self.batch_size}")
        check(self.block_samples is None or self.block_samples >= 1, f"block_samples must be >= 1 or None, got {self.block_samples}")
        check(self.shuffle_buffer is None or self.shuffle_buffer >= 0, f"shuffle_buffer must be >= 0 or None, got {self.shuffle_buffer}")
        check(
            isinstance(self.cache_mb, (int, float)) and not isinstance(self.cache_mb, bool) and math.isfinite(self.cache_mb) and self.cache_mb >= 0,
            f"cache_mb must be a number of megabytes >= 0 (0 = no cache), got {self.cache_mb!r}",
        )
        check(self.time_tolerance_s >= 0, f"time_tolerance_s must be >= 0, got {self.time_tolerance_s}")
        check(self.world_size is None or (isinstance(self.world_size, int) and self.world_size >= 1), f"world_size must be an integer >= 1, got {self.world_size!r}")
        check(self.rank is None or (isinstance(self.rank, int) and self.rank >= 0), f"rank must be an integer >= 0, got {self.rank!r}")
        world = 1 if self.world_size is None else self.world_size
        check(
            self.rank is None or self.rank < world,
            f"rank must be in [0, world_size) = [0, {world}), got rank={self.rank}" + ("" if self.world_size is not None else " (world_size not given: 1)"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["fields"] = {k: f.to_dict() for k, f in self.fields.items()}
        return out
