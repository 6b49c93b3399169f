"""Train from the query: behaviour cloning on the stream; every run a recording and a segment of `<dataset>_runs`.

    from roboloop.train import TrainConfig, train, load_policy, PolicyFactory, run_info

    result = train(catalog, TrainConfig(dataset="aloha", selection="v1"))      # -> TrainResult (.run_id)
    policy = load_policy(catalog, result.run_id)                                # collect-compatible policy
    collect(catalog, "scratch", jobs=..., kind="rollout", policy_factory=PolicyFactory(ws.root, result.run_id))

Modules: `config` (TrainConfig, MLPConfig, VisionConfig), `features` (stream fields <->
policy inputs, shared by training and deployment), `policies` (mlp, vision, the
normalizer), `loop` (`train`), `runlog` (the run recording), `deploy` (`load_policy`).
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
from roboloop.train.loop import TrainProgress, TrainResult, load_config, train

__all__ = [
    "ConfigError",
    "DeployedPolicy",
    "MLPConfig",
    "PolicyFactory",
    "TrainConfig",
    "TrainError",
    "TrainProgress",
    "TrainResult",
    "VisionConfig",
    "list_runs",
    "load_config",
    "load_policy",
    "run_info",
    "run_status",
    "train",
]
