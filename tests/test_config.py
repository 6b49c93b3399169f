"""Stage configs (roboloop.config): exact round trips, unknown keys, files, CLI flags over file values, the error root."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from roboloop.collect.run import CollectConfig, RecordingSpec
from roboloop.config import Config, ConfigError, field_docs, load_config, override, resolve
from roboloop.envs.aloha import SceneConditions
from roboloop.errors import RoboloopError, UnknownNameError
from roboloop.stream import StreamConfig


def sample() -> CollectConfig:
    return CollectConfig(
        dataset="demo",
        episodes=3,
        conditions=(SceneConditions.from_names(region="right", lighting="dim"), SceneConditions.from_names(x=(0.01, 0.07), y=(0.4, 0.5))),
        seed=12,
        workers=2,
        spec=RecordingSpec(cameras=("top", "angle"), width=64, height=48, camera_hz=10),
        steps=40,
    )


def test_collect_config_round_trips_exactly_through_dict_json_and_toml(tmp_path):
    cfg = sample()
    assert CollectConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert CollectConfig.from_json(cfg.to_json()) == cfg
    assert CollectConfig.from_toml(cfg.to_toml()) == cfg
    for name in ("c.toml", "c.json"):
        assert load_config(CollectConfig, cfg.save(tmp_path / name)) == cfg
    # None fields are left out of TOML and come back as their (None) default
    plain = CollectConfig(dataset="d", episodes=1)
    assert "steps" not in plain.to_toml() and CollectConfig.from_toml(plain.to_toml()) == plain


def test_single_conditions_and_lists_normalize():
    c = SceneConditions.from_names(lighting="bright")
    assert CollectConfig(conditions=c).conditions == (c,)
    assert CollectConfig(conditions=[c, c]).conditions == (c, c)
    assert CollectConfig(conditions=None).conditions == ()
    assert [j.seed for j in CollectConfig(episodes=3, seed=5).jobs()] == [5, 6, 7]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "bad name"}, "invalid dataset name"),
        ({"episodes": -1}, "episodes"),
        ({"workers": 0}, "workers"),
        ({"kind": "run"}, "kind must be"),
        ({"steps": 0}, "steps"),
    ],
)
def test_collect_config_validates_itself(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CollectConfig(), **changes)


def test_unknown_and_missing_keys_name_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'episode'; valid keys: dataset, episodes, conditions"):
        CollectConfig.from_dict({"episode": 3})
    with pytest.raises(ConfigError, match="RecordingSpec: unknown key"):
        CollectConfig.from_dict({"spec": {"camera": "top"}})
    path = tmp_path / "bad.toml"
    path.write_text("episodes = [\n")
    with pytest.raises(ConfigError, match="bad.toml: .*not valid TOML"):
        load_config(CollectConfig, path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(CollectConfig, tmp_path / "missing.toml")

    @dataclasses.dataclass(frozen=True)
    class Needs(Config):
        name: str
        "Required."

    with pytest.raises(ConfigError, match="missing required key"):
        Needs.from_dict({})


def test_flags_override_file_values(tmp_path):
    path = sample().save(tmp_path / "collect.toml")
    cfg = resolve(CollectConfig, path, episodes=9, seed=None, workers=None)
    assert cfg.episodes == 9 and cfg.seed == 12 and cfg.spec.cameras == ("top", "angle")
    assert resolve(CollectConfig, None, dataset="x", episodes=None) == CollectConfig(dataset="x")
    assert override(cfg.spec, width=None, height=96).height == 96


def test_every_config_documents_every_field():
    from roboloop.demo import DemoConfig

    for cls in (CollectConfig, RecordingSpec, StreamConfig, DemoConfig):
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, cls
        assert all(docs.values())


def test_error_root():
    from roboloop.catalog.errors import CatalogError, UnknownDatasetError
    from roboloop.curate import UnknownSelectionError
    from roboloop.predicate import PredicateError
    from roboloop.stream import StreamError, UnknownEntityError

    for cls in (CatalogError, PredicateError, StreamError, ConfigError):
        assert issubclass(cls, RoboloopError)
    for cls in (UnknownDatasetError, UnknownSelectionError, UnknownEntityError):
        assert issubclass(cls, UnknownNameError) and issubclass(cls, KeyError)
    err = UnknownDatasetError("nope", ["a", "b"])
    assert str(err) == "unknown dataset 'nope'; available datasets: a, b"  # not KeyError's repr()


def test_cli_config_file_errors_are_one_line_exit_1(tmp_path):
    from roboloop.cli import app

    bad = tmp_path / "c.toml"
    bad.write_text('dataset = "d"\nepisodez = 3\n')
    res = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "collect", "--config", str(bad)])
    assert res.exit_code == 1
    assert "error:" in res.output and "episodez" in res.output and "valid keys" in res.output
    assert "Traceback" not in res.output


def test_main_prints_user_errors_without_traceback(tmp_path):
    env = {"ROBOLOOP_WORKSPACE": str(tmp_path / "ws"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "roboloop.cli", "curate", "show", "nope"],
        capture_output=True, text=True, env={**env, "PYTHONPATH": ":".join(sys.path)}, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "unknown selection 'nope'" in proc.stderr and "Traceback" not in proc.stderr
