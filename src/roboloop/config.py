"""Stage configs: one frozen dataclass per stage, saved with every run, re-used by `--like`.

The pattern (follow it for `TrainConfig`, `EvalConfig`, ...)::

    from dataclasses import dataclass
    from roboloop.config import Config, check

    @dataclass(frozen=True)
    class TrainConfig(Config):
        dataset: str
        "Dataset the selection was made from."
        selection: str
        "Saved selection to train on."
        epochs: int = 10
        "Passes over the training episodes."
        lr: float = 1e-3
        "Adam learning rate."
        cameras: tuple[str, ...] = ()
        "Camera streams the policy sees (empty: state only)."

        def __post_init__(self) -> None:
            super().__post_init__()          # normalizes lists -> tuples, nested dicts -> configs
            check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")

Rules:

- **frozen dataclass subclassing** :class:`Config`, every field with a default where a
  sensible one exists, and a **one-line docstring** (a string literal right under the
  field). :func:`field_docs` reads them (for `--help` texts and `roboloop ... --show-config`).
- **validates itself** in ``__post_init__`` (call ``super().__post_init__()`` first), raising
  :class:`ConfigError` through :func:`check` with a message that names the field, the
  value and what is allowed.
- **exact round trip**: ``Cfg.from_dict(cfg.to_dict()) == cfg``, same for
  ``to_json/from_json`` and ``to_toml/from_toml``. Field types allowed: ``str``, ``int``,
  ``float``, ``bool``, ``None`` (``X | None``), ``tuple[...]`` of those, nested configs (or any
  value type with an exact ``to_dict``/``from_dict``, e.g. ``SceneConditions``), and ``dict[str, scalar]``. Tuples serialize as lists; nested configs as tables/objects. TOML
  has no null: ``None`` fields are left out of TOML and come back as their default, so a
  field that may be ``None`` must default to ``None``.
- **unknown keys are rejected** by ``from_dict`` (and so by every loader) with a message
  listing the valid keys; missing required keys are named too.
- files: :func:`load_config` reads ``.toml`` or ``.json`` by extension; ``cfg.save(path)``
  writes either.
- **CLI flags override file values**: a command gives every option a default of ``None``
  (meaning "not given") and calls ``resolve(Cfg, config_file, dataset=dataset, epochs=epochs, ...)``:
  the file (if any) is loaded first, then every flag that is not ``None`` replaces the
  file's value, then the result validates. See :func:`resolve` (and :func:`override` for
  applying flags to an existing config, e.g. a nested one).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import os
import textwrap
import tomllib
import types
import typing
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from roboloop.errors import ConfigError

__all__ = ["Config", "ConfigError", "check", "field_docs", "load_config", "override", "read_mapping", "resolve"]

C = TypeVar("C", bound="Config")


def check(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition` holds (use in `__post_init__`)."""
    if not condition:
        raise ConfigError(message)


class Config:
    """Mixin for frozen stage-config dataclasses: validation hook, exact dict/JSON/TOML round trip."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            converted = _convert(value, hints.get(f.name, Any), f"{type(self).__name__}.{f.name}")
            if converted is not value:
                object.__setattr__(self, f.name, converted)

    # --- dicts ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists, nested configs as dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a dict; unknown keys and missing required keys raise `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a table of settings, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise cls.unknown_keys_error(unknown)
        missing = [
            n for n, f in fields.items()
            if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{cls.__name__}: missing required key(s) {', '.join(map(repr, missing))}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def unknown_keys_error(cls, unknown: list[str]) -> Exception:
        """The error `from_dict` raises for keys that are not fields (a stage may keep its own wording)."""
        valid = ", ".join(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        return ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {valid}")

    # --- JSON / TOML -----------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def to_toml(self) -> str:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for name, value in self.to_dict().items():
            if value is None and defaults.get(name) is not None:
                raise ConfigError(f"{type(self).__name__}.{name} is None but defaults to {defaults[name]!r}: TOML cannot hold it")
        return tomli_w.dumps(_drop_none(self.to_dict()))

    @classmethod
    def from_toml(cls: type[C], text: str) -> C:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid TOML: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write as TOML (`.toml`) or JSON (anything else), atomically: a temporary file next to
        `path`, flushed to disk, renamed onto `path` (a failed write leaves `path` as it was)."""
        path = Path(path)
        text = self.to_toml() if path.suffix == ".toml" else self.to_json() + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "x") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def load_config(cls: type[C], path: str | Path) -> C:
    """Read a config file: TOML for `.toml`, JSON otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        return cls.from_toml(text) if path.suffix == ".toml" else cls.from_json(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's table as read (TOML for `.toml`, JSON otherwise), before any config class sees it: for a
    field that decides how another is read (a train config's `policy` decides its `[model]` class)."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a table of keys, got {type(data).__name__}")
    return data


def override(cfg: C, **flags: Any) -> C:
    """`cfg` with every flag that is not None replacing its field (None = "option not given")."""
    given = {k: v for k, v in flags.items() if v is not None}
    return dataclasses.replace(cfg, **given) if given else cfg  # type: ignore[type-var]


def resolve(cls: type[C], path: str | Path | Config | None = None, /, **flags: Any) -> C:
    """CLI options override file values: load `path` (if given), then apply every flag that is not None.

    `path` may also be a config already loaded (e.g. a run's stored config for `--like RUN`).

    Give every CLI option a default of ``None`` ("not given") and pass them all as `flags`;
    without a file, required fields must come from flags. A flag given as a mapping for a
    field holding a nested config (e.g. ``spec={"cameras": ..., "width": None}``) overrides
    that config's fields the same way. The result validates as usual. This is the one
    helper every command with ``--config`` uses.
    """
    base = path if isinstance(path, Config) else load_config(cls, path) if path is not None else None
    given: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        current = getattr(base, name, None) if base is not None else _default(cls, name)
        if isinstance(value, Mapping) and isinstance(current, Config):
            value = override(current, **value)
        given[name] = value
    if base is None:
        return cls.from_dict(given)
    return cls.from_dict({**base.to_dict(), **given}) if given else base


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its one-line docstring (the string literal under the field), base classes first."""
    return dict(_field_docs(cls))


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """:func:`field_docs`, parsed once per class (building the CLI asks for every option's help: ~100 parses)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for prev, node in zip(body, body[1:]):
            if (
                isinstance(prev, ast.AnnAssign)
                and isinstance(prev.target, ast.Name)
                and isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                docs[prev.target.id] = node.value.value.strip().splitlines()[0]
    return docs


# --- helpers ---------------------------------------------------------------------------------------

def _default(cls: type, name: str) -> Any:
    """Field `name`'s default value (None when it has none, or is not a field)."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    return None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no conversion
        return {}


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Normalize a loaded value to the field's type: lists -> tuples, dicts -> nested configs."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            if (isinstance(arg, type) and hasattr(arg, "from_dict")) or typing.get_origin(arg) is tuple:
                return _convert(value, arg, where)
        return value
    if isinstance(hint, type) and hasattr(hint, "from_dict") and isinstance(value, Mapping):
        return hint.from_dict(value)  # a nested config, or a value type with an exact dict round trip
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        items = tuple(_convert(v, item, where) if item is not None else v for v in value)
        return items if isinstance(value, list) or items != value else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return _plain(value.to_dict())
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
