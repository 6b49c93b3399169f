"""`AlohaSim`: the ALOHA bimanual TransferCube task (gym-aloha 0.1.5) as a fast,
seeded, condition-aware simulator.

We use gym-aloha's model (XML assets), its task class (action mapping, episode
initialisation, the 0-4 contact reward) and its MuJoCo physics via dm_control,
but step the physics ourselves instead of going through ``gym.Env``/
``dm_control.rl.control.Environment``: those render three 640x480 cameras on every
step (~5 steps/s). Here only the cameras you ask for are rendered, at your size,
with antialiasing and shadows off, and only when you call :meth:`AlohaSim.render`.

Physics is identical to ``gym_aloha/AlohaTransferCube-v0`` (same model, same
``before_step`` action mapping, 10 physics substeps of 2 ms per 50 Hz control step),
except the cube pose comes from our own seeded sampler over
:class:`~roboloop.envs.aloha.conditions.SceneConditions` ``region``/``yaw``.

Conventions
-----------
* ``joint_positions()`` / actions: 14 values, left arm then right arm, each
  ``waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate`` (rad, absolute)
  then the gripper (normalised: 0 closed .. 1 open) — gym-aloha's ``agent_pos``.
* Poses: position xyz (m, world frame) and quaternion **wxyz** (MuJoCo order).
* Determinism: same ``seed`` + same ``conditions`` (+ same action sequence) gives
  bit-identical joint trajectories and images, in any process.

``MUJOCO_GL`` defaults to ``egl`` (headless) and is set when this module is
imported; MuJoCo, dm_control and gym-aloha are imported lazily on first use.
"""

from __future__ import annotations

import os
import sys
import warnings

if "MUJOCO_GL" not in os.environ and "mujoco" in sys.modules:
    warnings.warn(
        "mujoco was imported before roboloop.envs.aloha without MUJOCO_GL set, so headless (EGL) "
        "rendering may be unavailable; import roboloop.envs.aloha first or set MUJOCO_GL=egl",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("MUJOCO_GL", "egl")

import atexit
import math
import weakref
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from roboloop import schema
from roboloop.errors import RoboloopError

from .conditions import DISTRACTOR_LAYOUT, SceneConditions

__all__ = [
    "AlohaSim", "BimanualSim", "UnstableSimulation", "TASKS", "CAMERAS", "CUBE_HALF_SIZE", "ARM_LINKS", "GRASP_OFFSET",
    "apply_appearance", "body_boxes", "keep_for_exit", "mujoco_modules", "new_renderer", "prepare_for_rendering", "quat_to_mat",
]

TASKS = ("transfer_cube",)
CAMERAS = schema.CAMERAS
CUBE_HALF_SIZE = 0.02
CUBE_START_Z = 0.05  # gym-aloha drops the cube from 5 cm; it settles near z = 0.02

ARM_LINKS = (
    "shoulder_link",
    "upper_arm_link",
    "upper_forearm_link",
    "lower_forearm_link",
    "wrist_link",
    "gripper_link",
    "gripper_prop_link",
    "left_finger_link",
    "right_finger_link",
)

_LAZY: dict[str, Any] = {}
_LIVE: weakref.WeakSet[BimanualSim] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_all() -> None:
    # free GL contexts before interpreter teardown (EGL errors otherwise)
    for sim in list(_LIVE):
        try:
            sim.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def mujoco_modules() -> dict[str, Any]:
    """Import MuJoCo / dm_control / gym-aloha once, after MUJOCO_GL is set: ``{"mujoco", "dm_mujoco",
    "dm_wrapper", "constants", "sim"}`` (``sim`` is gym-aloha's task module)."""
    if not _LAZY:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco
        from dm_control import mujoco as dm_mujoco
        from dm_control.mujoco import wrapper as dm_wrapper
        from gym_aloha import constants as ga_constants
        from gym_aloha.tasks import sim as ga_sim

        _LAZY.update(mujoco=mujoco, dm_mujoco=dm_mujoco, dm_wrapper=dm_wrapper, constants=ga_constants, sim=ga_sim)
    return _LAZY


def keep_for_exit(sim) -> None:
    """Close `sim`'s GL contexts (its ``close()``) at interpreter exit, before EGL is torn down."""
    _LIVE.add(sim)


def new_renderer(model, height: int, width: int):
    """A ``mujoco.Renderer`` for `model`; the first one registers the exit hook that closes every
    simulator kept by :func:`keep_for_exit` (after MuJoCo's own EGL hook, so it runs before it)."""
    global _ATEXIT_REGISTERED
    renderer = mujoco_modules()["mujoco"].Renderer(model, height, width)
    if not _ATEXIT_REGISTERED:
        atexit.register(_close_all)
        _ATEXIT_REGISTERED = True
    return renderer


def apply_appearance(model, base_lights: tuple[np.ndarray, np.ndarray], conditions, table_geom: int) -> None:
    """Set lighting and table colour of `model` from `conditions` (``light_scale``, ``ambient``,
    ``table_rgba``): every light's diffuse and specular colour = its base (``base_lights``, the model's
    own, copied before any change) times ``light_scale``; the headlight's ambient; the table geom's rgba."""
    base_diffuse, base_specular = base_lights
    model.light_diffuse[:] = base_diffuse * conditions.light_scale
    model.light_specular[:] = base_specular * conditions.light_scale
    model.vis.headlight.ambient[:] = conditions.ambient
    model.geom_rgba[table_geom] = conditions.table_rgba


def body_boxes(model, bodies: dict[str, int]) -> dict[str, dict[str, Any]]:
    """``{name: {"shape": "box", "half_size", "center", "rgba"}}`` for body ids `bodies`: the body-frame
    AABB of each body's geoms (mesh vertices for meshes) and its first geom's colour; bodies without
    geoms are left out."""
    mj = mujoco_modules()["mujoco"]
    out: dict[str, dict[str, Any]] = {}
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    for name, b in bodies.items():
        corners = []
        rgba = None
        for g in np.flatnonzero(model.geom_bodyid == b):
            if model.geom_type[g] == mj.mjtGeom.mjGEOM_MESH:
                mid = model.geom_dataid[g]
                adr, n = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
                local = model.mesh_vert[adr : adr + n].astype(float)
            else:
                local = model.geom_aabb[g, :3] + signs * model.geom_aabb[g, 3:]
            R = quat_to_mat(model.geom_quat[g])
            corners.append(local @ R.T + model.geom_pos[g])
            if rgba is None:
                rgba = model.geom_rgba[g].copy()
        if not corners:
            continue
        pts = np.concatenate(corners)
        lo, hi = pts.min(0), pts.max(0)
        out[name] = {
            "shape": "box",
            "half_size": ((hi - lo) / 2).tolist(),
            "center": ((hi + lo) / 2).tolist(),
            "rgba": [float(v) for v in rgba],
        }
    return out


def sample_cube_pose(seed: int, conditions: SceneConditions) -> np.ndarray:
    """The cube's start pose (xyz + quat wxyz) for ``seed`` under ``conditions``:
    x, y uniform in the region, z = 0.05 (as gym-aloha), yaw uniform in
    [yaw_min, yaw_max] degrees. Uses its own ``numpy.random.Generator(PCG64(seed))``."""
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    x = rng.uniform(conditions.x_min, conditions.x_max)
    y = rng.uniform(conditions.y_min, conditions.y_max)
    yaw = math.radians(rng.uniform(conditions.yaw_min, conditions.yaw_max))
    return np.array([x, y, CUBE_START_Z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3x3) of a unit quaternion [w, x, y, z]."""
    import mujoco

    R = np.zeros(9)
    mujoco.mju_quat2Mat(R, np.asarray(q, np.float64))
    return R.reshape(3, 3)


def prepare_for_rendering(model) -> tuple[np.ndarray, np.ndarray]:
    """Turn off antialiasing and shadows on `model` (must precede its first render) and return its
    own light colours ``(diffuse, specular)``, copied before any condition changes them."""
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    return model.light_diffuse.copy(), model.light_specular.copy()


class UnstableSimulation(RoboloopError, RuntimeError):
    """The physics went unstable during control step `step` (MuJoCo's PhysicsError, e.g. huge commanded
    accelerations, or a non-finite state): the episode ends there as a failure of kind ``unstable``."""

    def __init__(self, step: int, detail: str) -> None:
        super().__init__(f"the simulation went unstable at step {step}: {detail}")
        self.step = step


class BimanualSim:
    """What every ALOHA bimanual simulator here shares (:class:`AlohaSim`,
    :class:`~roboloop.envs.insertion.InsertionSim`): camera checks, the step plumbing (gym-aloha's
    ``before_step`` action mapping, ``n_substeps`` physics substeps per 50 Hz control step), the arm
    state, link/static poses, body geometry, gripper grasp points, contacts, rendering and closing.

    A subclass builds its model and calls :meth:`_use_model`, then :meth:`_lookup_arm_ids`; it
    implements ``reset`` and ``reward`` and lists its movable objects in :meth:`_object_bodies`.
    """

    control_hz: int = schema.CONTROL_HZ
    dt: float = 0.02
    max_steps: int = 300
    n_substeps: int = 10

    def __init__(self, ga_task: str, cameras: Sequence[str], width: int, height: int) -> None:
        """`ga_task`: the name of gym-aloha's task class (in ``gym_aloha.tasks.sim``)."""
        cameras = tuple(cameras)
        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown camera(s) {bad}; valid cameras: {', '.join(CAMERAS)}")
        max_w, max_h = schema.MAX_CAMERA_SIZE
        if cameras and not (0 < width <= max_w and 0 < height <= max_h):
            raise ValueError(f"image size must be within {max_w}x{max_h} (the model's offscreen buffer), got {width}x{height}")
        self.cameras: tuple[str, ...] = cameras
        self.width = int(width)
        self.height = int(height)
        m = mujoco_modules()
        self._mj = m["mujoco"]
        self._ga_sim = m["sim"]
        self._constants = m["constants"]
        self._task = getattr(self._ga_sim, ga_task)()
        self._physics = None
        self._renderer = None
        self._conditions: Any = None
        self._seed: int | None = None
        self._step = 0
        self._contact_cache: list[tuple[int, int]] | None = None
        self._geometry_cache: dict[str, dict] | None = None

    # ------------------------------------------------------------------ model
    def _use_model(self, physics, renderer, base_lights: tuple[np.ndarray, np.ndarray]) -> None:
        """Make `physics` (with its `renderer`, None until the first render, and its own light colours)
        the current model."""
        self._physics = physics
        self._renderer = renderer
        self._model = physics.model.ptr
        self._data = physics.data.ptr
        self._geometry_cache = None
        self._base_light_diffuse, self._base_light_specular = base_lights

    def _lookup_arm_ids(self) -> None:
        """Ids of the table, the fingers, the arm links and the gripper links in the current model."""
        mj, model = self._mj, self._model
        G, B = mj.mjtObj.mjOBJ_GEOM, mj.mjtObj.mjOBJ_BODY
        gid = lambda n: mj.mj_name2id(model, G, n)  # noqa: E731
        bid = lambda n: mj.mj_name2id(model, B, n)  # noqa: E731
        self._table_geom = gid("table")
        self._finger_geoms = {
            (arm, side): gid(f"vx300s_{arm}/10_{side}_gripper_finger") for arm in ("left", "right") for side in ("left", "right")
        }
        self._link_bodies = {"left/base": bid("vx300s_left"), "right/base": bid("vx300s_right")}
        for arm in ("left", "right"):
            for link in ARM_LINKS:
                self._link_bodies[f"{arm}/{link}"] = bid(f"vx300s_{arm}/{link}")
        self._static_bodies = {"table": bid("table")}
        # gripper "site": midpoint between the finger pads, in the gripper_link frame
        self._gripper_body = {arm: bid(f"vx300s_{arm}/gripper_link") for arm in ("left", "right")}

    def _object_bodies(self) -> dict[str, int]:
        """The task's movable objects drawn by :meth:`geometry`: ``{name: body id}``."""
        return {}

    def _apply_visuals(self, conditions) -> None:
        """Lighting and table colour from `conditions` (see :func:`apply_appearance`)."""
        apply_appearance(self._model, (self._base_light_diffuse, self._base_light_specular), conditions, self._table_geom)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int, conditions=None) -> None:
        raise NotImplementedError

    def reward(self) -> int:
        raise NotImplementedError

    def step(self, action: np.ndarray) -> float:
        """Apply 14 absolute joint targets (gripper 0 closed .. 1 open) for one 50 Hz
        control step (10 physics substeps) and return gym-aloha's reward (0-4)."""
        if self._conditions is None:
            raise RuntimeError("call reset(seed, conditions) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (14,):
            raise ValueError(f"action must have 14 values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        self._task.before_step(a, self._physics)
        from dm_control.rl.control import PhysicsError  # already imported with the model (lazy, see above)

        try:
            self._physics.step(self.n_substeps)
        except PhysicsError as exc:
            raise UnstableSimulation(self._step, str(exc)) from exc
        if not np.all(np.isfinite(self._physics.data.qpos)):
            raise UnstableSimulation(self._step, "non-finite joint positions after the step")
        self._step += 1
        self._contact_cache = None
        return float(self.reward())

    # ------------------------------------------------------------------ state
    @property
    def physics(self):
        return self._physics

    @property
    def conditions(self):
        return self._conditions

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def step_count(self) -> int:
        """Control steps taken since reset."""
        return self._step

    @property
    def time(self) -> float:
        """Seconds since reset (step_count * dt)."""
        return self._step * self.dt

    @property
    def joint_names(self) -> list[str]:
        """The 14 joint names (gym-aloha's ``JOINTS``), e.g. ``left_arm_waist`` .. ``right_arm_gripper``."""
        return list(self._constants.JOINTS)

    def joint_positions(self) -> np.ndarray:
        """14 joint positions (gym-aloha ``agent_pos``; grippers normalised 0 closed .. 1 open)."""
        return self._task.get_qpos(self._physics)

    def joint_velocities(self) -> np.ndarray:
        """14 joint velocities (gym-aloha ``qvel`` observation; gripper normalised)."""
        return self._task.get_qvel(self._physics)

    def link_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World poses ``{name: (pos[3], quat_wxyz[4])}`` of the robot bodies worth drawing:
        ``left/base``, ``left/shoulder_link`` ... ``left/gripper_link``,
        ``left/left_finger_link``, ``left/right_finger_link`` and the same for ``right/``."""
        xpos, xquat = self._data.xpos, self._data.xquat
        return {n: (xpos[b].copy(), xquat[b].copy()) for n, b in self._link_bodies.items()}

    def static_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World poses of the static scene bodies: ``table`` (and ``distractor_<i>`` in transfer cube)."""
        xpos, xquat = self._data.xpos, self._data.xquat
        return {n: (xpos[b].copy(), xquat[b].copy()) for n, b in self._static_bodies.items()}

    def geometry(self) -> dict[str, dict[str, Any]]:
        """Simple shapes to draw every body of :meth:`link_poses`, :meth:`static_poses`
        and the task's objects (``cube``; ``peg``, ``socket``): ``{name: {"shape": "box",
        "half_size": [3], "center": [3], "rgba": [4]}}``. ``center`` and ``half_size`` are in the
        body frame: draw a box of those half sizes centred at ``center`` and rotated with the body's
        pose. Boxes are the body-frame AABB of the body's geoms (mesh vertices for meshes)."""
        if self._geometry_cache is None:
            self._geometry_cache = body_boxes(self._model, {**self._link_bodies, **self._static_bodies, **self._object_bodies()})
        return {k: dict(v) for k, v in self._geometry_cache.items()}

    def gripper_positions(self) -> dict[str, np.ndarray]:
        """World position of each gripper's grasp point (between the finger tips):
        ``{"left": xyz, "right": xyz}``."""
        d = self._data
        return {arm: d.xpos[b] + d.xmat[b].reshape(3, 3) @ GRASP_OFFSET for arm, b in self._gripper_body.items()}

    # ------------------------------------------------------------------ contacts
    def _contact_pairs(self) -> list[tuple[int, int]]:
        if self._contact_cache is None:
            n = self._data.ncon
            c = self._data.contact
            self._contact_cache = list(zip(c.geom1[:n].tolist(), c.geom2[:n].tolist())) if n else []
        return self._contact_cache

    def contacts(self) -> list[tuple[str, str]]:
        """Current contacts as (geom name, geom name) pairs (MuJoCo's order)."""
        mj, model = self._mj, self._model
        name = lambda g: mj.mj_id2name(model, mj.mjtObj.mjOBJ_GEOM, g) or f"geom{g}"  # noqa: E731
        return [(name(a), name(b)) for a, b in self._contact_pairs()]

    # ------------------------------------------------------------------ rendering
    def render(self, camera: str) -> np.ndarray:
        """Render one of ``self.cameras`` at (height, width): uint8 array [H, W, 3]."""
        if camera not in self.cameras:
            raise ValueError(
                f"camera {camera!r} is not enabled for this {type(self).__name__}; enabled: {', '.join(self.cameras) or '(none)'}"
            )
        if self._renderer is None:
            self._renderer = new_renderer(self._model, self.height, self.width)
        self._renderer.update_scene(self._data, camera=camera)
        return self._renderer.render().copy()

    def render_all(self) -> dict[str, np.ndarray]:
        """``{camera: image}`` for every enabled camera."""
        return {c: self.render(c) for c in self.cameras}

    def close(self) -> None:
        """Free the GL contexts (the simulator stays usable; rendering recreates them)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AlohaSim(BimanualSim):
    """ALOHA bimanual simulator (gym-aloha TransferCube) with scene conditions.

    ``AlohaSim(task="transfer_cube", cameras=("top",), width=320, height=240)``

    * ``cameras``: the only cameras :meth:`render` may render (any of :data:`CAMERAS`),
      all at ``width`` x ``height``; ``()`` means physics only (no GL context at all).
    * ``reset(seed, conditions)`` -> None; ``step(action[14])`` -> reward (0-4, gym-aloha's).
    * ``control_hz`` = 50, ``dt`` = 0.02 s, ``max_steps`` = 300 (an episode's length;
      ``step`` does not stop you from going further).
    * State: ``joint_positions()``, ``joint_velocities()``, ``joint_names``,
      ``cube_pose()``, ``link_poses()``, ``static_poses()``, ``geometry()``,
      ``contacts()``, ``cube_contacts()``, ``gripper_positions()``.
    * ``physics`` is the dm_control ``Physics`` (``physics.model.ptr`` / ``physics.data.ptr``
      are the raw ``mujoco.MjModel`` / ``MjData``), for code that needs more.
    """

    max_steps: int = 300

    def __init__(
        self,
        task: str = "transfer_cube",
        cameras: Sequence[str] = ("top",),
        width: int = 320,
        height: int = 240,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        super().__init__("TransferCubeTask", cameras, width, height)
        self.task = task
        self._models: dict[int, tuple] = {}  # parked models by distractor count
        self._n_distractors = -1
        self._build(0)
        keep_for_exit(self)

    # ------------------------------------------------------------------ model
    def _build(self, n_distractors: int) -> None:
        """Switch to the model with ``n_distractors`` static distractors (compiled once
        per count and kept, with its renderer, so alternating conditions stay cheap)."""
        mj = self._mj
        if self._physics is not None:  # park the current model and its renderer
            self._models[self._n_distractors] = (
                self._physics, self._renderer, self._base_light_diffuse, self._base_light_specular
            )
        if n_distractors in self._models:
            physics, renderer, base_diffuse, base_specular = self._models.pop(n_distractors)
        else:
            xml = self._constants.ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"
            dm_mujoco, dm_wrapper = _LAZY["dm_mujoco"], _LAZY["dm_wrapper"]
            if n_distractors == 0:
                physics = dm_mujoco.Physics.from_xml_path(str(xml))
            else:
                spec = mj.MjSpec.from_file(str(xml))
                shapes = {
                    "box": mj.mjtGeom.mjGEOM_BOX,
                    "cylinder": mj.mjtGeom.mjGEOM_CYLINDER,
                    "sphere": mj.mjtGeom.mjGEOM_SPHERE,
                }
                for name, shape, pos, half, rgba in DISTRACTOR_LAYOUT[:n_distractors]:
                    body = spec.worldbody.add_body(name=name, pos=list(pos))
                    size = list(half) + [0.0] * (3 - len(half))
                    body.add_geom(name=name, type=shapes[shape], size=size, rgba=list(rgba))
                physics = dm_mujoco.Physics.from_model(dm_wrapper.MjModel(spec.compile()))
            renderer = None
            base_diffuse, base_specular = prepare_for_rendering(physics.model.ptr)
        self._use_model(physics, renderer, (base_diffuse, base_specular))
        self._n_distractors = n_distractors
        self._lookup_arm_ids()
        model = self._model
        G, B = mj.mjtObj.mjOBJ_GEOM, mj.mjtObj.mjOBJ_BODY
        self._cube_geom = mj.mj_name2id(model, G, "red_box")
        self._cube_body = mj.mj_name2id(model, B, "box")
        for name, *_ in DISTRACTOR_LAYOUT[:n_distractors]:
            self._static_bodies[name] = mj.mj_name2id(model, B, name)

    def _object_bodies(self) -> dict[str, int]:
        return {"cube": self._cube_body}

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int, conditions: SceneConditions | None = None) -> None:
        """Start an episode: arms at gym-aloha's start pose, cube at the pose sampled
        from ``conditions`` with ``seed`` (see :func:`sample_cube_pose`), lighting /
        table colour / distractors applied. Deterministic in (seed, conditions)."""
        conditions = conditions if conditions is not None else SceneConditions()
        if conditions.distractors != self._n_distractors:
            self._build(conditions.distractors)
        self._apply_visuals(conditions)
        pose = sample_cube_pose(seed, conditions)
        ga_sim = self._ga_sim
        physics = self._physics
        ga_sim.BOX_POSE[0] = pose  # process-global read by TransferCubeTask.initialize_episode
        with physics.reset_context():  # mj_resetData, then mj_forward on exit
            self._task.initialize_episode(physics)
        self._conditions = conditions
        self._seed = int(seed)
        self._start_pose = pose
        self._step = 0
        self._contact_cache = None

    def reward(self) -> int:
        """gym-aloha's TransferCube reward for the current state (same contact rule,
        computed from geom ids): 1 the right arm's ``right`` finger touches the cube,
        2 + no table contact, 3 the left arm's ``left`` finger touches it, 4 + no table."""
        f = self.cube_contacts()
        r = 0
        if f["right_right_finger"]:
            r = 2 if not f["table"] else 1
        if f["left_left_finger"]:
            r = 4 if not f["table"] else 3
        return r

    # ------------------------------------------------------------------ state
    @property
    def conditions(self) -> SceneConditions | None:
        return self._conditions

    def cube_pose(self) -> np.ndarray:
        """Cube pose: xyz (m) + quaternion wxyz (the last 7 qpos values)."""
        return self._data.qpos[-7:].copy()

    @property
    def cube_start_pose(self) -> np.ndarray:
        """The pose the cube was placed at by ``reset`` (before it settles)."""
        return self._start_pose.copy()

    def cube_contacts(self) -> dict[str, bool]:
        """What the cube touches now: ``left_left_finger``, ``left_right_finger``,
        ``right_left_finger``, ``right_right_finger`` (arm_finger), ``table``, ``other``
        (anything else, e.g. another robot link or a distractor)."""
        cube = self._cube_geom
        touching = set()
        for a, b in self._contact_pairs():
            if a == cube:
                touching.add(b)
            elif b == cube:
                touching.add(a)
        out = {f"{arm}_{side}_finger": g in touching for (arm, side), g in self._finger_geoms.items()}
        out["table"] = self._table_geom in touching
        known = set(self._finger_geoms.values()) | {self._table_geom}
        out["other"] = bool(touching - known)
        return out

    # ------------------------------------------------------------------ rendering
    def close(self) -> None:
        """Free the GL contexts, the parked models' too (the simulator stays usable; rendering recreates them)."""
        super().close()
        for n, (physics, renderer, diffuse, specular) in list(self._models.items()):
            if renderer is not None:
                renderer.close()
            self._models[n] = (physics, None, diffuse, specular)


# grasp point in the gripper_link frame: the fingers' inner faces span x in
# [0.064, 0.154] (measured from the finger mesh vertices); 0.11 is mid-finger.
GRASP_OFFSET = np.array([0.11, 0.0, 0.0])
