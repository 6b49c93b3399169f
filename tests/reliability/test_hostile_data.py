"""Hostile data (issue 19, items 1-4): destructive paths, damaged versions, flipped bits.

- `export-lerobot --overwrite` replaces only an earlier export, never the workspace, a folder
  inside it, an unrelated folder or a file;
- a damaged newest layer version never makes garbage collection delete the good older one;
- a flipped bit that makes the RRD decoder panic (abort the process) is a named per-file
  problem in `verify` and `import`, which survive it;
- every file the workspace writes gets a checksum (workspace manifest) that `verify` checks
  and `import` records, so a flip that still decodes is caught.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.errors import CatalogError
from roboloop.catalog.restore import usable_versions
from roboloop.catalog.rrd import DecodeChild, quick_check_rrd, read_recording_id
from roboloop.catalog.verify import verify
from roboloop.cli import app
from roboloop.interop import LeRobotFormatError, export_lerobot
from roboloop.workspace import Workspace, atomic_path, check_checksum, checksum_record_path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (what must survive a refused command)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 1. export-lerobot --overwrite ------------------------------------------------------------

def test_export_overwrite_refuses_everything_but_an_earlier_export(tmp_path, catalog, synthetic_episode):
    ws = catalog.workspace
    _, p = synthetic_episode(ws, "src", "ep-0", duration_s=0.5)
    catalog.register_files("src", [p])
    curate.save(catalog, curate.select(catalog, "src"), "s")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    before_ws, before_other = _tree_digest(ws.root), _tree_digest(other)
    targets = {
        ws.root: "holds the roboloop workspace",
        tmp_path: "holds the roboloop workspace",  # a parent of the workspace
        ws.datasets_dir: "inside the roboloop workspace",
        ws.layer_dir("src", "base"): "inside the roboloop workspace",
        other: "not an earlier roboloop export",
        plain: "is a file",
    }
    for target, why in targets.items():
        with pytest.raises(LeRobotFormatError, match=why) as exc:
            export_lerobot(catalog, "s", target, 10, overwrite=True)
        assert str(target) in str(exc.value)
    # nothing was deleted or changed (the workspace's own row files may only have grown: none here)
    assert _tree_digest(ws.root) == before_ws
    assert _tree_digest(other) == before_other and plain.read_text() == "a file"
    assert not [q for q in tmp_path.iterdir() if q.name.startswith((".mine", ".plain", ".ws"))]  # no temp or old folders left
    # a folder that looks like an export but lies inside the workspace is still refused
    fake = ws.root / "exports" / "x"
    export_lerobot(catalog, "s", tmp_path / "real", 10)
    fake.parent.mkdir()
    (tmp_path / "real").rename(fake)
    with pytest.raises(LeRobotFormatError, match="inside the roboloop workspace"):
        export_lerobot(catalog, "s", fake, 10, overwrite=True)
    assert (fake / "meta" / "roboloop.json").is_file()
    # an earlier export outside the workspace is replaced
    out = tmp_path / "out"
    export_lerobot(catalog, "s", out, 10)
    rep = export_lerobot(catalog, "s", out, 5, overwrite=True)
    assert rep.fps == 5 and (out / "meta" / "roboloop.json").is_file()


# --- 2. a damaged newest version and garbage collection -------------------------------------

def _bytes(p: Path) -> bytes:
    return p.read_bytes()


def test_damaged_newest_version_keeps_the_older_one_registered_and_on_disk(ws, synthetic_episode):
    for seg in ("s", "t", "u", "v"):
        synthetic_episode(ws, "d", seg, duration_s=0.2, properties={"episode": {"name": seg}})
    base = ws.layer_dir("d", schema.BASE_LAYER)
    originals = {seg: _bytes(base / f"{seg}.rrd") for seg in ("s", "t", "u", "v")}
    (base / "s.1.rrd").write_bytes(originals["s"][:1000])  # `head -c 1000 base/S.rrd > base/S.1.rrd`
    (base / "t.1.rrd").write_bytes(originals["u"])  # a newer version that holds another segment's recording
    shutil.copyfile(base / "v.rrd", base / "v.1.rrd")  # a good newer version: v.rrd is superseded
    with Catalog(ws, url="") as cat:  # alone on the workspace: restore, then garbage collection
        rows = {r[schema.SEGMENT_ID]: r for r in cat.segment_table("d").to_pylist()}
        assert sorted(rows) == ["s", "t", "u", "v"]  # no segment dropped
        assert rows["s"]["episode.name"] == "s" and rows["t"]["episode.name"] == "t"  # t not shadowed by u
        assert sorted(p.name for p in cat.report.registered) == ["s.rrd", "t.rrd", "u.rrd", "v.1.rrd"]
        skipped = {p.name: why for p, why in cat.report.skipped}
        assert set(skipped) == {"s.1.rrd", "t.1.rrd"}
        assert "truncated" in skipped["s.1.rrd"] and "registered the older version s.rrd" in skipped["s.1.rrd"]
        assert "registered the older version t.rrd" in skipped["t.1.rrd"]
        assert "left on disk" in skipped["s.1.rrd"]
        # the reads come from the good files
        got = cat.dataset("d").filter_segments(["s"]).filter_contents([schema.JOINT_POSITIONS]).reader(index="time").to_arrow_table()
        assert got.num_rows == 10
    # the good older versions are untouched, the damaged newer ones left (reported, not deleted), v.rrd collected
    assert _bytes(base / "s.rrd") == originals["s"] and _bytes(base / "t.rrd") == originals["t"]
    assert (base / "s.1.rrd").is_file() and (base / "t.1.rrd").is_file()
    assert not (base / "v.rrd").exists() and _bytes(base / "v.1.rrd") == originals["v"]
    # `roboloop gc` (no server) follows the same rule; `verify` names the damaged files
    assert ws.gc(usable_versions(ws)) == (0, 0)
    assert (base / "s.rrd").is_file() and (base / "t.rrd").is_file()
    rep = verify(ws, "d")
    assert sorted(p.name for p, _ in rep.problems) == ["s.1.rrd", "t.1.rrd"]
    # a second start registers the same good versions again
    with Catalog(ws, url="") as cat:
        assert sorted(p.name for p in cat.report.registered) == ["s.rrd", "t.rrd", "u.rrd", "v.1.rrd"]
    # a good newer version written later supersedes both the old and the damaged one
    shutil.copyfile(base / "s.rrd", base / "s.2.rrd")
    with Catalog(ws, url="") as cat:
        assert "s.2.rrd" in {p.name for p in cat.report.registered}
    assert sorted(p.name for p in ws.segment_versions("d", schema.BASE_LAYER, "s")) == ["s.2.rrd"]


def test_gc_cli_keeps_the_older_version_of_a_damaged_one(ws, synthetic_episode):
    synthetic_episode(ws, "d", "s", duration_s=0.2)
    base = ws.layer_dir("d", schema.BASE_LAYER)
    (base / "s.1.rrd").write_bytes(_bytes(base / "s.rrd")[:1000])
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "gc"])
    assert res.exit_code == 0, res.output
    assert "removed 0 superseded version file(s)" in " ".join(res.output.split())
    assert (base / "s.rrd").is_file() and (base / "s.1.rrd").is_file()


# --- 3. a flipped bit that makes the decoder panic ------------------------------------------

def _flips(data: bytes, seed: int):
    """Deterministic single-bit flips of `data`: (position, bit, flipped bytes)."""
    rng = random.Random(seed)
    while True:
        pos, bit = rng.randrange(16, len(data) - 64), rng.randrange(8)
        b = bytearray(data)
        b[pos] ^= 1 << bit
        yield pos, bit, bytes(b)


def _find_flip(original: Path, scratch: Path, want: str, tries: int = 3000) -> bytes:
    """The first of the deterministic flips of `original` whose decoding (in a child) is `want`: 'crash' or 'decodes'."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    child = DecodeChild()
    try:
        for _, (_pos, _bit, flipped) in zip(range(tries), _flips(original.read_bytes(), 19)):
            scratch.write_bytes(flipped)
            if quick_check_rrd(scratch):
                continue
            problem, alive = child.decode(scratch, False, 60)
            if not alive:
                child.close()
                child = DecodeChild()
                if want == "crash":
                    return flipped
            elif problem is None and want == "decodes" and read_recording_id(scratch) == original.stem:
                return flipped
    finally:
        child.close()
    raise AssertionError(f"no flip of {original} in {tries} tries is {want!r}")


@pytest.fixture
def recorded(ws, synthetic_episode):
    """Three recorded episodes (a, b, c) in dataset 'd', written by the real recorder (checksums recorded)."""
    for i, seg in enumerate(("a", "b", "c")):
        synthetic_episode(ws, "d", seg, duration_s=2.0, seed=i)
    return ws.layer_dir("d", schema.BASE_LAYER)


def test_a_flip_that_panics_the_decoder_is_a_named_problem_in_verify_and_import(tmp_path, ws, recorded):
    panicking = _find_flip(recorded / "b.rrd", tmp_path / "scan" / "b.rrd", "crash")
    # it really aborts a process that decodes it (rc 134 in a shell): SIGABRT
    bad = tmp_path / "incoming" / "b.rrd"
    bad.parent.mkdir()
    bad.write_bytes(panicking)
    probe = subprocess.run([sys.executable, "-c", "import sys; from roboloop.catalog.rrd import decode_problem; "
                            "from pathlib import Path; decode_problem(Path(sys.argv[1]))", str(bad)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert probe.returncode == -signal.SIGABRT, probe.stderr[-2000:]
    # verify: the file is named, the others are still checked, the process survives
    (recorded / "b.rrd").write_bytes(panicking)
    rep = verify(ws, "d")
    assert rep.checked == 3  # a, b (the panicking one), c: checked after it
    problems = dict(rep.problems)
    assert list(problems) == [recorded / "b.rrd"]
    assert "decoder crashed on this file (signal SIGABRT" in problems[recorded / "b.rrd"]
    assert "checksum mismatch" in problems[recorded / "b.rrd"]
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "verify"])
    assert res.exit_code == 1 and "b.rrd" in res.output and "decoder crashed" in " ".join(res.output.split())
    # import: refused, the file named, nothing imported
    other = Workspace(tmp_path / "other")
    good = tmp_path / "incoming" / "a.rrd"
    shutil.copyfile(recorded / "a.rrd", good)
    with Catalog(other, url="") as cat:
        with pytest.raises(CatalogError) as exc:
            cat.import_files("x", [good, bad])
        assert f"{bad}: unreadable RRD: the decoder crashed" in str(exc.value) and str(good) not in str(exc.value)
        assert "x" not in cat.dataset_names()
    assert not (other.datasets_dir / "x").exists()
    res = CliRunner().invoke(app, ["--workspace", str(other.root), "--catalog", "", "import", str(bad), "--dataset", "x"])
    out = "".join(res.output.split())
    assert res.exit_code == 1 and "".join(str(bad).split()) in out and "decodercrashed" in out


# --- 4. checksums: a flip that still decodes ---------------------------------------------------

def test_a_flip_that_still_decodes_is_caught_by_the_checksum(tmp_path, ws, recorded):
    rec = checksum_record_path(recorded / "b.rrd")
    assert rec is not None and rec.is_file() and ws.root in rec.parents and recorded not in rec.parents  # the manifest, not the data folder
    digest, size = hashlib.sha256(_bytes(recorded / "b.rrd")).hexdigest(), len(_bytes(recorded / "b.rrd"))
    assert rec.read_text().split() == [digest, str(size)]  # recorded at write time, independently recomputed here
    assert verify(ws, "d").ok and not verify(ws, "d").no_checksum
    silent = _find_flip(recorded / "b.rrd", tmp_path / "scan" / "b.rrd", "decodes")
    (recorded / "b.rrd").write_bytes(silent)
    rep = verify(ws, "d")
    assert [p.name for p, _ in rep.problems] == ["b.rrd"]
    assert "checksum mismatch: the file changed after it was written" in rep.problems[0][1]
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "verify", "-d", "d"])
    assert res.exit_code == 1 and "checksum mismatch" in " ".join(res.output.split())
    # a file written before checksums existed (no record) is noted, not a failure
    (recorded / "b.rrd").unlink()  # the damaged file and its record go
    rec.unlink()
    legacy = ws.layer_dir("e", schema.BASE_LAYER) / "a.rrd"
    legacy.parent.mkdir(parents=True)
    shutil.copyfile(recorded / "a.rrd", legacy)  # no record: like a workspace from before this change
    rep = verify(ws)
    assert rep.ok and rep.no_checksum == [legacy]
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "verify"])
    assert res.exit_code == 0 and "no checksum recorded" in " ".join(res.output.split())


def test_import_records_the_checksum_and_refuses_a_file_that_fails_its_own(tmp_path, ws, recorded):
    other = Workspace(tmp_path / "other")
    with Catalog(other, url="") as cat:
        cat.import_files("x", [recorded / "a.rrd"])  # a file of another workspace: its record matches
        dest = other.segment_path("x", schema.BASE_LAYER, "a")
        assert check_checksum(dest) == ("ok", "")
        assert checksum_record_path(dest).read_text().split()[0] == hashlib.sha256(_bytes(recorded / "a.rrd")).hexdigest()
        # a source whose bytes no longer match the record its workspace wrote is refused, named
        silent = _find_flip(recorded / "b.rrd", tmp_path / "scan" / "b.rrd", "decodes")
        (recorded / "b.rrd").write_bytes(silent)
        with pytest.raises(CatalogError, match="checksum mismatch") as exc:
            cat.import_files("x", [recorded / "b.rrd"])
        assert str(recorded / "b.rrd") in str(exc.value)
        assert not other.segment_path("x", schema.BASE_LAYER, "b").exists()
        assert checksum_record_path(other.segment_path("x", schema.BASE_LAYER, "b")) is not None
        assert not checksum_record_path(other.segment_path("x", schema.BASE_LAYER, "b")).exists()
    # damage after the import is caught by verify
    dest.write_bytes(silent)
    assert "checksum mismatch" in dict(verify(other).problems)[dest]


def test_racing_writers_and_gc_keep_the_manifest_right(ws, synthetic_episode):
    """Two writers racing for one new version name both record; the winner's file matches. GC drops the records of what it deletes."""
    target = ws.segment_path("d", schema.QUALITY_LAYER, "x")
    with pytest.raises(FileExistsError):
        with atomic_path(target, exclusive=True) as loser:
            loser.write_bytes(b"RRF2 loser")
            with atomic_path(target, exclusive=True) as winner:
                winner.write_bytes(b"RRF2 winner")
    assert target.read_bytes() == b"RRF2 winner" and check_checksum(target) == ("ok", "")
    assert len(checksum_record_path(target).read_text().splitlines()) == 2  # both appended; only the winner's matches
    target.write_bytes(b"RRF2 other")  # changed in place after it was written
    assert check_checksum(target)[0] == "mismatch"
    # gc: a superseded version goes with its record; the registered one keeps its own
    synthetic_episode(ws, "d", "s", duration_s=0.2)
    base = ws.layer_dir("d", schema.BASE_LAYER)
    with atomic_path(base / "s.1.rrd") as tmp:
        shutil.copyfile(base / "s.rrd", tmp)
    old_rec = checksum_record_path(base / "s.rrd")
    assert old_rec.is_file()
    target.unlink()
    with Catalog(ws, url=""):
        pass
    assert not (base / "s.rrd").exists() and not old_rec.exists()
    assert check_checksum(base / "s.1.rrd") == ("ok", "")


def test_a_label_killed_after_its_first_layer_file_is_counted_as_the_catalog_counts_it(ws, synthetic_episode):
    """Session 9 (H): `label a b` killed after a's outcome version was renamed into place left a's label in effect
    (restore registers it; `sql` showed it) while the rollout index, which `success` reads, still held the
    simulator's failure: two answers to one question. The index now re-reads such a segment from the catalog."""
    from roboloop.catalog import index
    from roboloop.faults import ENV_FAULT

    ds = "x_evals"
    for i, seg in enumerate(("a", "b")):
        props = {"episode": {"seed": 10 + i, "eval_id": "e"}, "outcome": {"success": False}}
        synthetic_episode(ws, ds, seg, duration_s=0.2, properties=props)
        index.write_row(ws, ds, seg, props)
    env = {k: v for k, v in os.environ.items() if k != "ROBOLOOP_CATALOG"}
    env.update(PYTHONPATH=SRC, MUJOCO_GL="egl", ROBOLOOP_WORKSPACE=str(ws.root), **{ENV_FAULT: "file.renamed:1"})
    killed = subprocess.run([sys.executable, "-m", "roboloop.cli", "label", "a", "b", "--dataset", ds, "--success"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in ws.layer_dir(ds, schema.OUTCOME_LAYER).glob("*.rrd")] == ["a.rrd"]
    with pytest.raises(index.StaleIndexError, match="1 newer outcome"):
        index.load_table(ws, ds)  # without a catalog it cannot answer, and says so instead of answering stale
    with Catalog(ws, url="") as cat:
        truth = {r["segment_id"]: r["outcome.success"] for r in cat.segment_table(ds).to_pylist()}
        assert truth == {"a": True, "b": False}  # the killed command's first label is in effect
        got = {r["segment_id"]: r["outcome.success"] for r in index.load(ws, ds, cat)}
    assert got == truth
    assert {r["segment_id"]: r["outcome.success"] for r in index.load(ws, ds)} == truth  # repaired: no catalog needed
