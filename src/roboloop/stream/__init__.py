"""The streaming PyTorch loader: declarative fields resampled onto one timeline, decoded on the fly.

See `roboloop.stream.dataset` for the full semantics. Modules:
`fields` (specs, errors), `index` (up-front index and epoch plan), `resample` (numpy),
`decode` (Arrow -> numpy, H.264 / JPEG), `shuffle` (batch shuffle buffer), `dataset`.
"""

from roboloop.stream.dataset import EpisodeStream
from roboloop.stream.fields import Field, MissingFieldError, StreamError, UnknownEntityError

__all__ = ["EpisodeStream", "Field", "MissingFieldError", "StreamError", "UnknownEntityError"]
