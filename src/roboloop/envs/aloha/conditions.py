"""Scene conditions: everything about an episode's scene that we vary on purpose.

A :class:`SceneConditions` is a frozen dataclass whose fields are all plain
JSON-able values (str / float / int / bool / list), so the recorder can write
every field as an episode property (``scene`` group) and an analysis can group
success by any of them. ``to_dict()`` / ``from_dict()`` round-trip exactly.

World frame (gym-aloha ALOHA scene): the two arms face each other along x (left
arm base at x = -0.469, right arm base at x = +0.469, both at y = 0.5); the table
top is the plane z = 0, centred at (0, 0.6). The cube (4 cm) starts on the table
and is first grasped by the **right** arm, then handed to the left arm.

Cube start regions (``region``), in metres, world x/y:

============  ===============  ============  ==============================================
name          x                y             meaning
============  ===============  ============  ==============================================
``default``   [0.00, 0.20]     [0.40, 0.60]  what gym-aloha samples
``left``      [0.00, 0.10]     [0.40, 0.60]  half of default nearer the table centre / left arm
``near``      (alias of ``left``: near the handover point at the table centre)
``right``     [0.10, 0.20]     [0.40, 0.60]  half of default nearer the right arm
``far``       (alias of ``right``: far from the handover point)
``front``     [0.00, 0.20]     [0.40, 0.50]  half of default nearer the front (``angle`` camera)
``back``      [0.00, 0.20]     [0.50, 0.60]  half of default farther from the front
``wide``      [-0.05, 0.25]    [0.35, 0.65]  default grown by 5 cm on every side
``custom``    explicit bounds given with ``x=(lo, hi), y=(lo, hi)``
============  ===============  ============  ==============================================

Cube yaw (``yaw``, degrees, uniform in [yaw_min, yaw_max]): ``none`` = 0 (as
gym-aloha), ``small`` = +-15, ``any`` = +-45 (the cube is symmetric under 90
degree turns, so +-45 covers every orientation).

Lighting (``lighting``): ``normal`` (the model's lights: light_scale 1.0,
ambient 0.4 headlight), ``dim`` (0.35, 0.12), ``bright`` (1.6, 0.6).
``light_scale`` multiplies the diffuse colour of every model light; ``ambient``
is the headlight ambient intensity (grey).

Table colour (``table``): ``dark`` (gym-aloha's 0.2 grey, the default),
``light`` (0.7 grey), ``wood`` (a brown), ``blue``, ``green``; or explicit rgba.

Distractors (``distractors``): the number (0-4) of fixed static objects placed
on the table away from the cube region and the handover path, in a fixed order
(see :data:`DISTRACTOR_LAYOUT`). They have no joints (the cube stays the last 7
qpos values) and do collide. Named sets: ``none`` = 0, ``few`` = 2, ``many`` = 4.

**The vocabulary.** :data:`AXES` names these five axes (:data:`CONDITION_AXES`), their
labels and aliases for every stage: collect (:meth:`SceneConditions.from_names`), evaluate
(grids, cell keys, seeds), analyze (gaps) and plans, by the rules of
:mod:`roboloop.envs.conditions` (``near`` -> ``left``; a distractor count ``2`` is the
label ``few`` in a cell key). :data:`APPEARANCE_AXES` change what a camera sees, not the
cube's start state.

**The start state** of an episode is the sampled cube pose, stored as numbers
(:func:`start_state`; friendly columns :data:`START_COLUMNS`: ``scene.cube_x``,
``scene.cube_y`` in m, ``scene.cube_yaw_deg`` in degrees); coverage is measured on it.

Example::

    SceneConditions.from_names(region="right", lighting="dim")
    SceneConditions.from_names(x=(0.05, 0.15), y=(0.45, 0.55))   # region "custom"
    SceneConditions.from_dict(c.to_dict()) == c
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roboloop import schema
from roboloop.envs.conditions import Axis, Vocabulary

__all__ = [
    "APPEARANCE_AXES",
    "AXES",
    "CONDITION_AXES",
    "START_COLUMNS",
    "SceneConditions",
    "REGIONS",
    "REGION_ALIASES",
    "YAWS",
    "LIGHTINGS",
    "TABLES",
    "DISTRACTOR_SETS",
    "DISTRACTOR_LAYOUT",
    "MAX_DISTRACTORS",
    "TABLE_TOP_BOUNDS",
    "CUBE_START_BOUNDS",
    "start_state",
    "yaw_deg",
    "yaw_preset",
]

# name -> (x_min, x_max, y_min, y_max)
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "default": (0.0, 0.2, 0.4, 0.6),
    "left": (0.0, 0.1, 0.4, 0.6),
    "right": (0.1, 0.2, 0.4, 0.6),
    "front": (0.0, 0.2, 0.4, 0.5),
    "back": (0.0, 0.2, 0.5, 0.6),
    "wide": (-0.05, 0.25, 0.35, 0.65),
}
REGION_ALIASES: dict[str, str] = {"near": "left", "far": "right"}

TABLE_TOP_BOUNDS: tuple[float, float, float, float] = (-0.6096, 0.6096, 0.219, 0.981)
"""(x_min, x_max, y_min, y_max) of gym-aloha's table top (the `tabletop` mesh at (0, 0.6), measured from the model)."""
CUBE_HALF_SIZE = 0.02
"""Half the cube's edge (4 cm cube)."""
CUBE_START_BOUNDS: tuple[float, float, float, float] = (
    TABLE_TOP_BOUNDS[0] + CUBE_HALF_SIZE,
    TABLE_TOP_BOUNDS[1] - CUBE_HALF_SIZE,
    TABLE_TOP_BOUNDS[2] + CUBE_HALF_SIZE,
    TABLE_TOP_BOUNDS[3] - CUBE_HALF_SIZE,
)
"""Where a cube centre may start: the table top shrunk by half the cube, so the whole cube stands on the table."""

# name -> (yaw_min, yaw_max) in degrees
YAWS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.0),
    "small": (-15.0, 15.0),
    "any": (-45.0, 45.0),
}

# name -> (light_scale, ambient)
LIGHTINGS: dict[str, tuple[float, float]] = {
    "normal": (1.0, 0.4),
    "dim": (0.35, 0.12),
    "bright": (1.6, 0.6),
}

TABLES: dict[str, tuple[float, float, float, float]] = {
    "dark": (0.2, 0.2, 0.2, 1.0),
    "light": (0.7, 0.7, 0.7, 1.0),
    "wood": (0.55, 0.38, 0.22, 1.0),
    "blue": (0.15, 0.25, 0.55, 1.0),
    "green": (0.2, 0.45, 0.25, 1.0),
}

DISTRACTOR_SETS: dict[str, int] = {"none": 0, "few": 2, "many": 4}

# Fixed static objects: (name, shape, pos xyz of the centre, half-sizes, rgba).
# Placed off the cube region and away from the arms' path (x-z plane at y ~ 0.5).
DISTRACTOR_LAYOUT: tuple[tuple[str, str, tuple, tuple, tuple], ...] = (
    ("distractor_0", "box", (-0.25, 0.85, 0.03), (0.03, 0.03, 0.03), (0.1, 0.4, 0.9, 1.0)),
    ("distractor_1", "cylinder", (0.25, 0.85, 0.04), (0.025, 0.04), (0.95, 0.8, 0.1, 1.0)),
    ("distractor_2", "box", (0.0, 0.92, 0.02), (0.05, 0.02, 0.02), (0.2, 0.8, 0.3, 1.0)),
    ("distractor_3", "sphere", (-0.3, 0.28, 0.03), (0.03,), (0.8, 0.3, 0.8, 1.0)),
)
MAX_DISTRACTORS = len(DISTRACTOR_LAYOUT)


AXES = Vocabulary((
    Axis("region", tuple(REGIONS), REGION_ALIASES),
    Axis("yaw", tuple(YAWS)),
    Axis("lighting", tuple(LIGHTINGS)),
    Axis("table", tuple(TABLES)),
    Axis("distractors", tuple(DISTRACTOR_SETS), counts=DISTRACTOR_SETS, max_count=MAX_DISTRACTORS),
))
"""The transfer cube's condition axes: labels, aliases, cell keys (:mod:`roboloop.envs.conditions`)."""
CONDITION_AXES = AXES.names
"""The condition axes, in order: the arguments of :meth:`SceneConditions.from_names`."""
APPEARANCE_AXES = ("lighting", "table", "distractors")
"""Axes that change what a camera sees but not the cube's start state."""
START_COLUMNS = tuple(f"{schema.SCENE}.{n}" for n in (schema.SCENE_CUBE_X, schema.SCENE_CUBE_Y, schema.SCENE_CUBE_YAW_DEG))
"""Friendly columns holding an episode's sampled start state (m, m, deg): ``scene.cube_x``, ``scene.cube_y``, ``scene.cube_yaw_deg``."""


def yaw_deg(pose: Sequence[float]) -> float:
    """The rotation about z (deg) of a pose xyz + quaternion wxyz whose only rotation is about z."""
    return math.degrees(2.0 * math.atan2(float(pose[6]), float(pose[3])))


def start_state(pose: Sequence[float]) -> dict[str, float]:
    """An episode's start state from the sampled cube pose (xyz + quaternion wxyz): the ``scene``
    properties ``cube_x``, ``cube_y`` (m) and ``cube_yaw_deg`` (deg, the rotation about z)."""
    p = [float(v) for v in pose]
    return {
        schema.SCENE_CUBE_X: p[0],
        schema.SCENE_CUBE_Y: p[1],
        schema.SCENE_CUBE_YAW_DEG: yaw_deg(p),
    }


def yaw_preset(yaw_min: float, yaw_max: float) -> str | None:
    """The yaw preset whose range is (yaw_min, yaw_max) in degrees, or None."""
    for name, (lo, hi) in YAWS.items():
        if math.isclose(float(yaw_min), lo, abs_tol=1e-9) and math.isclose(float(yaw_max), hi, abs_tol=1e-9):
            return name
    return None


def _choose(kind: str, value: Any, table: Mapping[str, Any], extra: Sequence[str] = ()):
    """(canonical name, preset) of `value` on axis `kind` (the vocabulary's rule); ValueError listing the presets."""
    key = AXES.lookup(kind, value)
    if key is None:
        valid = sorted([*table, *extra]) + sorted(AXES.axis(kind).aliases)
        raise ValueError(f"unknown {kind} {value!r}; valid {kind} presets: {', '.join(valid)}")
    return key, table[key]


def _fmt(v: float) -> str:
    return f"{v:g}"


def _distractor_count(value: Any) -> int:
    """The number of distractors `value` (a set name or a count) names; ValueError otherwise."""
    label = AXES.lookup("distractors", value)
    if label is not None:
        return AXES.axis("distractors").count(label)
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif str(value).strip().isdecimal():
        n = int(str(value).strip())
    else:
        return _choose("distractors", value, DISTRACTOR_SETS)[1]  # an unknown name: raises, listing the sets
    raise ValueError(f"distractors must be an int in [0, {MAX_DISTRACTORS}] or one of {', '.join(DISTRACTOR_SETS)}, got {n!r}")


@dataclass(frozen=True)
class SceneConditions:
    """Conditions for one episode (see the module docstring for every preset).

    All fields are flat plain values; ``to_dict()`` is what the recorder writes as
    ``scene`` properties. Build from preset names with :meth:`from_names`.
    """

    region: str = "default"  # preset name, or "custom" for explicit bounds
    x_min: float = 0.0
    x_max: float = 0.2
    y_min: float = 0.4
    y_max: float = 0.6
    yaw_min: float = 0.0  # degrees
    yaw_max: float = 0.0
    lighting: str = "normal"  # preset name or "custom"
    light_scale: float = 1.0
    ambient: float = 0.4
    table: str = "dark"  # preset name or "custom"
    table_rgba: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 1.0)
    distractors: int = 0

    def __post_init__(self) -> None:
        self._resolve_presets()
        # normalise types so equality and round trips are exact
        for f in ("x_min", "x_max", "y_min", "y_max", "yaw_min", "yaw_max", "light_scale", "ambient"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ValueError(f"SceneConditions.{f} must be a finite number, got {v!r}")
            object.__setattr__(self, f, float(v))
        rgba = tuple(float(c) for c in self.table_rgba)
        if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
            raise ValueError(f"SceneConditions.table_rgba must be 4 values in [0, 1], got {self.table_rgba!r}")
        object.__setattr__(self, "table_rgba", rgba)
        if self.x_min > self.x_max or self.y_min > self.y_max:
            raise ValueError(
                f"region bounds must satisfy x_min <= x_max and y_min <= y_max, got "
                f"x_min={self.x_min}, x_max={self.x_max}, y_min={self.y_min}, y_max={self.y_max}"
            )
        tx0, tx1, ty0, ty1 = CUBE_START_BOUNDS
        if self.x_min < tx0 or self.x_max > tx1 or self.y_min < ty0 or self.y_max > ty1:
            raise ValueError(
                f"region x {self.x_min:g}..{self.x_max:g}, y {self.y_min:g}..{self.y_max:g} puts the cube off the table: "
                f"its start must lie within x {tx0:g}..{tx1:g}, y {ty0:g}..{ty1:g} (the table top, less half the cube); "
                f"presets: {', '.join(sorted(REGIONS) + sorted(REGION_ALIASES))}"
            )
        if self.yaw_min > self.yaw_max:
            raise ValueError(f"yaw_min must be <= yaw_max, got ({self.yaw_min}, {self.yaw_max})")
        if self.light_scale < 0 or self.ambient < 0:
            raise ValueError(f"light_scale and ambient must be >= 0, got {self.light_scale}, {self.ambient}")
        d = self.distractors
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_DISTRACTORS:
            raise ValueError(
                f"distractors must be an int in [0, {MAX_DISTRACTORS}] or one of "
                f"{', '.join(DISTRACTOR_SETS)}, got {d!r}"
            )

    def _resolve_presets(self) -> None:
        """A preset name always means its values: fields left at their defaults are
        filled from the named preset (``SceneConditions(lighting="dim")`` works);
        explicit values that contradict the name are an error (use "custom")."""
        groups = (
            ("region", ("x_min", "x_max", "y_min", "y_max"), REGIONS),
            ("lighting", ("light_scale", "ambient"), LIGHTINGS),
            ("table", ("table_rgba",), TABLES),
        )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name_field, value_fields, presets in groups:
            name = str(getattr(self, name_field)).strip().lower()
            if name == "custom":
                object.__setattr__(self, name_field, name)
                continue
            key, preset = _choose(name_field, name, presets, ("custom",))
            object.__setattr__(self, name_field, key)
            preset_values = (tuple(preset),) if name_field == "table" else tuple(preset)
            current = tuple(
                tuple(float(c) for c in getattr(self, f)) if f == "table_rgba" else getattr(self, f)
                for f in value_fields
            )
            default = tuple(defaults[f] for f in value_fields)
            if current == default:
                for f, v in zip(value_fields, preset_values):
                    object.__setattr__(self, f, v)
            elif not all(
                (a == b) if f == "table_rgba" else math.isclose(float(a), float(b), abs_tol=1e-12)
                for f, a, b in zip(value_fields, current, preset_values)
            ):
                raise ValueError(
                    f"{name_field}={key!r} means {dict(zip(value_fields, preset_values))}, but got "
                    f"{dict(zip(value_fields, current))}; use {name_field}='custom' for explicit values"
                )

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_names(
        cls,
        region: str = "default",
        yaw: str = "none",
        lighting: str = "normal",
        table: str = "dark",
        distractors: str | int = "none",
        *,
        x: Sequence[float] | None = None,
        y: Sequence[float] | None = None,
    ) -> SceneConditions:
        """Build from preset names (CLI-friendly). Unknown names raise ``ValueError``
        naming the bad value and listing the valid presets.

        ``x``/``y`` give explicit region bounds (``region`` then becomes "custom";
        a missing axis keeps the named region's bounds). ``region`` may also be a
        string "x0,x1,y0,y1". ``distractors`` accepts a set name or a count
        (int or digit string).
        """
        region_s = str(region).strip()
        if "," in region_s:
            try:
                bx0, bx1, by0, by1 = (float(v) for v in region_s.split(","))
            except ValueError:
                raise ValueError(
                    f"bad region {region!r}: expected a preset ({', '.join(sorted(REGIONS) + sorted(REGION_ALIASES))}) "
                    "or explicit bounds 'x_min,x_max,y_min,y_max'"
                ) from None
            rname, (x0, x1, y0, y1) = "custom", (bx0, bx1, by0, by1)
        else:
            rname, (x0, x1, y0, y1) = _choose("region", region_s, REGIONS)
        if x is not None or y is not None:
            if x is not None:
                x0, x1 = (float(v) for v in x)
            if y is not None:
                y0, y1 = (float(v) for v in y)
            rname = "custom"
        _, (yaw0, yaw1) = _choose("yaw", yaw, YAWS)
        lname, (scale, amb) = _choose("lighting", lighting, LIGHTINGS)
        tname, rgba = _choose("table", table, TABLES)
        n = _distractor_count(distractors)
        return cls(
            region=rname, x_min=x0, x_max=x1, y_min=y0, y_max=y1,
            yaw_min=yaw0, yaw_max=yaw1,
            lighting=lname, light_scale=scale, ambient=amb,
            table=tname, table_rgba=rgba, distractors=n,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneConditions:
        """Inverse of :meth:`to_dict`. Unknown keys raise ``ValueError``; missing keys
        take the defaults. Values coming back from Arrow/JSON (lists, numpy scalars)
        are accepted."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SceneConditions keys {sorted(unknown)}; valid keys: {', '.join(sorted(names))}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if hasattr(v, "tolist"):
                v = v.tolist()  # numpy scalar / array
            # catalog property columns are list-valued: unwrap one-element lists
            if k == "table_rgba":
                if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], (list, tuple)):
                    v = v[0]
                v = tuple(float(c) for c in v)
                kw[k] = v
                continue
            if isinstance(v, (list, tuple)):
                if len(v) != 1:
                    raise ValueError(f"SceneConditions.{k} must be a single value, got {v!r}")
                v = v[0]
            if k == "distractors":
                v = int(v)
            elif k in ("region", "lighting", "table"):
                v = str(v)
            else:
                v = float(v)
            kw[k] = v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of JSON-able values (``table_rgba`` as a list of 4 floats)."""
        out = dataclasses.asdict(self)
        out["table_rgba"] = list(self.table_rgba)
        return out

    def replace(self, **changes: Any) -> SceneConditions:
        """Copy with changes; changing a preset name (region / lighting / table) without
        its values takes the preset's values: ``c.replace(lighting="dim")``."""
        groups = {
            "region": ("x_min", "x_max", "y_min", "y_max"),
            "lighting": ("light_scale", "ambient"),
            "table": ("table_rgba",),
        }
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name_field, value_fields in groups.items():
            if name_field in changes and not any(f in changes for f in value_fields):
                if str(changes[name_field]).strip().lower() != "custom":
                    changes.update({f: defaults[f] for f in value_fields})
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ labels
    @property
    def region_bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in metres."""
        return (self.x_min, self.x_max, self.y_min, self.y_max)

    @property
    def region_label(self) -> str:
        """Readable region label, e.g. ``"right (x 0.1..0.2, y 0.4..0.6)"``."""
        bounds = f"x {_fmt(self.x_min)}..{_fmt(self.x_max)}, y {_fmt(self.y_min)}..{_fmt(self.y_max)}"
        return f"{self.region} ({bounds})"

    @property
    def label(self) -> str:
        """Short readable label of every non-default condition (``"default"`` if none)."""
        parts = []
        if self.region != "default" or self.region_bounds != REGIONS["default"]:
            parts.append(f"region={self.region_label}")
        if (self.yaw_min, self.yaw_max) != (0.0, 0.0):
            parts.append(f"yaw={_fmt(self.yaw_min)}..{_fmt(self.yaw_max)}deg")
        if self.lighting != "normal" or (self.light_scale, self.ambient) != LIGHTINGS["normal"]:
            parts.append(f"lighting={self.lighting}")
        if self.table != "dark" or self.table_rgba != TABLES["dark"]:
            parts.append(f"table={self.table}")
        if self.distractors:
            parts.append(f"distractors={self.distractors}")
        return " ".join(parts) or "default"

    def contains(self, x: float, y: float) -> bool:
        """Whether (x, y) lies in the region (inclusive)."""
        return self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max
