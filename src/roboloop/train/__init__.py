"""Train from the query: behaviour cloning on the stream; every run a recording and a segment of `<dataset>_runs`.

    from roboloop.train import TrainConfig, train, load_policy, PolicyFactory, run_info

    result = train(catalog, TrainConfig(dataset="aloha", selection="v1"))      # -> TrainResult (.run_id)
    policy = load_policy(catalog, result.run_id)                                # collect-compatible policy
    collect(catalog, "scratch", jobs=..., kind="rollout", policy_factory=PolicyFactory(ws.root, result.run_id))

Modules: `config` (TrainConfig, MLPConfig, VisionConfig), `features` (stream fields <->
policy inputs, shared by training and deployment), `protocol` (what a policy provides;
names, entry points and import paths -> classes), `policies` (`BCPolicy`, mlp, vision, the
normalizer), `entry` (`train`: one process or several), `loop` (`fit`: the training loop
of one process), `distributed` (launching ranks, `torchrun`), `ahead` (epoch prefetch),
`runlog` (the run recording), `deploy` (`load_policy`).
"""

from roboloop.train.config import (
    ConfigError,
    MLPConfig,
    TrainConfig,
    TrainError,
    VisionConfig,
)
from roboloop.train.deploy import (
    DeployedPolicy,
    PolicyFactory,
    list_runs,
    load_policy,
    run_info,
    run_status,
)
from roboloop.train.entry import train
from roboloop.train.features import FeatureSpec
from roboloop.train.loop import TrainProgress, TrainResult, load_config, new_run_id
from roboloop.train.policies import BCPolicy
from roboloop.train.protocol import Policy, policy_class

__all__ = [
    "BCPolicy",
    "ConfigError",
    "DeployedPolicy",
    "FeatureSpec",
    "MLPConfig",
    "Policy",
    "PolicyFactory",
    "TrainConfig",
    "TrainError",
    "TrainProgress",
    "TrainResult",
    "VisionConfig",
    "list_runs",
    "load_config",
    "load_policy",
    "new_run_id",
    "policy_class",
    "run_info",
    "run_status",
    "train",
]
