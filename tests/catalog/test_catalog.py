"""Foundation: workspace as system of record, catalog restore, import validation, sql, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.errors import CatalogError, CorruptRecordingError, UnknownDatasetError
from roboloop.catalog.rrd import validate_rrd
from roboloop.cli import app
from roboloop.record.episode import EpisodeRecorder, write_layer_properties
from roboloop.workspace import Workspace, atomic_path


def _read_rows(cat: Catalog, dataset: str, segment: str, entity: str) -> pa.Table:
    ds = cat.dataset(dataset)
    return ds.filter_segments([segment]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()


def test_atomic_path_leaves_nothing_on_crash(tmp_path):
    final = tmp_path / "a" / "x.rrd"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert not final.exists()
    assert list((tmp_path / "a").iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"done")
    assert final.read_bytes() == b"done"


def test_recorder_interrupted_writes_nothing(ws):
    path = ws.segment_path("demo", schema.BASE_LAYER, "ep-1")
    with pytest.raises(KeyboardInterrupt):
        with EpisodeRecorder(path, "ep-1") as rec:
            rec.append_scalars(schema.JOINT_POSITIONS, 0.0, np.zeros(14))
            raise KeyboardInterrupt
    assert not path.exists()
    assert ws.segment_files("demo", schema.BASE_LAYER) == []


def test_restart_persistence_base_and_layer(ws, synthetic_episode):
    eps = {}
    with Catalog(ws, url="") as cat:
        for i in range(3):
            sid = f"ep-{i}"
            ep, path = synthetic_episode(ws, "demo", sid, seed=i, properties={"episode": {"seed": i, "kind": "demo"}})
            cat.register_files("demo", [path])
            layer = write_layer_properties(
                ws.segment_path("demo", "signals", sid), sid, {"signals": {"arm_activity": 10.0 + i, "label": f"L{i}"}}
            )
            cat.register_files("demo", [layer], layer="signals")
            eps[sid] = ep
        before = cat.segment_table("demo")
        rows_before = _read_rows(cat, "demo", "ep-1", schema.JOINT_POSITIONS)

    with Catalog(ws, url="") as cat2:  # a fresh server restored from the workspace alone
        assert cat2.report.segments == {("demo", "base"): 3, ("demo", "signals"): 3}
        after = cat2.segment_table("demo").sort_by("segment_id")
        assert after.column("segment_id").to_pylist() == ["ep-0", "ep-1", "ep-2"]
        assert all(sorted(layers) == ["base", "signals"] for layers in after.column("layers").to_pylist())
        assert after.column("episode.seed").to_pylist() == [0, 1, 2]
        assert after.column("signals.arm_activity").to_pylist() == [10.0, 11.0, 12.0]
        assert after.column("signals.label").to_pylist() == ["L0", "L1", "L2"]
        assert set(before.column_names) == set(after.column_names)
        rows_after = _read_rows(cat2, "demo", "ep-1", schema.JOINT_POSITIONS)
        assert rows_after.num_rows == rows_before.num_rows == len(eps["ep-1"].streams[schema.JOINT_POSITIONS][0])
        col = f"{schema.JOINT_POSITIONS}:{schema.SCALARS_COMPONENT}"
        got = np.array(rows_after.sort_by(schema.TIMELINE).column(col).to_pylist())
        np.testing.assert_array_equal(got, eps["ep-1"].streams[schema.JOINT_POSITIONS][1])


def test_table_persists_across_restart(ws):
    sch = pa.schema([("name", pa.string()), ("n", pa.int64())])
    with Catalog(ws, url="") as cat:
        t = cat.table("notes", sch)
        t.append(pa.RecordBatch.from_pylist([{"name": "a", "n": 1}, {"name": "b", "n": 2}], schema=sch))
    with Catalog(ws, url="") as cat2:
        assert "notes" in cat2.table_names()
        rows = cat2.table("notes").reader().to_arrow_table().sort_by("n").to_pylist()
        assert rows == [{"name": "a", "n": 1}, {"name": "b", "n": 2}]
        assert cat2.sql("SELECT sum(n) AS s FROM notes").column("s").to_pylist() == [3]


def _truncate(src, dst, keep_fraction=0.5):
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])


def test_validate_rrd_names_corrupt_files(tmp_path, ws, synthetic_episode):
    _, good = synthetic_episode(ws, "demo", "ep-ok")
    assert validate_rrd(good) == "ep-ok"
    bad = tmp_path / "bad.rrd"
    _truncate(good, bad, 0.6)
    with pytest.raises(CorruptRecordingError, match="bad.rrd"):
        validate_rrd(bad)
    junk = tmp_path / "junk.rrd"
    junk.write_bytes(b"not an rrd at all" * 10)
    with pytest.raises(CorruptRecordingError, match="not an RRD"):
        validate_rrd(junk)


def test_import_rejects_corrupt_and_registers_nothing(tmp_path, synthetic_episode):
    src_ws = Workspace(tmp_path / "src")
    _, good = synthetic_episode(src_ws, "x", "ep-good")
    bad = tmp_path / "trunc.rrd"
    _truncate(good, bad, 0.7)
    target = tmp_path / "target"
    runner = CliRunner()
    res = runner.invoke(app, ["--workspace", str(target), "import", str(good), str(bad), "--dataset", "imported"])
    assert res.exit_code == 1
    assert "trunc.rrd" in res.output and "nothing was imported" in res.output
    assert Workspace(target).datasets() == []
    res = runner.invoke(app, ["--workspace", str(target), "import", str(good), "--dataset", "imported"])
    assert res.exit_code == 0, res.output
    with Catalog(Workspace(target), url="") as cat:
        assert cat.segment_table("imported").column("segment_id").to_pylist() == ["ep-good"]


def test_corrupt_file_at_restore_is_skipped_with_warning(ws, synthetic_episode, caplog):
    for i in range(4):
        synthetic_episode(ws, "demo", f"ep-{i}", seed=i)
    broken = ws.segment_path("demo", schema.BASE_LAYER, "ep-broken")
    _truncate(ws.segment_path("demo", schema.BASE_LAYER, "ep-2"), broken, 0.5)
    with caplog.at_level("WARNING"):
        with Catalog(ws, url="") as cat:
            ids = sorted(cat.segment_table("demo").column("segment_id").to_pylist())
            assert ids == ["ep-0", "ep-1", "ep-2", "ep-3"]
            assert [p.name for p, _ in cat.report.skipped] == ["ep-broken.rrd"]
    assert "ep-broken.rrd" in caplog.text


def test_unknown_dataset_lists_existing(catalog, ws, synthetic_episode):
    _, path = synthetic_episode(ws, "demo", "ep-1")
    catalog.register_files("demo", [path])
    with pytest.raises(UnknownDatasetError) as err:
        catalog.dataset("dmeo")
    assert "dmeo" in str(err.value) and "demo" in str(err.value)
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "sql", "SELECT * FROM nosuch"])
    assert res.exit_code == 1 and "demo" in res.output


def test_sql_over_two_datasets(ws, synthetic_episode):
    with Catalog(ws, url="") as cat:
        for ds, n in (("alpha", 3), ("beta", 2)):
            paths = [
                synthetic_episode(ws, ds, f"{ds}-{i}", seed=i, properties={"episode": {"seed": i}, "scene": {"region": "left" if i % 2 else "right"}})[1]
                for i in range(n)
            ]
            cat.register_files(ds, paths)
        out = cat.sql(
            'SELECT a."scene.region" AS region, count(*) AS n FROM alpha a JOIN beta b ON a."episode.seed" = b."episode.seed" GROUP BY 1 ORDER BY 1'
        ).to_pylist()
        assert out == [{"region": "left", "n": 1}, {"region": "right", "n": 1}]
        with pytest.raises(CatalogError, match="alpha"):
            cat.sql("SELECT nonsense FROM alpha")
    res = CliRunner().invoke(
        app, ["--workspace", str(ws.root), "sql", 'SELECT segment_id, "episode.seed" FROM beta ORDER BY 2', "--format", "csv"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == ["segment_id,episode.seed", "beta-0,0", "beta-1,1"]


def test_attach_to_running_catalog(ws, synthetic_episode):
    _, path = synthetic_episode(ws, "demo", "ep-1")
    with Catalog(ws, url="") as server_side:
        server_side.register_files("demo", [path])
        with Catalog(ws, url=server_side.url) as attached:
            assert not attached.embedded
            assert attached.segment_table("demo").column("segment_id").to_pylist() == ["ep-1"]
        res = CliRunner().invoke(app, ["--catalog", server_side.url, "ls"])
        assert res.exit_code == 0 and "demo" in res.output


def test_ls_shows_layers(ws, synthetic_episode):
    _, path = synthetic_episode(ws, "demo", "ep-1")
    write_layer_properties(ws.segment_path("demo", "quality", "ep-1"), "ep-1", {"quality": {"flagged": True}})
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "ls"])
    assert res.exit_code == 0, res.output
    assert "demo" in res.output and "base (1)" in res.output and "quality (1)" in res.output


def test_property_types_do_not_leak_between_recordings(catalog, ws):
    """Rerun's AnyValues caches a name's first type process-wide; our writer must not drop later values."""
    paths = []
    for sid, value in (("ep-a", 0.35), ("ep-b", "dim")):
        path = ws.segment_path("mixed", schema.BASE_LAYER, sid)
        with EpisodeRecorder(path, sid) as rec:
            rec.append_scalars(schema.JOINT_POSITIONS, 0.0, np.zeros(14))
            rec.set_properties("scene", {"lighting": value, "seed": 3})
        paths.append(path)
    catalog.register_files("mixed", paths[1:])
    row = catalog.segment_table("mixed").to_pylist()[0]
    assert row["scene.lighting"] == "dim" and row["scene.seed"] == 3
