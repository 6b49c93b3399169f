"""One catalog server per workspace: `roboloop serve` records its URL; other commands attach; stale records are ignored."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roboloop.catalog.client import Catalog
from roboloop.catalog.server import ServerLock, ServerRunningError, live_server, published, read_record, remove_record, write_record
from roboloop.cli import app
from roboloop.workspace import Workspace

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(autouse=True)
def _no_env_catalog(monkeypatch):
    monkeypatch.delenv("ROBOLOOP_CATALOG", raising=False)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stale_records_are_ignored(ws):
    assert live_server(ws) is None  # no record at all
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        rec = write_record(ws, f"rerun+http://127.0.0.1:{port}")
        assert read_record(ws) == rec and rec.pid == os.getpid() and rec.port == port
        assert live_server(ws) == rec  # our pid, a port that answers
        write_record(ws, f"rerun+http://127.0.0.1:{port}", pid=_dead_pid())
        assert live_server(ws) is None  # the process is gone
        write_record(ws, f"rerun+http://127.0.0.1:{_free_port()}")
        assert live_server(ws, timeout=0.2) is None  # alive, but nothing listens
        other = Workspace(ws.root.parent / "elsewhere")
        write_record(other, f"rerun+http://127.0.0.1:{port}")
        ws.server_record_path.write_text(other.server_record_path.read_text())
        assert live_server(ws) is None  # copied from another workspace
        ws.server_record_path.write_text("{not json")
        assert read_record(ws) is None and live_server(ws) is None
        write_record(ws, f"rerun+http://127.0.0.1:{port}", pid=_dead_pid())
        assert not remove_record(ws) and ws.server_record_path.exists()  # not ours: left alone
    finally:
        listener.close()


def test_commands_attach_to_the_published_server(ws, synthetic_episode):
    _, path = synthetic_episode(ws, "demo", "ep-1")
    with Catalog(ws, url="") as server:
        assert server.embedded
        with published(server) as rec:
            assert json.loads(ws.server_record_path.read_text())["url"] == server.url == rec.url
            with Catalog(ws) as attached:  # no URL configured: finds the workspace's server
                assert not attached.embedded and attached.url == server.url
                assert attached.server_record == rec
                assert attached.report.seconds == 0.0  # nothing restored
                attached.register_files("demo", [path])
            assert server.segment_table("demo").column("segment_id").to_pylist() == ["ep-1"]
            with Catalog(ws, url="") as own:  # explicit opt-out
                assert own.embedded and own.url != server.url
            res = CliRunner().invoke(app, ["--workspace", str(ws.root), "ls"])
            assert res.exit_code == 0 and "demo" in res.output, res.output
        assert not ws.server_record_path.exists()  # removed at the end of the block
    with Catalog(ws) as fresh:  # no server any more: embedded, restored from the workspace
        assert fresh.embedded
        assert fresh.segment_table("demo").column("segment_id").to_pylist() == ["ep-1"]


def test_one_server_lock_per_workspace(ws):
    from roboloop.catalog.server import serve_running

    assert not serve_running(ws)
    with ServerLock(ws):
        assert serve_running(ws)
        with pytest.raises(ServerRunningError, match="already running"):
            ServerLock(ws).acquire(wait_s=0.1)
    assert not serve_running(ws)
    with ServerLock(ws):  # released: can be taken again
        pass


def _serve(wsdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "MUJOCO_GL": "egl"}
    env.pop("ROBOLOOP_CATALOG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "roboloop.cli", "--workspace", str(wsdir), "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_record(ws: Workspace, pid: int, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = read_record(ws)
        if rec is not None and rec.pid == pid:
            return rec
        time.sleep(0.2)
    raise AssertionError("roboloop serve did not publish its record in time")


def test_serve_process_publishes_refuses_a_second_and_goes_stale_when_killed(ws, synthetic_episode):
    _, path = synthetic_episode(ws, "demo", "ep-1")
    first = _serve(ws.root)
    try:
        rec = _wait_for_record(ws, first.pid)
        with Catalog(ws) as attached:
            assert not attached.embedded and attached.url == rec.url
            assert attached.segment_table("demo").column("segment_id").to_pylist() == ["ep-1"]
        from roboloop.catalog.server import serve_running

        assert serve_running(ws)
        second = _serve(ws.root)
        out, err = second.communicate(timeout=90)
        assert second.returncode == 1, (out, err)
        assert "already running" in " ".join(err.split()) and rec.url in " ".join(err.split())
        first.send_signal(signal.SIGTERM)  # a clean stop removes the record
        first.communicate(timeout=30)
        assert first.returncode == 0
        assert not ws.server_record_path.exists()
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    killed = _serve(ws.root)
    try:
        _wait_for_record(ws, killed.pid)
    finally:
        killed.kill()  # SIGKILL: no clean-up, the record stays behind
        killed.communicate()
    assert read_record(ws).pid == killed.pid
    assert live_server(ws) is None
    with Catalog(ws) as cat:  # the stale record is ignored: embedded and restored
        assert cat.embedded
        assert cat.segment_table("demo").column("segment_id").to_pylist() == ["ep-1"]


def test_fd_budget_raises_the_soft_limit_or_warns(caplog):
    import resource

    from roboloop.catalog.restore import FD_MARGIN, ensure_fd_budget

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert ensure_fd_budget(10)  # fits already
        if hard == resource.RLIM_INFINITY or hard >= 2048 + FD_MARGIN:
            assert ensure_fd_budget(2048)
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2048 + FD_MARGIN
        if hard != resource.RLIM_INFINITY:
            assert not ensure_fd_budget(hard + 1)  # beyond the hard limit: a warning, not an error
            assert "ulimit" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.sim
def test_collect_into_a_catalog_served_by_another_process(ws):
    """collect attaches to the workspace's `roboloop serve` and registers there; the files stay the record."""
    from roboloop.collect.run import CollectConfig, collect
    from roboloop.envs.aloha.recording import RecordingSpec

    server = _serve(ws.root)
    try:
        _wait_for_record(ws, server.pid)
        with Catalog(ws) as cat:
            assert not cat.embedded
            cfg = CollectConfig(dataset="remote", episodes=2, seed=3, workers=1, steps=10, spec=RecordingSpec(cameras=()))
            rep = collect(cat, cfg)
        with Catalog(ws) as other:  # another process's view of the same server
            assert not other.embedded
            assert sorted(other.segment_table("remote").column("episode.seed").to_pylist()) == [3, 4]
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    with Catalog(ws) as restored:  # server gone: an embedded catalog restores the same episodes
        assert restored.embedded
        assert sorted(restored.segment_table("remote").column("segment_id").to_pylist()) == sorted(r.segment_id for r in rep.results)
