"""`roboloop <stage> --show-config`: the resolved config (file, then options) as TOML, and the one override helper."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from roboloop import rows, schema
from roboloop.analyze.gaps import APPEARANCE_AXES, GapConfig
from roboloop.cli import app
from roboloop.collect.run import CollectConfig, RecordingSpec
from roboloop.config import ConfigError, resolve
from roboloop.demo import DemoConfig
from roboloop.evaluate.run import EvalConfig, parse_grid
from roboloop.interop import ExportConfig
from roboloop.stats.sequential import SequentialConfig
from roboloop.train import MLPConfig, TrainConfig, VisionConfig
from roboloop.workspace import Workspace


def _show(ws, *args: str) -> dict:
    res = CliRunner().invoke(app, ["--workspace", str(ws), "--catalog", "", *args, "--show-config"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return tomllib.loads(res.stdout)


# --- the override helper ---------------------------------------------------------------------------

def test_resolve_nested_and_loaded_base(tmp_path):
    path = CollectConfig(dataset="d", episodes=4, spec=RecordingSpec(cameras=("top",), width=64, height=48)).save(tmp_path / "c.toml")
    cfg = resolve(CollectConfig, path, episodes=None, workers=3, spec={"width": 96, "height": None, "cameras": None})
    assert (cfg.dataset, cfg.episodes, cfg.workers) == ("d", 4, 3)
    assert (cfg.spec.cameras, cfg.spec.width, cfg.spec.height) == (("top",), 96, 48)
    # no file: a nested override starts from the field's default, not from the nested class's
    assert resolve(CollectConfig, None, spec={"width": 96}).spec == CollectConfig().spec.replace(width=96)
    # a loaded config as the base (`train --like RUN`)
    base = TrainConfig(dataset="d", selection="s", epochs=3)
    assert resolve(TrainConfig, base, epochs=None, lr=0.01) == base.replace(lr=0.01)
    assert resolve(TrainConfig, base) is base
    # a mapping for a plain dict field replaces it
    exp = resolve(ExportConfig, None, selection="s", out_dir="o", fps=25, features={"observation.state": "/robot/joint_positions"})
    assert exp.features == {"observation.state": "/robot/joint_positions"}
    with pytest.raises(ConfigError, match="valid keys"):
        resolve(CollectConfig, None, episodez=3)


def test_stage_configs_round_trip_and_reject_unknown_keys():
    for cfg in (EvalConfig(grid=parse_grid("region=near,far"), steps=20), GapConfig(match_labels=APPEARANCE_AXES),
                SequentialConfig(metric=schema.METRIC_STAGE)):
        cls = type(cfg)
        assert cls.from_toml(cfg.to_toml()) == cfg and cls.from_json(cfg.to_json()) == cfg and cls.from_dict(cfg.to_dict()) == cfg
        with pytest.raises(ValueError, match="unknown"):
            cls.from_dict({**cfg.to_dict(), "nope": 1})


# --- collect, train, demo, export ---------------------------------------------------------------------

def test_collect_show_config_file_then_options(tmp_path):
    path = CollectConfig(dataset="d", episodes=4, workers=2).save(tmp_path / "c.toml")
    got = _show(tmp_path / "ws", "collect", "--config", str(path), "-n", "7", "--camera-size", "64x48")
    want = resolve(CollectConfig, path, episodes=7, spec={"width": 64, "height": 48})
    assert CollectConfig.from_dict(got) == want
    assert CollectConfig.from_dict(_show(tmp_path / "ws", "collect")).episodes == 10  # the command's own default


def test_train_show_config(tmp_path):
    got = _show(tmp_path / "ws", "train", "-d", "d", "-s", "sel", "--epochs", "3")
    assert TrainConfig.from_dict(got) == TrainConfig(dataset="d", selection="sel", epochs=3)
    got = _show(tmp_path / "ws", "train", "-d", "d", "-s", "sel", "--cache-mb", "64")
    assert TrainConfig.from_dict(got) == TrainConfig(dataset="d", selection="sel", cache_mb=64.0)
    path = tmp_path / "t.json"
    path.write_text(TrainConfig(dataset="d", selection="sel", lr=0.01).to_json())
    assert TrainConfig.from_dict(_show(tmp_path / "ws", "train", "--config", str(path), "--seed", "4")) == \
        TrainConfig(dataset="d", selection="sel", lr=0.01, seed=4)


def test_train_policy_option_reads_the_files_model_table_as_its_config(tmp_path):
    """`--config FILE --policy P`: the file's [model] is P's model config (it was read as mlp's first, so P's own keys
    were unknown, and mlp's defaults were then unknown to P)."""
    path = tmp_path / "t.toml"
    path.write_text('dataset = "d"\nselection = "sel"\n[model]\naux_cube = 1.0\n')
    got = TrainConfig.from_dict(_show(tmp_path / "ws", "train", "--config", str(path), "--policy", "vision"))
    assert got == TrainConfig(dataset="d", selection="sel", policy="vision", model=VisionConfig(aux_cube=1.0))
    path.write_text('dataset = "d"\nselection = "sel"\n[model]\nhidden = 16\n')
    got = TrainConfig.from_dict(_show(tmp_path / "ws", "train", "--config", str(path), "--policy", "mlp"))
    assert got == TrainConfig(dataset="d", selection="sel", model=MLPConfig(hidden=16))


def test_demo_and_export_show_config(tmp_path):
    assert DemoConfig.from_dict(_show(tmp_path / "ws", "demo", "--steps", "5")) == DemoConfig(steps=5)
    got = _show(tmp_path / "ws", "export-lerobot", str(tmp_path / "out"), "-s", "sel", "--fps", "25")
    assert ExportConfig.from_dict(got) == ExportConfig(selection="sel", out_dir=str(tmp_path / "out"), fps=25)


# --- eval, eval --until-decided, gaps ------------------------------------------------------------------

def _stored_eval(ws: Workspace, eval_id: str, cfg: EvalConfig, **extra) -> None:
    rows.write_row(ws, schema.EVALS_TABLE, eval_id, {"eval_id": eval_id, "config": cfg.to_dict(),
                                                     "evals_dataset": cfg.evals_dataset, **extra})


def test_eval_show_config(tmp_path):
    got = _show(tmp_path / "ws", "eval", "--grid", "region=near,far", "-n", "3", "--cameras", "", "-d", "demo")
    assert EvalConfig.from_dict(got) == EvalConfig(dataset="demo", grid=parse_grid("region=near,far"), episodes_per_cell=3, cameras=())
    ws = Workspace(tmp_path / "ws")
    _stored_eval(ws, "ev1", EvalConfig(dataset="demo", grid=parse_grid("yaw=none,any"), episodes_per_cell=4, steps=50, workers=3))
    got = _show(ws.root, "eval", "--resume", "ev1", "-n", "6")
    assert EvalConfig.from_dict(got) == EvalConfig(dataset="demo", grid=parse_grid("yaw=none,any"), episodes_per_cell=6, steps=50)


def test_eval_until_decided_show_config_has_the_sequential_table(tmp_path):
    ws = Workspace(tmp_path / "ws")
    base = EvalConfig(dataset="demo", grid=parse_grid("yaw=none,any"), episodes_per_cell=4, steps=50, cameras=())
    _stored_eval(ws, "base", base)
    got = _show(ws.root, "eval", "--against", "base", "--until-decided", "--policy", "scripted", "--alpha", "0.1", "--round", "3")
    seq = got.pop("sequential")
    assert SequentialConfig.from_dict(seq) == SequentialConfig(alpha=0.1, round_size=3)
    # the challenger records like its baseline (here: no cameras)
    assert EvalConfig.from_dict(got) == EvalConfig(dataset="demo", grid=base.grid, episodes_per_cell=4, steps=50, cameras=())


def test_gaps_show_config_follows_the_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    for run_id, cameras in (("run-state", []), ("run-cam", ["top"])):
        ws.run_dir(run_id).mkdir(parents=True)
        (ws.run_dir(run_id) / "run.json").write_text(json.dumps({"run_id": run_id, "dataset": "demo", "train_ids": [], "cameras": cameras}))
        _stored_eval(ws, f"ev-{run_id}", EvalConfig(dataset="demo"), run_id=run_id)
    assert GapConfig.from_dict(_show(ws.root, "gaps", "--eval", "ev-run-state")) == GapConfig()
    assert GapConfig.from_dict(_show(ws.root, "gaps", "--eval", "ev-run-cam")) == GapConfig(match_labels=APPEARANCE_AXES)
