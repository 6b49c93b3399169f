"""Declarative field specs: output name -> entity path (+ component), resampling, window, dtype.

A `Field` names *what* to load; `resolve_fields` checks every field against the dataset's
schema once, up front, and decides *how* (scalars, H.264 video or encoded images).

Conventions
-----------
- `window` offsets are in **output-grid steps** (at the stream's `rate_hz`): `range(0, 10)`
  is the current step and the next nine (an action chunk), `(-2, -1, 0)` two past frames
  and the current one. A windowed field comes out as `[B, K, ...]` plus a boolean
  `<name>_mask` `[B, K]` that is False where the offset falls outside the episode
  (those entries repeat the nearest in-episode value: edge padding).
- `resample`: `"latest"` (latest-at, the default: the last row at or before the grid
  time) or `"linear"` (linear interpolation between the rows around the grid time;
  scalars only). Before a field's first row both use its first row; after its last row
  both hold the last row.
- Scalars come out `[B, D]` (`D` = the logged width, 1 for a single scalar), cast to
  `dtype` (float32 by default). Cameras come out uint8 `[B, 3, H, W]` (CHW), or float
  in [0, 1] when `dtype` is a float dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.errors import RoboloopError, UnknownNameError

SCALARS = "scalar"
VIDEO = "video"
IMAGE = "image"

LATEST = "latest"
LINEAR = "linear"

# Components the loader knows how to turn into tensors, in the order tried when a
# field names only an entity path.
_KIND_BY_COMPONENT = {
    schema.SCALARS_COMPONENT: SCALARS,
    schema.VIDEO_SAMPLE_COMPONENT: VIDEO,
    schema.ENCODED_IMAGE_COMPONENT: IMAGE,
}
KEYFRAME_COMPONENT = schema.VIDEO_KEYFRAME_COMPONENT


class StreamError(RoboloopError):
    """A loader problem the user can act on; the message says what to do."""


class UnknownEntityError(StreamError, UnknownNameError):
    """A field names an entity path (or component) the dataset does not have."""

    def __init__(self, field_name: str, path: str, available: Iterable[str], *, component: str | None = None) -> None:
        self.field_name, self.path, self.available = field_name, path, sorted(available)
        what = f"{path}:{component}" if component else path
        listing = "\n  ".join(self.available) if self.available else "(the dataset has no data columns)"
        super().__init__(f"field {field_name!r}: unknown entity path/component {what!r}; available columns:\n  {listing}")


class UnknownSegmentError(StreamError, UnknownNameError):
    """Segment ids that the dataset does not have (or that have no data on the timeline)."""


class MissingFieldError(StreamError):
    """A field has no data in some segments (with `on_missing="error"`)."""

    def __init__(self, field_name: str, path: str, segment_ids: Iterable[str]) -> None:
        self.field_name, self.path, self.segment_ids = field_name, path, list(segment_ids)
        super().__init__(
            f"field {field_name!r} ({path}) has no data in segment(s) {', '.join(self.segment_ids)}; "
            "leave those segments out of the selection, or pass on_missing='skip' to skip them with a warning"
        )


@dataclass(frozen=True)
class Field:
    """One output field of a sample.

    Parameters
    ----------
    path
        Entity path (`"/robot/joint_positions"`), optionally with the component
        (`"/robot/joint_positions:Scalars:scalars"`). Without a component the loader
        picks `Scalars:scalars`, `VideoStream:sample` or `EncodedImage:blob`.
    resample
        `"latest"` (default) or `"linear"` (scalars only).
    window
        Offsets in output-grid steps (ints), e.g. `range(0, 10)`; None = just the grid point.
    dtype
        Output dtype (numpy or torch dtype, or a name). Default float32 for scalars,
        uint8 for cameras.
    component
        The component, if not given in `path`.
    fill
        Width of the zeros yielded where a segment has no data for this scalar field, e.g. a
        state another task's episodes do not record (a windowed field's `<name>_mask` is then
        all False); None: `on_missing` applies.
    """

    path: str
    resample: str = LATEST
    window: tuple[int, ...] | None = None
    dtype: Any = None
    component: str | None = None
    fill: int | None = None

    def __post_init__(self) -> None:
        path, component = self.path, self.component
        if self.fill is not None and (int(self.fill) != self.fill or self.fill < 1):
            raise ValueError(f"Field.fill is the width (>= 1) of a scalar field's zeros, got {self.fill!r}")
        if component is None and path.count(":") >= 2:
            path, _, component = path.partition(":")
        object.__setattr__(self, "path", path if path.startswith("/") else "/" + path)
        object.__setattr__(self, "component", component)
        if self.resample not in (LATEST, LINEAR):
            raise ValueError(f"Field.resample must be 'latest' or 'linear', got {self.resample!r}")
        if self.window is not None:
            offsets = tuple(self.window)
            if not offsets:
                raise ValueError("Field.window needs at least one offset")
            if any(int(o) != o for o in offsets):
                raise ValueError(f"Field.window offsets are output-grid steps and must be integers, got {offsets!r}")
            object.__setattr__(self, "window", tuple(int(o) for o in offsets))
        if self.dtype is not None and not isinstance(self.dtype, str):
            try:  # keep a name, so configs holding fields compare and serialize exactly
                object.__setattr__(self, "dtype", _np_dtype(self.dtype, "float32").name)
            except TypeError:
                pass

    def to_dict(self) -> dict[str, Any]:
        """JSON-able arguments (`Field(**d)` rebuilds it); defaults left out."""
        out: dict[str, Any] = {"path": self.path}
        if self.resample != LATEST:
            out["resample"] = self.resample
        if self.window is not None:
            out["window"] = list(self.window)
        if self.dtype is not None:
            out["dtype"] = str(self.dtype)
        if self.component is not None:
            out["component"] = self.component
        if self.fill is not None:
            out["fill"] = int(self.fill)
        return out


def as_field(spec: Field | str | Mapping[str, Any]) -> Field:
    """Accept a Field, a bare path string, or a dict of Field arguments."""
    if isinstance(spec, Field):
        return spec
    if isinstance(spec, str):
        return Field(spec)
    if isinstance(spec, Mapping):
        return Field(**spec)
    raise TypeError(f"a field is a Field, an entity path string or a dict, got {type(spec).__name__}")


@dataclass
class ResolvedField:
    """A field checked against the dataset schema: what to read and how to decode it."""

    name: str
    path: str
    component: str
    kind: str
    resample: str
    window: np.ndarray | None  # int64 offsets in grid steps
    dtype: np.dtype
    column: str  # "<path>:<component>" in reader output
    keyframe_column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    fill: int | None = None  # width of the zeros for a segment without data (Field.fill)

    @property
    def is_camera(self) -> bool:
        return self.kind in (VIDEO, IMAGE)


def _np_dtype(dtype: Any, default: str) -> np.dtype:
    if dtype is None:
        return np.dtype(default)
    try:
        import torch

        if isinstance(dtype, torch.dtype):
            return torch.empty((), dtype=dtype).numpy().dtype
    except Exception:  # noqa: BLE001 - torch missing or dtype without numpy twin
        pass
    return np.dtype(dtype)


def schema_columns(dataset_schema) -> dict[str, set[str]]:
    """Entity path -> its (non-static) components, from a DatasetEntry.schema()."""
    out: dict[str, set[str]] = {}
    for col in dataset_schema.component_columns():
        if getattr(col, "is_static", False) or getattr(col, "is_property", False):
            continue
        out.setdefault(col.entity_path, set()).add(col.component)
    return out


def resolve_fields(fields: Mapping[str, Any], available: Mapping[str, set[str]]) -> list[ResolvedField]:
    """Check fields against the dataset's columns; raise UnknownEntityError listing them."""
    if not fields:
        raise ValueError("EpisodeStream needs at least one field, e.g. fields={'state': '/robot/joint_positions'}")
    listing = sorted(f"{p}:{c}" for p, comps in available.items() for c in comps if not p.startswith("/__"))
    resolved: list[ResolvedField] = []
    for name, spec in fields.items():
        f = as_field(spec)
        comps = available.get(f.path)
        if not comps:
            raise UnknownEntityError(name, f.path, listing)
        component = f.component
        if component is None:
            component = next((c for c in _KIND_BY_COMPONENT if c in comps), None)
            if component is None:
                raise StreamError(
                    f"field {name!r}: {f.path} has no component the loader can decode ({', '.join(sorted(comps))}); "
                    f"supported: {', '.join(_KIND_BY_COMPONENT)}"
                    + ("; to use a pose as a field, also log it as a vector with log_scalars (e.g. x, y, z, qx, qy, qz, qw "
                       "under its own entity path)" if any(c.startswith("Transform3D:") for c in comps) else "")
                )
        elif component not in comps:
            raise UnknownEntityError(name, f.path, listing, component=component)
        kind = _KIND_BY_COMPONENT.get(component, SCALARS)
        if kind != SCALARS and f.fill is not None:
            raise ValueError(f"field {name!r}: fill applies to scalars only")
        if kind != SCALARS and f.resample == LINEAR:
            raise ValueError(f"field {name!r}: linear resampling applies to scalars only; cameras use 'latest'")
        dtype = _np_dtype(f.dtype, "float32" if kind == SCALARS else "uint8")
        keyframe_column = None
        if kind == VIDEO and KEYFRAME_COMPONENT in comps:
            keyframe_column = f"{f.path}:{KEYFRAME_COMPONENT}"
        resolved.append(
            ResolvedField(
                name=name,
                path=f.path,
                component=component,
                kind=kind,
                resample=f.resample,
                window=None if f.window is None else np.asarray(f.window, dtype=np.int64),
                dtype=dtype,
                column=f"{f.path}:{component}",
                keyframe_column=keyframe_column,
                fill=f.fill,
            )
        )
    names = [r.name for r in resolved]
    for r in resolved:
        if r.window is not None and f"{r.name}_mask" in names:
            raise ValueError(f"field name {r.name}_mask collides with the mask of windowed field {r.name!r}")
    return resolved
