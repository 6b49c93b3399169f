"""Conventions every stage shares: entity paths, timelines, layers, property names, dataset names.

This module is the single source of those names. It does no I/O.
"""

from __future__ import annotations

import re
import uuid

# --- timelines ---------------------------------------------------------------------------
TIMELINE = "time"
"""Duration since episode start; every stream of every episode is logged on it."""

CONTROL_HZ = 50
"""Control rate of the ALOHA arms: joint state, joint targets and reward are logged at it."""

CAMERA_HZ = 25
"""Default rate at which camera frames are recorded."""

# --- cameras -----------------------------------------------------------------------------
CAMERAS = ("top", "angle", "front_close", "left_wrist", "right_wrist", "left_pillar", "right_pillar")
"""Cameras of the ALOHA MuJoCo model that can be recorded."""
MAX_CAMERA_SIZE = (640, 480)
"""Largest recordable camera size (width, height): the model's offscreen buffer."""

# --- entity paths ------------------------------------------------------------------------
JOINT_POSITIONS = "/robot/joint_positions"
"""14 measured joint positions (6 joints + gripper per arm, left arm first)."""
JOINT_TARGETS = "/robot/joint_targets"
"""14 commanded absolute joint targets: the action."""
REWARD = "/reward"
CONTROL_SOURCE = "/control/source"
"""Corrective episodes: who was in control at each control step, one scalar (`SOURCE_POLICY` or `SOURCE_EXPERT`)."""
CONTROL_EXPERT_ACTION = "/control/expert_action"
"""Corrective episodes: the expert's (or the human's) action at each step it labelled: the training target."""
CONTROL_POLICY_ACTION = "/control/policy_action"
"""Corrective episodes: the policy's action at every step (executed where `/control/source` is 0)."""
SOURCE_POLICY = 0
"""`/control/source` value: the policy's action was executed."""
SOURCE_EXPERT = 1
"""`/control/source` value: the expert's (a person's) action was executed."""
CUBE_POSE = "/state/cube_pose"
"""Cube pose as 7 scalars [x, y, z, qw, qx, qy, qz] at the control rate (for signals and policies)."""
PEG_POSE = "/state/peg_pose"
"""Insertion task: peg pose as 7 scalars [x, y, z, qw, qx, qy, qz] at the control rate."""
SOCKET_POSE = "/state/socket_pose"
"""Insertion task: socket pose as 7 scalars [x, y, z, qw, qx, qy, qz] at the control rate."""
SCENE_ROOT = "/scene"
"""Root of the 3D view: transforms + boxes of the robot links and the cube."""
CUBE_3D = "/scene/cube"
PEG_3D = "/scene/peg"
"""Insertion task: the peg's pose and box in the 3D scene."""
SOCKET_3D = "/scene/socket"
"""Insertion task: the socket's pose and box in the 3D scene."""
ROBOT_LINKS = "/scene/robot"
CAMERA_ROOT = "/cameras"
TASK = "/task"

SCALARS_COMPONENT = "Scalars:scalars"
VIDEO_SAMPLE_COMPONENT = "VideoStream:sample"
VIDEO_KEYFRAME_COMPONENT = "VideoStream:is_keyframe"
ENCODED_IMAGE_COMPONENT = "EncodedImage:blob"


def camera_path(camera: str) -> str:
    """Entity path of one camera's H.264 video stream."""
    return f"{CAMERA_ROOT}/{camera}"


def link_path(link: str) -> str:
    """Entity path of one robot link's pose in the 3D scene."""
    return f"{ROBOT_LINKS}/{link}"


# --- layers ------------------------------------------------------------------------------
BASE_LAYER = "base"
"""The raw recording. Never rewritten."""
SIGNALS_LAYER = "signals"
"""Derived per-episode signals (refine)."""
QUALITY_LAYER = "quality"
"""Quality verdicts (flag / unflag)."""
OUTCOME_LAYER = "outcome"
"""Re-judged or labelled outcomes (`roboloop reoutcome`, `roboloop label`): a property-only layer whose `outcome.*`
values win over the base recording's."""

# --- property groups ---------------------------------------------------------------------
EPISODE = "episode"  # kind, task, seed, policy, software_version and the rest of the provenance
SCENE = "scene"  # every scene condition that was set, plus a region label
OUTCOME = "outcome"  # success, max_reward, success_step, steps, duration
SIGNALS = "signals"  # derived signals, in the signals layer
SIGNAL_VERSIONS = "signal_versions"  # signal name -> version of the function that computed it, in the signals layer
SIGNAL_SKIPS = "signal_skips"  # signal name -> version of the function that raised SkipSignal on the segment (signals layer)
QUALITY = "quality"  # flagged, reason, flagged_at, in the quality layer
RUN = "run"  # training-run metadata, in <dataset>_runs
HIDDEN = "hidden"
"""Ground truth planted for scoring a method (e.g. `hidden.operator` of `collect --operator`): recorded, never read by a stage."""
HIDDEN_OPERATOR = "operator"
"""`hidden.operator`: which demonstrator variant made the episode (`clean`, `sloppy`, `fragile` or `turned`), only with `collect --operator`."""

PROPERTY_PREFIX = "property:"

KIND_DEMO = "demo"
KIND_ROLLOUT = "rollout"
KIND_RUN = "run"
KIND_CORRECTIVE = "corrective"
"""A policy drove (or a person took over from it) and an expert labelled the steps: `collect --corrective`, or a
hardware intervention recorded through `roboloop.record`. Stored with the demonstrations; trains like them."""

# Segment-table columns that Rerun itself provides (not properties).
SEGMENT_ID_COLUMN = "rerun_segment_id"
LAYER_NAMES_COLUMN = "rerun_layer_names"

# Friendly segment-table columns (`Catalog.segment_table`, SQL views, predicates).
SEGMENT_ID = "segment_id"
"""Friendly name of `rerun_segment_id`."""
LAYERS = "layers"
"""Friendly name of `rerun_layer_names` (the layers a segment has)."""

# `quality` group (flag / unflag write it into the quality layer)
QUALITY_FLAGGED = "flagged"  # bool: left out of selections unless asked for
QUALITY_REASON = "reason"  # why it was flagged (or unflagged)
QUALITY_FLAGGED_AT = "flagged_at"  # ISO time of the verdict

# `signals` group (refine computes them into the signals layer; the definitions live in refine/layers.py)
SIGNAL_DURATION_S = "duration_s"
SIGNAL_ARM_ACTIVITY_LEFT = "arm_activity_left"
SIGNAL_ARM_ACTIVITY_RIGHT = "arm_activity_right"
SIGNAL_JERK_MEAN = "jerk_mean"
SIGNAL_JERK_PEAK = "jerk_peak"
SIGNAL_IDLE_FRACTION = "idle_fraction"
SIGNAL_GRIPPER_CLOSES_LEFT = "gripper_closes_left"
SIGNAL_GRIPPER_OPENS_LEFT = "gripper_opens_left"
SIGNAL_GRIPPER_CLOSES_RIGHT = "gripper_closes_right"
SIGNAL_GRIPPER_OPENS_RIGHT = "gripper_opens_right"
SIGNAL_CUBE_HEIGHT_PEAK = "cube_height_peak"
SIGNAL_CUBE_LIFT = "cube_lift"
SIGNAL_SHARPNESS = "sharpness"  # per camera: signals.sharpness_<camera> (refine/images.py)
SIGNAL_VALUE = "value"  # demonstration value in [-1, 1] (analyze/value.py, `roboloop value`): > 0 helps closed-loop success
SIGNAL_VALUE_RUN = "value_run"  # the training run `signals.value` was estimated for
SIGNAL_VALUE_EVAL = "value_eval"  # the evaluation of that run whose rollouts it was estimated from


def property_column(group: str, name: str) -> str:
    """Catalog segment-table column that holds property `group.name`."""
    return f"{PROPERTY_PREFIX}{group}:{name}"


def friendly_name(column: str) -> str | None:
    """`property:scene:region` -> `scene.region`; None for columns that are not properties."""
    if not column.startswith(PROPERTY_PREFIX):
        return None
    rest = column[len(PROPERTY_PREFIX) :]
    group, _, name = rest.partition(":")
    if not name:
        return None
    return f"{group}.{name}"


def friendly_column(group: str, name: str) -> str:
    """Friendly column name of property `group.name` (e.g. `scene.region`)."""
    return f"{group}.{name}"


def column_for_friendly(friendly: str) -> str:
    """`scene.region` -> `property:scene:region`."""
    group, sep, name = friendly.partition(".")
    if not sep or not group or not name:
        raise ValueError(f"property names look like 'group.name' (e.g. scene.lighting), got {friendly!r}")
    return property_column(group, name)


# --- datasets ----------------------------------------------------------------------------
DEFAULT_DATASET = "aloha"
_DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def runs_dataset(dataset: str) -> str:
    """Dataset holding one segment per training run on `dataset`."""
    return f"{dataset}_runs"


def evals_dataset(dataset: str) -> str:
    """Dataset holding one segment per evaluation rollout of policies trained on `dataset`."""
    return f"{dataset}_evals"


def validate_dataset_name(name: str) -> str:
    """Dataset names become folder names and SQL view names: keep them simple."""
    if not _DATASET_NAME.match(name):
        raise ValueError(
            f"invalid dataset name {name!r}: use a letter followed by letters, digits, '_' or '-' (max 64 chars)"
        )
    return name


RESERVED_DATASET_SUFFIXES = ("_runs", "_evals")
"""`<name>_runs` holds the training runs of `<name>`, `<name>_evals` its evaluation rollouts."""


def validate_demo_dataset_name(name: str) -> str:
    """A demonstration dataset's name: a valid dataset name that does not end in `_runs` or `_evals`
    (those hold another dataset's runs and rollouts: demonstrations there would mix with them)."""
    validate_dataset_name(name)
    for suffix in RESERVED_DATASET_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            raise ValueError(
                f"dataset name {name!r} ends in {suffix!r}, which is reserved for the "
                f"{'training runs' if suffix == '_runs' else 'evaluation rollouts'} of dataset {base!r}; "
                f"name a demonstration dataset without it (e.g. {base + suffix.replace('_', '-')!r})"
            )
    return name


_SEGMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_segment_id(segment_id: str) -> str:
    """Segment ids become file names: letters, digits, '_', '.', '-' only."""
    if not _SEGMENT_ID.match(segment_id):
        raise ValueError(f"invalid segment id {segment_id!r}: use letters, digits, '_', '.' or '-'")
    return segment_id


def new_segment_id(prefix: str = "ep") -> str:
    """A fresh, unique, file-name-safe segment id (also the recording id)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- collect: recorded episode content and property names ---------------------------------
# (written by envs/aloha/recording.py; read by refine, curate, analyze, the loader)
OUTCOME_TEXT = "/outcome"
"""Static markdown summary of the episode outcome (for the blueprint's text view)."""
SCENE_HZ = 25
"""Default rate of the 3D scene poses (robot links + cube transforms under SCENE_ROOT)."""
STATIC_SCENE = "/scene/static"
"""Table and distractors: static transforms + boxes."""

# `episode` group
EPISODE_KIND = "kind"  # KIND_DEMO, KIND_ROLLOUT or KIND_CORRECTIVE
EPISODE_CORRECTED_RUN = "corrected_run"  # corrective episodes: the training run whose policy drove ("none": a person's policy)
EPISODE_CORRECTIVE_MODE = "corrective_mode"  # CORRECTIVE_MODES (simulated: every step expert-labelled) or MODE_INTERVENTION
EPISODE_CORRECTIVE_THRESHOLD = "corrective_threshold"  # gated mode: takeover distance (max abs joint difference, rad)
EPISODE_EXPERT_FRACTION = "expert_fraction"  # corrective episodes: fraction of control steps the expert was in control
EPISODE_EXPERT_POLICY = "expert_policy"  # corrective episodes: the expert's policy id (e.g. scripted-handover-v1)
EPISODE_TASK = "task"  # e.g. "transfer_cube" (a name of roboloop.envs.tasks())
TASK_AXIS = "task"
"""The condition axis of evaluation grids and plans naming a cell's task (`task=transfer_cube,insertion`)."""
EPISODE_SEED = "seed"
EPISODE_POLICY = "policy"  # policy id, e.g. "scripted-handover-v1" or a checkpoint id
EPISODE_SOFTWARE_VERSION = "software_version"  # roboloop.__version__, + "+g<commit12>[.dirty]" from a git checkout
# provenance (episode.provenance() gathers them; on every demonstration, run and rollout)
EPISODE_GIT_COMMIT = "git_commit"  # full commit of roboloop's source checkout, "none" when not run from one
EPISODE_GIT_DIRTY = "git_dirty"  # bool: tracked files differed from that commit (False when there is no checkout)
EPISODE_RERUN_VERSION = "rerun_sdk_version"  # installed distribution versions, "none" when not installed
EPISODE_MUJOCO_VERSION = "mujoco_version"
EPISODE_GYM_ALOHA_VERSION = "gym_aloha_version"
EPISODE_TORCH_VERSION = "torch_version"
PROVENANCE_DISTRIBUTIONS = {
    EPISODE_RERUN_VERSION: "rerun-sdk",
    EPISODE_MUJOCO_VERSION: "mujoco",
    EPISODE_GYM_ALOHA_VERSION: "gym-aloha",
    EPISODE_TORCH_VERSION: "torch",
}
"""Provenance property -> the distribution whose installed version it records."""
EPISODE_HOST = "host"  # record API: the machine that recorded the episode
EPISODE_STARTED_AT = "started_at"  # record API: UTC ISO time the episode was opened
EPISODE_ABORTED = "aborted"  # record API: bool, the recording block raised and the caller kept it (on_error="abort")
EPISODE_ABORT_REASON = "abort_reason"  # record API: "<ExceptionType>: <message>" of an aborted episode
EPISODE_PROJECT_GIT_COMMIT = "project_git_commit"  # record API: commit of the recording script's own checkout ("none")
EPISODE_PROJECT_GIT_DIRTY = "project_git_dirty"  # record API: bool, tracked files of that checkout differed from it
EPISODE_OPERATOR = "operator"  # record API (by convention): who teleoperated or supervised the episode
EPISODE_TAGS = "tags"  # record API (by convention): free-form tags, a list of strings
EPISODE_CAMERAS = "cameras"  # recorded camera names, comma-separated ("none" if no camera)
EPISODE_CAMERA_HZ = "camera_hz"
EPISODE_CAMERA_SIZE = "camera_size"  # "WIDTHxHEIGHT", e.g. "320x240"
EPISODE_CONTROL_HZ = "control_hz"
EPISODE_SCENE_HZ = "scene_hz"
# `scene` group: every SceneConditions field (region, x_min, ..., distractors) plus
SCENE_REGION_LABEL = "region_label"
# `outcome` group
OUTCOME_SUCCESS = "success"  # bool, the strict success metric (envs/aloha/success.py)
OUTCOME_MAX_REWARD = "max_reward"  # max of gym-aloha's 0-4 contact reward
OUTCOME_SUCCESS_STEP = "success_step"  # first step from which success held, -1 if never
OUTCOME_STEPS = "steps"  # control steps recorded
OUTCOME_DURATION_S = "duration_s"
OUTCOME_FAILURE_STEP = "failure_step"  # the moment it went wrong (step), -1 if it did not fail
OUTCOME_FAILURE_REASON = "failure_reason"  # "none" on success, else the failure kind (FAILURE_KINDS)
OUTCOME_FINAL_CUBE_Z = "final_cube_z"
OUTCOME_FINAL_DEPTH = "final_depth"  # insertion: how far the peg's end is inside the socket at the end (m)
OUTCOME_FINAL_LATERAL = "final_lateral"  # insertion: the peg centre's distance from the socket's axis at the end (m)

# --- seeds: one identity scheme (DESIGN.md "Seeds and cells have one identity scheme") ------
DEMO_SEED_LIMIT = 2**30
"""Demonstration seeds (collect, plans) lie in [0, DEMO_SEED_LIMIT)."""
MAX_EPISODES_PER_RUN = 100_000
"""Most episodes one command may ask for: a collect (`--episodes`), a plan (all items together) or an
evaluation (cells x episodes per cell). At the fastest measured rate (~7 episodes/s without cameras) this is
about 4 hours; beyond it a typo (`--episodes 1000000000`) would otherwise tie up the seed range and memory.
Larger runs go in batches: re-run the command (a collect's seeds continue after the highest one used),
split a plan into several, evaluate a grid in parts (fewer cells per evaluation)."""
EVAL_SEED_BASE = 2**30
"""Evaluation seeds are hashed from (cell, episode index) into [EVAL_SEED_BASE, EVAL_SEED_BASE + EVAL_SEED_SPAN)."""
EVAL_SEED_SPAN = 2**30
"""Width of the evaluation seed range (disjoint from demonstration seeds; < 2**32 for numpy's RandomState)."""

# --- catalog tables (rows on disk, rebuilt into Lance at restore) ----------------------------
SELECTIONS_TABLE = "selections"
"""Saved selections (curate)."""
EVALS_TABLE = "evals"
"""One row per evaluation (evaluate)."""
PLANS_TABLE = "plans"
"""Collection plans (analyze writes them, collect executes them)."""

# --- rollout provenance (evaluate writes them into the `episode` group of <dataset>_evals) ---
EPISODE_EVAL_ID = "eval_id"
EPISODE_RUN_ID = "run_id"  # the training run of the policy, "" -> omitted for scripted
EPISODE_CHECKPOINT_SHA256 = "checkpoint_sha256"
EPISODE_SELECTION = "selection"  # the run's selection name
EPISODE_SELECTION_DIGEST = "selection_digest"
EPISODE_CONFIG_DIGEST = "config_digest"
EPISODE_CELL = "cell"  # canonical cell key, e.g. "lighting=dim,yaw=any"
EPISODE_INDEX_IN_CELL = "index_in_cell"

# --- outcome: partial credit ----------------------------------------------------------------
STAGES = ("none", "right_grasp", "lift", "left_grasp", "handover")
"""Furthest stage of the handover reached, in order; index / (len - 1) is the partial-credit score."""
INSERTION_STAGES = ("none", "peg_grasped", "socket_grasped", "both_lifted", "aligned", "inserted")
"""Furthest stage of the insertion task reached, in order (envs/insertion/success.py)."""
OUTCOME_STAGE = "stage"  # int index into STAGES
OUTCOME_STAGE_NAME = "stage_name"
OUTCOME_FAILURE_TIME_S = "failure_time_s"  # failure_step / control rate, -1 if none

# --- interop ---------------------------------------------------------------------------------
# LeRobot datasets in and out (roboloop/interop/lerobot.py). A LeRobot feature key maps to an
# entity path and back through these tables; every other key lives under LEROBOT_ROOT.
LEROBOT_STATE = "observation.state"
LEROBOT_ACTION = "action"
LEROBOT_REWARD = "next.reward"
LEROBOT_ENV_STATE = "observation.environment_state"
LEROBOT_IMAGES_PREFIX = "observation.images."
"""Camera keys look like `observation.images.<camera>`; they map to `camera_path(<camera>)`."""
LEROBOT_ROOT = "/lerobot"
"""Imported LeRobot features without a roboloop meaning live at `/lerobot/<key>` (key verbatim)."""
LEROBOT_IMPORT_PATHS = {LEROBOT_STATE: JOINT_POSITIONS, LEROBOT_ACTION: JOINT_TARGETS, LEROBOT_REWARD: REWARD}
"""Well-known LeRobot keys -> roboloop entity paths, on import."""
LEROBOT_EXPORT_KEYS = {
    JOINT_POSITIONS: LEROBOT_STATE,
    JOINT_TARGETS: LEROBOT_ACTION,
    REWARD: LEROBOT_REWARD,
    CUBE_POSE: LEROBOT_ENV_STATE,
}
"""Roboloop entity paths -> LeRobot keys, on export (the cube pose is the environment state)."""
LEROBOT_EXECUTED_ACTION = "executed_action"
"""Export of a selection with corrective episodes: the executed `/robot/joint_targets` (`action` is then the training
target, the expert's label where a step has one); imported back to `/robot/joint_targets`."""
LEROBOT_ACTION_IS_LABEL = "action_is_label"
"""Export of a selection with corrective episodes: 1 where `action` is an expert's (or demonstrator's) action, 0 where it
is the policy's own executed action (what `TrainConfig.expert_steps_only` leaves out)."""
LEROBOT_TRAINING_TARGET = f"{LEROBOT_ROOT}/{LEROBOT_ACTION}"
"""Where an export with corrective episodes records (meta/roboloop.json) that its `action` came from: the training
target is no stream of its own, so importing it back puts it here, next to the executed action."""
LEROBOT = "lerobot"
"""Property group of imported episodes: codebase_version, fps, robot_type, length, tasks, features."""
EPISODE_SOURCE = "source"  # `episode.source`: where an imported episode came from, e.g. "lerobot:/path/to/ds"
EPISODE_LEROBOT_INDEX = "lerobot_episode_index"  # `episode.lerobot_episode_index`: its index in the source


def lerobot_entity(key: str, *, camera: bool = False) -> str:
    """Entity path of LeRobot feature `key` on import (cameras: `/cameras/<name>`)."""
    if camera and key.startswith(LEROBOT_IMAGES_PREFIX) and len(key) > len(LEROBOT_IMAGES_PREFIX):
        return camera_path(key[len(LEROBOT_IMAGES_PREFIX) :])
    return LEROBOT_IMPORT_PATHS.get(key) or f"{LEROBOT_ROOT}/{key}"


def lerobot_key(entity: str) -> str:
    """LeRobot feature key of entity path `entity` on export (inverse of `lerobot_entity` where one exists)."""
    if entity in LEROBOT_EXPORT_KEYS:
        return LEROBOT_EXPORT_KEYS[entity]
    if entity.startswith(CAMERA_ROOT + "/"):
        return LEROBOT_IMAGES_PREFIX + entity[len(CAMERA_ROOT) + 1 :].replace("/", ".")
    if entity.startswith(LEROBOT_ROOT + "/"):
        return entity[len(LEROBOT_ROOT) + 1 :]
    return entity.strip("/").replace("/", ".")


# --- sequential ---------------------------------------------------------------------------
# (stats/sequential.py: anytime-valid paired comparison; evaluate writes its results into the evals row)
DECISION_IMPROVED = "improved"
"""The challenger's mean is higher (difference > 0), anytime-valid."""
DECISION_REGRESSED = "regressed"
"""The challenger's mean is lower (difference < 0)."""
DECISION_NO_DIFFERENCE = "no_difference"
"""The difference lies within +-margin."""
DECISION_UNDECIDED = "undecided"
"""Not (yet) decided: still running, or stopped at the maximum number of pairs."""
DECISIONS = (DECISION_IMPROVED, DECISION_REGRESSED, DECISION_NO_DIFFERENCE, DECISION_UNDECIDED)
METRIC_SUCCESS = "success"
"""Sequential metric: the binary strict success (outcome.success)."""
METRIC_STAGE = "stage"
"""Sequential metric: partial credit, outcome.stage / (len(STAGES) - 1) in [0, 1]."""
SEQUENTIAL_METRICS = (METRIC_SUCCESS, METRIC_STAGE)
EVAL_SEQUENTIAL = "sequential"
"""Key of the sequential result in an evals row: SequentialDriver.result() (per cell: decision, n, decided_at, stop_round, ci)."""

# --- evaluate ---------------------------------------------------------------------------------
# (evaluate/ writes them; analyze/ reads them)
SCENE_YAW = "yaw"  # canonical yaw preset of the episode's conditions ("none", "small", "any", or "custom")
SCENE_CUBE_X = "cube_x"  # sampled cube start x (m, world)
SCENE_CUBE_Y = "cube_y"  # sampled cube start y (m, world)
SCENE_CUBE_YAW_DEG = "cube_yaw_deg"  # sampled cube start yaw (deg)
FAILURE_KINDS = {
    "closed_on_air": "closed on air",
    "knocked_away": "knocked away",
    "dropped": "dropped",
    "not_handed_over": "never handed over",
    "timed_out": "timed out",
    "never_reached": "never reached the cube",
    "missed_grasp": "missed the grasp",
    # the insertion task's own kinds (envs/insertion/success.py; it also uses missed_grasp, dropped, timed_out)
    "never_aligned": "never aligned",
    "never_inserted": "aligned, never inserted",
    "pulled_out": "pulled out",
    # any task: MuJoCo's PhysicsError or a non-finite state after a step (envs/aloha/env.py UnstableSimulation)
    "unstable": "the simulation went unstable",
    # judged by the first classifier (outcome.classifier absent); `roboloop reoutcome` re-judges them
    "never_touched": "missed grasp (never touched)",
    "not_lifted": "missed grasp (not lifted)",
}
"""`outcome.failure_reason` (the failure kind) -> the kind in words (envs/aloha/success.py defines each kind and its moment)."""
OUTCOME_CLASSIFIER = "classifier"  # version of the failure classifier that judged the outcome (absent: 1)
OUTCOME_JUDGED_AT = "judged_at"  # outcome layer only: UTC ISO time of a re-judgement
# a person's judgement (`roboloop label`, refine/labels.py), outcome layer only
OUTCOME_SOURCE = "source"  # who judged the outcome: OUTCOME_SOURCE_LABEL for a person (absent: the simulator at record time)
OUTCOME_SOURCE_LABEL = "label"
OUTCOME_SOURCE_RECORDED = "recorded"  # set by the team's own loop through record.episode (no simulator judged it)
OUTCOME_NOTE = "note"  # the labeller's free-text note ("" when none)
OUTCOME_LABELLED_BY = "labelled_by"  # who labelled it (default: the OS user)
OUTCOME_LABELLED_AT = "labelled_at"  # UTC ISO time of the label
OUTCOME_FREE_KIND = "free_kind"  # bool: the failure kind is free text, not one of the task's FAILURE_KINDS
OUTCOME_UNLABELLED = "unlabelled"
"""How tables show an episode without `outcome.success` (recorded on hardware, not yet labelled): never a failure."""
LABELS_TABLE_SUFFIX = "_labels"
"""Row tables `<dataset>_labels`: every label ever given (append-only, one row per label: the history `roboloop gc` keeps)."""


def labels_table(dataset: str) -> str:
    """Row table holding every label given to the segments of `dataset` (the label history)."""
    return f"{dataset}{LABELS_TABLE_SUFFIX}"

POLICY_SCRIPTED = "scripted"
MODE_DAGGER = "dagger"
"""Corrective mode: the policy always acts; the expert labels every step."""
MODE_GATED = "gated"
"""Corrective mode: the expert takes over when its action and the policy's disagree beyond a threshold, hands back with hysteresis."""
MODE_EXPERT = "expert"
"""Corrective mode: the expert always acts; the policy's action is computed (its distance recorded) but not executed."""
CORRECTIVE_MODES = (MODE_DAGGER, MODE_GATED, MODE_EXPERT)
MODE_INTERVENTION = "intervention"
"""`episode.corrective_mode` of a recorded (hardware) intervention: only steps with `/control/source` = expert carry a label."""
"""The `--policy` name of the scripted demonstrator (the baseline every run can be compared with)."""
PROVENANCE_NONE = "none"
"""Value of the run-provenance properties (run id, checkpoint, selection, digests) of a policy without a run."""


INDEX_TABLE_SUFFIX = "_index"
"""Row tables whose name ends with it are indexes analyze reads from disk; restore does not publish them."""


def rollout_index_table(evals_dataset: str) -> str:
    """Row table holding one row of base properties per rollout of `evals_dataset` (kept in step with registration)."""
    return f"{evals_dataset}{INDEX_TABLE_SUFFIX}"

# --- train ---------------------------------------------------------------------------------
# (written by roboloop.train into <dataset>_runs: one segment per training run)
STEP_TIMELINE = "step"
"""Optimizer steps of a training run (sequence)."""
EPOCH_TIMELINE = "epoch"
"""Epochs of a training run (sequence); every training scalar is logged on `step` and `epoch`."""
CHUNK_TIMELINE = "chunk_step"
"""Offset within a predicted action chunk: the first dimension name of the sample views' chunk tensors."""
TRAIN_LOSS = "/train/loss"
TRAIN_EPOCH_LOSS = "/train/epoch_loss"
"""Mean of `/train/loss` over the steps of each epoch, logged at its end (comparable with `/holdout/loss`)."""
HOLDOUT_LOSS = "/holdout/loss"
TRAIN_LR = "/train/lr"
TRAIN_GRAD_NORM = "/train/grad_norm"
TRAIN_CACHE_MB = "/train/cache_mb"
"""Megabytes the training stream's segment cache holds at the end of each epoch (all its workers; `StreamConfig.cache_mb`)."""
SAMPLES_ROOT = "/samples"
"""`/samples/<split>/<k>/{chunk,predicted,target,input,image,info}`: sample views at the first, middle and last
epoch, on `step` and `epoch` (split `train` or `holdout`; see `roboloop.train.runlog`)."""
RUN_SUMMARY_TEXT = "/run"
"""Static markdown summary of the run (config, selection, result)."""

RUN_INFO_FILE = "run.json"
"""`runs/<run_id>/run.json`: a training run's provenance and status (`Workspace.run_info`), written by `roboloop.train`."""

RUN_STATUS_RUNNING = "running"
RUN_STATUS_FINISHED = "finished"
RUN_STATUS_INTERRUPTED = "interrupted"
RUN_STATUS_FAILED = "failed"
"""The run stopped on an error (e.g. a non-finite loss); its last complete checkpoint is kept."""
STATUS_RUNNING = RUN_STATUS_RUNNING
STATUS_DEAD = "dead"
"""Shown (never stored) for a run or evaluation whose row says `running` while no process holds its writer lock
(`Workspace.live_status`): its writer died (kill -9, power loss); resume it."""

# `run` group (friendly names `run.<name>`; the flattened config as `run.config_<key>`)
RUN_ID = "run_id"
RUN_DATASET = "dataset"
RUN_SELECTION = "selection"
RUN_SELECTION_DIGEST = "selection_digest"
RUN_PREDICATE = "predicate"
RUN_NUM_TRAIN = "num_train"
RUN_NUM_HOLDOUT = "num_holdout"
RUN_CONFIG_JSON = "config_json"
RUN_CONFIG_DIGEST = "config_digest"
RUN_CONFIG_PREFIX = "config_"
RUN_FIELDS = "fields"  # the stream fields spec, JSON
RUN_POLICY = "policy"  # mlp | vision
RUN_PARAMETERS = "parameters"
RUN_EPOCHS = "epochs"  # configured
RUN_EPOCHS_DONE = "epochs_done"
RUN_STEPS_DONE = "steps_done"
RUN_BEST_HOLDOUT_LOSS = "best_holdout_loss"
RUN_FINAL_HOLDOUT_LOSS = "final_holdout_loss"
RUN_FINAL_TRAIN_LOSS = "final_train_loss"
RUN_WALL_S = "wall_s"
RUN_CHECKPOINT_PATH = "checkpoint_path"
RUN_CHECKPOINT_SHA256 = "checkpoint_sha256"
RUN_SOFTWARE_VERSION = "software_version"
RUN_STATUS = "status"
RUN_STARTED_AT = "started_at"
RUN_CAMERAS = "cameras"  # cameras the policy needs at deploy, comma-separated ("none")
RUN_CAMERA_SIZE = "camera_size"  # "WxH" the policy was trained at ("none")
