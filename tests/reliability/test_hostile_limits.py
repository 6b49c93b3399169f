"""Hostile inputs, limits and environment (issue 19, items 9-11): absurd counts, a full disk, a read-only workspace.

- Counts: a collect, a plan or an evaluation that asks for more than `schema.MAX_EPISODES_PER_RUN`
  episodes is refused before anything is reserved; seeds are reserved block by block as episodes
  start; `sql` streams its result with bounded memory.
- Full disk (a small tmpfs): a recording that does not fit fails with `WorkspaceFullError`, leaves
  no partial file, and the next recording in the same process does not hang.
- Read-only workspace (a read-only bind mount): catalog commands serve queries; writes fail cleanly.

The tmpfs and bind-mount tests need `mount` (root, as in CI here) and skip cleanly without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.cli import app
from roboloop.collect import run as collect
from roboloop.collect.plan import Plan, PlanError
from roboloop.config import ConfigError
from roboloop.evaluate.run import EvalConfig, EvaluateError, parse_grid
from roboloop.workspace import CATALOG_LOCK, TEMP_MARKER, Workspace

SRC = str(Path(__file__).resolve().parents[2] / "src")
LIMIT = schema.MAX_EPISODES_PER_RUN


def cli(ws: Workspace, *args: str):
    return CliRunner().invoke(app, ["--workspace", str(ws.root), *args])


def clean_error(res, *needles: str) -> None:
    """Exit 1 through the CLI's error path, no traceback, the message naming the problem."""
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in res.output.replace("\n", " "), res.output


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MB tmpfs (a disk that fills up); skips where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    _umount(mnt)


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` so that about `leave` bytes stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.fixture
def read_only_view(tmp_path):
    """(a writable folder, a read-only bind mount of it); skips where mounting is not allowed."""
    src, view = tmp_path / "rw", tmp_path / "ro"
    src.mkdir()
    view.mkdir()
    if not _mount("--bind", str(src), str(view)):
        pytest.skip("cannot bind-mount here (needs root)")
    if not _mount("-o", "remount,bind,ro", str(view)):
        _umount(view)
        pytest.skip("cannot remount read-only here")
    yield src, view
    _umount(view)


# --- 9. counts --------------------------------------------------------------------------------

def test_absurd_collect_count_is_refused_before_anything_is_reserved(ws):
    with pytest.raises(ConfigError, match="batches"):
        collect.CollectConfig(dataset="big", episodes=10**9)
    collect.CollectConfig(dataset="big", episodes=LIMIT)  # the limit itself is fine
    res = cli(ws, "collect", "-d", "big", "-n", str(10**9))
    clean_error(res, f"{LIMIT:,}", "batches")
    assert not (ws.root / "datasets" / "big").exists()  # no seed reservation, no folder
    assert collect.reserve_seeds(ws, "big", 1) == range(1)


def test_absurd_plan_count_is_refused(ws, tmp_path):
    with pytest.raises(PlanError, match="split it"):
        Plan("p", "aloha", items=({"count": 10**9},))
    half = LIMIT // 2 + 1  # each item fits, the plan does not
    with pytest.raises(PlanError, match=f"{2 * half:,}"):
        Plan("p", "aloha", items=({"conditions": {"region": "left"}, "count": half}, {"conditions": {"region": "right"}, "count": half}))
    path = tmp_path / "big.toml"
    path.write_text('name = "big"\ndataset = "aloha"\n[[items]]\ncount = 1000000000\n')
    res = cli(ws, "collect", "--plan", str(path))
    clean_error(res, "split it")
    assert not (ws.root / "datasets" / "aloha" / collect.SEEDS_FOLDER).exists()


def test_absurd_evaluation_count_is_refused(ws):
    with pytest.raises(EvaluateError, match="fewer episodes per cell"):
        EvalConfig(episodes_per_cell=10**8)
    grid = parse_grid("region=left,right")
    EvalConfig(grid=grid, episodes_per_cell=LIMIT // 2)
    with pytest.raises(EvaluateError, match=f"2 cell.*{2 * (LIMIT // 2 + 1):,} rollouts"):
        EvalConfig(grid=grid, episodes_per_cell=LIMIT // 2 + 1)
    res = cli(ws, "eval", "--grid", "region=left", "-n", str(10**8))
    clean_error(res, f"{LIMIT:,}")
    assert not (ws.root / "datasets").exists()


@pytest.mark.sim
def test_interrupted_collect_keeps_only_the_seeds_it_started(catalog, ws):
    """Seeds are reserved as episodes start: a large collect stopped after its first episode
    leaves at most one block (`SEED_BLOCK`) reserved, not its whole range."""
    cfg = collect.CollectConfig(dataset="sb", episodes=LIMIT, steps=2, spec=collect.RecordingSpec(cameras=()), blueprint=False)

    def stop(_result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect.collect(catalog, cfg, on_result=stop)
    assert [p.name for p in ws.segment_files("sb", schema.BASE_LAYER)][0].startswith("sb-s000000-")
    assert collect.reserve_seeds(ws, "sb", 1) == range(collect.SEED_BLOCK, collect.SEED_BLOCK + 1)


_SQL_PEAK = """
import resource, sys
from roboloop.cli import main
sys.argv = ["roboloop", "--workspace", sys.argv[1], "sql", "-f", "csv", sys.argv[2]]
try:
    main()
except SystemExit:
    pass
sys.stderr.write(f"PEAK_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def _sql_peak(ws: Workspace, rows_a: int, rows_b: int) -> tuple[int, list[str]]:
    query = (f"SELECT a.v AS a, b.v AS b, 'row-' || a.v || '-' || b.v AS s FROM (SELECT unnest(range(0, {rows_a})) AS v) a "
             f"CROSS JOIN (SELECT unnest(range(0, {rows_b})) AS v) b")
    out = subprocess.run([sys.executable, "-c", _SQL_PEAK, str(ws.root), query], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=300)
    peak = int(out.stderr.rsplit("PEAK_KB=", 1)[1].split()[0])
    return peak, out.stdout.splitlines()


def test_sql_streams_large_results_with_bounded_memory(ws):
    small_peak, small = _sql_peak(ws, 1000, 1)
    assert small == ["a,b,s", *(f"{a},0,row-{a}-0" for a in range(1000))]
    peak, lines = _sql_peak(ws, 1000, 500)  # 500,000 rows
    assert len(lines) == 500_001 and lines[0] == "a,b,s"
    assert sorted(lines[1:], key=lambda s: tuple(int(v) for v in s.split(",")[:2]))[-1] == "999,499,row-999-499"
    # unstreamed, these rows cost ~170 MB more than 1,000 rows (1.4 GB for 3M); streamed, < 1 MB
    assert peak - small_peak < 50_000, (small_peak, peak)


def test_sql_table_format_draws_a_bounded_table_and_counts_every_row(ws):
    from roboloop.cli.common import TABLE_ROWS_SHOWN

    res = cli(ws, "sql", f"SELECT unnest(range(0, {TABLE_ROWS_SHOWN + 500})) AS v")
    assert res.exit_code == 0, res.output
    assert f"{TABLE_ROWS_SHOWN + 500} row(s) (the first {TABLE_ROWS_SHOWN:,} shown" in res.output
    assert f"│ {TABLE_ROWS_SHOWN - 1} " in res.output and f"│ {TABLE_ROWS_SHOWN} " not in res.output


# --- 10. full disk ------------------------------------------------------------------------------

_RECORD_THREE = """
import os, sys
import numpy as np
from roboloop.record.episode import EpisodeRecorder
folder = sys.argv[1]
for i in range(3):
    try:
        with EpisodeRecorder(os.path.join(folder, f"ep-{i}.rrd"), f"ep-{i}") as rec:
            for k in range(300):
                rec.append_scalars("/x", k * 0.02, np.random.default_rng(k).random(100))
        print("ok", i, flush=True)
    except Exception as exc:
        print(type(exc).__name__, i, str(exc).splitlines()[0], flush=True)
"""


def test_full_disk_fails_each_recording_cleanly_and_never_hangs(small_disk):
    """Rerun's file sink, after ENOSPC, made the next recording's flush wait for ever (the collect hang)."""
    folder = small_disk / "ws"
    folder.mkdir()
    fill(small_disk, 100_000)  # an episode is ~240 kB
    try:
        out = subprocess.run([sys.executable, "-c", _RECORD_THREE, str(folder)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("recording on a full disk hung")
    lines = out.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["WorkspaceFullError", str(i)] for i in range(3)], out.stdout + out.stderr
    assert "no space left on the device" in lines[0] and "ep-0.rrd was not written" in lines[0]
    assert files_under(folder) == []  # no partial or temporary file


@pytest.mark.sim
def test_collect_on_a_full_disk_fails_clearly_and_leaves_the_workspace_consistent(small_disk):
    ws = Workspace(small_disk / "ws")
    fill(small_disk, 150_000)
    res = cli(ws, "collect", "-d", "full", "-n", "2", "--steps", "100", "--camera-size", "320x240")
    clean_error(res, "no space left on the device", "was not written")
    base = ws.layer_dir("full", schema.BASE_LAYER)
    assert not base.exists() or files_under(base) == []  # no partial file under a real or temporary name
    assert not any(TEMP_MARKER in f for f in files_under(ws.root))
    (small_disk / "filler").unlink()
    with Catalog(ws, url="") as cat:  # the workspace restores with nothing skipped and nothing registered
        assert cat.report.skipped == []
        assert cat.segment_table("full").num_rows == 0 if "full" in cat.dataset_names() else True


# --- 11. read-only workspace -----------------------------------------------------------------------

def _populate(root: Path, synthetic_episode) -> Workspace:
    """Two episodes, a superseded version and a dead writer's temp file (both GC would delete), and the catalog lock file."""
    ws = Workspace(root)
    for i in range(2):
        synthetic_episode(ws, "demo", f"ep-{i}", seed=i, properties={schema.EPISODE: {"seed": i}})
    old = ws.segment_path("demo", schema.BASE_LAYER, "ep-0")
    old.with_name("ep-0.1.rrd").write_bytes(old.read_bytes())
    (old.parent / f".ep-9.rrd{TEMP_MARKER}999999-dead").write_bytes(b"partial")
    with ws.lock(CATALOG_LOCK):
        pass  # locks/catalog.lock exists, as after any earlier use of the workspace
    return ws


def test_read_only_workspace_serves_queries_and_refuses_writes_cleanly(read_only_view, synthetic_episode):
    src, view = read_only_view
    _populate(src / "ws", synthetic_episode)
    before = files_under(src / "ws")
    ro = Workspace(view / "ws")
    assert ro.read_only
    res = cli(ro, "sql", "-f", "csv", 'SELECT segment_id, "episode.seed" FROM demo ORDER BY segment_id')
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-3:] == ["segment_id,episode.seed", "ep-0,0", "ep-1,1"]
    res = cli(ro, "ls")
    assert res.exit_code == 0 and "demo" in res.output, res.output
    clean_error(cli(ro, "gc"), "read-only", "--workspace")
    assert files_under(src / "ws") == before  # nothing cleaned up, nothing written

    # a copy that never held a catalog (no locks folder) is served too
    import shutil

    shutil.rmtree(src / "ws" / "locks")
    with Catalog(ro, url="") as cat:
        assert sorted(cat.segment_table("demo").column("segment_id").to_pylist()) == ["ep-0", "ep-1"]
    assert not (src / "ws" / "locks").exists()


def test_read_only_workspace_warns_once(read_only_view, synthetic_episode, caplog):
    src, view = read_only_view
    _populate(src / "ws", synthetic_episode)
    with caplog.at_level("WARNING", logger="roboloop.workspace"), Catalog(Workspace(view / "ws"), url="") as cat:
        assert cat.dataset_names() == ["demo"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "roboloop.workspace"]
    assert len(warnings) == 1 and "read-only" in warnings[0] and "no clean-up" in warnings[0]



def test_serve_runs_on_a_read_only_workspace(read_only_view, synthetic_episode):
    """`serve` takes no lock it cannot take and writes no server.json; a client reaches it with --catalog."""
    import re
    import signal

    src, view = read_only_view
    _populate(src / "ws", synthetic_episode)
    before = files_under(src / "ws")
    proc = subprocess.Popen([sys.executable, "-m", "roboloop.cli", "--workspace", str(view / "ws"), "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "300"})
    try:
        seen = ""
        for line in proc.stdout:
            seen += line
            if "Ctrl-C" in line:
                break
        url = re.search(r"catalog URL: (rerun\+http://\S+)", seen)
        assert url and "not recorded: the workspace is read-only" in seen, seen
        res = CliRunner().invoke(app, ["--workspace", str(view / "ws"), "--catalog", url.group(1), "sql", "-f", "csv",
                                       "SELECT count(*) AS n FROM demo"])
        assert res.exit_code == 0 and res.stdout.splitlines()[-2:] == ["n", "2"], res.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert files_under(src / "ws") == before
