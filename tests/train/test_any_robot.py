"""Training another robot: state and action entity paths from the config, widths read from the data, deployment
on observations keyed by the same paths; a clear error for a path the dataset lacks."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from roboloop import curate, schema
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.collect.run import Observation
from roboloop.envs.aloha.env import AlohaSim
from roboloop.evaluate.run import EvalConfig, EvaluateError, evaluate, parse_grid
from roboloop.evaluate.table import list_evals
from roboloop.record import api as record_api
from roboloop.record.episode import EpisodeRecorder
from roboloop.stream import EpisodeStream
from roboloop.train import MLPConfig, TrainConfig, TrainError, VisionConfig, load_policy, train
from roboloop.train.deploy import PolicyFactory, list_runs, run_info
from roboloop.train.features import INFERRED, NonFiniteDataError, ObservationError, encode_batch, stream_fields
from roboloop.train.loop import check_rate
from roboloop.train.policies import BCPolicy, MLPPolicy

DS = "arm"
STEPS = 60
JOINTS = "/arm/joint_positions"
GOAL = "/arm/goal"
TARGETS = "/arm/targets"


def _episode(ws, i: int, nan_at: int | None = None, targets: bool = True):
    """A 3-joint arm moving towards a 2-D goal: targets = the next step's joints (a NaN target at step `nan_at`:
    written below the recording API, which refuses it)."""
    t = np.arange(STEPS + 1) / schema.CONTROL_HZ
    goal = np.array([0.1 * i, -0.05 * i])
    q = np.stack([np.sin(t + 0.2 * i), np.cos(2 * t) * goal[0], t * goal[1]], axis=1)
    if nan_at is not None:
        q[nan_at + 1, 1] = np.nan  # the target of step nan_at (targets are q[1:]); the joints of step nan_at + 1
    sid = f"arm-{i:03d}"
    path = ws.segment_path(DS, schema.BASE_LAYER, sid)
    with EpisodeRecorder(path, sid) as rec:
        rec.log_scalar_columns(JOINTS, t[:-1], q[:-1])
        rec.log_scalar_columns(GOAL, t[:-1], np.tile(goal, (STEPS, 1)))
        if targets:
            rec.log_scalar_columns(TARGETS, t[:-1], q[1:])
        rec.set_properties("episode", {"kind": "demo", "seed": i})
    return path


@pytest.fixture
def arm(catalog):
    catalog.register_files(DS, [_episode(catalog.workspace, i) for i in range(5)])
    sel = curate.select(catalog, DS, holdout=0.2)
    curate.save(catalog, sel, "sel")
    return catalog, sel


def _cfg(**kw) -> TrainConfig:
    base = {"dataset": DS, "selection": "sel", "state": (JOINTS, GOAL), "action": TARGETS, "chunk": 4, "episode_steps": STEPS,
            "epochs": 3, "batch_size": 32, "samples": 1, "model": MLPConfig(hidden=32, layers=2, joint_noise=0.0)}
    base.update(kw)
    return TrainConfig(**base)


def test_another_robot_trains_and_deploys_on_its_own_entity_paths(arm):
    catalog, sel = arm
    cfg = _cfg()
    res = train(catalog, cfg)
    assert res.status == "finished"
    stored = {d["name"]: d for d in json.loads((res.run_dir / "features.json").read_text())}
    assert stored["arm_joint_positions"]["shape"] == [3] and stored["arm_joint_positions"]["path"] == JOINTS
    assert stored["arm_goal"]["shape"] == [2] and stored["action"]["shape"] == [4, 3] and stored["action"]["path"] == TARGETS
    norm = dict(np.load(res.run_dir / "normalizer.npz"))
    assert sorted(norm) == sorted(f"{n}.{s}" for n in ("arm_joint_positions", "arm_goal", "action") for s in ("mean", "std"))

    policy = load_policy(catalog, res.run_id)
    # the training side: one episode streamed and encoded as the loop does; the deploy side: observations keyed by path
    specs = policy.model.specs
    seg = sel.train_ids[0]
    batch = next(iter(EpisodeStream(catalog, (DS, [seg]), fields=stream_fields(specs), rate_hz=cfg.rate_hz, batch_size=STEPS,
                                    shuffle=False)))
    enc = encode_batch(specs, batch, cfg)
    with torch.no_grad():
        train_side = policy.model.act({k: v for k, v in enc.items() if not k.startswith("action")}).numpy()
    for k in (0, 7, 31):
        obs = Observation(k, k / schema.CONTROL_HZ, state={JOINTS: batch["arm_joint_positions"][k].double().numpy(),
                                                           GOAL: batch["arm_goal"][k].double().numpy()})
        np.testing.assert_allclose(policy.predict_chunk(obs), train_side[k], atol=1e-5)
    policy.reset()
    assert policy.action(0, obs).shape == (3,)
    with pytest.raises(ObservationError, match="/arm/goal"):
        policy.action(1, Observation(1, 0.02, state={JOINTS: np.zeros(3)}))
    with pytest.raises(ObservationError, match="2 values at deploy.*trained on 3"):
        policy.action(1, Observation(1, 0.02, state={JOINTS: np.zeros(2), GOAL: np.zeros(2)}))
    for bad in (np.nan, np.inf):  # a NaN reading is refused, never turned into NaN actions
        with pytest.raises(ObservationError, match=r"state '/arm/joint_positions' holds non-numeric or non-finite"):
            policy.action(1, Observation(1, 0.02, state={JOINTS: np.array([bad, 0.0, 0.0]), GOAL: np.zeros(2)}))


def test_a_path_the_dataset_lacks_is_named_with_the_dataset_paths(arm):
    catalog, _ = arm
    with pytest.raises(TrainError, match=r"state path '/arm/velocity' is not in dataset 'arm'; its entity paths: .*/arm/goal.*/arm/joint_positions"):
        train(catalog, _cfg(state=(JOINTS, "/arm/velocity")))
    with pytest.raises(TrainError, match=r"action path '/arm/commands' is not in dataset 'arm'.*/arm/targets"):
        train(catalog, _cfg(action="/arm/commands"))


def test_state_paths_are_checked_and_the_default_features_are_aloha():
    cfg = TrainConfig(dataset="aloha", selection="v1")
    assert [(f["name"], f["path"], f["shape"]) for f in cfg.to_dict()["fields"]["features"]] == [
        ("joints", schema.JOINT_POSITIONS, [14]), ("cube", schema.CUBE_POSE, [7]), ("phase", None, [1]),
        ("action", schema.JOINT_TARGETS, [10, 14])]
    explicit = TrainConfig(dataset="aloha", selection="v1", state=(schema.JOINT_POSITIONS, schema.CUBE_POSE))
    # paths a team names are read from its data (another robot may log 6 joints at /robot/joint_positions)
    assert [(f["name"], f["path"], f["shape"]) for f in explicit.to_dict()["fields"]["features"]] == [
        ("joints", schema.JOINT_POSITIONS, [INFERRED]), ("cube", schema.CUBE_POSE, [INFERRED]), ("phase", None, [1]),
        ("action", schema.JOINT_TARGETS, [10, INFERRED])]
    with pytest.raises(TrainError, match="entity paths"):
        TrainConfig(dataset="aloha", selection="v1", state=("arm",))
    with pytest.raises(TrainError, match="clashing"):
        TrainConfig(dataset="aloha", selection="v1", state=("/a/b", "/a_b"))
    back = TrainConfig.from_toml(_cfg().to_toml())
    assert back == _cfg() and back.flat()["state"] == f"{JOINTS},{GOAL}"


def test_a_robot_at_its_own_rate_trains_and_the_simulator_refuses_it(arm, caplog):
    """A 25 Hz robot trains on a 25 Hz grid (its windows are its control steps); deploying that run in the 50 Hz
    simulator is refused with the rate to train at, before any rollout."""
    catalog, _ = arm
    with caplog.at_level(logging.WARNING, logger="roboloop.train"):
        res = train(catalog, _cfg(rate_hz=25.0, episode_steps=STEPS // 2, epochs=1))
    assert res.status == "finished"
    # the data says 50 Hz (steps of 1/CONTROL_HZ): the mismatch is named with the option that fixes it
    warned = [r.getMessage() for r in caplog.records if r.name == "roboloop.train.loop"]
    assert len(warned) == 1 and "the action /arm/targets of arm is logged at 50 Hz (median step 0.02 s" in warned[0]
    assert "but training samples at 25 Hz: pass --rate-hz 50" in warned[0]
    assert check_rate(catalog, DS, "arm-000", _cfg()) == pytest.approx(schema.CONTROL_HZ)
    batch = next(iter(EpisodeStream(catalog, (DS, ["arm-000"]), fields={"q": JOINTS}, rate_hz=25.0, batch_size=1000, shuffle=False)))
    assert len(batch["q"]) == STEPS // 2  # 60 steps at 50 Hz = 1.2 s = 30 grid points at 25 Hz
    with AlohaSim(cameras=()) as sim, pytest.raises(TrainError, match=r"trained at 25 Hz .* steps at 50 Hz.*--rate-hz 50"):
        PolicyFactory(catalog.workspace.root, res.run_id)(sim)
    # `roboloop eval --run` refuses it up front: no evaluation row, no rollout dataset
    cfg = EvalConfig(dataset=DS, policy=res.run_id, grid=parse_grid("region=near"), episodes_per_cell=1, cameras=(), steps=5)
    with pytest.raises(EvaluateError, match=r"trained at 25 Hz and task 'transfer_cube' simulates at 50 Hz.*--rate-hz 50"):
        evaluate(catalog, cfg)
    assert list_evals(catalog.workspace) == [] and f"{DS}_evals" not in catalog.dataset_names()


def test_training_data_with_a_nan_names_the_segment_the_stream_and_the_time(catalog):
    paths = [_episode(catalog.workspace, i) for i in range(4)] + [_episode(catalog.workspace, 4, nan_at=23)]
    catalog.register_files(DS, paths)
    curate.save(catalog, curate.select(catalog, DS, holdout=0.0), "sel")
    # the joints stream reaches the NaN first (the next step's joints are this step's targets): step 24 at 50 Hz
    with pytest.raises(NonFiniteDataError, match=r"'arm_joint_positions' \(/arm/joint_positions\) holds a non-finite "
                                                 r"value \(NaN/inf\) in segment arm-004 at 0.48 s after its start"):
        train(catalog, _cfg(state=(JOINTS,)))
    # the action window names the bad step itself: the target of step 23
    with pytest.raises(NonFiniteDataError, match=r"'action' \(/arm/targets\) .* in segment arm-004 at 0.46 s"):
        train(catalog, _cfg(state=(GOAL,)))


def test_another_robot_without_state_paths_is_told_to_name_them(arm):
    """Left out, --state means ALOHA's joints + cube pose: on another robot's episodes the error says so and names the
    option and the dataset's own paths (it was the loader's bare 'unknown entity path' listing)."""
    catalog, _ = arm
    paths = ", ".join(sorted([JOINTS, GOAL, TARGETS]))
    with pytest.raises(TrainError, match=rf"state path '(/robot/joint_positions|/state/cube_pose)' \(the mlp policy's default "
                                         rf"state, ALOHA's; name your robot's state with --state PATH, repeatable\) is not in "
                                         rf"dataset '{DS}'; its entity paths: {paths} \(set --state to one of them\)"):
        train(catalog, _cfg(state=None, epochs=1))


class NoLayersPolicy(BCPolicy):
    """A policy whose author forgot to build its layers (the README's WidePolicy without its __init__)."""

    def network(self, x):
        return torch.zeros(len(x["phase"]), self.chunk, self.action_dim)


class FlatChunkPolicy(MLPPolicy):
    """A network that returns the chunk flat, [B, chunk * action width]."""

    def network(self, x):
        return super().network(x).reshape(len(x["phase"]), -1)


def test_a_policy_without_layers_or_with_a_flat_output_is_named_and_the_run_fails(arm):
    """A user policy's two likeliest slips are TrainErrors saying what to write (not the optimizer's empty parameter
    list or a broadcast error from the loss); a run that failed in the policy's code says `failed`, not `interrupted`."""
    catalog, _ = arm
    with pytest.raises(TrainError, match=rf"policy '{__name__}:NoLayersPolicy' has no trainable parameters: create its layers"):
        train(catalog, _cfg(policy=f"{__name__}:NoLayersPolicy", epochs=1))
    cfg = _cfg(policy=f"{__name__}:FlatChunkPolicy", epochs=1)
    joints = 3  # the arm's joints: the action width
    with pytest.raises(TrainError, match=rf"FlatChunkPolicy.network returned shape \({cfg.batch_size}, {cfg.chunk * joints}\); "
                                         rf"it must return \[batch, chunk, action width\] = \[B, {cfg.chunk}, {joints}\]"):
        train(catalog, cfg)
    failed = [r for r in list_runs(catalog.workspace) if r["policy"] == f"{__name__}:FlatChunkPolicy"]
    assert [r["status"] for r in failed] == ["failed"]


def test_a_dataset_typo_and_an_episode_without_the_action_say_what_the_cli_can_do(catalog):
    paths = [_episode(catalog.workspace, i) for i in range(3)] + [_episode(catalog.workspace, 3, targets=False)]
    catalog.register_files(DS, paths)
    curate.save(catalog, curate.select(catalog, DS, holdout=0.0), "sel")
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'arm44'; available datasets: arm"):
        train(catalog, _cfg(dataset="arm44"))
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'arm44'; available datasets: arm"):
        list_runs(catalog.workspace, "arm44")
    assert list_runs(catalog.workspace, DS) == []  # a known dataset without runs is not an error
    with pytest.raises(TrainError, match=r"field 'action' \(/arm/targets\) has no data in segment\(s\) arm-003; leave them out "
                                         r"of the selection \(`roboloop flag --dataset arm --segment ID") as err:
        train(catalog, _cfg())
    assert "on_missing" not in str(err.value)


def test_the_vision_policy_trains_on_episodes_of_the_recording_api(catalog):
    """record.episode writes the camera size and rate a camera policy reads (episode.camera_size, camera_hz)."""
    for i in range(3):
        with record_api.episode(catalog, DS) as ep:
            for k in range(40):
                t = k / 20
                q = np.array([np.sin(t + i), np.cos(t), 0.1 * i])
                ep.log_scalars(JOINTS, t, q)
                ep.log_scalars(TARGETS, t, q + 0.01)
                if k % 2 == 0:
                    img = np.full((24, 32, 3), 40 + 20 * i, np.uint8)
                    img[:, (k // 2) % 32] = 255
                    ep.log_video_frame("/cameras/wrist", t, img)
    curate.save(catalog, curate.select(catalog, DS, holdout=0.0), "sel")
    cfg = _cfg(policy="vision", state=(JOINTS,), rate_hz=20.0, episode_steps=40, epochs=1, samples=0,
               model=VisionConfig(camera="wrist", image_width=32, image_height=24, channels=(8, 8), keypoints=4, hidden=32, layers=1))
    res = train(catalog, cfg)
    assert res.status == "finished"
    info = run_info(catalog.workspace, res.run_id)
    assert info["cameras"] == ["wrist"] and info["camera_size"] == [32, 24] and info["camera_hz"] == 10
    # the training-only cube-position loss needs a cube pose these episodes lack: the error says how to turn it off
    with pytest.raises(TrainError, match=r"aux_cube = 0"):
        train(catalog, cfg.replace(model=dataclasses.replace(cfg.model, aux_cube=1.0)))
    # an episode at another camera size: the error says how to pick one size
    with record_api.episode(catalog, DS) as ep:
        for k in range(4):
            ep.log_scalars(JOINTS, k / 20, np.zeros(3))
            ep.log_scalars(TARGETS, k / 20, np.zeros(3))
            ep.log_video_frame("/cameras/wrist", k / 20, np.zeros((48, 64, 3), np.uint8))
    curate.save(catalog, curate.select(catalog, DS, holdout=0.0), "mixed")
    with pytest.raises(TrainError, match=r"found \['32x24', '64x48'\] \(episode.camera_size\): curate a selection of one size"):
        train(catalog, dataclasses.replace(cfg, selection="mixed"))
