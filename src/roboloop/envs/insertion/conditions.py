"""Scene conditions of the bimanual insertion task: where the peg and the socket start, their yaw,
lighting and table colour.

World frame as in :mod:`roboloop.envs.aloha.conditions` (arms face each other along x, the left arm
at x = -0.469, the right arm at x = +0.469, table top z = 0). The **right** arm picks the red peg
(a 12 x 2 x 2 cm bar lying along x), the **left** arm the blue socket (a 12 cm square tube along x,
3.6 cm inside, with a 8 cm pin in its middle); both lift them and the peg goes into the socket's
+x opening until it touches the pin.

Start regions, world x/y in metres (x mirrored for the socket, which starts on the left arm's side):

===========  ======================  ======================  ==========================================
label        peg x                   socket x                meaning (y for both)
===========  ======================  ======================  ==========================================
``default``  [0.10, 0.20]            [-0.20, -0.10]          what gym-aloha samples; y [0.40, 0.60]
``near``     [0.10, 0.15]            [-0.15, -0.10]          the half nearer the table centre (alias ``inner``)
``far``      [0.15, 0.20]            [-0.20, -0.15]          the half nearer the object's own arm (alias ``outer``)
``front``    default x               default x               y [0.40, 0.50] (nearer the ``angle`` camera)
``back``     default x               default x               y [0.50, 0.60]
``wide``     [0.05, 0.25]            [-0.25, -0.05]          default grown by 5 cm on every side; y [0.35, 0.65]
===========  ======================  ======================  ==========================================

Yaw (``yaw``, degrees about z, sampled for the peg and the socket independently, uniform):
``none`` = 0 (as gym-aloha), ``small`` = +-15, ``large`` = +-30. Peg and socket are symmetric
under a half turn only, so a larger range would ask the arms to reach round to the far end.

Lighting and table colour are transfer cube's presets (:data:`roboloop.envs.aloha.conditions.LIGHTINGS`,
:data:`~roboloop.envs.aloha.conditions.TABLES`): they change what a camera sees, not the physics.
No distractors: the insertion scene has none.

The vocabulary is :data:`AXES` (axes ``peg_region``, ``socket_region``, ``yaw``, ``lighting``,
``table``); the start state is stored as numbers (:func:`start_state`: ``peg_x``, ``peg_y``,
``peg_yaw_deg``, ``socket_x``, ``socket_y``, ``socket_yaw_deg``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roboloop import schema
from roboloop.envs.aloha.conditions import LIGHTINGS, TABLES
from roboloop.envs.conditions import Axis, Vocabulary

__all__ = [
    "AXES", "CONDITION_AXES", "InsertionConditions", "PEG_REGIONS", "REGION_ALIASES", "SOCKET_REGIONS",
    "START_COLUMNS", "YAWS", "start_state",
]

# label -> (x_min, x_max, y_min, y_max), the peg's; the socket's is mirrored in x
PEG_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "default": (0.10, 0.20, 0.40, 0.60),
    "near": (0.10, 0.15, 0.40, 0.60),
    "far": (0.15, 0.20, 0.40, 0.60),
    "front": (0.10, 0.20, 0.40, 0.50),
    "back": (0.10, 0.20, 0.50, 0.60),
    "wide": (0.05, 0.25, 0.35, 0.65),
}
SOCKET_REGIONS: dict[str, tuple[float, float, float, float]] = {
    name: (-x1, -x0, y0, y1) for name, (x0, x1, y0, y1) in PEG_REGIONS.items()
}
REGION_ALIASES = {"inner": "near", "outer": "far"}
YAWS: dict[str, tuple[float, float]] = {"none": (0.0, 0.0), "small": (-15.0, 15.0), "large": (-30.0, 30.0)}

AXES = Vocabulary((
    Axis("peg_region", tuple(PEG_REGIONS), REGION_ALIASES),
    Axis("socket_region", tuple(SOCKET_REGIONS), REGION_ALIASES),
    Axis("yaw", tuple(YAWS)),
    Axis("lighting", tuple(LIGHTINGS)),
    Axis("table", tuple(TABLES)),
))
"""The insertion task's condition axes: labels, aliases, cell keys (:mod:`roboloop.envs.conditions`)."""
CONDITION_AXES = AXES.names
START_KEYS = ("peg_x", "peg_y", "peg_yaw_deg", "socket_x", "socket_y", "socket_yaw_deg")
START_COLUMNS = tuple(f"{schema.SCENE}.{k}" for k in START_KEYS)
"""Columns holding an episode's sampled start state (m, m, deg for the peg, then the socket)."""


def _yaw_deg(pose: Sequence[float]) -> float:
    return math.degrees(2.0 * math.atan2(float(pose[6]), float(pose[3])))


def start_state(peg_pose: Sequence[float], socket_pose: Sequence[float]) -> dict[str, float]:
    """The start state (``scene`` properties) from the sampled poses (xyz + quaternion wxyz)."""
    values = (peg_pose[0], peg_pose[1], _yaw_deg(peg_pose), socket_pose[0], socket_pose[1], _yaw_deg(socket_pose))
    return {k: float(v) for k, v in zip(START_KEYS, values)}


@dataclass(frozen=True)
class InsertionConditions:
    """Conditions of one insertion episode, by label (every field a canonical label of :data:`AXES`).

    ``InsertionConditions.from_names(peg_region="near", yaw="small")``; ``to_dict()`` is what the
    recorder writes as ``scene`` properties (labels plus the bounds they mean); ``from_dict``
    reads it back.
    """

    peg_region: str = "default"
    socket_region: str = "default"
    yaw: str = "none"
    lighting: str = "normal"
    table: str = "dark"

    def __post_init__(self) -> None:
        for axis in CONDITION_AXES:
            object.__setattr__(self, axis, AXES.canonical(axis, getattr(self, axis)))

    @classmethod
    def from_names(cls, **labels: Any) -> InsertionConditions:
        """From labels (aliases accepted); ValueError naming an unknown axis or label."""
        for axis in labels:
            AXES.axis(axis)
        return cls(**labels)

    @classmethod
    def from_cell(cls, cell: Mapping[str, Any]) -> InsertionConditions:
        """From a (canonical or not) cell: axes it does not name keep their defaults."""
        return cls.from_names(**dict(cell))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InsertionConditions:
        """Inverse of :meth:`to_dict` (derived numbers are ignored; catalog one-element lists unwrapped)."""
        kw = {}
        for axis in CONDITION_AXES:
            if axis in d:
                v = d[axis]
                kw[axis] = v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Labels plus what they mean: region bounds, yaw range, light scale, ambient, table rgba."""
        out: dict[str, Any] = dataclasses.asdict(self)
        for obj, bounds in (("peg", self.peg_bounds), ("socket", self.socket_bounds)):
            out.update(dict(zip((f"{obj}_x_min", f"{obj}_x_max", f"{obj}_y_min", f"{obj}_y_max"), bounds)))
        out["yaw_min"], out["yaw_max"] = self.yaw_range
        out["light_scale"], out["ambient"] = self.light
        out["table_rgba"] = list(self.table_rgba)
        return out

    @property
    def peg_bounds(self) -> tuple[float, float, float, float]:
        return PEG_REGIONS[self.peg_region]

    @property
    def socket_bounds(self) -> tuple[float, float, float, float]:
        return SOCKET_REGIONS[self.socket_region]

    @property
    def yaw_range(self) -> tuple[float, float]:
        return YAWS[self.yaw]

    @property
    def light(self) -> tuple[float, float]:
        """(light_scale, ambient) of the lighting preset."""
        return LIGHTINGS[self.lighting]

    @property
    def light_scale(self) -> float:
        return self.light[0]

    @property
    def ambient(self) -> float:
        return self.light[1]

    @property
    def table_rgba(self) -> tuple[float, float, float, float]:
        return TABLES[self.table]

    @property
    def cell(self) -> dict[str, str]:
        """Every axis and its label."""
        return {axis: getattr(self, axis) for axis in CONDITION_AXES}

    @property
    def label(self) -> str:
        """Readable label of every non-default condition (``"default"`` if none)."""
        default = InsertionConditions()
        parts = [f"{a}={getattr(self, a)}" for a in CONDITION_AXES if getattr(self, a) != getattr(default, a)]
        return " ".join(parts) or "default"
