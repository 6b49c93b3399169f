"""Hostile inputs and correctness defects (issue 18 part 6, issue 19 item 12).

Each test reproduces a reported defect: it failed before the fix and checks the observable
behaviour against an independently computed expectation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import multinomial

from roboloop import schema
from roboloop.stats.exact import mcnemar_exact
from roboloop.stats.intervals import newcombe_paired_diff

# --- the paired difference interval: exact coverage by enumeration --------------------------------


def _tables(n: int) -> np.ndarray:
    """Every 2x2 paired table (both, only1, only2, neither) with n pairs."""
    return np.array([(a, b, c, n - a - b - c) for a in range(n + 1) for b in range(n + 1 - a) for c in range(n + 1 - a - b)])


def _coverages(n: int, step: float, confidence: float = 0.95) -> np.ndarray:
    """Exact coverage of newcombe_paired_diff at every (p11, p10, p01) on a grid of `step`.

    Coverage at a setting = the multinomial probability of the tables whose interval
    contains the true difference p10 - p01, summed over every possible table.
    """
    tables = _tables(n)
    intervals = np.array([newcombe_paired_diff(*map(int, t), confidence)[1:] for t in tables])
    k = round(1 / step)
    out = []
    for i in range(k + 1):
        for j in range(k + 1 - i):
            for m in range(k + 1 - i - j):
                p = np.array([i, j, m, k - i - j - m]) / k
                pmf = multinomial.pmf(tables, n, p)
                delta = p[1] - p[2]
                covered = (intervals[:, 0] <= delta + 1e-12) & (delta - 1e-12 <= intervals[:, 1])
                out.append(pmf[covered].sum())
    return np.array(out)


def test_paired_interval_coverage_by_enumeration():
    # Before: the uncorrected phi gave a minimum of 0.68 at n = 20 (p11 .45, p10 0, p01 .05).
    # Measured with the corrected phi on these grids: n = 20 min 0.908, mean 0.955; n = 10 min 0.860,
    # mean 0.960 (the uncorrected phi: 0.684 and 0.780).
    cov20 = _coverages(20, 0.05)
    assert cov20.min() >= 0.90, cov20.min()
    assert 0.945 <= cov20.mean() <= 0.97, cov20.mean()
    cov10 = _coverages(10, 0.1)
    assert cov10.min() >= 0.85, cov10.min()
    assert 0.945 <= cov10.mean() <= 0.975, cov10.mean()


def test_paired_interval_never_collapses():
    # no discordant pairs: the difference is 0 but not known exactly
    for n in (4, 10, 30):
        d, lo, hi = newcombe_paired_diff(n // 2, 0, 0, n - n // 2)
        assert d == 0 and lo < 0 < hi
    # fewer pairs, wider interval
    widths = [newcombe_paired_diff(n // 2, 0, 0, n - n // 2)[2] for n in (4, 10, 30)]
    assert widths[0] > widths[1] > widths[2] > 0
    # 4 discordant pairs all one way: exact McNemar p = 0.125 is no evidence; the interval includes 0
    d, lo, hi = newcombe_paired_diff(25, 4, 0, 1)
    assert mcnemar_exact(4, 0) == pytest.approx(0.125) and lo < 0 < d < hi


# --- rows: a total order that matches creation -----------------------------------------------------


def test_rows_sort_in_creation_order_within_one_clock_tick(tmp_path, monkeypatch):
    """`evals` lists oldest first even when every row has the same `created_at` second (and here
    even the same wall-clock nanosecond): creation order, not the key, breaks the tie."""
    import time

    from roboloop import rows
    from roboloop.evaluate.run import list_evals
    from roboloop.workspace import Workspace

    ws = Workspace(tmp_path)
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)  # a clock that does not move
    created = "2026-12-05T00:00:00+00:00"
    for key in ("zeta", "short", "full", "alpha"):
        rows.write_row(ws, "evals", key, {"eval_id": key, "created_at": created, "status": "running"})
    rows.write_row(ws, "evals", "zeta", {"eval_id": "zeta", "created_at": created, "status": "finished"})  # an update
    assert [r["eval_id"] for r in list_evals(ws)] == ["zeta", "short", "full", "alpha"]
    assert rows.read_row(ws, "evals", "zeta")["status"] == "finished"
    # deleted and created again: it is now the newest
    rows.delete_row(ws, "evals", "short")
    rows.write_row(ws, "evals", "short", {"eval_id": "short", "created_at": created})
    assert [r["eval_id"] for r in list_evals(ws)] == ["zeta", "full", "alpha", "short"]
    # the published table has no private ordering column
    assert "_created_ns" not in rows.to_arrow(rows.read_rows(ws, "evals")).column_names


# --- CSV output ends lines with LF --------------------------------------------------------------


def _cli(ws, *args: str, env: dict | None = None):
    """The real `roboloop` command in a subprocess (the way a shell runs it); output decoded as is (no newline translation)."""
    import os
    import subprocess
    import sys

    full_env = {**os.environ, "ROBOLOOP_CATALOG": "", "COLUMNS": "200", **(env or {})}
    res = subprocess.run([sys.executable, "-m", "roboloop.cli", "--workspace", str(ws), *args],
                         capture_output=True, env=full_env, timeout=120)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def test_csv_lines_end_with_lf_so_shell_substitution_works(tmp_path):
    import subprocess
    import sys

    # exactly the reported use: $(roboloop sql ... | tail -1)
    script = f'v=$("{sys.executable}" -m roboloop.cli --workspace "{tmp_path}/ws" sql "SELECT 41 + 1 AS x" --format csv | tail -1); [ "$v" = 42 ]'
    assert subprocess.run(["bash", "-c", script], env={**__import__("os").environ, "ROBOLOOP_CATALOG": ""}).returncode == 0
    res = _cli(tmp_path / "ws", "evals", "--format", "csv")
    assert res.returncode == 0 and "\r" not in res.stdout and res.stdout.startswith("eval_id,"), res.stdout + res.stderr


# --- LeRobot export at an fps that does not divide the recording rate -------------------------------


def test_export_at_30_fps_is_latest_at_and_cube_pose_imports_back(tmp_path, catalog, synthetic_episode):
    """Frame k of a 30 fps export holds the newest 50 Hz sample at or before k / 30 (before: a third of
    the frames took the next sample, up to 6.7 ms ahead); the cube pose comes back at its own path."""
    import pyarrow.parquet as pq

    from roboloop import curate, schema
    from roboloop.interop import export_lerobot, import_lerobot
    from roboloop.stream import EpisodeStream

    ws = catalog.workspace
    ep, path = synthetic_episode(ws, "src", "ep-0", duration_s=1.0,
                                 scalar_streams={schema.JOINT_POSITIONS: (50.0, 14), schema.CUBE_POSE: (50.0, 7)},
                                 properties={"episode": {"kind": "demo", "task": "transfer_cube"}})
    catalog.register_files("src", [path])
    curate.save(catalog, curate.select(catalog, "src"), "all")
    out = tmp_path / "lr30"
    export_lerobot(catalog, "all", out, 30)

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    t_rec, state = ep.streams[schema.JOINT_POSITIONS]
    _, cube = ep.streams[schema.CUBE_POSE]
    k = np.asarray(data.column("frame_index").to_pylist())
    assert len(k) == 30 and k.tolist() == list(range(30))  # grid points 0 .. 29/30 s within the last row at 0.98 s
    # independent latest-at: the last recorded row whose time (whole ms) is <= k / 30
    idx = np.searchsorted(np.round(t_rec * 1000), k * 1000 / 30, side="right") - 1
    np.testing.assert_array_equal(np.stack(data.column("observation.state").to_pylist()), state[idx].astype(np.float32))
    np.testing.assert_array_equal(np.stack(data.column("observation.environment_state").to_pylist()), cube[idx].astype(np.float32))

    import_lerobot(catalog, out, "back")
    (sid,) = catalog.segment_table("back").column("segment_id").to_pylist()
    got = EpisodeStream(catalog, ("back", [sid]), fields={"cube": schema.CUBE_POSE}, rate_hz=30, batch_size=64, shuffle=False)
    np.testing.assert_array_equal(next(iter(got))["cube"].numpy(), cube[idx].astype(np.float32))


# --- issue 19 item 12: tracebacks instead of errors ---------------------------------------------------


def _invoke(ws, *args: str):
    """The CLI in process: (exit code, output); a traceback would surface as a non-SystemExit exception."""
    from typer.testing import CliRunner

    from roboloop.cli import app

    res = CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


@pytest.mark.parametrize("toml, expect", [
    ("region = 5\n", "needs a list of labels, got 5"),
    ("[grid]\nregion = {a = 1}\n", "needs a list of labels"),
    ("region = [true]\n", "needs a list of labels"),
    ("region = 'near,,far'\n", "empty label"),
])
def test_bad_toml_grid_is_an_error(tmp_path, toml, expect):
    from roboloop.evaluate.run import GridError, parse_grid

    path = tmp_path / "grid.toml"
    path.write_text(toml)
    with pytest.raises(GridError, match=expect):
        parse_grid(path)
    code, out = _invoke(tmp_path / "ws", "eval", "--grid", str(path), "-n", "1")
    assert code == 1 and expect in out


@pytest.mark.parametrize("text", ["region=near,,far", "region=near,", "region=,far"])
def test_grid_with_an_empty_label_is_an_error(text):
    from roboloop.evaluate.run import GridError, parse_grid

    with pytest.raises(GridError, match="empty label"):
        parse_grid(text)
    assert parse_grid("region=near,far").to_dict() == {"region": ["left", "right"]}  # aliases still resolve


def test_serve_port_out_of_range_is_an_error(tmp_path):
    code, out = _invoke(tmp_path / "ws", "serve", "--port", "99999")
    assert code == 1 and "99999 is not a TCP port" in out


@pytest.mark.parametrize("inside", [False, True])
def test_workspace_naming_a_file_is_an_error(tmp_path, inside):
    from roboloop.workspace import Workspace, WorkspaceError

    f = tmp_path / "notes.txt"
    f.write_text("x")
    ws = f / "sub" if inside else f
    with pytest.raises(WorkspaceError, match="is a file|which is a file"):
        Workspace(ws)
    code, out = _invoke(ws, "ls")
    assert code == 1 and "a workspace is a folder" in out
    assert f.read_text() == "x"


def test_export_to_an_unwritable_path_is_an_error_and_leaves_nothing(tmp_path, catalog, synthetic_episode):
    from roboloop import curate
    from roboloop.interop import export_lerobot
    from roboloop.interop.lerobot import LeRobotExportError

    _, path = synthetic_episode(catalog.workspace, "src", "ep-0", duration_s=0.2)
    catalog.register_files("src", [path])
    curate.save(catalog, curate.select(catalog, "src"), "all")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(LeRobotExportError, match="afile is a file, not a folder"):
        export_lerobot(catalog, "all", blocker / "out", 50)
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ws"]


def test_port_in_time_wait_after_a_kill_is_free(ws):
    """A killed server's connections stay in TIME_WAIT for ~60 s; no process holds the port and the
    Rerun server (SO_REUSEADDR, set by tokio) binds over them: starting there must not be refused."""
    import errno
    import socket

    from roboloop.catalog.client import Catalog, port_holder

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first, as a killed server's kernel does: its end goes to TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    srv.close()
    plain = socket.socket()
    with pytest.raises(OSError) as err:
        plain.bind(("127.0.0.1", port))  # the state the report describes: a plain bind is refused
    plain.close()
    assert err.value.errno == errno.EADDRINUSE
    assert port_holder(port) is None
    with Catalog(ws, url="", port=port) as cat:
        assert f":{port}" in cat.url


def test_plans_table_whose_only_plan_has_no_items_is_readable_by_sql(catalog):
    """Executing a plan without items writes `collected = {}` (an Arrow struct without fields): the
    catalog table was created but every query of it failed (the columns after it decoded shifted),
    while verify said ok."""
    from roboloop.catalog.verify import verify
    from roboloop.collect.plan import Plan
    from roboloop.collect.plan_run import execute_plan

    run = execute_plan(catalog, Plan(name="empty", dataset="aloha", items=()))
    assert run.status == "executed"
    assert catalog.publish_rows("plans")
    got = catalog.sql("SELECT * FROM plans").to_pylist()
    assert [(r["name"], r["dataset"], r["status"], r["total"], r["items"], r["collected"]) for r in got] == [
        ("empty", "aloha", "executed", 0, [], "{}")]
    assert verify(catalog.workspace).ok
    code, out = _invoke(catalog.workspace.root, "sql", "SELECT name, total FROM plans", "--format", "csv")
    assert code == 0 and out.splitlines() == ["name,total", "empty,0"]


@pytest.mark.parametrize("name", ["aloha_runs", "aloha_evals"])
def test_runs_and_evals_names_are_refused_as_demonstration_datasets(tmp_path, name):
    from roboloop.collect.plan import Plan, PlanError
    from roboloop.collect.run import CollectConfig
    from roboloop.config import ConfigError
    from roboloop.evaluate.run import EvalConfig, EvaluateError

    with pytest.raises(ConfigError, match="reserved"):
        CollectConfig(dataset=name)
    with pytest.raises(EvaluateError, match="reserved"):
        EvalConfig(dataset=name)
    with pytest.raises(PlanError, match="reserved"):
        Plan(name="p", dataset=name)
    assert CollectConfig(dataset="aloha_evals", kind="rollout").dataset == "aloha_evals"  # where evaluate records rollouts
    assert CollectConfig(dataset="aloha-runs").dataset == "aloha-runs"
    code, out = _invoke(tmp_path / "ws", "collect", "-d", name, "--episodes", "1", "--steps", "5", "--cameras", "")
    assert code == 1 and "reserved" in out and not (tmp_path / "ws" / "datasets" / name).exists()


def test_empty_where_is_an_error_not_everything(catalog, synthetic_episode):
    from roboloop import curate
    from roboloop.predicate import PredicateError
    from roboloop.predicate.select import select_ids

    paths = [synthetic_episode(catalog.workspace, "src", f"ep-{i}", duration_s=0.2, seed=i)[1] for i in range(2)]
    catalog.register_files("src", paths)
    table = catalog.segment_table("src")
    assert select_ids(table, None) == ["ep-0", "ep-1"]
    for where in ("", "  "):
        with pytest.raises(PredicateError, match="predicate is empty"):
            select_ids(table, where)
        with pytest.raises(PredicateError, match="leave --where out"):
            curate.select(catalog, "src", where)
    code, out = _invoke(catalog.workspace.root, "curate", "-d", "src", "--name", "everything", "--where", "")
    assert code == 1 and "predicate is empty" in out
    assert curate.list_selections(catalog) == []


def test_import_as_a_layer_refuses_a_base_recording(tmp_path, catalog, synthetic_episode):
    from roboloop import schema
    from roboloop.catalog.errors import CatalogError
    from roboloop.record.episode import write_layer_properties

    _, base = synthetic_episode(catalog.workspace, "src", "ep-0", duration_s=0.2, properties={"episode": {"kind": "demo"}})
    outside = tmp_path / "ep-0.rrd"
    outside.write_bytes(base.read_bytes())
    with pytest.raises(CatalogError, match="is a base recording"):
        catalog.import_files("other", [outside], layer="signals")
    assert not catalog.workspace.segment_path("other", "signals", "ep-0").exists()
    assert catalog.import_files("other", [outside]) == ["ep-0"]  # as a base it is fine
    layer = write_layer_properties(tmp_path / "layer.rrd", "ep-0", {schema.SIGNALS: {"jerk_peak": 1.5}})
    assert catalog.import_files("other", [layer], layer="signals") == ["ep-0"]
    row = catalog.segment_table("other").to_pylist()[0]
    assert row["signals.jerk_peak"] == 1.5 and row["episode.kind"] == "demo"


# --- session 9, engineer H: a file where a folder belongs; a cut-short run.json ------------------------------------


def test_a_file_where_a_folder_belongs_is_named_and_nothing_is_half_written(ws):
    from roboloop.workspace import WorkspaceLayoutError, atomic_write_text

    ws.root.mkdir(parents=True)
    (ws.root / "locks").write_text("x")
    with pytest.raises(WorkspaceLayoutError, match=r"locks is a file where roboloop keeps a folder.*mv .*locks\.bak"):
        with ws.lock("seeds-d"):
            pass
    with pytest.raises(WorkspaceLayoutError, match=r"locks is a file"):
        with ws.writer("evals", "e1"):
            pass
    target = ws.root / "locks" / "deeper" / "row.json"
    with pytest.raises(WorkspaceLayoutError, match=rf"{ws.root / 'locks'} is a file .*on the way to {target.parent}"):
        atomic_write_text(target, "{}")
    assert (ws.root / "locks").read_text() == "x" and sorted(p.name for p in ws.root.iterdir()) == ["locks"]


def test_a_folder_where_a_lock_file_belongs_is_named_and_the_lock_works_once_moved(ws):
    """`open(..., O_CREAT)` on a folder raised IsADirectoryError (a traceback) from every command taking that lock."""
    from roboloop.workspace import WorkspaceLayoutError

    for path, take in ((ws.lock_path("seeds-d"), lambda: ws.lock("seeds-d")),
                       (ws.writer_lock_path("evals", "e1"), lambda: ws.writer("evals", "e1"))):
        path.mkdir(parents=True)
        (path / "keep").write_text("mine")
        with pytest.raises(WorkspaceLayoutError, match=rf"{path} is a folder where roboloop keeps a lock file.*mv {path} {path}\.bak"):
            with take():
                pass
        assert (path / "keep").read_text() == "mine"  # nothing of it touched
        path.rename(path.with_name(path.name + ".bak"))
        with take() as got:
            assert got is True and path.is_file()


def test_refine_over_a_file_where_the_layer_folder_belongs_says_so_and_runs_after_the_fix(ws, synthetic_episode):
    """It used to loop 1000 times on the FileExistsError of mkdir and blame a version race (a traceback)."""
    for i, seg in enumerate(("a", "b")):
        synthetic_episode(ws, "src", seg, duration_s=0.3, properties={"episode": {"seed": i}})
    blocker = ws.dataset_dir("src") / schema.SIGNALS_LAYER
    blocker.write_text("not a folder")
    code, out = _invoke(ws.root, "refine", "--dataset", "src")
    assert code == 1 and f"{blocker} is a file where roboloop keeps a folder" in " ".join(out.split()), out
    assert blocker.read_text() == "not a folder"
    blocker.rename(blocker.with_name("signals.bak"))
    code, out = _invoke(ws.root, "refine", "--dataset", "src")
    assert code == 0, out
    assert sorted(p.name for p in ws.layer_dir("src", schema.SIGNALS_LAYER).iterdir()) == ["a.rrd", "b.rrd"]


def test_a_cut_short_run_json_is_named_and_never_hides_the_other_runs(ws, caplog):
    from roboloop.train.deploy import list_runs
    from roboloop.workspace import DamagedFileError

    for run_id in ("r-cut", "r-good"):
        info = {"run_id": run_id, "dataset": "d", "status": "finished", "started_at": "2026-12-05T14:00:00+00:00"}
        (ws.run_dir(run_id)).mkdir(parents=True)
        (ws.run_dir(run_id) / schema.RUN_INFO_FILE).write_text(json.dumps(info, indent=2))
    cut = ws.run_dir("r-cut") / schema.RUN_INFO_FILE
    cut.write_bytes(cut.read_bytes()[:40])
    with pytest.raises(DamagedFileError, match=rf"{cut} \(run r-cut's record\) is damaged"):
        ws.run_info("r-cut")
    with caplog.at_level("WARNING"):
        listed = list_runs(ws)
    assert [r["run_id"] for r in listed] == ["r-good"] and f"{cut} (run r-cut's record) is damaged" in caplog.text
    (ws.run_dir("r-good") / schema.RUN_INFO_FILE).write_text("[]")
    with pytest.raises(DamagedFileError, match="holds a JSON list, not an object"):
        ws.run_info("r-good")
    from roboloop.workspace import read_json_file

    features = ws.run_dir("r-good") / "features.json"  # a list: what a deployed or resumed run reads its widths from
    features.write_text('{"name": "state"}')
    with pytest.raises(DamagedFileError, match=r"features.json \(widths\) is damaged: it holds a JSON dict, not a list"):
        read_json_file(features, "widths", list)
    code, out = _invoke(ws.root, "eval", "--run", "r-cut", "--grid", "region=near", "-n", "1")
    assert code == 1 and "r-cut's record) is damaged" in " ".join(out.split()) and "no training run" not in out, out
