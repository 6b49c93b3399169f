"""Tables as rows on disk: newest row per key wins, tombstones delete, concurrent writers never lose a row."""

import multiprocessing as mp

from roboloop import rows
from roboloop.workspace import Workspace


def test_newest_row_wins_and_tombstone_deletes(tmp_path):
    ws = Workspace(tmp_path)
    rows.write_row(ws, "evals", "e1", {"policy": "a", "n": 1})
    rows.write_row(ws, "evals", "e2", {"policy": "b", "n": 2})
    rows.write_row(ws, "evals", "e1", {"policy": "a", "n": 3})
    got = {r["_key"]: r["n"] for r in rows.read_rows(ws, "evals")}
    assert got == {"e1": 3, "e2": 2}
    rows.delete_row(ws, "evals", "e2")
    assert [r["_key"] for r in rows.read_rows(ws, "evals")] == ["e1"]
    assert rows.read_row(ws, "evals", "e2") is None
    assert rows.row_tables(ws) == ["evals"]


def test_history_is_every_row_of_a_key_oldest_first(tmp_path):
    ws = Workspace(tmp_path)
    for n in (1, 2):
        rows.write_row(ws, "labels", "s1", {"n": n})
    rows.write_row(ws, "labels", "s10", {"n": 99})  # a key that starts like s1 is not s1's history
    rows.delete_row(ws, "labels", "s1")
    rows.write_row(ws, "labels", "s1", {"n": 3})
    hist = rows.history(ws, "labels", "s1")
    assert [(r.get("n"), bool(r.get(rows.DELETED_FIELD))) for r in hist] == [(1, False), (2, False), (None, True), (3, False)]
    assert rows.read_row(ws, "labels", "s1")["n"] == hist[-1]["n"]
    assert rows.history(ws, "labels", "nope") == [] and rows.history(ws, "other", "s1") == []


def test_unreadable_row_file_is_skipped(tmp_path):
    ws = Workspace(tmp_path)
    rows.write_row(ws, "plans", "p1", {"x": 1})
    (rows.rows_dir(ws, "plans") / "p2@00000000000000000001-1-abcd.json").write_text("{not json")
    assert [r["_key"] for r in rows.read_rows(ws, "plans")] == ["p1"]


def _writer(root, i):
    rows.write_row(Workspace(root), "selections", f"k{i}", {"i": i})


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert sorted(r["i"] for r in rows.read_rows(Workspace(tmp_path), "selections")) == [0, 1, 2, 3]


def test_restore_publishes_row_tables_for_sql(tmp_path):
    """Row tables come back as catalog tables at every start, so SQL can query evals/plans rows."""
    from typer.testing import CliRunner

    from roboloop.catalog.client import Catalog
    from roboloop.cli import app

    ws = Workspace(tmp_path)
    rows.write_row(ws, "evals", "e1", {"policy": "a", "n": 1, "cells": ["yaw=any"], "grid": {"yaw": ["any"]}})
    rows.write_row(ws, "evals", "e2", {"policy": "b", "n": 2, "cells": [], "grid": {"yaw": ["none"]}})
    rows.write_row(ws, "evals", "e1", {"policy": "a", "n": 5, "cells": ["yaw=any"], "grid": {"yaw": ["any"]}})
    rows.write_row(ws, "plans", "p1", {"note": None, "count": 3})
    rows.write_row(ws, "plans", "p2", {"note": "x", "count": 1.5})  # int and float: still one table
    with Catalog(ws, url="") as cat:
        assert {"evals", "plans"} <= set(cat.report.tables)
        got = cat.sql("SELECT _key, policy, n FROM evals ORDER BY _key").to_pylist()
        assert got == [{"_key": "e1", "policy": "a", "n": 5}, {"_key": "e2", "policy": "b", "n": 2}]
        assert cat.sql("SELECT count(*) AS c FROM plans").to_pylist() == [{"c": 2}]
        rows.write_row(ws, "evals", "e3", {"policy": "c", "n": 0, "cells": [], "grid": {"yaw": ["none"]}})
        assert cat.publish_rows("evals")
        assert cat.sql("SELECT count(*) AS c FROM evals").to_pylist() == [{"c": 3}]
    res = CliRunner().invoke(app, ["--workspace", str(tmp_path), "sql", "SELECT policy FROM evals ORDER BY 1", "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.output.split() == ["policy", "a", "b", "c"]
