"""curate: selections as queries, stable split, safe predicates, persistence across restarts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.predicate import EmptySelectionError, PredicateError, UnknownColumnError
from roboloop.refine import layers as refine

DS = "demo"
STREAMS = {schema.JOINT_POSITIONS: (50.0, 14)}


def add_episodes(catalog, ws, synthetic_episode, ids, *, region=lambda i: "near", lighting=lambda i: 1.0):
    paths = []
    for i, seg in ids:
        _, p = synthetic_episode(
            ws, DS, seg, duration_s=0.2, seed=i, scalar_streams=STREAMS,
            properties={"scene": {"region": region(i), "lighting": lighting(i)}, "episode": {"seed": i}},
        )
        paths.append(p)
    catalog.register_files(DS, paths)


@pytest.fixture
def populated(catalog, ws, synthetic_episode):
    add_episodes(catalog, ws, synthetic_episode, [(i, f"ep{i:03d}") for i in range(40)],
                 region=lambda i: "near" if i % 2 else "far", lighting=lambda i: 0.3 if i % 4 == 0 else 1.0)
    refine.refine(catalog, DS)
    return catalog


def test_select_split_and_digest(populated):
    sel = curate.select(populated, DS, where="scene.region = 'near' and episode.seed >= 10", holdout=0.25)
    expected = [f"ep{i:03d}" for i in range(10, 40) if i % 2]
    assert list(sel.segment_ids) == expected
    assert set(sel.train_ids) | set(sel.holdout_ids) == set(expected)
    assert not set(sel.train_ids) & set(sel.holdout_ids)
    # the split position is a hash of (seed, conditions): seed i, region near, lighting 1.0
    def point(s):
        return curate.group_split_point(int(s[2:]), {"region": "near", "lighting": 1.0})

    assert all(point(s) < 0.25 for s in sel.holdout_ids)
    assert all(point(s) >= 0.25 for s in sel.train_ids)
    assert 0 < len(sel.holdout_ids) < len(expected)
    again = curate.select(populated, DS, where="scene.region = 'near' and episode.seed >= 10", holdout=0.25)
    assert again.digest == sel.digest and again.train_ids == sel.train_ids
    assert sel.dataset == DS

    # signals are columns like any property; order + limit are deterministic
    top = curate.select(populated, DS, where="signals.arm_activity_right > 0", order="signals.arm_activity_right desc", limit=5)
    table = populated.segment_table(DS).to_pylist()
    by_activity = sorted(table, key=lambda r: -r["signals.arm_activity_right"])
    assert list(top.segment_ids) == [r["segment_id"] for r in by_activity[:5]]
    assert curate.select(populated, DS, where="scene.lighting < 0.5").segment_ids == tuple(f"ep{i:03d}" for i in range(0, 40, 4))
    both = curate.select(populated, DS, where="not (scene.region in ('far')) or property:scene:lighting = 0.3")
    assert len(both.segment_ids) == 20 + 10


def test_split_is_stable_when_episodes_are_added(catalog, ws, synthetic_episode):
    add_episodes(catalog, ws, synthetic_episode, [(i, f"a{i}") for i in range(30)])
    first = curate.select(catalog, DS, holdout=0.3)
    add_episodes(catalog, ws, synthetic_episode, [(i, f"b{i}") for i in range(30)])
    second = curate.select(catalog, DS, holdout=0.3)
    assert set(first.train_ids) <= set(second.train_ids)
    assert set(first.holdout_ids) <= set(second.holdout_ids)
    assert len(second.segment_ids) == 60
    # a larger fraction only moves episodes from train into holdout
    bigger = curate.select(catalog, DS, holdout=0.5)
    assert set(second.holdout_ids) <= set(bigger.holdout_ids)


def test_unknown_column_lists_available(populated):
    with pytest.raises(UnknownColumnError) as err:
        curate.select(populated, DS, where="signals.arm_actvity_right > 6")
    msg = str(err.value)
    assert "signals.arm_actvity_right" in msg
    for col in ("signals.arm_activity_right", "scene.region", "scene.lighting", "episode.seed", "segment_id"):
        assert col in msg
    with pytest.raises(UnknownColumnError, match="single quotes"):
        curate.select(populated, DS, where='scene.region = "near"')
    with pytest.raises(UnknownColumnError):
        curate.select(populated, DS, order="nope desc")
    with pytest.raises(PredicateError, match="position"):
        curate.select(populated, DS, where="scene.region = ")
    with pytest.raises(UnknownDatasetError, match="available datasets: demo"):
        curate.select(populated, "other")


def test_empty_selection_is_an_error(populated):
    with pytest.raises(EmptySelectionError, match="no episode"):
        curate.select(populated, DS, where="signals.arm_activity_right > 1e9")
    with pytest.raises(PredicateError, match="holdout"):
        curate.select(populated, DS, holdout=1.0)


def test_injection_in_a_value_is_a_literal(catalog, ws, synthetic_episode):
    evil = "x' OR '1'='1"
    add_episodes(catalog, ws, synthetic_episode, [(0, "plain"), (1, "evil")], region=lambda i: evil if i else "near")
    with pytest.raises(EmptySelectionError):
        curate.select(catalog, DS, where="scene.region = 'nowhere'' OR ''1''=''1'")
    with pytest.raises(EmptySelectionError):
        curate.select(catalog, DS, where="scene.region = 'x'' OR 1=1; --'")
    sel = curate.select(catalog, DS, where="scene.region = 'x'' OR ''1''=''1'")
    assert sel.segment_ids == ("evil",)
    with pytest.raises(PredicateError):
        curate.select(catalog, DS, where="scene.region = 'near'; DROP TABLE demo")
    with pytest.raises(PredicateError):
        curate.select(catalog, DS, where="scene.region = 'near' UNION SELECT 1")


def test_save_load_replace_and_restart(catalog, ws, synthetic_episode):
    add_episodes(catalog, ws, synthetic_episode, [(i, f"ep{i:02d}") for i in range(20)])
    refine.refine(catalog, DS)
    sel = curate.save(catalog, curate.select(catalog, DS, where="signals.duration_s > 0", holdout=0.2), "v1")
    assert sel.name == "v1"
    with pytest.raises(curate.CurateError, match=r"a selection named .v1. exists \(over dataset .demo.; selection names are unique across the workspace\); pass --replace"):
        curate.save(catalog, curate.select(catalog, DS, where="episode.seed < 10"), "v1")
    stricter = curate.save(catalog, curate.select(catalog, DS, where="episode.seed < 10", limit=8), "v1", replace=True)
    curate.save(catalog, curate.select(catalog, DS, where="episode.seed >= 5"), "v2")
    loaded = curate.load(catalog, "v1")
    assert loaded.train_ids == stricter.train_ids and loaded.digest == stricter.digest
    assert loaded.where == "episode.seed < 10" and loaded.limit == 8
    assert [s.name for s in curate.list_selections(catalog)] == ["v2", "v1"]

    catalog.close()
    with Catalog(ws, url="") as again:
        back = curate.load(again, "v1")
        assert back.dataset == DS
        assert back.train_ids == stricter.train_ids and back.holdout_ids == stricter.holdout_ids
        assert back.segment_ids == stricter.segment_ids
        assert back.digest == stricter.digest and back.created_at == stricter.created_at
        assert back.predicate_sql == '("episode.seed" < 10)'
        curate.save(again, curate.select(again, DS), "v3")
        curate.delete(again, "v2")
        assert sorted(s.name for s in curate.list_selections(again)) == ["v1", "v3"]
        with pytest.raises(curate.UnknownSelectionError, match="v1, v3"):
            curate.load(again, "v2")
    with Catalog(ws, url="") as third:
        assert sorted(s.name for s in curate.list_selections(third)) == ["v1", "v3"]


def test_cli_curate_flag_refine(tmp_path, ws, synthetic_episode):
    from roboloop.cli import app

    with Catalog(ws, url="") as cat:
        add_episodes(cat, ws, synthetic_episode, [(i, f"ep{i}") for i in range(6)])
    runner = CliRunner()
    base = ["--workspace", str(ws.root)]

    def run(*args, code=0):
        res = runner.invoke(app, [*base, *args], env={"COLUMNS": "200"})
        assert res.exit_code == code, res.output
        return res.output

    assert "signals for 6 segment(s)" in run("refine", "--dataset", DS)
    assert "already has signals" in run("refine", "--dataset", DS)
    assert "flagged 1" in run("flag", "--dataset", DS, "--segment", "ep0", "--reason", "bad")
    out = run("curate", "--dataset", DS, "--name", "v1", "--where", "signals.arm_activity_right > 0", "--holdout", "0.2")
    assert "v1" in out and "left out" in out
    assert "ep0" not in run("curate", "show", "v1", "--ids")
    assert "v1" in run("curate", "ls")
    assert "--replace" in run("curate", "--dataset", DS, "--name", "v1", code=1)
    assert "available columns" in run("curate", "--dataset", DS, "--name", "v2", "--where", "signals.nope > 1", code=1)
    assert "unflagged 1" in run("unflag", "--dataset", DS, "--segment", "ep0")
    assert "ep0" in run("curate", "--dataset", DS, "--name", "v1", "--replace", "--where", "signals.arm_activity_right > 0")
