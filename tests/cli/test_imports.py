"""What a cold `roboloop CMD` loads: the analysis commands start without training, the recorder, video or DataFusion.

Each check runs in a new interpreter (an import, once made, stays in `sys.modules`) and builds the app the command
runs with (`roboloop.cli.app_for`), which imports exactly that command's module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "rerun", "av", "datafusion", "pandas", "mujoco", "dm_control")


def _loaded(command: str) -> set[str]:
    code = (f"import json, sys; from roboloop.cli import app_for; app_for([{command!r}]); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("command", ["success", "gaps"])
def test_analysis_commands_load_no_training_recorder_video_or_datafusion(command):
    loaded = _loaded(command)
    assert {"roboloop", "pyarrow", "typer"} <= loaded  # the probe did import the command's module (it reads Arrow tables)
    if command == "success":  # `compare` is in the same module; `gaps` needs the task (its recording code) for start states
        assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    else:
        assert not loaded & {"torch", "datafusion", "pandas", "mujoco", "dm_control"}, sorted(loaded & set(HEAVY))

