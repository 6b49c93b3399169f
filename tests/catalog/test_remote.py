"""collect, curate, train and eval against a catalog started by ANOTHER process (`roboloop serve` in a
subprocess), through `--catalog URL` and `ROBOLOOP_CATALOG`: everything is registered in that server
and written to the workspace (a fresh catalog restored from the workspace sees the same)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.server import read_record
from roboloop.cli import app
from roboloop.workspace import Workspace

pytestmark = pytest.mark.sim

SRC = str(Path(__file__).resolve().parents[2] / "src")
DS = "remote"


@pytest.fixture
def server(tmp_path):
    """`roboloop serve` over a new workspace in another process; yields (workspace, url)."""
    wsdir = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": SRC, "MUJOCO_GL": "egl"}
    env.pop("ROBOLOOP_CATALOG", None)
    proc = subprocess.Popen([sys.executable, "-m", "roboloop.cli", "--workspace", str(wsdir), "serve", "--port", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ws = Workspace(wsdir)
        deadline = time.monotonic() + 90
        rec = None
        while time.monotonic() < deadline and proc.poll() is None:
            rec = read_record(ws)
            if rec is not None and rec.pid == proc.pid:
                break
            time.sleep(0.2)
        assert rec is not None and rec.pid == proc.pid, f"serve did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield ws, rec.url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run(args: list[str], env: dict[str, str]) -> str:
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_collect_train_eval_against_a_catalog_served_by_another_process(server):
    ws, url = server
    assert url.startswith("rerun+http://")
    other = str(ws.root)
    # collect: two short scripted episodes, no cameras, through --catalog URL
    out = _run(["--workspace", other, "--catalog", url, "collect", "-d", DS, "--episodes", "2", "--steps", "40", "--cameras", "",
                "--seed", "3"], {})
    assert "registered 2 episode(s)" in out
    # curate through ROBOLOOP_CATALOG
    _run(["--workspace", other, "curate", "-d", DS, "--name", "all"], {"ROBOLOOP_CATALOG": url})
    # train (tiny) through --catalog URL
    out = _run(["--workspace", other, "--catalog", url, "train", "-d", DS, "-s", "all", "--epochs", "2", "--batch-size", "32"], {})
    run_id = next(p.name for p in ws.runs_dir.iterdir())
    assert f"run {run_id} finished" in " ".join(out.split())
    # eval the run: one rollout of 30 steps, through ROBOLOOP_CATALOG
    _run(["--workspace", other, "eval", "--run", run_id, "--grid", "region=near", "-n", "1", "--steps", "30", "--cameras", "",
          "--name", "remote-eval", "-d", DS], {"ROBOLOOP_CATALOG": url})

    def registered(cat: Catalog) -> tuple:
        demos = cat.segment_table(DS)
        runs = cat.sql(f'SELECT "run.run_id" AS id, "run.status" AS status FROM {schema.runs_dataset(DS)}').to_pylist()
        evals = cat.segment_table(schema.evals_dataset(DS))
        return (sorted(demos.column("episode.seed").to_pylist()), runs,
                sorted(zip(evals.column("episode.eval_id").to_pylist(), evals.column("episode.policy").to_pylist(), strict=True)))

    expected = ([3, 4], [{"id": run_id, "status": "finished"}], [("remote-eval", run_id)])
    with Catalog(ws, url=url) as remote:  # what the serving process holds
        assert not remote.embedded
        assert registered(remote) == expected
    with Catalog(ws, url="") as fresh:  # the workspace is the system of record: a restore sees the same
        assert fresh.embedded
        assert registered(fresh) == expected
    assert (ws.run_dir(run_id) / "model.pt").is_file()
