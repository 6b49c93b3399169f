"""Reliability and safety (issue 13): read-only SQL, corruption caught, no shadowing files, `verify`,
empty datasets, and the smaller checks (ports, regions, stream options, predicate types, temp files)."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.errors import CatalogError, CorruptRecordingError, PortInUseError, ReadOnlySQLError
from roboloop.catalog.rrd import validate_rrd
from roboloop.catalog.verify import verify
from roboloop.cli import app
from roboloop.predicate import PredicateTypeError, UnknownColumnError
from roboloop.predicate.select import select_ids
from roboloop.record.episode import EpisodeRecorder, write_layer_properties
from roboloop.workspace import TEMP_MARKER, Workspace

SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli(ws: Workspace, *args: str):
    return CliRunner().invoke(app, ["--workspace", str(ws.root), *args])


def no_crash(res) -> None:
    """A command ended through its own exit (0 or a clean error), not an escaping exception (e.g. a Rust panic)."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output and "panick" not in res.output.lower(), res.output


def flip_middle(src: Path, dst: Path, n: int = 50) -> None:
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    for i in range(n):
        data[mid + i] ^= 0xFF
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))


def episodes(ws, synthetic_episode, n=2, dataset="demo"):
    return [synthetic_episode(ws, dataset, f"ep-{i}", seed=i, properties={schema.EPISODE: {"seed": i}})[1] for i in range(n)]


# --- 1. sql is read-only -------------------------------------------------------------------

def test_sql_refuses_writes_and_copy_creates_no_file(ws, synthetic_episode, tmp_path):
    episodes(ws, synthetic_episode, 1)
    target = tmp_path / "written.csv"
    with Catalog(ws, url="") as cat:
        statements = [
            f"COPY (SELECT 'x' AS x) TO '{target}' STORED AS CSV",
            "CREATE TABLE t AS SELECT 1 AS a",
            "CREATE VIEW v AS SELECT 1 AS a",
            "DROP TABLE demo",
            "SET datafusion.execution.batch_size = 7",
            "INSERT INTO demo (segment_id) VALUES ('x')",
        ]
        for stmt in statements:
            with pytest.raises(ReadOnlySQLError, match="read-only"):
                cat.sql(stmt)
        assert not target.exists()
        # the view is still there and queries still run
        assert cat.sql("SELECT segment_id FROM demo").column(0).to_pylist() == ["ep-0"]
    res = cli(ws, "sql", f"COPY (SELECT 1 AS x) TO '{target}' STORED AS CSV")
    assert res.exit_code == 1 and "read-only" in res.output
    no_crash(res)
    assert not target.exists()


# --- 2. corruption -------------------------------------------------------------------------

def test_import_rejects_rrd_with_50_bytes_flipped_in_the_middle(tmp_path, synthetic_episode):
    src_ws = Workspace(tmp_path / "src")
    _, good = synthetic_episode(src_ws, "x", "ep-flip", seed=3)
    flipped = tmp_path / "flipped.rrd"
    flip_middle(good, flipped)
    assert validate_rrd(good) == "ep-flip"  # control: the original decodes
    with pytest.raises(CorruptRecordingError, match="flipped.rrd"):
        validate_rrd(flipped)
    target = Workspace(tmp_path / "target")
    res = cli(target, "import", str(flipped), "--dataset", "imported")
    assert res.exit_code == 1 and "flipped.rrd" in res.output and "nothing was imported" in res.output
    assert target.datasets() == []


def test_import_refuses_two_files_of_one_recording(tmp_path, synthetic_episode):
    src_ws = Workspace(tmp_path / "src")
    _, good = synthetic_episode(src_ws, "x", "ep-a")
    twin = tmp_path / "twin.rrd"
    shutil.copyfile(good, twin)
    with Catalog(Workspace(tmp_path / "t"), url="") as cat:
        with pytest.raises(CatalogError, match="twin.rrd"):
            cat.import_files("d", [good, twin])
        assert cat.workspace.datasets() == []


def test_recording_id_read_from_the_header_matches_the_manifest(ws, synthetic_episode, tmp_path):
    from rerun.chunk import RrdReader

    from roboloop.catalog.rrd import read_recording_id, recording_id_from_header

    _, base = synthetic_episode(ws, "demo", "ep-video", video_streams={"/cameras/top": (10.0, 32, 24)})
    layer = write_layer_properties(ws.segment_path("demo", schema.SIGNALS_LAYER, "ep-video"), "ep-video", {schema.SIGNALS: {"x": 1.0}})
    for path in (base, layer):
        assert recording_id_from_header(path) == RrdReader(path).recordings()[0].recording_id == "ep-video"
        assert read_recording_id(path) == "ep-video"
    junk = tmp_path / "junk.rrd"
    junk.write_bytes(b"RRF2" + bytes(100))
    assert recording_id_from_header(junk) is None  # unknown layout: the caller falls back to the manifest


def test_restore_never_lets_a_file_shadow_another_segment(ws, synthetic_episode):
    episodes(ws, synthetic_episode, 2)
    # a stray file in base/ holding segment ep-1's recording id, with other content
    stray = ws.layer_dir("demo", schema.BASE_LAYER) / "zz-stray.rrd"
    with EpisodeRecorder(stray, "ep-1") as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, np.arange(5) / 50.0, np.ones((5, 14)))
        rec.set_properties(schema.EPISODE, {"seed": 99})
    # a layer file named after ep-0 that holds ep-1's recording
    write_layer_properties(ws.segment_path("demo", schema.SIGNALS_LAYER, "ep-1"), "ep-1", {schema.SIGNALS: {"x": 1.0}})
    misnamed = ws.segment_path("demo", schema.SIGNALS_LAYER, "ep-0")
    write_layer_properties(misnamed, "ep-1", {schema.SIGNALS: {"x": 666.0}})
    with Catalog(ws, url="") as cat:
        rows = {r["segment_id"]: r for r in cat.segment_table("demo").to_pylist()}
        assert sorted(rows) == ["ep-0", "ep-1"]
        assert rows["ep-1"]["episode.seed"] == 1  # not the stray's 99
        assert rows["ep-1"]["signals.x"] == 1.0  # not the misnamed file's 666
        assert rows["ep-0"]["signals.x"] is None
        skipped = {p.name: reason for p, reason in cat.report.skipped}
    assert set(skipped) == {"zz-stray.rrd", "ep-0.rrd"}
    assert "ep-1.rrd" in skipped["zz-stray.rrd"] and "zz-stray.rrd" in skipped["zz-stray.rrd"]
    assert "'ep-1'" in skipped["ep-0.rrd"] and "'ep-0'" in skipped["ep-0.rrd"]
    # the CLI prints each restore warning exactly once (a real process: its own logging set-up)
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run(
        [sys.executable, "-m", "roboloop.cli", "--workspace", str(ws.root), "ls"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("warning: skipped") == 2, out.stderr  # one per skipped file
    assert "WARNING" not in out.stderr and out.stderr.count("is named after segment 'zz-stray'") == 1, out.stderr


def test_verify_reports_broken_files_and_exit_code(ws, synthetic_episode):
    paths = episodes(ws, synthetic_episode, 3)
    write_layer_properties(ws.segment_path("demo", schema.SIGNALS_LAYER, "ep-0"), "ep-0", {schema.SIGNALS: {"x": 1.0}})
    rep = verify(ws)
    assert rep.ok and rep.checked == 4
    res = cli(ws, "verify")
    assert res.exit_code == 0 and "ok: 4 file(s)" in res.output
    flip_middle(paths[1], paths[1])
    shutil.copyfile(paths[2], ws.layer_dir("demo", schema.BASE_LAYER) / "copy.rrd")
    truncated = ws.segment_path("other", schema.BASE_LAYER, "ep-t")
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(paths[0].read_bytes()[:1000])
    rep = verify(ws, "demo")
    assert sorted(p.name for p, _ in rep.problems) == ["copy.rrd", "ep-1.rrd"]
    reasons = {p.name: r for p, r in rep.problems}
    assert "lz4" in reasons["ep-1.rrd"] or "unreadable" in reasons["ep-1.rrd"]
    assert "'ep-2'" in reasons["copy.rrd"]
    res = cli(ws, "verify")
    assert res.exit_code == 1
    for name in ("ep-1.rrd", "copy.rrd", "ep-t.rrd"):
        assert name in res.output
    assert "3 of 6 file(s)" in res.output
    res = cli(ws, "verify", "--dataset", "nope")
    assert res.exit_code == 1 and "unknown dataset 'nope'" in res.output


# --- 3. empty datasets ---------------------------------------------------------------------

def test_every_command_handles_an_empty_dataset(ws):
    ws.layer_dir("empty", schema.BASE_LAYER).mkdir(parents=True)  # e.g. a collect killed before its first episode
    res = cli(ws, "ls")
    no_crash(res)
    assert res.exit_code == 0 and "empty" in res.output
    res = cli(ws, "sql", "SELECT count(*) AS n FROM empty", "--format", "csv")
    no_crash(res)
    assert res.exit_code == 0 and res.output.split() == ["n", "0"]
    res = cli(ws, "sql", "SELECT * FROM empty")
    no_crash(res)
    assert res.exit_code == 0 and "0 row(s)" in res.output
    res = cli(ws, "sql", 'SELECT "episode.seed" FROM empty')
    no_crash(res)
    assert res.exit_code == 1 and "no episodes yet" in res.output
    res = cli(ws, "refine", "--dataset", "empty")
    no_crash(res)
    assert res.exit_code == 0 and "no episodes yet" in res.output
    res = cli(ws, "flag", "--dataset", "empty", "--where", "outcome.success = false", "--reason", "r")
    no_crash(res)
    assert res.exit_code == 1 and "no episodes yet" in res.output
    res = cli(ws, "flag", "--dataset", "empty", "-s", "ep-1", "--reason", "r")
    no_crash(res)
    assert res.exit_code == 1 and "0 segments" in res.output
    res = cli(ws, "unflag", "--dataset", "empty", "--where", "episode.seed > 1")
    no_crash(res)
    assert res.exit_code == 1 and "no episodes yet" in res.output
    res = cli(ws, "curate", "--dataset", "empty", "--name", "s1")
    no_crash(res)
    assert res.exit_code == 1 and "0 segments" in res.output
    res = cli(ws, "curate", "ls")
    no_crash(res)
    assert res.exit_code == 0
    res = cli(ws, "verify", "--dataset", "empty")
    no_crash(res)
    assert res.exit_code == 0
    from roboloop.stream import EpisodeStream, StreamError

    with Catalog(ws, url="") as cat:
        assert cat.dataset_summary("empty") == (0, {})
        with pytest.raises(StreamError, match="no episodes yet"):
            EpisodeStream(cat, dataset="empty", fields={"s": schema.JOINT_POSITIONS}, rate_hz=50)


# --- 4. smaller checks ---------------------------------------------------------------------

def test_taken_port_is_an_error_naming_the_holder(ws):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=rf"port {taken} is already in use by pid {os.getpid()}"):
            Catalog(ws, url="", port=taken)
        res = cli(ws, "serve", "--port", str(taken))
        assert res.exit_code == 1 and f"port {taken} is already in use" in res.output
    finally:
        blocker.close()


def test_region_off_the_table_is_rejected(ws):
    from roboloop.envs.aloha.conditions import CUBE_START_BOUNDS, SceneConditions

    with pytest.raises(ValueError, match="off the table"):
        SceneConditions.from_names(region="5,6,7,8")
    x0, x1, y0, y1 = CUBE_START_BOUNDS
    assert SceneConditions.from_names(region=f"{x0},{x1},{y0},{y1}").x_max == x1  # the whole table top is fine
    with pytest.raises(ValueError, match="off the table"):
        SceneConditions.from_names(x=(0.0, x1 + 0.01))
    res = cli(ws, "collect", "--dataset", "d", "-n", "1", "--region", "5,6,7,8")
    no_crash(res)
    assert res.exit_code == 1 and "off the table" in res.output
    assert ws.datasets() == []


@pytest.fixture
def stream_catalog(ws, synthetic_episode):
    for i in range(2):
        synthetic_episode(ws, "demo", f"ep-{i}", seed=i, duration_s=1.0)
    cat = Catalog(ws, url="")
    yield cat
    cat.close()


def test_stream_rejects_bad_options(stream_catalog):
    from roboloop.stream import EpisodeStream, Field, StreamError

    cat = stream_catalog
    fields = {"state": schema.JOINT_POSITIONS}
    for rate in (math.inf, math.nan, 0, -5):
        with pytest.raises(ValueError, match="rate_hz"):
            EpisodeStream(cat, dataset="demo", fields=fields, rate_hz=rate)
    with pytest.raises(StreamError, match=r"segments=\[\]"):
        EpisodeStream(cat, dataset="demo", segments=[], fields=fields, rate_hz=50)
    for rank, world in ((2, 2), (-1, 2), (0, 0), (1, None)):
        with pytest.raises(ValueError, match="rank|world_size"):
            EpisodeStream(cat, dataset="demo", fields=fields, rate_hz=50, rank=rank, world_size=world)
    ok = EpisodeStream(
        cat, dataset="demo", fields={"state": schema.JOINT_POSITIONS, "action": Field(schema.JOINT_TARGETS, window=range(10))}, rate_hz=50
    )
    # 14 float32 + a 10-step window of 14 float32 with its bool mask + 3 meta values of 8 bytes
    assert ok.sample_bytes == 14 * 4 + 10 * 14 * 4 + 10 + 3 * 8
    with pytest.raises(StreamError, match="more than the"):
        EpisodeStream(cat, dataset="demo", fields={"action": Field(schema.JOINT_TARGETS, window=range(1_000_000))}, rate_hz=50)


def test_predicate_type_and_quote_errors_name_the_column():
    table = pa.table(
        {
            "segment_id": ["a", "b"],
            "outcome.success": [True, False],
            "episode.seed": pa.array([1, 2], pa.int64()),
            "scene.lighting": ["normal", "dim"],
        }
    )
    with pytest.raises(PredicateTypeError, match=r"outcome\.success \(a boolean column.*'abc'.*true or false"):
        select_ids(table, "outcome.success > 'abc'")
    with pytest.raises(PredicateTypeError, match=r"episode\.seed \(a number column"):
        select_ids(table, "episode.seed in (1, 'two')")
    with pytest.raises(PredicateTypeError, match=r"scene\.lighting \(a text column.*single quotes"):
        select_ids(table, "scene.lighting = 3")
    for text in ("scene.lighting = normal", 'scene.lighting = "normal"'):
        with pytest.raises(UnknownColumnError) as err:
            select_ids(table, text)
        assert "unknown column 'normal'" in str(err.value) and "single quotes" in str(err.value)
    assert select_ids(table, "scene.lighting = 'dim' and outcome.success = false and episode.seed >= 2") == ["b"]


# --- 5. leftover temp files ----------------------------------------------------------------

def test_catalog_start_removes_dead_writers_temp_files_of_every_kind(ws):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = os.getpid()

    def temp(folder: Path, name: str, pid: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f".{name}{TEMP_MARKER}{pid}-abcd1234"
        p.write_bytes(b"partial")
        return p

    dead_files = [
        temp(ws.layer_dir("demo", schema.BASE_LAYER), "ep-1.rrd", dead.pid),
        temp(ws.layer_dir("demo", schema.SIGNALS_LAYER), "ep-1.1.rrd", dead.pid),
        temp(ws.dataset_dir("demo"), "blueprint.rbl", dead.pid),
        temp(ws.table_dir("evals") / "rows", "e1@1-1-ab.json", dead.pid),
        temp(ws.run_dir("run-1"), "config.json", dead.pid),
    ]
    live_file = temp(ws.run_dir("run-2"), "weights.pt", live)
    with Catalog(ws, url=""):
        pass
    assert [p for p in dead_files if p.exists()] == []
    assert live_file.exists()  # its writer (this process) still runs
