"""Policy names: built-ins, the `roboloop.policies` entry point group and import paths resolve to classes with the
protocol; anything else is a config error naming the problem. The example policy meets the protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from roboloop import schema
from roboloop.train import ConfigError, MLPConfig, Policy, TrainConfig, policy_class
from roboloop.train.policies import MLPPolicy, VisionPolicy
from roboloop.train.protocol import feature_specs, policy_names

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_builtins_resolve_and_meet_the_protocol():
    assert policy_class("mlp") is MLPPolicy and policy_class("vision") is VisionPolicy
    assert policy_class("roboloop.train.policies:MLPPolicy") is MLPPolicy  # the import path of a built-in works too
    assert isinstance(MLPPolicy(MLPConfig(), feature_specs(TrainConfig(dataset="aloha", selection="v1")), 10), Policy)


def test_an_entry_point_names_a_policy(tmp_path, monkeypatch, examples_path):
    dist = tmp_path / "team_policies-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: team-policies\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[roboloop.policies]\nconv = my_policy:ConvChunkPolicy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "conv" in policy_names()
    cfg = TrainConfig(dataset="aloha", selection="v1", policy="conv", model={"channels": 4})
    assert type(cfg.model).__name__ == "ConvChunkConfig" and cfg.model.channels == 4
    assert TrainConfig.from_json(cfg.to_json()) == cfg


class PlainConfig:
    """A model config that is not a roboloop Config (the README's WideConfig without its base class)."""

    hidden: int = 8


class PlainConfigPolicy(MLPPolicy):
    Config = PlainConfig


@pytest.mark.parametrize(("policy", "message"), [
    ("transformer", "unknown policy 'transformer'; choose one of mlp, vision"),
    (f"{__name__}:PlainConfigPolicy", rf"policy '{__name__}:PlainConfigPolicy': its Config \('PlainConfig'\) must be a "
                                      r"@dataclass\(frozen=True\) subclass of roboloop.config.Config"),
    ("no_such_module_xyz:Policy", "cannot import module 'no_such_module_xyz'.*PYTHONPATH"),
    ("my_policy:Missing", "module 'my_policy' has no 'Missing'"),
    ("my_policy:ConvChunkConfig", "policy 'my_policy:ConvChunkConfig' lacks Config, default_state, features, loss, act"),
    ("my_policy", "unknown policy 'my_policy'"),
])
def test_bad_policy_names_are_config_errors(policy, message, examples_path):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(dataset="aloha", selection="v1", policy=policy)


def test_a_policy_module_whose_own_import_fails_is_not_called_missing(tmp_path, monkeypatch):
    """Found but broken (its code raises, or a module it imports is missing): the error says so, without the
    install / PYTHONPATH advice meant for a module that is not found."""
    (tmp_path / "rl_broken_policy.py").write_text("import rl_absent_dependency_xyz\n")
    (tmp_path / "rl_raising_policy.py").write_text("raise RuntimeError('bad weights path')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cases = {
        "rl_broken_policy:P": "importing module 'rl_broken_policy' failed: ModuleNotFoundError: No module named 'rl_absent_dependency_xyz'",
        "rl_raising_policy:P": "importing module 'rl_raising_policy' failed: RuntimeError: bad weights path",
    }
    for policy, message in cases.items():
        with pytest.raises(ConfigError) as err:
            TrainConfig(dataset="aloha", selection="v1", policy=policy)
        assert message in str(err.value) and "PYTHONPATH" not in str(err.value)


def test_the_example_policy_trains_a_step_and_acts_on_any_action_width(examples_path):
    cfg = TrainConfig(dataset="arm", selection="v1", policy="my_policy:ConvChunkPolicy", state=("/arm/q",), action="/arm/u",
                      chunk=6, model={"channels": 8, "hidden": 16})
    specs = feature_specs(cfg)
    assert [s.shape for s in specs] == [(-1,), (1,), (6, -1)]  # widths come from the data
    from roboloop.train.features import with_dims

    specs = with_dims(specs, {"arm_q": 5, "action": 3})
    torch.manual_seed(0)
    policy = policy_class(cfg.policy)(cfg.model, specs, cfg.chunk)
    policy.normalizer.load_stats({n: {"mean": torch.zeros(d).numpy(), "std": torch.ones(d).numpy()} for n, d in (("arm_q", 5), ("action", 3))})
    batch = {"arm_q": torch.randn(8, 5), "phase": torch.rand(8, 1), "action": torch.randn(8, 6, 3), "action_mask": torch.ones(8, 6, dtype=torch.bool)}
    batch["action_mask"][:, 4:] = False
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    first, m = policy.loss(batch)
    assert m["n"] == 8 * 4
    for _ in range(20):
        opt.zero_grad()
        loss, _ = policy.loss(batch)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < float(first.detach())
    assert policy.act({k: v for k, v in batch.items() if not k.startswith("action")}).shape == (8, 6, 3)
    assert schema.JOINT_POSITIONS in policy.default_state  # inherited from BCPolicy: ALOHA's state unless --state is given
