"""Shared fixtures live in tests/fixtures/ and are loaded as pytest plugins.

- `fixtures.catalog`: `ws` (a temporary workspace), `catalog` (a real in-process catalog over it).
- `fixtures.episodes`: `synthetic_episode` (the `write_synthetic_episode` helper: an episode
  with scalar streams, H.264 video and properties, written by the real recorder).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

pytest_plugins = ["fixtures.catalog", "fixtures.episodes"]
