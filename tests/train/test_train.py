"""Training from the stream: loss falls on a learnable stream, the run is a segment with every property,
train/deploy parity, --like, interruption + resume, checkpoints that load and act, file versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from roboloop import curate, schema
from roboloop.collect.run import Observation
from roboloop.record.episode import EpisodeRecorder, provenance
from roboloop.train import (
    ConfigError,
    MLPConfig,
    TrainConfig,
    VisionConfig,
    load_config,
    load_policy,
    run_info,
    train,
)
from roboloop.train.features import (
    ObservationEncoder,
    encode_batch,
    stream_fields,
)
from roboloop.train.loop import MODEL_FILE, sha256_file
from roboloop.train.protocol import feature_specs
from roboloop.workspace import Workspace, atomic_write_bytes

DS = "syn"
STEPS = 100  # control steps per synthetic episode (2 s at 50 Hz)
K = 5


def _trajectory(offset: float, t: np.ndarray) -> np.ndarray:
    """Joint positions: smooth functions of time, shifted per episode by `offset` (seen through the cube pose)."""
    d = np.arange(14)
    return 0.5 * np.sin(2 * np.pi * 0.5 * t[:, None] + d[None, :] * 0.4) + offset * (1 + 0.1 * d[None, :])


def write_learnable_episode(ws: Workspace, segment_id: str, offset: float, *, video: tuple[int, int] | None = None, seed: int = 0):
    """An episode whose target is known: joint_targets(t) = joint_positions(t + dt), the cube's x = offset."""
    import rerun as rr

    from roboloop.video import encode_frames

    t = np.arange(STEPS) / schema.CONTROL_HZ
    q = _trajectory(offset, t)
    targets = _trajectory(offset, t + 1.0 / schema.CONTROL_HZ)
    cube = np.tile([offset, 0.5, 0.02, 1.0, 0.0, 0.0, 0.0], (STEPS, 1))
    path = ws.segment_path(DS, schema.BASE_LAYER, segment_id)
    with EpisodeRecorder(path, segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, q)
        rec.log_scalar_columns(schema.JOINT_TARGETS, t, targets)
        rec.log_scalar_columns(schema.CUBE_POSE, t, cube)
        props = {"kind": "demo", "seed": seed}  # the holdout split groups episodes by seed: distinct seeds
        if video:
            w, h = video
            tv = t[::2]
            frames = [_frame(offset, i, w, h) for i in range(len(tv))]
            enc = encode_frames(frames, 25, gop=25)
            rec.log_static(schema.camera_path("top"), rr.VideoStream(codec=rr.VideoCodec.H264))
            rec.log_columns(schema.camera_path("top"), tv, rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]))
            props.update(camera_size=f"{w}x{h}", camera_hz=25, cameras="top")
        rec.set_properties("episode", props)
    return path, {"t": t, "q": q, "targets": targets, "cube": cube}


def _frame(offset: float, i: int, w: int, h: int) -> np.ndarray:
    f = np.full((h, w, 3), 40, np.uint8)
    x = int((offset + 0.2) / 0.6 * (w - 6)) % (w - 6)
    f[h // 3 : h // 3 + 6, x : x + 6] = (220, 30, 30)
    f[:, : 1 + i % (w // 2), 1] = 120
    return f


def make_dataset(catalog, n: int = 6, *, video=None, holdout: float = 0.3, name: str = "sel"):
    ws = catalog.workspace
    eps = {}
    paths = []
    for i in range(n):
        sid = f"syn-{i:03d}"
        offset = -0.2 + 0.4 * i / max(1, n - 1)
        p, data = write_learnable_episode(ws, sid, offset, video=video, seed=i)
        paths.append(p)
        eps[sid] = data
    catalog.register_files(DS, paths)
    sel = curate.select(catalog, DS, holdout=holdout)
    curate.save(catalog, sel, name)
    return sel, eps


def small_cfg(**kw) -> TrainConfig:
    base = {"dataset": DS, "selection": "sel", "chunk": K, "episode_steps": STEPS, "epochs": 12, "batch_size": 64, "lr": 3e-3,
                "holdout_every": 3, "checkpoint_every": 3, "samples": 2, "model": MLPConfig(hidden=64, layers=2, joint_noise=0.0)}
    base.update(kw)
    return TrainConfig(**base)


# --- config ------------------------------------------------------------------------------------

def test_config_round_trip_and_validation(tmp_path):
    cfg = TrainConfig(dataset="aloha", selection="v1", policy="vision", model=VisionConfig(channels=(8, 8), image_width=48, image_height=36), lr=0.002)
    text = cfg.to_json()
    back = TrainConfig.from_json(text)
    assert back == cfg and back.to_json() == text
    assert TrainConfig.from_toml(cfg.to_toml()) == cfg  # the shared roboloop.config file formats
    assert json.loads(text)["fields"]["features"][0]["path"] == "/cameras/top"
    d = cfg.to_dict()
    d["lrr"] = 1.0
    with pytest.raises(ConfigError, match="lrr"):
        TrainConfig.from_dict(d)
    d = cfg.to_dict()
    d["fields"]["features"][0]["path"] = "/cameras/angle"
    with pytest.raises(ConfigError, match="fields"):
        TrainConfig.from_dict(d)
    with pytest.raises(ConfigError, match="policy"):
        TrainConfig(dataset="aloha", selection="v1", policy="transformer")
    for bad in (0.0, -5.0, 5000.0):
        with pytest.raises(ConfigError, match="rate_hz"):
            TrainConfig(dataset="aloha", selection="v1", rate_hz=bad)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(dataset="aloha", selection="v1", epochs=0)
    # the digest is the recipe: same with another selection, different with another lr
    assert cfg.digest() == cfg.replace(selection="v2").digest() != cfg.replace(lr=0.001).digest()


# --- workspace versions ----------------------------------------------------------------------------

def test_segment_files_returns_newest_versions_only(ws):
    layer = ws.layer_dir("d_runs", schema.BASE_LAYER)
    assert ws.next_version_path("d_runs", schema.BASE_LAYER, "run-a") == layer / "run-a.rrd"
    atomic_write_bytes(layer / "run-a.rrd", b"0")
    assert ws.next_version_path("d_runs", schema.BASE_LAYER, "run-a") == layer / "run-a.1.rrd"
    atomic_write_bytes(layer / "run-a.1.rrd", b"1")
    atomic_write_bytes(layer / "run-a.10.rrd", b"10")
    atomic_write_bytes(layer / "run-a.2.rrd", b"2")
    atomic_write_bytes(layer / "run-b.rrd", b"b")
    (layer / ".run-b.1.rrd.tmp-1-x").write_bytes(b"half")  # a crashed writer's temp file is no version
    assert ws.segment_files("d_runs", schema.BASE_LAYER) == [layer / "run-a.10.rrd", layer / "run-b.rrd"]
    assert [p.name for p in ws.segment_versions("d_runs", schema.BASE_LAYER, "run-a")] == ["run-a.rrd", "run-a.1.rrd", "run-a.2.rrd", "run-a.10.rrd"]
    assert ws.next_version_path("d_runs", schema.BASE_LAYER, "run-a") == layer / "run-a.11.rrd"
    with pytest.raises(ValueError):
        ws.next_version_path("d_runs", schema.BASE_LAYER, "run.3")


# --- training ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run shared by the tests that only read it (the normalizer test restores what it edits)."""
    from roboloop.catalog.client import Catalog

    cat = Catalog(Workspace(tmp_path_factory.mktemp("trained") / "ws"), url="")
    try:
        sel, eps = make_dataset(cat)
        assert sel.holdout_ids, "the fixture needs a holdout episode"
        cfg = small_cfg(epochs=40, holdout_every=10, checkpoint_every=10)
        res = train(cat, cfg)
        yield cat, sel, eps, cfg, res
    finally:
        cat.close()


def test_loss_falls_and_the_run_is_a_segment_with_every_property(trained):
    catalog, sel, _eps, cfg, res = trained
    ws = catalog.workspace
    assert res.status == "finished" and res.epochs_done == 40
    first = float(np.mean(res.train_losses[:5]))
    assert res.train_losses[-1] < 0.15 * first, (first, res.train_losses[-1])
    assert res.final_holdout_loss < 0.25 * res.holdout_losses[0] or res.final_holdout_loss < 0.1
    # the recording: version 0 (running) and version 1 (finished), the newest registered
    layer = ws.layer_dir(schema.runs_dataset(DS), schema.BASE_LAYER)
    assert sorted(p.name for p in layer.glob("*.rrd")) == [f"{res.run_id}.1.rrd", f"{res.run_id}.rrd"]
    assert ws.segment_files(schema.runs_dataset(DS), schema.BASE_LAYER) == [res.recording]
    row = catalog.sql(f'SELECT * FROM {DS}_runs WHERE "run.run_id" = \'{res.run_id}\'').to_pylist()
    assert len(row) == 1
    row = row[0]
    expect = {
        "run.run_id": res.run_id, "run.dataset": DS, "run.selection": "sel", "run.selection_digest": sel.digest,
        "run.predicate": "(all)", "run.config_digest": cfg.digest(), "run.policy": "mlp", "run.epochs": 40,
        "run.epochs_done": 40, "run.status": "finished", "run.checkpoint_sha256": sha256_file(res.run_dir / MODEL_FILE),
        "run.checkpoint_path": f"runs/{res.run_id}/{MODEL_FILE}", "run.config_lr": cfg.lr, "run.config_model_hidden": 64,
        "run.parameters": res.parameters, "run.num_train": len(sel.train_ids), "run.num_holdout": len(sel.holdout_ids),
        "run.software_version": provenance()["software_version"], "episode.kind": "run",
    }
    expect.update({f"episode.{k}": v for k, v in provenance().items()})  # commit, dirty flag, versions
    for k, v in expect.items():
        assert row[k] == v, k
    assert row["run.final_holdout_loss"] == pytest.approx(res.final_holdout_loss)
    assert row["run.best_holdout_loss"] == pytest.approx(min(res.holdout_losses))
    assert row["run.wall_s"] > 0
    assert json.loads(row["run.fields"]) == cfg.to_dict()["fields"]
    assert TrainConfig.from_json(row["run.config_json"]) == cfg
    info = run_info(ws, res.run_id)
    for key in ("run_id", "dataset", "selection", "selection_digest", "config_digest", "checkpoint_sha256", "policy", "cameras", "camera_size", "train_ids", "status"):
        assert key in info
    assert info["train_ids"] == list(sel.train_ids) and info["cameras"] == [] and info["camera_size"] is None
    # the scalars on `step` and `epoch`, and the sample views, are in the recording
    runs = catalog.dataset(f"{DS}_runs")
    loss = runs.filter_segments([res.run_id]).filter_contents([schema.TRAIN_LOSS]).reader(index="step").to_arrow_table()
    assert loss.num_rows == res.steps_done
    ep = runs.filter_segments([res.run_id]).filter_contents([schema.HOLDOUT_LOSS]).reader(index="epoch").to_arrow_table()
    assert ep.num_rows == len(res.holdout_losses)
    ep_loss = runs.filter_segments([res.run_id]).filter_contents([schema.TRAIN_EPOCH_LOSS]).reader(index="epoch").to_arrow_table()
    assert ep_loss.column("epoch").to_pylist() == list(range(40))
    epoch_losses = torch.load(res.run_dir / "state.pt", weights_only=True)["epoch_losses"]  # the mean loss of each epoch
    assert [v[0] for v in ep_loss.column(f"{schema.TRAIN_EPOCH_LOSS}:Scalars:scalars").to_pylist()] == epoch_losses
    steps = np.asarray(res.train_losses).reshape(40, -1)  # every epoch has the same steps here
    # the stream's segment cache: the memory it held at each epoch's end, the same after the first (fetched once)
    held = runs.filter_segments([res.run_id]).filter_contents([schema.TRAIN_CACHE_MB]).reader(index="epoch").to_arrow_table()
    held = [v[0] for v in held.column(f"{schema.TRAIN_CACHE_MB}:Scalars:scalars").to_pylist()]
    assert len(held) == 40 and held[0] > 0 and set(held) == {held[0]} and held[0] <= cfg.cache_mb
    assert epoch_losses == pytest.approx(steps.mean(axis=1))
    assert ws.blueprint_path(f"{DS}_runs").is_file()
    # a restart restores the newest version only (the finished one)
    from roboloop.catalog.client import Catalog

    with Catalog(ws, url="") as again:
        rows = again.sql(f'SELECT "run.status", "run.epochs_done" FROM {DS}_runs').to_pylist()
        assert rows == [{"run.status": "finished", "run.epochs_done": 40}]
        assert (f"{DS}_runs", schema.BASE_LAYER) in again.report.segments
        assert again.report.segments[(f"{DS}_runs", schema.BASE_LAYER)] == 1


def _sample_views(catalog, run_id: str) -> dict[tuple[str, int, int], dict]:
    """(split, k, epoch) -> {"predicted", "target" (arrays [K, 14]), "input" (array), "info" (text)} read back from the run."""
    runs = catalog.dataset(f"{DS}_runs")
    t = runs.filter_segments([run_id]).filter_contents(["/samples/**"]).reader(index="epoch").to_arrow_table()
    out: dict[tuple[str, int, int], dict] = {}
    for col in t.column_names:
        if not col.startswith("/samples/"):
            continue
        entity, archetype, component = col.split(":")
        parts = entity.split("/")
        if len(parts) != 5:  # the static lanes and labels under .../chunk/
            continue
        _, _, split, k, what = parts
        for epoch, cell in zip(t.column("epoch").to_pylist(), t.column(col).to_pylist()):
            if cell is None:
                continue
            d = out.setdefault((split, int(k), int(epoch)), {})
            if archetype == "Tensor":
                d[what] = cell[0]
            elif archetype == "BarChart" and component == "values":
                d[what] = cell[0]
            elif archetype == "TextDocument" and component == "text":
                d[what] = cell[0]
            elif archetype == "LineStrips2D" and component == "strips":
                d[what] = cell
    for d in out.values():
        for what in ("predicted", "target"):
            if isinstance(d.get(what), dict):
                shape = d[what]["shape"]
                d[what] = np.asarray(d[what]["buffer"], np.float64).reshape(shape)
        if d.get("input") is not None and isinstance(d["input"], dict):
            d["input"] = np.asarray(d["input"]["buffer"], np.float64)
    return out


def test_sample_views_are_logged_during_training_and_match_the_model(trained):
    """First, middle and last epoch: training and holdout samples with their targets (the recorded data), the inputs
    the network saw, and chunks the model predicted; the last epoch's are what the final checkpoint predicts."""
    import re

    catalog, sel, eps, cfg, res = trained
    views = _sample_views(catalog, res.run_id)
    watched = (0, 19, 39)  # 40 epochs
    assert sorted(views) == sorted((split, k, e) for split in ("train", "holdout") for k in range(cfg.samples) for e in watched)
    norm = dict(np.load(res.run_dir / "normalizer.npz"))
    policy = load_policy(catalog, res.run_id)
    for (split, _k, epoch), d in views.items():
        seg, t = re.search(r"segment `([^`]+)` at ([0-9.]+) s", d["info"]).groups()
        assert (seg in sel.holdout_ids) == (split == "holdout") and seg in set(sel.train_ids) | set(sel.holdout_ids)
        i = round(float(t) * schema.CONTROL_HZ)
        data = eps[seg]
        # the target is the recorded chunk, the input the recorded state normalized (joint_noise is 0 here) + phase
        np.testing.assert_allclose(d["target"], data["targets"][i : i + K], atol=1e-6)
        joints = (data["q"][i] - norm["joints.mean"]) / norm["joints.std"]
        cube = (data["cube"][i] - norm["cube.mean"]) / norm["cube.std"]
        np.testing.assert_allclose(d["input"], np.concatenate([joints, cube, [i / STEPS]]), atol=1e-5)
        assert len(d["chunk"]) == 2 * 14  # a target and a predicted strip per joint
        if epoch == 39:  # the final weights: the deployed policy predicts the same chunk from the same observation
            chunk = policy.predict_chunk(Observation(i, i / 50, data["q"][i], data["cube"][i]))
            np.testing.assert_allclose(d["predicted"], chunk, atol=1e-5)
    # holdout samples are fixed windows, so their predictions can be compared across epochs: they improve
    for k in range(cfg.samples):
        first, last = views[("holdout", k, 0)], views[("holdout", k, 39)]
        assert first["info"].split(", epoch")[0] == last["info"].split(", epoch")[0]
        assert np.abs(last["predicted"] - last["target"]).mean() < np.abs(first["predicted"] - first["target"]).mean()
    # the run blueprint opens on the epoch timeline (where every view has data) and shows every sample view
    from roboloop.train.runlog import run_blueprint

    bp = run_blueprint(cfg.samples)
    assert bp.time_panel.timeline == "epoch"
    origins: set[str] = set()

    def walk(node) -> None:
        if hasattr(node, "origin"):  # a view
            origins.add(str(node.origin))
        else:  # a container
            for child in node.contents:
                walk(child)

    walk(bp.root_container)
    for split in ("train", "holdout"):
        for k in range(cfg.samples):
            assert {f"/samples/{split}/{k}/{w}" for w in ("chunk", "input", "info")} <= origins
    assert catalog.workspace.blueprint_path(f"{DS}_runs").is_file()


def test_sample_logging_changes_no_weight(catalog):
    """Logging samples draws from no training generator and changes no batch: same weights, same curve as without."""
    import re

    _sel, eps = make_dataset(catalog)
    noisy = MLPConfig(hidden=64, layers=2, joint_noise=0.05)  # augmentation on: the generator matters
    cfg = small_cfg(epochs=4, samples=3, model=noisy)
    a = train(catalog, cfg)
    b = train(catalog, cfg.replace(samples=0))
    assert a.checkpoint_sha256 == b.checkpoint_sha256 and a.rank_weights_sha256 == b.rank_weights_sha256
    assert a.train_losses == b.train_losses and a.holdout_losses == b.holdout_losses
    views = _sample_views(catalog, a.run_id)
    assert {key[0] for key in views} == {"train", "holdout"} and {key[2] for key in views} == {0, 1, 3}
    # a training sample's joints are what the first step fed the network: recorded + that step's noise, i.e. a row of
    # the noise the training generator (seeded with cfg.seed, nothing drawn before) gives for the first batch
    norm = dict(np.load(a.run_dir / "normalizer.npz"))
    first_noise = (torch.randn((cfg.batch_size, 14), generator=torch.Generator().manual_seed(cfg.seed)) * 0.05).numpy()
    for k in range(cfg.samples):
        d = views[("train", k, 0)]
        seg, t = re.search(r"segment `([^`]+)` at ([0-9.]+) s", d["info"]).groups()
        q = eps[seg]["q"][round(float(t) * schema.CONTROL_HZ)]
        noise = d["input"][:14] * norm["joints.std"] + norm["joints.mean"] - q
        assert np.abs(noise).max() > 1e-3  # augmented, not the clean input
        assert np.abs(first_noise - noise[None, :]).max(axis=1).min() < 1e-5, "not a row of the first step's noise"
    assert not _sample_views(catalog, b.run_id)


def test_deploy_path_reproduces_training_inputs_and_targets(trained):
    """Parity: the deploy encoder gives bit-identical inputs to the training path; the policy reproduces its targets."""
    catalog, sel, eps, cfg, res = trained
    specs = feature_specs(cfg)
    sid = sel.train_ids[0]
    from roboloop.stream import EpisodeStream

    batch = next(iter(EpisodeStream(catalog, (DS, [sid]), fields=stream_fields(specs), rate_hz=50, batch_size=1000, shuffle=False)))
    train_inputs = encode_batch(specs, batch, cfg)
    enc = ObservationEncoder(specs, cfg)
    data = eps[sid]
    policy = load_policy(catalog, res.run_id)
    policy.reset()
    actions = []
    for k in range(STEPS):
        obs = Observation(k, k / 50, data["q"][k], data["cube"][k])
        deploy = enc.encode(obs)
        for name in ("joints", "cube", "phase"):
            assert torch.equal(deploy[name][0], train_inputs[name][k]), (name, k)
        actions.append(policy.action(k, obs))
    actions = np.asarray(actions)
    assert actions.shape == (STEPS, 14)
    err = np.abs(actions - data["targets"]).mean()
    spread = np.abs(data["targets"] - data["targets"].mean(0)).mean()
    assert err < 0.1 * spread, (err, spread)
    # reset() clears every buffer: the same episode again gives the same actions
    policy.reset()
    again = [policy.action(k, Observation(k, k / 50, data["q"][k], data["cube"][k])) for k in range(5)]
    np.testing.assert_array_equal(np.asarray(again), actions[:5])


def test_same_config_same_curve_and_like_reproduces_config(catalog):
    make_dataset(catalog)
    cfg = small_cfg(epochs=4)
    a = train(catalog, cfg)
    like = load_config(catalog.workspace, a.run_id)
    assert like == cfg and like.to_json() == cfg.to_json()
    b = train(catalog, like)
    assert a.run_id != b.run_id
    assert a.train_losses == b.train_losses and a.holdout_losses == b.holdout_losses
    assert a.checkpoint_sha256 == b.checkpoint_sha256


class Boom(KeyboardInterrupt):
    pass


def test_interrupted_run_keeps_last_checkpoint_and_resumes_to_the_same_curve(catalog):
    make_dataset(catalog)
    cfg = small_cfg(epochs=6, checkpoint_every=2, holdout_every=2)
    full = train(catalog, cfg)
    ws = catalog.workspace

    held = []

    def stop(p):
        held.append(p.cache_bytes)
        if p.epoch == 4 and not p.epoch_end:  # in the 5th epoch, after the checkpoint at 4
            raise Boom()

    with pytest.raises(Boom):
        train(catalog, cfg, on_progress=stop)
    assert held[0] > 0 and held[-1] == max(held) <= cfg.cache_mb * 2**20  # progress shows the memory the stream's cache holds
    run_id = sorted((p.name for p in ws.runs_dir.iterdir()), key=lambda r: run_info(ws, r)["started_at"])
    run_id = next(r for r in run_id if r != full.run_id)
    info = run_info(ws, run_id)
    assert info["status"] == "interrupted" and info["epochs_done"] == 4
    assert info["checkpoint_sha256"] == sha256_file(ws.run_dir(run_id) / MODEL_FILE)
    row = catalog.sql(f'SELECT "run.status", "run.epochs_done" FROM {DS}_runs WHERE "run.run_id" = \'{run_id}\'').to_pylist()
    assert row == [{"run.status": "interrupted", "run.epochs_done": 4}]
    assert not ws.stale_temp_files() and not [p for p in ws.runs_dir.rglob("*") if ".tmp-" in p.name]
    # the interrupted checkpoint loads and acts
    pol = load_policy(ws, run_id)
    assert pol.action(0, Observation(0, 0.0, np.zeros(14), np.zeros(7))).shape == (14,)
    resumed = train(catalog, cfg, resume=run_id)
    assert resumed.status == "finished" and resumed.run_id == run_id
    assert resumed.train_losses == full.train_losses
    assert resumed.holdout_losses == full.holdout_losses
    assert run_info(ws, run_id)["status"] == "finished"
    versions = ws.segment_versions(f"{DS}_runs", schema.BASE_LAYER, run_id)
    assert len(versions) == 4  # running, interrupted, running (resumed), finished
    # the sample views of epochs before the interruption came back with the checkpoint: same views as the full run
    full_views, resumed_views = _sample_views(catalog, full.run_id), _sample_views(catalog, run_id)
    assert sorted(resumed_views) == sorted(full_views) and {key[2] for key in full_views} == {0, 2, 5}
    for key, d in full_views.items():
        np.testing.assert_array_equal(resumed_views[key]["predicted"], d["predicted"])
        assert resumed_views[key]["info"] == d["info"]


def test_missing_normalizer_key_is_an_error(trained):
    catalog, _sel, _eps, _cfg, res = trained
    path = res.run_dir / "normalizer.npz"
    original = path.read_bytes()
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "cube.std"}
    from roboloop.train.policies import NormalizerError

    try:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        with pytest.raises(NormalizerError, match="cube.std"):
            load_policy(catalog, res.run_id)
        arrays["cube.std"] = np.ones(3, np.float32)  # wrong shape
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        with pytest.raises(NormalizerError, match="shape"):
            load_policy(catalog, res.run_id)
    finally:
        path.write_bytes(original)
    assert load_policy(catalog, res.run_id).policy_id == res.run_id


def test_vision_policy_trains_and_acts_end_to_end(catalog):
    sel, _ = make_dataset(catalog, n=4, video=(32, 24), holdout=0.3)
    cfg = small_cfg(policy="vision", epochs=2, batch_size=32,
                    model=VisionConfig(image_width=32, image_height=24, channels=(8, 8), keypoints=4, hidden=32, layers=1))
    # parity: raw frames at deploy, through the recording's H.264 round trip, are bit-identical to the streamed ones
    from roboloop.stream import EpisodeStream

    specs = feature_specs(cfg)
    sid = sel.train_ids[0]
    offset = -0.2 + 0.4 * int(sid.split("-")[1]) / 3
    batch = next(iter(EpisodeStream(catalog, (DS, [sid]), fields=stream_fields(specs), rate_hz=50, batch_size=1000, shuffle=False)))
    train_img = encode_batch(specs, batch, cfg)["image"]
    enc = ObservationEncoder(specs, cfg, camera_hz=25)
    for k in range(STEPS):
        images = {"top": _frame(offset, k // 2, 32, 24)} if k % 2 == 0 else {}
        deploy = enc.encode(Observation(k, k / 50, np.zeros(14), np.zeros(7), images))["image"]
        assert torch.equal(deploy[0], train_img[k]), k
    res = train(catalog, cfg)
    assert res.status == "finished"
    info = run_info(catalog.workspace, res.run_id)
    assert info["cameras"] == ["top"] and info["camera_size"] == [32, 24]
    # sample views hold the exact model input frames
    runs = catalog.dataset(f"{DS}_runs")
    frames = runs.filter_segments([res.run_id]).filter_contents(["/samples/train/0/image"]).reader(index="epoch").to_arrow_table()
    assert frames.column("epoch").to_pylist() == [0, 1] and any("Image" in c for c in frames.column_names)
    # the shift augmentation draws from the training generator: the views copy it, so the weights are the same without them
    assert train(catalog, cfg.replace(samples=0)).checkpoint_sha256 == res.checkpoint_sha256
    pol = load_policy(catalog, res.run_id)
    pol.reset()
    img = _frame(0.0, 0, 32, 24)
    a0 = pol.action(0, Observation(0, 0.0, np.zeros(14), np.zeros(7), {"top": img}))
    a1 = pol.action(1, Observation(1, 0.02, np.zeros(14), np.zeros(7)))  # no frame on this step: the held one is used
    assert a0.shape == a1.shape == (14,) and np.all(np.isfinite(a1))
    pol.reset()
    with pytest.raises(ValueError, match="top"):
        pol.action(0, Observation(0, 0.0, np.zeros(14), np.zeros(7)))


def test_cli_train_like_and_runs(catalog, tmp_path):
    """`train --config`, then `train --like RUN` reproduces the config file exactly; `runs` lists both."""
    from typer.testing import CliRunner

    from roboloop import cli
    from roboloop.cli import train_cmds as cli_train

    if "train" not in {c.name for c in cli.app.registered_commands}:
        cli_train.register(cli.app)
    make_dataset(catalog)
    ws = catalog.workspace
    catalog.close()  # the CLI starts its own catalog over the same workspace
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(small_cfg(epochs=2).to_json())
    runner = CliRunner()
    r1 = runner.invoke(cli.app, ["--workspace", str(ws.root), "train", "--config", str(cfg_file)], catch_exceptions=False)
    assert r1.exit_code == 0, r1.output
    first = next(ws.runs_dir.iterdir()).name
    r2 = runner.invoke(cli.app, ["--workspace", str(ws.root), "train", "--like", first], catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    second = next(p.name for p in ws.runs_dir.iterdir() if p.name != first)
    assert (ws.run_dir(second) / "config.json").read_text() == (ws.run_dir(first) / "config.json").read_text()
    r3 = runner.invoke(cli.app, ["--workspace", str(ws.root), "train", "--like", first, "--selection", "nope"])
    assert r3.exit_code != 0 and "unknown selection 'nope'" in r3.output
    r4 = runner.invoke(cli.app, ["--workspace", str(ws.root), "runs", "--json"], catch_exceptions=False)
    assert r4.exit_code == 0 and first in r4.output and second in r4.output


@pytest.mark.sim
def test_policy_factory_drives_collect(catalog):
    """A trained run plugs into collect's policy_factory (picklable) and its rollouts are recorded with its id."""
    import pickle

    from roboloop.collect.run import CollectConfig, RecordingSpec, collect
    from roboloop.envs.aloha import SceneConditions
    from roboloop.train import PolicyFactory

    spec = RecordingSpec(cameras=())
    cond = SceneConditions.from_names(region="left")
    collect(catalog, CollectConfig(dataset="demos", episodes=2, conditions=(cond,), seed=0, spec=spec, steps=60))
    curate.save(catalog, curate.select(catalog, "demos"), "d")
    cfg = TrainConfig(dataset="demos", selection="d", epochs=2, batch_size=32, samples=1, episode_steps=300,
                      model=MLPConfig(hidden=32, layers=1))
    res = train(catalog, cfg)
    factory = pickle.loads(pickle.dumps(PolicyFactory(str(catalog.workspace.root), res.run_id)))
    rep = collect(catalog, CollectConfig(dataset="demos_evals", episodes=1, conditions=(cond,), seed=schema.EVAL_SEED_BASE, spec=spec,
                                         steps=20, kind=schema.KIND_ROLLOUT), policy_factory=factory)
    assert len(rep.results) == 1
    row = catalog.segment_table("demos_evals").to_pylist()[0]
    assert row["episode.policy"] == res.run_id and row["episode.kind"] == "rollout"
    assert row["outcome.steps"] == 20
