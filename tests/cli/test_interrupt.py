"""SIGTERM before a command runs (while `roboloop eval` loads its modules, seconds of imports) stops it like Ctrl-C.

A real `python -m roboloop.cli` process; the signal is sent as soon as the process shows (in /proc) that it catches
SIGTERM, i.e. `roboloop.cli.main` has installed its handler and is importing the command's module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from roboloop import rows, schema
from roboloop.workspace import Workspace


def catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (its `SigCgt` mask in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def test_sigterm_while_the_command_loads_prints_one_line_and_exits_like_ctrl_c(tmp_path):
    ws = Workspace(tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBOLOOP_")}
    env.update(PYTHONPATH=os.pathsep.join(sys.path), MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "roboloop.cli", "--workspace", str(ws.root), "eval", "--policy", "scripted",
           "--grid", "region=default", "-n", "2", "--steps", "20", "--name", "T"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    while not catches_sigterm(p.pid):
        assert p.poll() is None and time.monotonic() - t0 < 60, "the command never installed its SIGTERM handler"
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    # nothing half-written: either no row (stopped before the evaluation began) or an `interrupted` one to resume
    assert [r["status"] for r in rows.read_rows(ws, schema.EVALS_TABLE)] in ([], ["interrupted"])
    assert not ws.stale_temp_files()
