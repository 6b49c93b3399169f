"""Refine: derived per-episode signals and quality flags written as layers (`layers`), the signal
interface (`signals`: `@signal`, `EpisodeStreams`, `SkipSignal`, signals by import path or entry
point), image signals (`images`: `sharpness`), and outcomes re-judged by verified replay
(`outcomes`) or labelled by a person (`labels`) into an `outcome` layer."""

from roboloop.refine import images  # noqa: F401 - registers the image signals
from roboloop.refine.layers import RefineReport, refine
from roboloop.refine.signals import EpisodeStreams, Signal, SkipSignal, signal

__all__ = ["EpisodeStreams", "RefineReport", "Signal", "SkipSignal", "refine", "signal"]
