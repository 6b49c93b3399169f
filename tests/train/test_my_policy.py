"""A policy by import path (examples/my_policy.py) through the CLI: trained with the stock loop, evaluated in the
simulator by `roboloop eval` (fixed grid and until decided) and compared, its import path recorded in the run; a
policy module that is gone at deploy is a clear error, not a worker traceback."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roboloop.catalog.client import Catalog
from roboloop.cli import app
from roboloop.train import list_runs, load_policy, run_info
from roboloop.workspace import Workspace
from tests.train.test_train import STEPS, K, make_dataset

pytestmark = pytest.mark.sim

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_policy.py"


def _invoke(ws, *args: str):
    return CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})


def _run(ws, *args: str) -> str:
    res = _invoke(ws, *args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


def test_policy_by_import_path_trains_and_evaluates_through_the_cli(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(EXAMPLE, pkg / "team_policy.py")  # a module of the user's, on their path (evaluation workers inherit it)
    monkeypatch.syspath_prepend(str(pkg))
    ws = tmp_path / "ws"
    with Catalog(Workspace(ws), url="") as cat:
        make_dataset(cat)  # the small synthetic ALOHA-shaped dataset `syn`, selection `sel`
    config = tmp_path / "train.toml"
    config.write_text(f'dataset = "syn"\nselection = "sel"\npolicy = "team_policy:ConvChunkPolicy"\nchunk = {K}\n'
                      f'episode_steps = {STEPS}\nbatch_size = 64\nsamples = 1\n\n[model]\nhidden = 32\nchannels = 8\nconv_layers = 1\n')
    out = _run(ws, "train", "--config", str(config), "--epochs", "3")
    assert "training team_policy:ConvChunkPolicy on selection sel of syn" in out
    (run,) = list_runs(ws)
    info = run_info(ws, run["run_id"])
    assert info["status"] == "finished" and info["policy"] == "team_policy:ConvChunkPolicy"
    assert info["policy_class"] == "team_policy:ConvChunkPolicy" and info["config"]["model"]["channels"] == 8
    policy = load_policy(ws, run["run_id"])
    assert type(policy.model).__name__ == "ConvChunkPolicy" and policy.cfg.model.conv_layers == 1

    _run(ws, "eval", "--run", run["run_id"], "-d", "syn", "--grid", "region=near,far", "-n", "1", "--steps", "30",
         "--cameras", "", "--name", "mine")
    (ev,) = [json.loads(line) for line in _run(ws, "evals", "--format", "json").splitlines()]
    assert ev["eval_id"] == "mine" and ev["status"] == "finished" and ev["success"].endswith("/2")
    rows = [json.loads(line) for line in _run(ws, "success", "-d", "syn_evals", "--by", "episode.policy", "--format", "json").splitlines()]
    assert [(r["episode.policy"], r["n"]) for r in rows] == [(run["run_id"], 2)]
    # evaluate-until-decided against that evaluation, then the paired comparison: the same deployment path
    _run(ws, "eval", "--run", run["run_id"], "--against", "mine", "--until-decided", "--round", "1", "--max-per-cell", "1",
         "--cameras", "", "--name", "seq")
    cmp = {r["group"]: r for r in map(json.loads, _run(ws, "compare", "mine", "seq", "--format", "json").splitlines())}
    assert cmp["overall"]["n_pairs"] == 2

    # the module is gone (uninstalled, another machine): eval says which import failed and what to do
    (pkg / "team_policy.py").unlink()
    monkeypatch.delitem(sys.modules, "team_policy")
    res = _invoke(ws, "eval", "--run", run["run_id"], "-d", "syn", "--grid", "region=near", "-n", "1", "--steps", "30",
                  "--cameras", "", "--name", "gone")
    assert res.exit_code == 1 and "cannot import module 'team_policy'" in res.output and "PYTHONPATH" in res.output
    assert "Traceback" not in res.output
