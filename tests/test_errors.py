"""The error root: every roboloop error derives from RoboloopError, by meaning, not from the catalog."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import roboloop
from roboloop.catalog.errors import CatalogError
from roboloop.errors import ConfigError, RoboloopError, UnknownEvaluationError, UnknownNameError, WorkspaceError

CATALOG_MODULES = ("roboloop.catalog",)
"""Modules about the Rerun catalog itself (DESIGN's `catalog/`): only their errors may be `CatalogError`s."""


def _is_catalog_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in CATALOG_MODULES)


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a roboloop module, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(roboloop.__path__, prefix="roboloop."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # errors only: an interrupt (errors.Terminated, a KeyboardInterrupt for SIGTERM) is control flow, and a
            # warning category (record.RecordWarning) is a message, not an error
            if issubclass(obj, Exception) and not issubclass(obj, Warning) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


@pytest.fixture(scope="module")
def error_classes() -> dict[str, type[BaseException]]:
    return _error_classes()


def test_the_walk_sees_the_stage_errors(error_classes):
    for name in ("roboloop.evaluate.table.EvaluateError", "roboloop.analyze.gaps.GapError", "roboloop.collect.plan.PlanError",
                 "roboloop.train.config.TrainError", "roboloop.stats.sequential.SequentialError", "roboloop.catalog.errors.CatalogError"):
        assert name in error_classes, name


def test_every_error_derives_from_the_root(error_classes):
    outside = [name for name, cls in error_classes.items() if not issubclass(cls, RoboloopError)]
    assert outside == [], f"not RoboloopError subclasses: {outside}"


def test_only_catalog_modules_raise_catalog_errors(error_classes):
    wrong = [name for name, cls in error_classes.items() if issubclass(cls, CatalogError) and not _is_catalog_module(cls.__module__)]
    assert wrong == [], f"errors outside the catalog deriving from CatalogError: {wrong}"


def test_shared_meanings_keep_their_builtin_bases():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(UnknownEvaluationError, UnknownNameError) and issubclass(UnknownEvaluationError, KeyError)
    assert not issubclass(WorkspaceError, CatalogError)
    assert str(UnknownEvaluationError("unknown evaluation 'x'")) == "unknown evaluation 'x'"  # not KeyError's repr()


def test_config_and_workspace_errors_are_the_shared_ones():
    from roboloop import config, workspace

    assert config.ConfigError is ConfigError
    assert workspace.WorkspaceError is WorkspaceError
