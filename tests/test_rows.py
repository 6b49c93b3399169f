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
