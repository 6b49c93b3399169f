"""The policy protocol: what `roboloop train --policy NAME` needs of a policy class, and where NAME comes from.

A policy class provides (the built-in `mlp` and `vision` and a user's own alike):

- `Config`: its own model config, a frozen `roboloop.config.Config` dataclass (a docstring per
  field); `TrainConfig.model` holds one, and a config file's `[model]` table fills it.
- `default_state`: the entity paths of its state inputs when `TrainConfig.state` is None.
- `features(cfg) -> list[FeatureSpec]` (a classmethod): its inputs and the `action` target,
  built with `roboloop.train.features` (so training and deployment read the same fields).
- `__init__(config, specs, chunk)`: a fresh model for these (width-resolved) features.
- `normalizer`: a `Normalizer` over its state and action features (the stock loop fills it
  from one streaming pass; it is saved as plain arrays, `normalizer.npz`).
- `loss(batch, generator=None) -> (loss tensor, metrics)`: the training loss of an encoded
  batch (inputs + `action` + `action_mask`); `metrics["n"]` = the number of valid targets.
- `act(inputs) -> [B, chunk, action width]`: the action chunk in action units.
- `network(x)`, `normalized_inputs(inputs)`, `training_inputs(inputs, generator)`: what the
  run recording's sample views show.
- `state_dict()` / `load_state_dict()` / `parameters()`: a `torch.nn.Module`. A run saves the
  state dict (tensors only) and the config as a dict: no pickled classes.

`roboloop.train.BCPolicy` implements all of it (behaviour cloning of action chunks, L1
loss, joint noise); a new architecture subclasses it and overrides `network` (normalized
inputs -> normalized chunk), `Config` and, to read other fields, `features`.

Names: `mlp` and `vision` (`BUILTIN_POLICIES`), a name registered by an installed package
under the entry point group `roboloop.policies`, or an import path `package.module:Class`.
A run stores the name it was trained with, so deployment imports the same class.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import Any, ClassVar, Protocol, runtime_checkable

from roboloop import plugins
from roboloop.config import Config
from roboloop.errors import ConfigError
from roboloop.train.features import STATE, FeatureSpec, task_spec

ENTRY_POINT_GROUP = "roboloop.policies"
"""Entry point group under which an installed package registers policy classes by name."""

BUILTIN_POLICIES = {
    "mlp": "roboloop.train.policies:MLPPolicy",
    "vision": "roboloop.train.policies:VisionPolicy",
}
"""The built-in policy names and the classes they stand for (imported on first use)."""

REQUIRED = ("Config", "default_state", "features", "loss", "act", "network", "normalized_inputs", "training_inputs",
            "state_dict", "load_state_dict", "parameters")
"""Attributes `policy_class` checks a resolved class has."""


@runtime_checkable
class Policy(Protocol):
    """A policy the stock training loop trains and `load_policy` deploys (see the module docstring)."""

    Config: ClassVar[type]
    default_state: ClassVar[tuple[str, ...]]

    @classmethod
    def features(cls, cfg) -> list[FeatureSpec]: ...

    def loss(self, batch: Any, generator: Any = None) -> tuple[Any, dict[str, float]]: ...

    def act(self, inputs: Any) -> Any: ...


class UnknownPolicyError(ConfigError):
    """A policy name that is not built in, not registered, or whose import fails."""


def policy_names() -> list[str]:
    """Built-in names, then names registered under `ENTRY_POINT_GROUP`."""
    registered = sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return list(BUILTIN_POLICIES) + [n for n in registered if n not in BUILTIN_POLICIES]


def policy_class(name: str) -> type:
    """The class a policy name stands for: built-in, entry point, or `package.module:Class`."""
    if not isinstance(name, str) or not name:
        raise UnknownPolicyError(f"policy must be a name or an import path, got {name!r}")
    target = BUILTIN_POLICIES.get(name)
    if target is None and ":" not in name:
        eps = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not eps:
            raise UnknownPolicyError(f"unknown policy {name!r}; choose one of {', '.join(policy_names())}, "
                                     "or give an import path package.module:Class")
        target = eps[0].value
    cls = _import(name, target or name)
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if missing:
        where = f" ({target})" if target else ""
        raise UnknownPolicyError(f"policy {name!r}{where} lacks {', '.join(missing)}; "
                                 "subclass roboloop.train.BCPolicy (see the README's 'Writing a policy')")
    model_config = cls.Config
    if not (isinstance(model_config, type) and issubclass(model_config, Config) and dataclasses.is_dataclass(model_config)):
        raise UnknownPolicyError(f"policy {name!r}: its Config ({getattr(model_config, '__name__', model_config)!r}) must be a "
                                 "@dataclass(frozen=True) subclass of roboloop.config.Config, a docstring per field "
                                 "(see the README's 'Writing a policy')")
    return cls


def _import(name: str, target: str) -> type:
    try:
        obj = plugins.import_object(target)
    except plugins.ImportPathError:
        raise UnknownPolicyError(f"policy {name!r}: an import path is package.module:Class, got {target!r}") from None
    except plugins.PluginNotFoundError as exc:
        raise UnknownPolicyError(f"policy {name!r}: cannot import module {exc.module_name!r} ({exc.__cause__}); install it or put its "
                                 "folder on PYTHONPATH (the process that deploys the run needs it too)") from None
    except plugins.PluginImportFailedError as exc:  # found, but its own code (or a module it imports) failed
        cause = exc.__cause__
        raise UnknownPolicyError(f"policy {name!r}: importing module {exc.module_name!r} failed: "
                                 f"{type(cause).__name__}: {cause}") from None
    except plugins.PluginAttributeError as exc:
        raise UnknownPolicyError(f"policy {name!r}: module {exc.module_name!r} has no {exc.attr!r}") from None
    if not isinstance(obj, type):
        raise UnknownPolicyError(f"policy {name!r}: {target} is not a class")
    return obj


def feature_specs(cfg) -> list[FeatureSpec]:
    """The features of `cfg.policy` for `cfg` (inputs first, the `action` target last; widths possibly `INFERRED`).

    A multi-task run (`cfg.tasks`): its state inputs are `optional` (zeros where a task lacks them)
    and a one-hot `task` input comes before the target."""
    specs = policy_class(cfg.policy).features(cfg)
    if not getattr(cfg, "tasks", None):
        return specs
    specs = [dataclasses.replace(s, optional=True) if s.kind == STATE else s for s in specs]
    return [*specs[:-1], task_spec(tuple(cfg.tasks)), specs[-1]]


__all__ = ["BUILTIN_POLICIES", "ENTRY_POINT_GROUP", "Policy", "UnknownPolicyError", "feature_specs", "policy_class", "policy_names"]
