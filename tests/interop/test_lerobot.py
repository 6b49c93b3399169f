"""LeRobot in and out: a hand-written v3.0 dataset imported; a selection exported and imported back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.interop import LeRobotFormatError, export_lerobot, import_lerobot
from roboloop.interop.lerobot import segment_id_for
from roboloop.video import decode_samples

FPS = 10
W, H = 64, 48
LENGTHS = (12, 15, 9)
TASKS = ("pick up the cube", "hand it over", "pick up the cube")


def _frame(global_k: int) -> np.ndarray:
    """A frame that identifies its index: a bright square sliding right, on a gradient."""
    f = np.zeros((H, W, 3), np.uint8)
    f[:, :, 2] = np.linspace(0, 180, W, dtype=np.uint8)[None, :]
    x = (global_k * 2) % (W - 12)
    f[16:28, x : x + 12] = (240, 240, 60)
    return f


def _video_codec() -> str:
    import av

    try:
        av.Codec("libsvtav1", "w")  # LeRobot's default codec
        return "libsvtav1"
    except Exception:  # noqa: BLE001
        return "mpeg4"


def write_v3_dataset(root: Path) -> dict:
    """A LeRobot v3.0 dataset written from the documented layout (independent of roboloop's exporter).

    Episodes share one data parquet and one mp4; episode e covers video time
    [from_timestamp, to_timestamp). Returns what was written, for expectations.
    """
    import av

    rng = np.random.default_rng(3)
    state, action, vel, reward, frames = [], [], [], [], []
    rows = {k: [] for k in ("observation.state", "action", "observation.velocity", "next.reward", "timestamp", "frame_index", "episode_index", "index", "task_index")}
    task_list = list(dict.fromkeys(TASKS))
    episodes = []
    index = 0
    for e, n in enumerate(LENGTHS):
        s = rng.normal(size=(n, 6)).astype(np.float32)
        a = rng.normal(size=(n, 6)).astype(np.float32)
        v = rng.normal(size=(n, 2)).astype(np.float32)
        r = rng.random(n).astype(np.float32)
        state.append(s), action.append(a), vel.append(v), reward.append(r)
        frames.append([_frame(index + k) for k in range(n)])
        rows["observation.state"] += list(s)
        rows["action"] += list(a)
        rows["observation.velocity"] += list(v)
        rows["next.reward"] += list(r)
        rows["timestamp"] += list((np.arange(n) / FPS).astype(np.float32))
        rows["frame_index"] += list(range(n))
        rows["episode_index"] += [e] * n
        rows["index"] += list(range(index, index + n))
        rows["task_index"] += [task_list.index(TASKS[e])] * n
        episodes.append(
            {
                "episode_index": e,
                "tasks": [TASKS[e]],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": index,
                "dataset_to_index": index + n,
                "videos/observation.images.top/chunk_index": 0,
                "videos/observation.images.top/file_index": 0,
                "videos/observation.images.top/from_timestamp": index / FPS,
                "videos/observation.images.top/to_timestamp": (index + n) / FPS,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
        )
        index += n
    (root / "data/chunk-000").mkdir(parents=True)

    def vec(xs, d):
        return pa.FixedSizeListArray.from_arrays(pa.array(np.stack(xs).reshape(-1), pa.float32()), d)

    table = pa.table(
        {
            "observation.state": vec(rows["observation.state"], 6),
            "action": vec(rows["action"], 6),
            "observation.velocity": vec(rows["observation.velocity"], 2),
            "next.reward": pa.array(rows["next.reward"], pa.float32()),
            "timestamp": pa.array(rows["timestamp"], pa.float32()),
            "frame_index": pa.array(rows["frame_index"], pa.int64()),
            "episode_index": pa.array(rows["episode_index"], pa.int64()),
            "index": pa.array(rows["index"], pa.int64()),
            "task_index": pa.array(rows["task_index"], pa.int64()),
        }
    )
    with pq.ParquetWriter(root / "data/chunk-000/file-000.parquet", table.schema) as w:
        for e, n in enumerate(LENGTHS):  # one row group per episode
            lo = sum(LENGTHS[:e])
            w.write_table(table.slice(lo, n))
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": pa.array(range(len(task_list)), pa.int64()), "task": task_list}), root / "meta/tasks.parquet")
    (root / "videos/observation.images.top/chunk-000").mkdir(parents=True)
    with av.open(str(root / "videos/observation.images.top/chunk-000/file-000.mp4"), "w") as c:
        codec = _video_codec()
        st = c.add_stream(codec, rate=FPS)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"g": "2", "crf": "20", "preset": "12"} if codec == "libsvtav1" else {"g": "2", "qscale": "2"}
        k = 0
        for ep_frames in frames:
            for f in ep_frames:
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts = k
                k += 1
                for p in st.encode(vf):
                    c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    feats = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": [f"j{i}" for i in range(6)]},
        "action": {"dtype": "float32", "shape": [6], "names": {"motors": [f"m{i}" for i in range(6)]}},
        "observation.velocity": {"dtype": "float32", "shape": [2], "names": ["vx", "vy"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "observation.images.top": {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {
        "codebase_version": "v3.0",
        "robot_type": "toy",
        "total_episodes": len(LENGTHS),
        "total_frames": index,
        "total_tasks": len(task_list),
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": feats,
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/stats.json").write_text(json.dumps({"action": {"mean": [0.0] * 6}}))
    return {"state": state, "action": action, "vel": vel, "reward": reward, "frames": frames}


def _read_stream(catalog: Catalog, dataset: str, segment_id: str, entity: str, component: str = schema.SCALARS_COMPONENT):
    table = catalog.dataset(dataset).filter_segments([segment_id]).filter_contents([entity]).reader(index="time").to_arrow_table()
    col = f"{entity}:{component}"
    keep = [i for i, v in enumerate(table.column(col).to_pylist()) if v is not None]
    times = table.column("time").cast(pa.int64()).to_numpy()[keep]
    values = [table.column(col).to_pylist()[i] for i in keep]
    return times, values


def test_import_hand_written_v3_dataset(tmp_path, catalog):
    src = tmp_path / "toy_lerobot"
    truth = write_v3_dataset(src)
    report = import_lerobot(catalog, src, "toy")

    assert len(report.segment_ids) == 3 and report.episode_indices == [0, 1, 2]
    assert report.segment_ids == [segment_id_for(src, e) for e in range(3)]
    assert report.frames == sum(LENGTHS)
    assert report.streams == {
        "observation.state": schema.JOINT_POSITIONS,
        "action": schema.JOINT_TARGETS,
        "observation.velocity": "/lerobot/observation.velocity",
        "next.reward": schema.REWARD,
    }
    assert report.cameras == {"observation.images.top": "/cameras/top"}
    table = catalog.segment_table("toy").to_pylist()
    assert len(table) == 3
    by_index = {r["episode.lerobot_episode_index"]: r for r in table}
    for e, n in enumerate(LENGTHS):
        row = by_index[e]
        sid = row["segment_id"]
        assert row["episode.kind"] == "demo" and row["episode.task"] == TASKS[e]
        assert row["episode.source"] == f"lerobot:{src.resolve()}"
        assert row["lerobot.fps"] == FPS and row["lerobot.length"] == n and row["lerobot.codebase_version"] == "v3.0"
        assert row["episode.cameras"] == "top" and row["episode.camera_size"] == f"{W}x{H}"
        # scalars: every row at k / fps exactly, values equal to the float32 source
        for entity, expected in ((schema.JOINT_POSITIONS, truth["state"][e]), (schema.JOINT_TARGETS, truth["action"][e]), ("/lerobot/observation.velocity", truth["vel"][e])):
            times, values = _read_stream(catalog, "toy", sid, entity)
            np.testing.assert_array_equal(times, np.round(np.arange(n) * 1e9 / FPS).astype(np.int64))
            np.testing.assert_array_equal(np.asarray(values, np.float64), expected.astype(np.float64))
        times, values = _read_stream(catalog, "toy", sid, schema.REWARD)
        np.testing.assert_array_equal(np.asarray(values, np.float64).reshape(-1), truth["reward"][e].astype(np.float64))
        # the camera: H.264 at the dataset's rate, frames that decode to the source's frames
        times, samples = _read_stream(catalog, "toy", sid, "/cameras/top", schema.VIDEO_SAMPLE_COMPONENT)
        np.testing.assert_array_equal(times, np.round(np.arange(n) * 1e9 / FPS).astype(np.int64))
        decoded = list(decode_samples(bytes(np.asarray(s, np.uint8)) for s in samples))
        assert len(decoded) == n
        for k in range(n):
            err = np.abs(decoded[k].astype(float) - truth["frames"][e][k].astype(float)).mean()
            assert err < 6.0, (e, k, err)
            if k + 1 < n:  # the frame is this one, not its neighbour
                other = np.abs(decoded[k].astype(float) - truth["frames"][e][k + 1].astype(float)).mean()
                assert other > err + 1.0
    # series names come from the features' names (list and {"motors": [...]} forms)
    names = catalog.dataset("toy").filter_segments([table[0]["segment_id"]]).filter_contents([schema.JOINT_TARGETS]).reader(index=None).to_arrow_table()
    assert names.column(f"{schema.JOINT_TARGETS}:SeriesLines:names").to_pylist()[0] == [f"m{i}" for i in range(6)]

    # importing the same folder again into the same dataset is refused and changes nothing
    with pytest.raises(LeRobotFormatError, match="already imported"):
        import_lerobot(catalog, src, "toy")
    assert len(catalog.segment_table("toy")) == 3

    # a restart restores the imported segments from the workspace
    with Catalog(catalog.workspace, url="") as again:
        assert sorted(again.segment_table("toy").column("segment_id").to_pylist()) == sorted(report.segment_ids)


@pytest.mark.parametrize("damage", ["video_missing", "data_corrupt", "episodes_missing"])
def test_import_bad_dataset_names_the_file_and_imports_nothing(tmp_path, catalog, damage):
    src = tmp_path / "broken"
    write_v3_dataset(src)
    if damage == "video_missing":
        bad = src / "videos/observation.images.top/chunk-000/file-000.mp4"
        bad.unlink()
    elif damage == "data_corrupt":
        bad = src / "data/chunk-000/file-000.parquet"
        bad.write_bytes(bad.read_bytes()[: 200])
    else:
        bad = src / "meta/episodes"
        for p in bad.rglob("*.parquet"):
            p.unlink()
    with pytest.raises(LeRobotFormatError) as exc:
        import_lerobot(catalog, src, "toy")
    assert str(bad) in str(exc.value)
    assert "toy" not in catalog.dataset_names()
    assert not list(catalog.workspace.root.rglob("*.rrd"))


def test_import_failing_mid_way_leaves_nothing(tmp_path, catalog):
    """Episodes 0 and 1 convert, episode 2 has no rows: the files already written are removed."""
    src = tmp_path / "partial"
    write_v3_dataset(src)
    data = src / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    pq.write_table(table.filter(pa.compute.not_equal(table.column("episode_index"), 2)), data)
    with pytest.raises(LeRobotFormatError, match="no rows of episode 2") as exc:
        import_lerobot(catalog, src, "toy")
    assert str(data) in str(exc.value)
    assert "toy" not in catalog.dataset_names()
    locks = catalog.workspace.root / "locks"  # the running catalog's own lock file is not an import artifact
    assert not [p for p in catalog.workspace.root.rglob("*") if p.is_file() and locks not in p.parents]


def test_export_then_import_round_trip(tmp_path, catalog, synthetic_episode):
    import torch

    from roboloop.stream import EpisodeStream

    torch.set_num_threads(1)
    ws = catalog.workspace
    paths = []
    for i, dur in enumerate((1.0, 1.4)):
        _, p = synthetic_episode(
            ws,
            "src",
            f"ep-{i}",
            duration_s=dur,
            scalar_streams={schema.JOINT_POSITIONS: (50.0, 14), schema.JOINT_TARGETS: (50.0, 14), schema.CUBE_POSE: (50.0, 7)},
            video_streams={schema.camera_path("top"): (25.0, 64, 48)},
            properties={"episode": {"kind": "demo", "task": "transfer_cube"}},
            seed=i,
        )
        paths.append(p)
    catalog.register_files("src", paths)
    sel = curate.select(catalog, "src")
    curate.save(catalog, sel, "all")

    out = tmp_path / "exported"
    rep = export_lerobot(catalog, "all", out, 25)
    assert rep.segment_ids == ["ep-0", "ep-1"]
    assert rep.features == {
        "observation.images.top": "/cameras/top",
        "observation.state": schema.JOINT_POSITIONS,
        "action": schema.JOINT_TARGETS,
        "observation.environment_state": schema.CUBE_POSE,
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported")]  # no temp folder left

    # the files follow the v3.0 layout
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 25 and info["total_episodes"] == 2
    assert info["features"]["observation.state"]["shape"] == [14] and info["features"]["observation.state"]["dtype"] == "float32"
    assert info["features"]["observation.images.top"]["dtype"] == "video"
    assert info["features"]["observation.images.top"]["shape"] == [48, 64, 3]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert pq.ParquetFile(out / "data/chunk-000/file-000.parquet").num_row_groups == 2
    n0, n1 = 1.0 * 25 - 25 / 50 + 1, 1.4 * 25 - 25 / 50 + 1  # grid points up to the last 50 Hz row
    assert data.num_rows == info["total_frames"] == int(np.floor(n0)) + int(np.floor(n1))
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1] and eps[0]["tasks"] == ["transfer_cube"]
    assert eps[1]["videos/observation.images.top/from_timestamp"] == pytest.approx(eps[0]["length"] / 25)
    stats = json.loads((out / "meta/stats.json").read_text())
    state = np.stack(data.column("observation.state").to_pylist())
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["min"], state.min(axis=0))
    assert stats["observation.state"]["count"] == [data.num_rows]
    assert np.asarray(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["transfer_cube"]
    pd = pytest.importorskip("pandas")
    assert list(pd.read_parquet(out / "meta/tasks.parquet").index) == ["transfer_cube"]  # the task is the index, as LeRobot reads it

    # import it back: the same values at every grid point
    back = import_lerobot(catalog, out, "back")
    assert len(back.segment_ids) == 2
    fields = {"state": schema.JOINT_POSITIONS, "action": schema.JOINT_TARGETS, "top": "/cameras/top"}

    def grid(dataset, ids):
        s = EpisodeStream(catalog, (dataset, ids), fields=fields, rate_hz=25, batch_size=1024, shuffle=False)
        return {k: v.numpy() for k, v in next(iter(s)).items()}

    a = grid("src", ["ep-0", "ep-1"])
    rows = {r["episode.lerobot_episode_index"]: r["segment_id"] for r in catalog.segment_table("back").to_pylist()}
    b = grid("back", [rows[0], rows[1]])
    prov = json.loads((out / "meta/roboloop.json").read_text())
    assert prov["selection"] == "all" and prov["segment_ids"] == ["ep-0", "ep-1"] and prov["selection_digest"] == sel.digest
    back_rows = {r["episode.lerobot_episode_index"]: r for r in catalog.segment_table("back").to_pylist()}
    assert [back_rows[i]["lerobot.source_segment_id"] for i in (0, 1)] == ["ep-0", "ep-1"]
    np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
    np.testing.assert_array_equal(a["state"], b["state"])  # exact in float32
    np.testing.assert_array_equal(a["action"], b["action"])
    env = schema.CUBE_POSE  # roboloop.json maps each feature back to the path it was exported from
    envs = EpisodeStream(catalog, ("back", [rows[0], rows[1]]), fields={"env": env}, rate_hz=25, batch_size=1024, shuffle=False)
    orig = EpisodeStream(catalog, ("src", ["ep-0", "ep-1"]), fields={"env": schema.CUBE_POSE}, rate_hz=25, batch_size=1024, shuffle=False)
    np.testing.assert_array_equal(next(iter(envs))["env"].numpy(), next(iter(orig))["env"].numpy())
    cam = stats["observation.images.top"]  # per channel in [0, 1], over the frames that were encoded
    np.testing.assert_allclose(np.asarray(cam["mean"]).reshape(3), a["top"].mean(axis=(0, 2, 3)) / 255.0, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(cam["std"]).reshape(3), a["top"].std(axis=(0, 2, 3)) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cam["max"]).reshape(3), a["top"].max(axis=(0, 2, 3)) / 255.0)
    assert cam["count"] == [len(a["top"])]
    diff = np.abs(a["top"].astype(float) - b["top"].astype(float)).mean(axis=(1, 2, 3))
    assert diff.max() < 4.0, diff
    # and frames still identify their index: a shifted comparison is clearly worse
    shifted = np.abs(a["top"][1:].astype(float) - b["top"][:-1].astype(float)).mean()
    assert shifted > diff.mean() + 1.0


def test_export_refuses_existing_folder_and_unknown_selection(tmp_path, catalog, synthetic_episode):
    _, p = synthetic_episode(catalog.workspace, "src", "ep-0", duration_s=0.5)
    catalog.register_files("src", [p])
    curate.save(catalog, curate.select(catalog, "src"), "s")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LeRobotFormatError, match="already exists"):
        export_lerobot(catalog, "s", out, 50)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(curate.UnknownSelectionError):
        export_lerobot(catalog, "nope", tmp_path / "other", 50)
    assert not (tmp_path / "other").exists()
    with pytest.raises(LeRobotFormatError, match="not an earlier roboloop export"):
        export_lerobot(catalog, "s", out, 50, overwrite=True)  # a folder this command did not write is never replaced
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    out.rmdir()
    export_lerobot(catalog, "s", out, 25)
    rep = export_lerobot(catalog, "s", out, 50, overwrite=True)  # an earlier export is
    assert rep.frames == 25
    assert sorted(json.loads((out / "meta/info.json").read_text())["features"]) == sorted(
        ["observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"]
    )


def _cli_app():
    """The main `roboloop` app with the interop commands added (as the lead wires them at merge)."""
    from roboloop.cli import app
    from roboloop.cli.interop_cmds import register

    names = {c.name for c in app.registered_commands}
    if "import-lerobot" not in names:
        register(app)
    return app


def test_cli_import_then_export(tmp_path):
    from typer.testing import CliRunner

    src = tmp_path / "toy_lerobot"
    write_v3_dataset(src)
    wsdir = tmp_path / "ws"
    runner = CliRunner()
    app = _cli_app()
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "import-lerobot", str(src), "--dataset", "toy"])
    assert res.exit_code == 0, res.output
    assert "imported 3 episode(s), 36 frames at 10 fps" in res.output
    assert "observation.state" in res.output and "/robot/joint_positions" in res.output
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "curate", "--dataset", "toy", "--name", "all"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "export-lerobot", "--selection", "all", "--fps", "10", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 3 episode(s), 36 frames at 10 fps" in res.output
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == 3 and info["total_frames"] == 36
    # the velocity came in under /lerobot/<key> and goes out under its original key
    assert info["features"]["observation.velocity"]["names"] == ["vx", "vy"]
    assert info["features"]["next.reward"]["shape"] == [1]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.schema.field("next.reward").type == pa.float32()  # shape [1] is a plain column
    assert data.schema.field("observation.velocity").type == pa.list_(pa.float32(), 2)
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "export-lerobot", "--selection", "all", "--fps", "5", str(out)])
    assert res.exit_code == 1 and "already exists" in " ".join(res.output.split())
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "export-lerobot", "--selection", "all", "--fps", "5", "--overwrite",
                              "--feature", "observation.state=/robot/joint_positions", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "meta/info.json").read_text())
    assert info["fps"] == 5 and set(info["features"]) == {"observation.state", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    # errors are one clear line, exit code 1, nothing written
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "export-lerobot", "--selection", "nope", "--fps", "10", str(tmp_path / "x")])
    assert res.exit_code == 1 and "unknown selection 'nope'" in " ".join(res.output.split())
    assert not (tmp_path / "x").exists()
    res = runner.invoke(app, ["--workspace", str(wsdir), "--catalog", "", "import-lerobot", str(tmp_path / "missing"), "--dataset", "t2"])
    assert res.exit_code == 1 and "missing: no such folder" in " ".join(res.output.split())


def test_import_v21_dataset(tmp_path, catalog):
    """v2.1: jsonl metadata, one parquet and one mp4 per episode (video time starts at 0 in each)."""
    import av

    root = tmp_path / "old"
    fps, lengths = 10, (6, 8)
    (root / "meta").mkdir(parents=True)
    rng = np.random.default_rng(1)
    states = []
    for e, n in enumerate(lengths):
        s = rng.normal(size=(n, 3)).astype(np.float32)
        states.append(s)
        d = root / "data/chunk-000"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(s.reshape(-1)), 3),
                    "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
                    "frame_index": pa.array(np.arange(n)),
                    "episode_index": pa.array(np.full(n, e)),
                    "index": pa.array(np.arange(n) + sum(lengths[:e])),
                    "task_index": pa.array(np.zeros(n, np.int64)),
                }
            ),
            d / f"episode_{e:06d}.parquet",
        )
        v = root / "videos/chunk-000/observation.images.wrist"
        v.mkdir(parents=True, exist_ok=True)
        with av.open(str(v / f"episode_{e:06d}.mp4"), "w") as c:
            st = c.add_stream("mpeg4", rate=fps)
            st.width, st.height, st.pix_fmt = W, H, "yuv420p"
            st.options = {"qscale": "2"}
            for k in range(n):
                vf = av.VideoFrame.from_ndarray(_frame(k + 5 * e), format="rgb24")
                vf.pts = k
                for p in st.encode(vf):
                    c.mux(p)
            for p in st.encode(None):
                c.mux(p)
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps({"episode_index": e, "tasks": ["stack"], "length": n}) + "\n" for e, n in enumerate(lengths)))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "stack"}) + "\n")
    info = {
        "codebase_version": "v2.1",
        "fps": fps,
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [3], "names": None},
            "observation.images.wrist": {"dtype": "video", "shape": [H, W, 3], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    rep = import_lerobot(catalog, root, "old")
    assert rep.codebase_version == "v2.1" and len(rep.segment_ids) == 2
    rows = {r["episode.lerobot_episode_index"]: r for r in catalog.segment_table("old").to_pylist()}
    for e, n in enumerate(lengths):
        sid = rows[e]["segment_id"]
        assert rows[e]["episode.task"] == "stack" and rows[e]["episode.cameras"] == "wrist"
        _, values = _read_stream(catalog, "old", sid, schema.JOINT_POSITIONS)
        np.testing.assert_array_equal(np.asarray(values), states[e].astype(np.float64))
        times, samples = _read_stream(catalog, "old", sid, "/cameras/wrist", schema.VIDEO_SAMPLE_COMPONENT)
        assert len(times) == n
        decoded = list(decode_samples(bytes(np.asarray(s, np.uint8)) for s in samples))
        errs = [np.abs(decoded[k].astype(float) - _frame(k + 5 * e).astype(float)).mean() for k in range(n)]
        assert max(errs) < 6.0, errs


def test_configs_round_trip_and_validate():
    from roboloop.interop import ExportConfig, ImportConfig

    e = ExportConfig(selection="v1", out_dir="/tmp/x", fps=30, split="all", features={"observation.state": "/robot/joint_positions"}, exclude=("/reward",))
    assert ExportConfig.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    i = ImportConfig(path="/data/ds", dataset="imported", episodes=(0, 2))
    assert ImportConfig.from_dict(json.loads(json.dumps(i.to_dict()))) == i
    assert ExportConfig.from_toml(e.to_toml()) == e and ImportConfig.from_toml(i.to_toml()) == i
    with pytest.raises(ValueError, match="unknown key"):
        ExportConfig.from_dict({**e.to_dict(), "shuffle": True})
    with pytest.raises(ValueError, match="fps"):
        ExportConfig(selection="v1", out_dir="/tmp/x", fps=29.97)
    with pytest.raises(ValueError, match="split"):
        ExportConfig(selection="v1", out_dir="/tmp/x", fps=30, split="val")
    with pytest.raises(ValueError, match="bookkeeping"):
        ExportConfig(selection="v1", out_dir="/tmp/x", fps=30, features={"timestamp": "/a"})
    with pytest.raises(ValueError, match="dataset name"):
        ImportConfig(path="/data/ds", dataset="bad name")
    assert schema.lerobot_key(schema.lerobot_entity("observation.velocity")) == "observation.velocity"
    assert schema.lerobot_key(schema.lerobot_entity("observation.images.top", camera=True)) == "observation.images.top"
    for key in (schema.LEROBOT_STATE, schema.LEROBOT_ACTION, schema.LEROBOT_REWARD):
        assert schema.lerobot_key(schema.lerobot_entity(key)) == key


def test_import_image_feature_becomes_h264_camera(tmp_path, catalog):
    """An `image` feature (PNG bytes in the data parquet) is re-encoded as an H.264 camera."""
    import io

    from PIL import Image

    root = tmp_path / "imgs"
    n = 5
    frames = [_frame(k) for k in range(n)]
    pngs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "observation.image": pa.array(pngs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                "observation.state": pa.array(np.arange(n, dtype=np.float32)),
                "timestamp": pa.array((np.arange(n) / 5).astype(np.float32)),
                "frame_index": pa.array(np.arange(n)),
                "episode_index": pa.array(np.zeros(n, np.int64)),
                "index": pa.array(np.arange(n)),
                "task_index": pa.array(np.zeros(n, np.int64)),
            }
        ),
        root / "data/chunk-000/file-000.parquet",
    )
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([{"episode_index": 0, "length": n, "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": 0, "dataset_to_index": n}]),
        root / "meta/episodes/chunk-000/file-000.parquet",
    )
    pq.write_table(pa.table({"task_index": [0], "task": ["push"]}), root / "meta/tasks.parquet")
    feats = {
        "observation.image": {"dtype": "image", "shape": [H, W, 3], "names": None},
        "observation.state": {"dtype": "float32", "shape": [1], "names": None},
        "language": {"dtype": "string", "shape": [1], "names": None},
    }
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 5, "features": feats}))
    rep = import_lerobot(catalog, root, "imgs")
    assert rep.cameras == {"observation.image": "/lerobot/observation.image"}
    assert rep.skipped_features == {"language": "dtype 'string' is not numeric, image or video"}
    row = catalog.segment_table("imgs").to_pylist()[0]
    assert row["episode.task"] == "push"  # from task_index + tasks.parquet (no 'tasks' column)
    times, samples = _read_stream(catalog, "imgs", rep.segment_ids[0], "/lerobot/observation.image", schema.VIDEO_SAMPLE_COMPONENT)
    np.testing.assert_array_equal(times, np.arange(n) * 200_000_000)
    decoded = list(decode_samples(bytes(np.asarray(s, np.uint8)) for s in samples))
    assert max(np.abs(d.astype(float) - f.astype(float)).mean() for d, f in zip(decoded, frames)) < 6.0


def test_export_feature_missing_in_an_episode_says_how_to_leave_it_out(tmp_path, catalog, synthetic_episode):
    ws = catalog.workspace
    _, a = synthetic_episode(ws, "mixed", "ep-a", duration_s=0.4, video_streams={"/cameras/top": (25.0, 32, 24)})
    _, b = synthetic_episode(ws, "mixed", "ep-b", duration_s=0.4)
    catalog.register_files("mixed", [a, b])
    curate.save(catalog, curate.select(catalog, "mixed"), "mixed")
    with pytest.raises(LeRobotFormatError, match=r"/cameras/top \(feature 'observation.images.top'\) has no data in segment\(s\) ep-b"):
        export_lerobot(catalog, "mixed", tmp_path / "o", 25)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))
    rep = export_lerobot(catalog, "mixed", tmp_path / "o", 25, exclude=["/cameras/top"])
    assert rep.cameras == [] and rep.segment_ids == ["ep-a", "ep-b"]


def test_export_splits(tmp_path, catalog, synthetic_episode):
    paths = [synthetic_episode(catalog.workspace, "sp", f"h-{i}", duration_s=0.2, seed=i)[1] for i in range(6)]
    catalog.register_files("sp", paths)
    sel = curate.save(catalog, curate.select(catalog, "sp", holdout=0.5), "half")
    assert sel.train_ids and sel.holdout_ids  # both sides non-empty for these ids
    rep = export_lerobot(catalog, "half", tmp_path / "all", 50, split="all")
    assert rep.segment_ids == list(sel.train_ids) + list(sel.holdout_ids)
    nt, n = len(sel.train_ids), 6
    assert json.loads((tmp_path / "all/meta/info.json").read_text())["splits"] == {"train": f"0:{nt}", "test": f"{nt}:{n}"}
    assert export_lerobot(catalog, "half", tmp_path / "train", 50).segment_ids == list(sel.train_ids)
    assert export_lerobot(catalog, "half", tmp_path / "ho", 50, split="holdout").segment_ids == list(sel.holdout_ids)


def _controlled_episode(ws, dataset: str, segment_id: str, *, seed: int, kind: str, mode: str | None = None,
                        source: np.ndarray | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """A 20-step episode at the control rate: joints, executed targets and, for a corrective one, the expert's action
    and who was in control at each step (`source`). Returns its path and the streams it holds."""
    from roboloop.record.episode import EpisodeRecorder

    rng, n = np.random.default_rng(seed), 20
    t = np.arange(n) / schema.CONTROL_HZ
    streams = {schema.JOINT_POSITIONS: rng.normal(size=(n, 14)), schema.JOINT_TARGETS: rng.normal(size=(n, 14))}
    if source is not None:
        streams[schema.CONTROL_EXPERT_ACTION] = rng.normal(size=(n, 14)) + 5.0
        streams[schema.CONTROL_SOURCE] = source.astype(np.float64)[:, None]
    path = ws.segment_path(dataset, schema.BASE_LAYER, segment_id)
    with EpisodeRecorder(path, segment_id) as rec:
        for entity, values in streams.items():
            rec.log_scalar_columns(entity, t, values)
        rec.set_properties(schema.EPISODE, {schema.EPISODE_KIND: kind, "seed": seed, "task": "transfer_cube",
                                            **({schema.EPISODE_CORRECTIVE_MODE: mode} if mode else {})})
    return path, streams


def test_export_of_corrective_episodes_gives_the_training_target_as_action(tmp_path, catalog):
    """`action` is what roboloop trains on: a dagger episode's expert label at every step, an intervention's where the
    person was in control, a demonstration's own action; the executed action, the label flag and the source stay."""
    ws = catalog.workspace
    takeover = np.zeros(20, int)
    takeover[8:14] = schema.SOURCE_EXPERT
    dagger_source = np.zeros(20, int)
    dagger_source[15:] = schema.SOURCE_EXPERT  # (gated: the expert drove at the end; every step is labelled anyway)
    episodes = {
        "c-demo": _controlled_episode(ws, "cor", "c-demo", seed=1, kind=schema.KIND_DEMO),
        "c-dagger": _controlled_episode(ws, "cor", "c-dagger", seed=2, kind=schema.KIND_CORRECTIVE, mode=schema.MODE_DAGGER,
                                        source=dagger_source),
        "c-takeover": _controlled_episode(ws, "cor", "c-takeover", seed=3, kind=schema.KIND_CORRECTIVE,
                                          mode=schema.MODE_INTERVENTION, source=takeover),
    }
    catalog.register_files("cor", [p for p, _ in episodes.values()])
    curate.save(catalog, curate.select(catalog, "cor"), "cor")
    rep = export_lerobot(catalog, "cor", tmp_path / "o", schema.CONTROL_HZ)
    assert rep.features == {"observation.state": schema.JOINT_POSITIONS, "action": schema.LEROBOT_TRAINING_TARGET,
                            "executed_action": schema.JOINT_TARGETS, "action_is_label": "/lerobot/action_is_label",
                            "control.source": schema.CONTROL_SOURCE}
    data = pq.read_table(tmp_path / "o/data/chunk-000/file-000.parquet")
    assert json.loads((tmp_path / "o/meta/roboloop.json").read_text())["features"] == rep.features
    for index, sid in enumerate(rep.segment_ids):
        rows = data.filter(pa.compute.equal(data["episode_index"], index))
        streams = episodes[sid][1]
        executed = streams[schema.JOINT_TARGETS].astype(np.float32)
        if sid == "c-demo":
            labelled, source, target = np.ones(20, bool), np.full(20, schema.SOURCE_EXPERT), executed
        else:
            source = episodes[sid][1][schema.CONTROL_SOURCE][:, 0]
            labelled = np.ones(20, bool) if sid == "c-dagger" else source == schema.SOURCE_EXPERT
            target = np.where(labelled[:, None], streams[schema.CONTROL_EXPERT_ACTION].astype(np.float32), executed)
        assert rows.num_rows == 20, sid
        np.testing.assert_array_equal(np.stack(rows["action"].to_numpy(zero_copy_only=False)), target, err_msg=sid)
        np.testing.assert_array_equal(np.stack(rows["executed_action"].to_numpy(zero_copy_only=False)), executed, err_msg=sid)
        np.testing.assert_array_equal(rows["action_is_label"].to_numpy(), labelled.astype(np.float32), err_msg=sid)
        np.testing.assert_array_equal(rows["control.source"].to_numpy(), source.astype(np.float32), err_msg=sid)
    # imported back: the executed action where it was recorded, the training target next to it
    back = import_lerobot(catalog, tmp_path / "o", "back")
    dagger = back.segment_ids[rep.segment_ids.index("c-dagger")]
    for entity, expected in ((schema.JOINT_TARGETS, episodes["c-dagger"][1][schema.JOINT_TARGETS]),
                             (schema.LEROBOT_TRAINING_TARGET, episodes["c-dagger"][1][schema.CONTROL_EXPERT_ACTION])):
        np.testing.assert_array_equal(np.asarray(_read_stream(catalog, "back", dagger, entity)[1]), expected.astype(np.float32))
    # the demonstrations alone (a dataset that also holds corrective episodes): their own action, no corrective columns
    curate.save(catalog, curate.select(catalog, "cor", "episode.kind = 'demo'"), "demos")
    demos = export_lerobot(catalog, "demos", tmp_path / "d", schema.CONTROL_HZ)
    assert demos.features == {"observation.state": schema.JOINT_POSITIONS, "action": schema.JOINT_TARGETS}
