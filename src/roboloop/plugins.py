"""Objects named by import path, ``package.module:attr``: the user's signals (``refine``), policies
(``train``) and tasks (``envs``) all load through :func:`import_object`.

It tells apart what a user fixes differently, each as its own :class:`PluginError`:

* :class:`ImportPathError`: the text is not ``package.module:attr``;
* :class:`PluginNotFoundError`: the module (or a package it is in) is not installed or not on
  ``sys.path`` (install it, or add its folder to ``PYTHONPATH``);
* :class:`PluginImportFailedError`: the module was found but running it raised (its own code, or a
  module *it* imports, is broken or missing): the cause is the original exception;
* :class:`PluginAttributeError`: the module imported but has no such attribute.

Callers catch these and raise their own error type with their own wording; each error carries
``spec``, ``module_name`` and ``attr``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from roboloop.errors import RoboloopError

__all__ = [
    "ImportPathError", "PluginAttributeError", "PluginError", "PluginImportFailedError", "PluginNotFoundError",
    "import_module", "import_object", "split_import_path",
]


class PluginError(RoboloopError):
    """An import path (``package.module:attr``) that does not lead to an object."""

    def __init__(self, message: str, *, spec: str, module_name: str = "", attr: str = "") -> None:
        super().__init__(message)
        self.spec, self.module_name, self.attr = spec, module_name, attr


class ImportPathError(PluginError, ValueError):
    """Text that is not an import path ``package.module:attr``."""


class PluginNotFoundError(PluginError):
    """The module of an import path (or a package on its dotted path) is not importable from here."""


class PluginImportFailedError(PluginError):
    """The module of an import path was found, but importing it raised (``__cause__`` is the error)."""


class PluginAttributeError(PluginError):
    """The module imported but has no such attribute; ``module`` is the imported module."""

    module: ModuleType


def split_import_path(spec: str) -> tuple[str, str]:
    """``"pkg.mod:a.b"`` -> ``("pkg.mod", "a.b")``; ImportPathError unless both parts are there."""
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ImportPathError(f"import path {spec!r} must look like 'package.module:attr'", spec=str(spec),
                              module_name=module_name, attr=attr)
    return module_name, attr


def _missing_is_the_module(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether the module not found is `module_name` itself or a package it lives in (not something it imports)."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def import_module(module_name: str, *, spec: str | None = None) -> ModuleType:
    """Import `module_name`; PluginNotFoundError or PluginImportFailedError (see the module docstring)."""
    spec = spec if spec is not None else module_name
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _missing_is_the_module(exc, module_name):
            raise PluginNotFoundError(f"cannot import module {module_name!r} ({exc})", spec=spec,
                                      module_name=module_name) from exc
        raise PluginImportFailedError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}",
                                      spec=spec, module_name=module_name) from exc
    except Exception as exc:  # the module's own code raised: the caller names it and the error
        raise PluginImportFailedError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}",
                                      spec=spec, module_name=module_name) from exc


def import_object(spec: str) -> Any:
    """The object at import path ``package.module:attr`` (``attr`` may be dotted: ``Class.method``).

    Raises a :class:`PluginError` subclass saying which part is wrong (see the module docstring).
    """
    module_name, attr = split_import_path(spec)
    module = import_module(module_name, spec=spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            err = PluginAttributeError(f"module {module_name!r} has no attribute {attr!r}", spec=spec,
                                       module_name=module_name, attr=attr)
            err.module = module
            raise err
        obj = getattr(obj, part)
    return obj
