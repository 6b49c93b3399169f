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

NEVER = {"torch", "datafusion", "mujoco", "dm_control"}
"""Training, DataFusion (only for a `--where`) and the simulator: no analysis command loads them at start. (pandas is
not here: pyarrow imports it when it builds its first array, whatever the command.)"""
NOT_FOR = {
    "success": NEVER | {"rerun", "av", "PIL", "scipy"},  # Python, typer, rich, pyarrow, numpy and roboloop: that is all
    "compare": NEVER | {"rerun", "av", "PIL", "scipy"},  # its exact tests are integer arithmetic (stats/exact.py)
    "gaps": NEVER | {"rerun", "av", "PIL", "scipy"},  # the task's description (envs.get_task_spec), not its recording code
    "plan": NEVER | {"rerun", "av", "PIL", "scipy"},  # as gaps (a plan with corrective episodes loads the task on use)
    "report": {"torch", "mujoco", "dm_control"},  # + the catalog (thumbnails, rerun), matplotlib; no policy
}


def _loaded(command: str) -> set[str]:
    code = (f"import json, sys; from roboloop.cli import app_for; app_for([{command!r}]); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("command", sorted(NOT_FOR))
def test_analysis_commands_load_no_training_video_or_datafusion(command):
    loaded = _loaded(command)
    assert {"roboloop", "pyarrow", "typer"} <= loaded  # the probe did import the command's module (it reads Arrow tables)
    assert not loaded & NOT_FOR[command], sorted(loaded & NOT_FOR[command])
    assert (command == "report") == ("rerun" in loaded)  # the probe sees a heavy import where there is one
