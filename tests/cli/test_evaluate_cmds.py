"""The evaluate/analyze commands end to end (real simulator and catalog, short rollouts)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from roboloop.cli import app
from roboloop.cli.evaluate_cmds import register

pytestmark = pytest.mark.sim

register(app)


def _run(ws, *args: str, catalog: str = ""):
    res = CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": catalog, "COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


def test_eval_success_compare_failures_open(tmp_path):
    ws = tmp_path / "ws"
    grid = "region=near,far"
    _run(ws, "eval", "--grid", grid, "-n", "2", "--steps", "90", "--cameras", "", "--name", "short", "-d", "demo")
    _run(ws, "eval", "--policy", "scripted", "--grid", grid, "-n", "2", "--steps", "300", "--cameras", "", "--name", "full", "-d", "demo")
    evals = [json.loads(line) for line in _run(ws, "evals", "--format", "json").splitlines()]
    assert [(e["eval_id"], e["status"], e["success"]) for e in evals] == [("short", "finished", "0/4"), ("full", "finished", "4/4")]

    out = _run(ws, "success", "-d", "demo_evals", "--by", "episode.eval_id,scene.region", "--format", "csv",
               "--plot", str(tmp_path / "p.png"))
    got = list(csv.DictReader(io.StringIO(out)))
    assert [(r["episode.eval_id"], r["scene.region"], r["n"], r["successes"]) for r in got] == [
        ("full", "left", "2", "2"), ("full", "right", "2", "2"), ("short", "left", "2", "0"), ("short", "right", "2", "0")]
    assert (tmp_path / "p.png").stat().st_size > 1000
    out = _run(ws, "success", "-d", "demo_evals", "--eval", "full", "--by", "scene.region", "--where", "scene.region = 'left'",
               "--format", "json")
    assert [json.loads(line)["n"] for line in out.splitlines()] == [2]

    cmp = {r["group"]: r for r in map(json.loads, _run(ws, "compare", "short", "full", "--format", "json").splitlines())}
    assert cmp["overall"]["test"] == "mcnemar" and cmp["overall"]["discordant_b"] == 4
    assert cmp["overall"]["p"] == pytest.approx(0.125) and cmp["region=left"]["verdict"] == "too few episodes"

    fails = [json.loads(line) for line in _run(ws, "failures", "-d", "demo_evals", "--format", "json",
                                                 "--export", str(tmp_path / "exp")).splitlines()]
    assert len(fails) == 4 and {f["episode.eval_id"] for f in fails} == {"short"}
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted(f"{f['segment_id']}.rrd" for f in fails)
    f = fails[0]
    # with only the command's own embedded catalog, a URL would be dead once it exits: it says so and prints what works
    out = _run(ws, "open", f["segment_id"], "--at", str(f["at_s"]), "--print")
    assert "rerun+http" not in out and "stop working when this command exits" in out
    assert f"roboloop open {f['segment_id']} --at {f['at_s']:g}" in out and "roboloop serve" in out
    # with a server that outlives the command, the URL is printed (and stays served after the command returns)
    from roboloop.catalog.client import Catalog
    from roboloop.workspace import Workspace

    with Catalog(Workspace(ws), url="") as served:
        out = _run(ws, "open", f["segment_id"], "--at", str(f["at_s"]), "--print", catalog=served.url)
        assert f"segment_id={f['segment_id']}" in out and "#when=time@" in out and "stop working" not in out
        url = next(line for line in out.split() if line.startswith("rerun+http"))
        assert url.startswith(served.url.rstrip("/") + "/dataset/")
        assert served.segment_table("demo_evals").num_rows == 8  # still serving after the command

    res = CliRunner().invoke(app, ["--workspace", str(ws), "eval", "--grid", "colour=red"], env={"ROBOLOOP_CATALOG": ""})
    assert res.exit_code == 1 and "valid axes" in res.output
    res = CliRunner().invoke(app, ["--workspace", str(ws), "eval", "--resume", "nope"], env={"ROBOLOOP_CATALOG": ""})
    assert res.exit_code == 1 and "no evaluation 'nope'" in res.output
