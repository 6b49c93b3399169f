"""The signal interface: what a derived signal is, how it is declared, found and evaluated.

A signal is a function of one episode's streams, declared with `@signal`::

    from roboloop.refine import signal, SkipSignal

    @signal("gripper_travel", version=2, streams=["/robot/joint_positions"])
    def gripper_travel(ep):
        \"\"\"Total |Δ| of the last joint (the gripper), over the episode.\"\"\"
        q = ep.values("/robot/joint_positions")
        if q is None:
            raise SkipSignal("needs /robot/joint_positions")
        return float(abs(q[1:, -1] - q[:-1, -1]).sum())

- `streams` are the entity paths it reads; shell patterns (`/cameras/*`) match every entity
  of the dataset they fit. Scalar streams arrive as arrays (`ep.values`, `ep.times`); video
  streams (H.264, `VideoStream`) are decoded only when the signal iterates `ep.frames(entity,
  stride=...)`, and `ep.cameras` lists the ones it declared that the dataset has.
- It returns one value (number, bool, string; stored as `signals.<name>`), a dict of them
  (stored as `signals.<name>_<key>`), or None (not computable for this episode: left out).
  Raising `SkipSignal(reason)` says the episode lacks what the signal needs (another robot,
  no cube, no camera); `refine` stores nothing for it and reports the reason once.
- `version` (an int or a short string) is recorded per segment in `signal_versions.<name>`:
  changing it makes `refine` recompute that signal; re-running an unchanged one is a no-op.

A signal is found by its registered name (the built-ins and those of the `roboloop.signals`
entry point group, whose entries point at decorated functions) or by import path,
`package.module:function` (`resolve_signals`).
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from roboloop import plugins, schema
from roboloop.errors import RoboloopError, UnknownNameError
from roboloop.video import decode_samples

ENTRY_POINT_GROUP = "roboloop.signals"
"""Entry point group of installed signal plugins: `name = "package.module:function"`."""


class RefineError(RoboloopError):
    """Signals or flags that cannot be computed or written as asked; the message says what to change."""


class UnknownSignalError(RefineError, UnknownNameError):
    """A signal name that is not registered; the message lists the registered ones."""


class SignalImportError(RefineError):
    """A signal import path (`package.module:function`) that does not lead to a declared signal."""


class SignalFailedError(RefineError):
    """A signal function raised on an episode; the message names the signal, the segment, the error and where in
    the user's code it was raised. `traceback_text`: the traceback from the signal function down (the user's frames),
    which `roboloop -v` prints."""

    def __init__(self, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


class SkipSignal(RefineError):
    """Raised by a signal whose needs an episode does not meet (the message is the one-line reason)."""


# --- episode data --------------------------------------------------------------------------

VideoLoader = Callable[[str], tuple[np.ndarray, list[bytes]]]
"""entity -> (times_s, H.264 samples, one per frame) of one episode's video stream."""


@dataclass
class EpisodeStreams:
    """One episode's streams as read from the catalog: scalars entity -> (times_s, values[N, D]), video decoded on demand."""

    segment_id: str
    streams: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cameras: tuple[str, ...] = ()
    """Video streams (entity paths) the running signal declared and the dataset has."""
    video: VideoLoader | None = field(default=None, repr=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Compute `fn()` once per episode (for intermediates several signals share)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def get(self, entity: str) -> tuple[np.ndarray, np.ndarray] | None:
        s = self.streams.get(entity)
        return s if s is not None and len(s[0]) else None

    def values(self, entity: str) -> np.ndarray | None:
        s = self.get(entity)
        return None if s is None else s[1]

    def times(self, entity: str) -> np.ndarray | None:
        s = self.get(entity)
        return None if s is None else s[0]

    def frames(self, entity: str, *, stride: int = 1) -> Iterator[tuple[float, np.ndarray]]:
        """(time_s, RGB frame H x W x 3 uint8) of every `stride`-th frame of video stream `entity`, decoded lazily.

        Empty when this episode has no frames there. Every frame is decoded (H.264 frames depend on
        the ones before them); only the kept ones are converted to RGB.
        """
        if entity not in self.cameras or self.video is None:
            raise RefineError(
                f"{entity} is not a video stream this signal declared in its streams "
                f"(declared and present: {', '.join(self.cameras) or 'none'}); add it to @signal(..., streams=[...])"
            )
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        times, samples = self.memo(("video", entity), lambda: self.video(entity))
        return zip(times[::stride].tolist(), decode_samples(samples, stride=stride))


# --- declaring signals ---------------------------------------------------------------------

@dataclass(frozen=True)
class Signal:
    """A declared signal: `fn(ep) -> value | dict | None`, the streams it reads and its version."""

    name: str
    fn: Callable[[EpisodeStreams], Any]
    streams: tuple[str, ...]
    doc: str
    version: str = "1"


SIGNALS: dict[str, Signal] = {}
"""The registry: every signal declared with `@signal` in an imported module, by name."""

_ATTRIBUTE = "roboloop_signal"  # the Signal a decorated function carries


def signal(name: str, *, version: int | str = 1, streams: Sequence[str] = (schema.JOINT_POSITIONS,)):
    """Declare `fn(ep: EpisodeStreams) -> value | dict | None` as signal `signals.<name>` (see the module doc)."""
    if not name.isidentifier():
        raise ValueError(f"signal names must be identifiers, got {name!r}")
    version = str(version).strip()
    if not version:
        raise ValueError(f"signal {name!r}: version must not be empty")
    if isinstance(streams, str):
        streams = [streams]

    def deco(fn):
        sig = Signal(name, fn, tuple(streams), (inspect.getdoc(fn) or "").split("\n")[0], version)
        taken = SIGNALS.get(name)
        if taken is not None and _where(taken.fn) != _where(fn):  # the same function imported again may re-register
            raise RefineError(f"signal name {name!r} is already taken by {_where(taken.fn)}; give {_where(fn)} another name")
        SIGNALS[name] = sig
        setattr(fn, _ATTRIBUTE, sig)
        return fn

    return deco


def _where(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"


def declared_signal(obj: Any) -> Signal | None:
    """The Signal a function was declared as with `@signal`, else None."""
    sig = getattr(obj, _ATTRIBUTE, None)
    return sig if isinstance(sig, Signal) else None


def import_signal(spec: str) -> Signal:
    """The signal at import path `package.module:function` (importing the module registers it)."""
    try:
        obj = plugins.import_object(spec)
    except plugins.ImportPathError:
        raise SignalImportError(f"signal import path {spec!r} must look like 'package.module:function'") from None
    except plugins.PluginNotFoundError as exc:
        raise SignalImportError(
            f"signal {spec!r}: cannot import module {exc.module_name!r} ({exc.__cause__}); install the package or add its folder to PYTHONPATH"
        ) from None
    except plugins.PluginImportFailedError as exc:  # the user's module failed while importing: say which and how
        cause = exc.__cause__
        raise SignalImportError(
            f"signal {spec!r}: importing module {exc.module_name!r} failed: {type(cause).__name__}: {cause}"
        ) from None
    except plugins.PluginAttributeError as exc:
        declared = sorted(n for n, v in vars(exc.module).items() if declared_signal(v) is not None)
        raise SignalImportError(
            f"signal {spec!r}: module {exc.module_name!r} has no attribute {exc.attr!r}"
            + (f"; its signals: {', '.join(f'{exc.module_name}:{n}' for n in declared)}" if declared else "")
        ) from None
    module_name, attr = plugins.split_import_path(spec)
    sig = declared_signal(obj)
    if sig is None:
        raise SignalImportError(
            f"signal {spec!r}: {module_name}.{attr} is not a signal; declare it with "
            "@roboloop.refine.signal(name, version=..., streams=[...])"
        )
    return sig


def load_entry_points() -> None:
    """Import the signals of installed plugins (entry point group `roboloop.signals`; imports are cached by Python)."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            dist = ep.dist.name if ep.dist is not None else "an installed package"
            raise SignalImportError(
                f"signal plugin {ep.name!r} ({ep.value}, from {dist}) failed to load: {type(exc).__name__}: {exc}; "
                "fix or uninstall that package"
            ) from None
        if declared_signal(obj) is None:
            raise SignalImportError(f"signal plugin {ep.name!r} ({ep.value}) is not declared with @roboloop.refine.signal")


def resolve_signals(names: Sequence[str] | None) -> list[Signal]:
    """Signals by registered name or import path (`package.module:function`); None = every registered one."""
    load_entry_points()
    if names is None:
        return list(SIGNALS.values())
    out: dict[str, Signal] = {}
    unknown = []
    for name in names:
        if ":" in name:
            sig = import_signal(name)
        elif name in SIGNALS:
            sig = SIGNALS[name]
        else:
            unknown.append(name)
            continue
        out[sig.name] = sig
    if unknown:
        raise UnknownSignalError(
            f"unknown signal(s) {', '.join(unknown)}; registered signals: {', '.join(SIGNALS)} "
            "(a signal of your own: --signal package.module:function)"
        )
    return list(out.values())


# --- evaluating ----------------------------------------------------------------------------

@dataclass
class SignalResults:
    """What evaluating signals on one episode gave: stored values, and the skipped signals with their reasons."""

    values: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def output_names(sig: Signal, value: Any) -> dict[str, Any]:
    """Property names -> values of one signal's result (`name`, or `name_<key>` for a dict); None and non-finite left out."""
    items = {f"{sig.name}_{k}": v for k, v in value.items()} if isinstance(value, Mapping) else {sig.name: value}
    out = {}
    for key, v in items.items():
        if not key.isidentifier():
            raise RefineError(f"signal {sig.name!r} returned a key that makes {key!r}, not an identifier; use letters, digits and _")
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            continue
        if not isinstance(v, (bool, int, float, str)):
            raise RefineError(f"signal {sig.name!r} returned {type(v).__name__} for {key!r}; return a number, bool, string, None or a dict of them")
        out[key] = v
    return out


def compute_signals(
    ep: EpisodeStreams,
    signals: Iterable[Signal] | None = None,
    *,
    cameras: Mapping[str, tuple[str, ...]] | None = None,
) -> SignalResults:
    """Evaluate signals on one episode. `cameras`: signal name -> the video streams it may decode."""
    res = SignalResults()
    for sig in signals if signals is not None else SIGNALS.values():
        view = dataclasses.replace(ep, cameras=tuple((cameras or {}).get(sig.name, ())))
        try:
            value = sig.fn(view)
        except SkipSignal as skip:
            res.skipped[sig.name] = str(skip)
            continue
        except RoboloopError:
            raise
        except Exception as exc:  # a user's function failed: name it and where, keep the cause and its frames
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # from the signal function down
            last = traceback.extract_tb(tb)[-1] if tb is not None else None
            where = f" (at {last.filename}:{last.lineno} in {last.name}; roboloop -v shows the traceback)" if last else ""
            raise SignalFailedError(f"signal {sig.name!r} failed on segment {ep.segment_id!r}: {type(exc).__name__}: {exc}{where}",
                                    "".join(traceback.format_exception(type(exc), exc, tb))) from exc
        res.values.update(output_names(sig, value))
    return res


def owner(key: str, names: Iterable[str]) -> str | None:
    """The signal (among `names`) whose output `key` is: `key` itself or the longest `name_...` prefix."""
    best = None
    for name in names:
        if (key == name or key.startswith(name + "_")) and (best is None or len(name) > len(best)):
            best = name
    return best
