"""`InsertionSim`: gym-aloha's bimanual insertion (``AlohaInsertion-v0``: peg and socket, both arms)
as a seeded, condition-aware simulator with :class:`~roboloop.envs.aloha.AlohaSim`'s surface.

Same model family, action mapping (gym-aloha's ``InsertionTask.before_step``), 10 physics substeps
of 2 ms per 50 Hz control step and contact reward (0-4) as gym-aloha; the peg and socket poses come
from our own sampler over :class:`~roboloop.envs.insertion.conditions.InsertionConditions`. Only the
cameras asked for are rendered, only on :meth:`InsertionSim.render`; physics only with ``cameras=()``.

Conventions as AlohaSim: 14 joint values (left arm, then right; gripper 0 closed .. 1 open), poses
xyz (m) + quaternion wxyz; same seed + conditions (+ actions) -> bit-identical trajectories.
The peg is the 7 qpos values after the arms, the socket the last 7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.envs.aloha.env import (
    ARM_LINKS,
    CAMERAS,
    GRASP_OFFSET,
    apply_appearance,
    body_boxes,
    keep_for_exit,
    mujoco_modules,
    new_renderer,
)

from .conditions import InsertionConditions

__all__ = ["InsertionSim", "OBJECT_START_Z", "PEG_HALF_LENGTH", "PIN_HALF_LENGTH", "REST_Z", "SOCKET_GEOMS", "SOCKET_HALF_LENGTH", "sample_poses"]

OBJECT_START_Z = 0.05
"""gym-aloha drops both objects from 5 cm; the peg settles at z 0.01, the socket at 0.022."""
REST_Z = {"peg": 0.010, "socket": 0.022}
"""Where each object's centre rests on the table (m), measured after it settles."""
PEG_HALF_LENGTH = 0.06
"""Half the peg's length (m); the socket's tube is as long, its pin 8 cm."""
SOCKET_HALF_LENGTH = 0.06
PIN_HALF_LENGTH = 0.04
SOCKET_GEOMS = ("socket-1", "socket-2", "socket-3", "socket-4")
PEG_QPOS = slice(16, 23)
SOCKET_QPOS = slice(23, 30)


def _yaw_quat(deg: float) -> list[float]:
    half = math.radians(deg) / 2
    return [math.cos(half), 0.0, 0.0, math.sin(half)]


def sample_poses(seed: int, conditions: InsertionConditions) -> tuple[np.ndarray, np.ndarray]:
    """(peg pose, socket pose) for `seed` under `conditions`: x, y uniform in each region, z = 0.05,
    yaw uniform in the yaw range (independently for each). ``numpy.random.Generator(PCG64(seed))``."""
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    poses = []
    for x0, x1, y0, y1 in (conditions.peg_bounds, conditions.socket_bounds):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        yaw = rng.uniform(*conditions.yaw_range)
        poses.append(np.array([x, y, OBJECT_START_Z, *_yaw_quat(yaw)]))
    return poses[0], poses[1]


class InsertionSim:
    """ALOHA bimanual insertion simulator with scene conditions.

    ``InsertionSim(cameras=("top",), width=320, height=240)``; ``reset(seed, conditions)``;
    ``step(action[14])`` -> gym-aloha's reward (0-4). ``max_steps`` = 400 (8 s: two grasps, a lift,
    the meeting and the insertion). State: ``joint_positions()``, ``joint_velocities()``,
    ``joint_names``, ``peg_pose()``, ``socket_pose()`` (and ``peg_start_pose``/``socket_start_pose``),
    ``object_poses()``, ``link_poses()``, ``static_poses()``, ``geometry()``, ``contacts()``,
    ``object_contacts()``, ``gripper_positions()``; ``physics`` the dm_control ``Physics``.
    """

    task = "insertion"
    control_hz: int = schema.CONTROL_HZ
    dt: float = 0.02
    max_steps: int = 400
    n_substeps: int = 10

    def __init__(self, cameras: Sequence[str] = ("top",), width: int = 320, height: int = 240) -> None:
        cameras = tuple(cameras)
        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown camera(s) {bad}; valid cameras: {', '.join(CAMERAS)}")
        max_w, max_h = schema.MAX_CAMERA_SIZE
        if cameras and not (0 < width <= max_w and 0 < height <= max_h):
            raise ValueError(f"image size must be within {max_w}x{max_h}, got {width}x{height}")
        self.cameras, self.width, self.height = cameras, int(width), int(height)
        m = mujoco_modules()
        self._mj, self._ga_sim, self._constants = m["mujoco"], m["sim"], m["constants"]
        self._task = self._ga_sim.InsertionTask()
        xml = self._constants.ASSETS_DIR / "bimanual_viperx_insertion.xml"
        self._physics = m["dm_mujoco"].Physics.from_xml_path(str(xml))
        model = self._model = self._physics.model.ptr
        self._data = self._physics.data.ptr
        model.vis.quality.offsamples = 0  # before the first render: no antialiasing, no shadows
        model.light_castshadow[:] = 0
        self._base_diffuse, self._base_specular = model.light_diffuse.copy(), model.light_specular.copy()
        self._renderer = None
        self._conditions: InsertionConditions | None = None
        self._seed: int | None = None
        self._step = 0
        self._contact_cache: list[tuple[int, int]] | None = None
        self._geometry_cache: dict[str, dict] | None = None
        self._lookup_ids()
        keep_for_exit(self)

    def _lookup_ids(self) -> None:
        mj, model = self._mj, self._model
        G, B = mj.mjtObj.mjOBJ_GEOM, mj.mjtObj.mjOBJ_BODY
        gid = lambda n: mj.mj_name2id(model, G, n)  # noqa: E731
        bid = lambda n: mj.mj_name2id(model, B, n)  # noqa: E731
        self._table_geom = gid("table")
        self._peg_geoms = {gid("red_peg")}
        self._socket_geoms = {gid(n) for n in SOCKET_GEOMS}
        self._pin_geom = gid("pin")
        self._finger_geoms = {
            (arm, side): gid(f"vx300s_{arm}/10_{side}_gripper_finger") for arm in ("left", "right") for side in ("left", "right")
        }
        self._link_bodies = {"left/base": bid("vx300s_left"), "right/base": bid("vx300s_right")}
        for arm in ("left", "right"):
            for link in ARM_LINKS:
                self._link_bodies[f"{arm}/{link}"] = bid(f"vx300s_{arm}/{link}")
        self._static_bodies = {"table": bid("table")}
        self._object_bodies = {"peg": bid("peg"), "socket": bid("socket")}
        self._gripper_body = {arm: bid(f"vx300s_{arm}/gripper_link") for arm in ("left", "right")}

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int, conditions: InsertionConditions | None = None) -> None:
        """Arms at gym-aloha's start pose, peg and socket at the poses sampled from `conditions` with
        `seed` (:func:`sample_poses`), lighting and table colour applied. Deterministic."""
        c = conditions if conditions is not None else InsertionConditions()
        apply_appearance(self._model, (self._base_diffuse, self._base_specular), c, self._table_geom)
        peg, socket = sample_poses(seed, c)
        self._ga_sim.BOX_POSE[0] = np.concatenate([peg, socket])  # read by InsertionTask.initialize_episode
        with self._physics.reset_context():
            self._task.initialize_episode(self._physics)
        self._conditions, self._seed, self._step = c, int(seed), 0
        self._start = (peg, socket)
        self._contact_cache = None

    def step(self, action: np.ndarray) -> float:
        """Apply 14 absolute joint targets for one control step (10 substeps); gym-aloha's reward (0-4)."""
        if self._conditions is None:
            raise RuntimeError("call reset(seed, conditions) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (14,):
            raise ValueError(f"action must have 14 values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        self._task.before_step(a, self._physics)
        self._physics.step(self.n_substeps)
        self._step += 1
        self._contact_cache = None
        return float(self.reward())

    def reward(self) -> int:
        """gym-aloha's insertion reward from geom ids: 1 both grippers touch their object, 2 + neither
        object on the table, 3 peg touches socket off the table, 4 peg touches the pin."""
        c = self.object_contacts()
        r = 0
        if c["socket_left_left_finger"] and c["peg_right_right_finger"]:
            r = 1 if (c["peg_table"] or c["socket_table"]) else 2
        if c["peg_socket"] and not (c["peg_table"] or c["socket_table"]):
            r = 3
        if c["peg_pin"]:
            r = 4
        return r

    # ------------------------------------------------------------------ state
    @property
    def physics(self):
        return self._physics

    @property
    def conditions(self) -> InsertionConditions | None:
        return self._conditions

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def step_count(self) -> int:
        return self._step

    @property
    def time(self) -> float:
        return self._step * self.dt

    @property
    def joint_names(self) -> list[str]:
        return list(self._constants.JOINTS)

    def joint_positions(self) -> np.ndarray:
        return self._task.get_qpos(self._physics)

    def joint_velocities(self) -> np.ndarray:
        return self._task.get_qvel(self._physics)

    def peg_pose(self) -> np.ndarray:
        """Peg pose: xyz (m) + quaternion wxyz."""
        return self._data.qpos[PEG_QPOS].copy()

    def socket_pose(self) -> np.ndarray:
        """Socket pose: xyz (m) + quaternion wxyz."""
        return self._data.qpos[SOCKET_QPOS].copy()

    def object_poses(self) -> dict[str, np.ndarray]:
        return {"peg": self.peg_pose(), "socket": self.socket_pose()}

    @property
    def peg_start_pose(self) -> np.ndarray:
        return self._start[0].copy()

    @property
    def socket_start_pose(self) -> np.ndarray:
        return self._start[1].copy()

    def state(self) -> dict[str, np.ndarray]:
        """The object state streams, keyed by entity path: ``/state/peg_pose``, ``/state/socket_pose``."""
        return {schema.PEG_POSE: self.peg_pose(), schema.SOCKET_POSE: self.socket_pose()}

    def link_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        xpos, xquat = self._data.xpos, self._data.xquat
        return {n: (xpos[b].copy(), xquat[b].copy()) for n, b in self._link_bodies.items()}

    def static_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        xpos, xquat = self._data.xpos, self._data.xquat
        return {n: (xpos[b].copy(), xquat[b].copy()) for n, b in self._static_bodies.items()}

    def geometry(self) -> dict[str, dict[str, Any]]:
        """Boxes to draw every link, static body, ``peg`` and ``socket`` (see ``AlohaSim.geometry``)."""
        if self._geometry_cache is None:
            self._geometry_cache = body_boxes(self._model, {**self._link_bodies, **self._static_bodies, **self._object_bodies})
        return {k: dict(v) for k, v in self._geometry_cache.items()}

    def gripper_positions(self) -> dict[str, np.ndarray]:
        """World position of each gripper's grasp point (between the finger tips)."""
        d = self._data
        return {
            arm: d.xpos[b] + d.xmat[b].reshape(3, 3) @ GRASP_OFFSET for arm, b in self._gripper_body.items()
        }

    # ------------------------------------------------------------------ contacts
    def _contact_pairs(self) -> list[tuple[int, int]]:
        if self._contact_cache is None:
            n = self._data.ncon
            c = self._data.contact
            self._contact_cache = list(zip(c.geom1[:n].tolist(), c.geom2[:n].tolist())) if n else []
        return self._contact_cache

    def contacts(self) -> list[tuple[str, str]]:
        """Current contacts as (geom name, geom name) pairs."""
        mj, model = self._mj, self._model
        name = lambda g: mj.mj_id2name(model, mj.mjtObj.mjOBJ_GEOM, g) or f"geom{g}"  # noqa: E731
        return [(name(a), name(b)) for a, b in self._contact_pairs()]

    def object_contacts(self) -> dict[str, bool]:
        """What the objects touch now: ``{obj}_{arm}_{side}_finger`` for obj in peg/socket,
        ``peg_table``, ``socket_table``, ``peg_socket`` (a socket wall), ``peg_pin``, ``{obj}_other``
        (any other geom: a robot link)."""
        touching: dict[str, set[int]] = {"peg": set(), "socket": set()}
        groups = {"peg": self._peg_geoms, "socket": self._socket_geoms | {self._pin_geom}}
        for a, b in self._contact_pairs():
            for obj, geoms in groups.items():
                if a in geoms:
                    touching[obj].add(b)
                if b in geoms:
                    touching[obj].add(a)
        out: dict[str, bool] = {}
        fingers = set(self._finger_geoms.values())
        for obj in ("peg", "socket"):
            t = touching[obj]
            for (arm, side), g in self._finger_geoms.items():
                out[f"{obj}_{arm}_{side}_finger"] = g in t
            out[f"{obj}_table"] = self._table_geom in t
            out[f"{obj}_other"] = bool(t - fingers - {self._table_geom} - self._peg_geoms - self._socket_geoms - {self._pin_geom})
        out["peg_socket"] = bool(touching["peg"] & self._socket_geoms)
        out["peg_pin"] = self._pin_geom in touching["peg"]
        return out

    # ------------------------------------------------------------------ rendering
    def render(self, camera: str) -> np.ndarray:
        """Render one of ``self.cameras`` at (height, width): uint8 [H, W, 3]."""
        if camera not in self.cameras:
            raise ValueError(f"camera {camera!r} is not enabled for this InsertionSim; enabled: {', '.join(self.cameras) or '(none)'}")
        if self._renderer is None:
            self._renderer = new_renderer(self._model, self.height, self.width)
        self._renderer.update_scene(self._data, camera=camera)
        return self._renderer.render().copy()

    def render_all(self) -> dict[str, np.ndarray]:
        return {c: self.render(c) for c in self.cameras}

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> InsertionSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
