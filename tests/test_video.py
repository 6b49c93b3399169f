"""video: decoding with a stride gives exactly every k-th frame of the full decode."""

import numpy as np

from roboloop.video import decode_samples, encode_frames


def test_decode_with_stride_keeps_every_kth_frame():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8) for _ in range(11)]
    samples = [e.sample for e in encode_frames(frames, 10, gop=4)]
    full = list(decode_samples(samples))
    assert len(full) == 11
    for stride in (1, 3, 4, 20):
        got = list(decode_samples(samples, stride=stride))
        assert len(got) == len(range(0, 11, stride))
        assert all(np.array_equal(a, b) for a, b in zip(got, full[::stride]))
