"""The streaming PyTorch loader: declarative fields resampled onto one timeline, decoded on the fly.

See `roboloop.stream.dataset` for the full semantics. Modules:
`config` (`StreamConfig`), `fields` (specs, errors), `index` (`EpisodeSource`, the up-front
index and the epoch plan), `resample` (numpy), `decode` (Arrow -> numpy, H.264 / JPEG),
`blocks` (fetching and materializing one block), `shuffle` (batch shuffle buffer),
`cache` (the fetch-once segment cache), `transport` (worker shared-memory ring), `dataset` (`EpisodeStream`: epochs, shards, loader).
"""

from roboloop.stream.config import StreamConfig
from roboloop.stream.dataset import EpisodeStream
from roboloop.stream.fields import Field, MissingFieldError, StreamError, UnknownEntityError, UnknownSegmentError
from roboloop.stream.index import EpisodeSource

__all__ = [
    "EpisodeSource",
    "EpisodeStream",
    "Field",
    "MissingFieldError",
    "StreamConfig",
    "StreamError",
    "UnknownEntityError",
    "UnknownSegmentError",
]
