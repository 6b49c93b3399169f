"""Image signals: computed from decoded camera frames (they run when named: `refine --signal sharpness`).

`sharpness`: for every camera (video stream under `/cameras/`), the variance of the Laplacian
of each frame's luma (`scipy.ndimage.laplace`, reflected borders; luma = 0.299 R + 0.587 G +
0.114 B on 0..255), summarized per episode by its 10th percentile over the frames, stored as
`signals.sharpness_<camera>`. Blur removes the high spatial frequencies the Laplacian
responds to, so a blurred frame scores far lower than a sharp frame of the same scene. Why the
10th percentile: the mean or median of an episode hides a blurred stretch shorter than half
of it; the minimum follows a single odd frame (a flash, a cut). The 10th percentile drops as
soon as about a tenth of the sampled frames are blurred, whichever part of the episode they
are in. The scale depends on the scene and camera size, so compare episodes of one camera
setup (`roboloop refine --signal sharpness`, then look at the summary it prints).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from roboloop import schema
from roboloop.refine.signals import EpisodeStreams, SkipSignal, signal

SHARPNESS_PERCENTILE = 10.0
"""Per-episode summary of the per-frame sharpness: this percentile over the sampled frames."""
SHARPNESS_STRIDE = 1
"""Every how many frames sharpness is measured (1: every frame)."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def frame_sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of one RGB frame's luma (H x W x 3 uint8)."""
    gray = rgb.astype(np.float32) @ LUMA
    return float(ndimage.laplace(gray).var())


def camera_name(entity: str) -> str:
    """`/cameras/top` -> `top` (nested paths joined with `_`), the suffix of `signals.sharpness_<camera>`."""
    rest = entity[len(schema.CAMERA_ROOT) + 1 :] if entity.startswith(schema.CAMERA_ROOT + "/") else entity.strip("/")
    return "".join(c if c.isalnum() or c == "_" else "_" for c in rest)


@signal(schema.SIGNAL_SHARPNESS, version=1, streams=[schema.CAMERA_ROOT + "/*"])
def sharpness(ep: EpisodeStreams) -> dict[str, float | None]:
    """Per camera: 10th percentile over frames of the variance of the Laplacian of luma (low = blurred)."""
    if not ep.cameras:
        raise SkipSignal(f"needs a camera (an H.264 video stream under {schema.CAMERA_ROOT}/); the dataset has none")
    out: dict[str, float | None] = {}
    for entity in ep.cameras:
        values = [frame_sharpness(rgb) for _, rgb in ep.frames(entity, stride=SHARPNESS_STRIDE)]
        out[camera_name(entity)] = float(np.percentile(values, SHARPNESS_PERCENTILE)) if values else None
    return out
