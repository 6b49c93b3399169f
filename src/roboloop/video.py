"""H.264 encoding (for recording) and decoding (for loading and checks) with PyAV.

Recorded camera streams are Annex-B H.264 samples, one per frame, no B-frames (Rerun's
`VideoStream` uses the sample's time as its presentation time), with a keyframe every
`gop` frames so readers can seek. Only the RGB <-> YUV420 conversion is lossy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

DEFAULT_GOP = 25  # one keyframe per second at the default 25 Hz camera rate
DEFAULT_CRF = 20


@dataclass
class EncodedFrame:
    """One encoded frame: the Annex-B sample bytes and whether it starts a GOP."""

    sample: bytes
    is_keyframe: bool


class H264Encoder:
    """Encode RGB frames (H x W x 3 uint8) to H.264 samples, one sample per frame, in order."""

    def __init__(self, width: int, height: int, fps: int, *, gop: int = DEFAULT_GOP, crf: int = DEFAULT_CRF) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {width}x{height}")
        self.width, self.height = width, height
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, fps)
        ctx.framerate = fps
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        ctx.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "tune": "zerolatency",
            "bframes": "0",
            "keyint": str(gop),
            "min-keyint": str(gop),
            "scenecut": "0",
            "repeat-headers": "1",  # SPS/PPS in front of every keyframe: any GOP decodes alone
            "threads": "1",
        }
        self._ctx = ctx
        self._pts = 0

    def encode(self, rgb: np.ndarray) -> list[EncodedFrame]:
        """Feed one frame; returns the samples that came out (zero-latency: normally exactly one)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, got {rgb.shape} {rgb.dtype}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._pts
        self._pts += 1
        return [_packet(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[EncodedFrame]:
        """Drain frames the encoder still holds."""
        return [_packet(p) for p in self._ctx.encode(None)]


def encode_frames(frames: Iterable[np.ndarray], fps: int, *, gop: int = DEFAULT_GOP, crf: int = DEFAULT_CRF) -> list[EncodedFrame]:
    """Encode a whole clip; exactly one sample per input frame."""
    frames = list(frames)
    if not frames:
        return []
    h, w = frames[0].shape[:2]
    enc = H264Encoder(w, h, fps, gop=gop, crf=crf)
    out: list[EncodedFrame] = []
    for f in frames:
        out.extend(enc.encode(f))
    out.extend(enc.flush())
    if len(out) != len(frames):
        raise RuntimeError(f"encoder produced {len(out)} samples for {len(frames)} frames")
    return out


def decode_samples(samples: Iterable[bytes], *, stride: int = 1) -> Iterator[np.ndarray]:
    """Decode Annex-B H.264 samples in order to RGB frames (H x W x 3 uint8).

    With `stride` k, only frames 0, k, 2k, ... are converted to RGB and yielded (every frame is
    still decoded: each depends on the ones before it).
    """
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    index = 0
    for data in samples:
        for frame in ctx.decode(av.Packet(bytes(data))):
            if index % stride == 0:
                yield frame.to_ndarray(format="rgb24")
            index += 1
    for frame in ctx.decode(None):
        if index % stride == 0:
            yield frame.to_ndarray(format="rgb24")
        index += 1


def _packet(packet) -> EncodedFrame:
    return EncodedFrame(sample=bytes(packet), is_keyframe=bool(packet.is_keyframe))
