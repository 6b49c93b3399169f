"""Shared fixtures live in tests/fixtures/ and are loaded as pytest plugins for every test folder.

The tests are a package (`tests/__init__.py`, one per folder), so the plugins and the helpers one test module
shares with another are imported by their full name (`tests.fixtures.episodes`, `tests.train.test_train`).

- `tests.fixtures.catalog`: `ws` (a temporary workspace), `catalog` (a real in-process catalog over it).
- `tests.fixtures.episodes`: `synthetic_episode` (the `write_synthetic_episode` helper: an episode
  with scalar streams, H.264 video and properties, written by the real recorder).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

pytest_plugins = ["tests.fixtures.catalog", "tests.fixtures.episodes"]
