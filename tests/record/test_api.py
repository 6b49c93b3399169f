"""The public recording API (`roboloop.record.episode`) through the real catalog: what was logged reads back at
its times with its values, H.264 frames decode, properties and provenance are there, an episode whose block
raises is discarded or kept as aborted, a killed process leaves nothing registered, the blueprint follows what
was logged, and bad calls are refused with errors that name the fix."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import rerun.blueprint as rrb

from roboloop import record, schema
from roboloop.analyze.rollouts import failures, load_rollouts, success_by
from roboloop.catalog import index
from roboloop.catalog.client import Catalog
from roboloop.collect.run import reserve_seeds
from roboloop.errors import RoboloopError
from roboloop.record.api import LAYOUT_FILE, blueprint_for
from roboloop.stream import EpisodeStream, StreamError
from roboloop.video import decode_samples
from roboloop.workspace import Workspace, is_temp_file
from tests.catalog.test_remote import server as remote_server  # noqa: F401 - fixture: `roboloop serve` on a new workspace
from tests.reliability.test_hostile_inputs import _invoke

JOINTS = [f"j{i}" for i in range(5)] + ["gripper"]
W, H = 64, 48
REPO = Path(__file__).resolve().parents[2]


def frame(k: int) -> np.ndarray:
    """A 64x48 frame with a bright square whose position encodes k (so frames are told apart after decoding)."""
    img = np.full((H, W, 3), 40, np.uint8)
    x, y = (k * 5) % (W - 12), (k * 3) % (H - 12)
    img[y:y + 12, x:x + 12] = (230, 200, 60)
    return img


def joints(k: int) -> np.ndarray:
    return np.sin(0.1 * k + np.arange(6))


def record_demo(target, dataset="arm", *, steps=40, **kw) -> record.Episode:
    """20 Hz joints, 10 Hz H.264 camera, 5 Hz PNG images, 20 Hz tool pose, a text event every second."""
    with record.episode(target, dataset, task="pick_block", policy="teleop", **kw) as ep:
        ep.set_properties("episode", {schema.EPISODE_OPERATOR: "alice", schema.EPISODE_TAGS: ["bench", "v1"]})
        ep.set_properties("scene", {"lighting": "dim", "block_x": 0.25})
        for k in range(steps):
            t = k / 20
            ep.log_scalars("/robot/joint_positions", t, joints(k), names=JOINTS)
            ep.log_transform("/world/arm/tool", t, [0.01 * k, 0.0, 0.3])
            if k % 2 == 0:
                ep.log_video_frame("/cameras/wrist", t, frame(k // 2))
            if k % 4 == 0:
                ep.log_image("/cameras/overview", t, frame(100 + k))
            if k % 20 == 0:
                ep.log_text("/events", t, f"second {k // 20}")
    return ep


def test_round_trip_through_the_catalog(catalog):
    N = 60  # steps at 20 Hz
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ep = record_demo(catalog, steps=N)  # 30 camera frames: more than one H.264 GOP
    after = datetime.datetime.now(datetime.UTC)
    assert ep.registered and ep.path == catalog.workspace.segment_path("arm", "base", ep.segment_id) and ep.path.is_file()

    row = catalog.segment_table("arm").to_pylist()
    assert [r["segment_id"] for r in row] == [ep.segment_id]
    props = row[0]
    assert props["episode.kind"] == "demo" and props["episode.task"] == "pick_block" and props["episode.policy"] == "teleop"
    assert props["episode.operator"] == "alice" and list(props["episode.tags"]) == ["bench", "v1"]
    assert props["scene.lighting"] == "dim" and props["scene.block_x"] == 0.25
    assert props["episode.aborted"] is False
    # what camera policies read, as collect writes it: the cameras under /cameras, their one size, the median frame rate
    assert props["episode.cameras"] == "overview,wrist" and props["episode.camera_size"] == f"{W}x{H}"
    assert props["episode.camera_hz"] == 10  # wrist frames every 0.1 s (29 steps) outnumber overview's 0.2 s (14)
    # provenance, checked against independent sources
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert props["episode.git_commit"] == head
    assert props["episode.host"] == socket.gethostname()
    assert before <= datetime.datetime.fromisoformat(props["episode.started_at"]) <= after
    import rerun
    import torch
    assert props["episode.rerun_sdk_version"] == rerun.__version__
    assert props["episode.torch_version"] == torch.__version__

    table = catalog.dataset("arm").filter_segments([ep.segment_id]).reader(index="time").to_arrow_table()
    t = table.column("time").cast("int64").to_numpy() / 1e9

    def stream(col):
        mask = table.column(col).is_valid().to_numpy(zero_copy_only=False)
        return t[mask], table.column(col).filter(table.column(col).is_valid()).to_pylist()

    tj, q = stream("/robot/joint_positions:Scalars:scalars")
    np.testing.assert_allclose(tj, np.arange(N) / 20)
    np.testing.assert_allclose(np.array(q), np.stack([joints(k) for k in range(N)]))
    tv, samples = stream("/cameras/wrist:VideoStream:sample")
    np.testing.assert_allclose(tv, np.arange(0, N, 2) / 20)
    decoded = list(decode_samples(bytes(s[0]) if isinstance(s, list) else bytes(s) for s in samples))
    assert len(decoded) == N // 2
    for k, img in enumerate(decoded):
        assert np.abs(img.astype(int) - frame(k).astype(int)).mean() < 3.0
    _, keyframes = stream("/cameras/wrist:VideoStream:is_keyframe")
    flat = [k[0] if isinstance(k, list) else k for k in keyframes]
    starts = [k for k, f in enumerate(flat) if f]
    assert len(flat) == N // 2 and starts[0] == 0 and max(np.diff([*starts, len(flat)])) <= 25  # at least every 25
    tt, translations = stream("/world/arm/tool:Transform3D:translation")
    np.testing.assert_allclose(tt, np.arange(N) / 20)
    np.testing.assert_allclose(np.array(translations).reshape(N, 3)[:, 0], 0.01 * np.arange(N), atol=1e-6)
    te, texts = stream("/events:TextLog:text")
    assert list(te) == [0.0, 1.0, 2.0] and [x[0] if isinstance(x, list) else x for x in texts] == ["second 0", "second 1", "second 2"]

    # the stock loader reads it: the H.264 camera decodes at its own rate, PNG images exactly, joints at 20 Hz
    stream_ = EpisodeStream(catalog, ("arm", [ep.segment_id]), rate_hz=10, batch_size=64, shuffle=False,
                            fields={"q": "/robot/joint_positions", "wrist": "/cameras/wrist", "overview": "/cameras/overview"})
    batch = {k: v.numpy() for k, v in next(iter(stream_)).items()}
    assert batch["q"].shape == (N // 2, 6) and batch["wrist"].shape == (N // 2, 3, H, W)
    np.testing.assert_allclose(batch["q"], np.stack([joints(2 * k) for k in range(N // 2)]), rtol=1e-6)
    for k in range(N // 2):
        assert np.abs(batch["wrist"][k].astype(int) - frame(k).transpose(2, 0, 1)).mean() < 3.0
        np.testing.assert_array_equal(batch["overview"][k], frame(100 + 4 * (k // 2)).transpose(2, 0, 1))
    # shuffled small batches seek into the second GOP: every frame still decodes to itself
    shuffled = EpisodeStream(catalog, ("arm", [ep.segment_id]), rate_hz=10, batch_size=4, shuffle=True, seed=3,
                             fields={"wrist": "/cameras/wrist"})
    seen = []
    for b in shuffled:
        for idx, img in zip(b["frame_index"].numpy(), b["wrist"].numpy()):
            assert np.abs(img.astype(int) - frame(int(idx)).transpose(2, 0, 1)).mean() < 3.0
            seen.append(int(idx))
    assert sorted(seen) == list(range(N // 2)) and seen != sorted(seen)

    # the dataset's default blueprint was written and registered
    assert catalog.workspace.blueprint_path("arm").is_file()
    assert catalog.dataset("arm").default_blueprint() is not None


def test_a_restarted_catalog_restores_an_episode_recorded_without_one(ws):
    ep = record_demo(ws.root, steps=4)
    assert not ep.registered and ep.path.is_file()
    with Catalog(str(ws.root), url="") as cat:  # a workspace folder, as record.episode takes it
        assert cat.segment_table("arm").column("segment_id").to_pylist() == [ep.segment_id]
        assert cat.dataset("arm").default_blueprint() is not None


def test_an_exception_discards_by_default_or_keeps_an_aborted_episode(catalog):
    with pytest.raises(KeyError, match="encoder"):
        with record.episode(catalog, "arm") as ep:
            ep.log_scalars("/robot/joint_positions", 0.0, joints(0))
            raise KeyError("encoder")
    assert ep.closed and not ep.registered and not ep.path.exists()
    assert "arm" not in catalog.dataset_names() or catalog.segment_table("arm").num_rows == 0

    with pytest.raises(RuntimeError, match="e-stop"):
        with record.episode(catalog, "arm", on_error="abort") as kept:
            for k in range(3):
                kept.log_scalars("/robot/joint_positions", k / 20, joints(k))
            raise RuntimeError("e-stop pressed")
    assert kept.registered and kept.path.is_file()
    rows = catalog.segment_table("arm").to_pylist()
    assert [r["segment_id"] for r in rows] == [kept.segment_id]
    assert rows[0]["episode.aborted"] is True and rows[0]["episode.abort_reason"] == "RuntimeError: e-stop pressed"
    assert rows[0]["time_end"].total_seconds() == pytest.approx(0.1)


CRASH = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from roboloop import record
    with record.episode(sys.argv[1], "arm") as ep:
        for k in range(30):
            ep.log_scalars("/robot/joint_positions", k / 20, np.zeros(6))
            ep.log_video_frame("/cameras/wrist", k / 20, np.zeros((48, 64, 3), np.uint8))
        if sys.argv[2] == "mid":
            os.kill(os.getpid(), signal.SIGKILL)
    print("closed", flush=True)
""")


@pytest.mark.parametrize("where", ["mid", "file.written", "file.renamed"])
def test_a_killed_recording_leaves_nothing_half_registered(tmp_path, where):
    """Killed mid-episode, or inside the write with the temporary file complete but not renamed: nothing is
    registered after a restart and the dead writer's temporary file is removed. Killed after the rename (before
    registration): the complete episode is there and the restart registers it whole."""
    ws = Workspace(tmp_path / "ws")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if where != "mid":
        env["ROBOLOOP_FAULT"] = where
    proc = subprocess.run([sys.executable, "-c", CRASH, str(ws.root), where], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "closed" not in proc.stdout

    def files() -> list[Path]:
        return sorted(p for p in (ws.root / "datasets").rglob("*.rrd*")) if (ws.root / "datasets").exists() else []

    temps = [p for p in files() if is_temp_file(p)]
    assert len(temps) == (1 if where == "file.written" else 0)
    with Catalog(ws, url="") as cat:
        if where == "file.renamed":
            (row,) = cat.segment_table("arm").to_pylist()
            assert row["time_end"].total_seconds() == pytest.approx(29 / 20)
        else:
            assert "arm" not in cat.dataset_names() or cat.segment_table("arm").num_rows == 0
    assert not [p for p in files() if is_temp_file(p)]  # the dead writer's temporary file is gone


def test_rollouts_go_to_the_evals_dataset_with_an_index_row_and_seeds_are_reserved(catalog):
    with record.episode(catalog, "arm", kind="rollout", policy="ckpt-7", seed=7) as ep:
        ep.log_scalars("/robot/joint_positions", 0.0, joints(0))
    assert ep.dataset == "arm_evals" and "-s000007-" in ep.segment_id
    rows = index.read(catalog.workspace, "arm_evals")
    assert [r["segment_id"] for r in rows] == [ep.segment_id]
    assert rows[0]["episode.kind"] == "rollout" and rows[0]["episode.seed"] == 7 and rows[0]["episode.policy"] == "ckpt-7"
    assert catalog.segment_table("arm_evals").column("segment_id").to_pylist() == [ep.segment_id]
    assert not (catalog.workspace.dataset_dir("arm_evals") / ".seeds").exists()  # rollout seeds are not reserved
    with record.episode(catalog, "arm", seed=3) as demo:
        demo.log_scalars("/x", 0.0, 1.0)
    assert reserve_seeds(catalog.workspace, "arm", 1) == range(4, 5)  # collect continues after the recorded seed


def test_bad_calls_name_the_problem_and_the_fix(ws):
    with pytest.raises(record.RecordError, match="unknown episode kind 'teleop'.*kind='demo'"):
        record.episode(ws, "arm", kind="teleop")
    with pytest.raises(record.RecordError, match="invalid dataset name"):
        record.episode(ws, "my robot")
    with pytest.raises(record.RecordError, match="reserved for the training runs"):
        record.episode(ws, "arm_runs")
    with pytest.raises(record.RecordError, match="on_error must be 'discard'"):
        record.episode(ws, "arm", on_error="ignore")
    ep = record.episode(ws, "arm")
    ep.log_scalars("/robot/joint_positions", 0.1, np.zeros(6))
    with pytest.raises(record.RecordError, match=r"time went backwards \(0.05 s after 0.1 s\)"):
        ep.log_scalars("/robot/joint_positions", 0.05, np.zeros(6))
    with pytest.raises(record.RecordError, match=r"width \(7,\) differs from the earlier rows' \(6,\)"):
        ep.log_scalars("/robot/joint_positions", 0.2, np.zeros(7))
    with pytest.raises(record.RecordError, match="5 names for 6 values"):
        ep.log_scalars("/robot/joint_positions", 0.2, np.zeros(6), names=JOINTS[:5])
    with pytest.raises(record.RecordError, match="even frame size, got 63x48; crop or pad to 64x48"):
        ep.log_video_frame("/cameras/wrist", 0.0, np.zeros((48, 63, 3), np.uint8))
    with pytest.raises(record.RecordError, match="H x W x 3 uint8"):
        ep.log_image("/cameras/wrist2", 0.0, np.zeros((48, 64, 3), np.float32))
    ep.log_video_frame("/cameras/wrist", 0.0, np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(record.RecordError, match="a second frame at 0.0 s"):
        ep.log_video_frame("/cameras/wrist", 0.0, np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(record.RecordError, match=r"frame size \(24, 32, 3\) differs"):
        ep.log_video_frame("/cameras/wrist", 0.1, np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(record.RecordError, match="already holds video"):
        ep.log_scalars("/cameras/wrist", 0.2, 1.0)
    with pytest.raises(record.RecordError, match="start with '/'"):
        ep.log_scalars("robot/q", 0.0, 1.0)
    with pytest.raises(record.RecordError, match="finite and >= 0"):
        ep.log_scalars("/robot/q", float("nan"), 1.0)
    with pytest.raises(record.RecordError, match=r"/robot/joint_positions: non-finite value nan at index 2 at t=0.3 s; "
                                                 r"log only finite values \(a sensor dropout: skip this row"):
        ep.log_scalars("/robot/joint_positions", 0.3, [0, 0, np.nan, 0, 0, 0])
    with pytest.raises(record.RecordError, match=r"/robot/v: non-finite value inf at index 0 at t=0.3 s"):
        ep.log_scalars("/robot/v", 0.3, np.inf)
    with pytest.raises(record.RecordError, match=r"/world/tool: non-finite quaternion nan at index 0 at t=0.3 s"):
        ep.log_transform("/world/tool", 0.3, [0, 0, 0], [np.nan, 0, 0, 1])
    with pytest.raises(record.RecordError, match=r"camera streams live at /cameras/<name>.*log to /cameras/front"):
        ep.log_video_frame("/cam/front", 0.0, np.zeros((48, 64, 3), np.uint8))
    with pytest.warns(record.RecordWarning, match=r"/robot/wall: first time 1764900000 s looks like a wall-clock"):
        ep.log_scalars("/robot/wall", 1764900000.0, 1.0)
    with pytest.warns(record.RecordWarning, match=r"outcome.sucess is not an outcome property.*did you mean 'success'"):
        ep.set_properties("outcome", {"sucess": True})
    with pytest.warns(record.RecordWarning, match=r"property group 'scenes' is stored as its own group.*did you mean 'scene'"):
        ep.set_properties("scenes", {"lighting": "dim"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a group of your own, and the groups roboloop reads, warn nothing
        ep.set_properties("hardware", {"gripper": "v2"})
        ep.set_properties("scene", {"lighting": "dim"})
    with pytest.raises(record.RecordError, match="episode.kind is set by roboloop"):
        ep.set_properties("episode", {"kind": "rollout"})
    with pytest.raises(record.RecordError, match="numbers, booleans, strings"):
        ep.set_properties("scene", {"pose": {"x": 1}})
    with pytest.raises(record.RecordError, match="lists of one type"):
        ep.set_properties("episode", {"tags": ["a", 1]})
    with pytest.raises(record.RecordError, match="episode.git_commit is set by roboloop"):
        ep.set_properties("episode", {"git_commit": "abc"})
    with pytest.raises(record.RecordError, match="outcome.success is True or False"):
        ep.set_properties("outcome", {"success": 1})
    assert issubclass(record.RecordError, RoboloopError)
    first = ep.elapsed()
    assert 0 <= first <= ep.elapsed()  # a monotonic clock since the episode was opened
    ep.discard()
    with pytest.raises(record.RecordError, match="logged nothing"):
        record.episode(ws, "arm").close()
    assert not ws.segment_files("arm", "base")


def _views(bp) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(node) -> None:
        if hasattr(node, "origin"):
            out.append((type(node).__name__, str(node.origin)))
        else:
            for child in node.contents:
                walk(child)

    walk(bp.root_container)
    return out


def test_the_blueprint_follows_what_was_logged():
    layout = {"scalars": ["/robot/joint_positions", "/robot/joint_targets"], "image": ["/cameras/wrist"],
              "transform": ["/world/arm/link1", "/world/arm/tool"], "text": ["/events"], "document": ["/task"]}
    bp = blueprint_for(layout)
    assert sorted(_views(bp)) == sorted([
        ("Spatial3DView", "/world"), ("Spatial2DView", "/cameras/wrist"),
        ("TimeSeriesView", "/robot/joint_positions"), ("TimeSeriesView", "/robot/joint_targets"),
        ("TextDocumentView", "/task"), ("TextLogView", "/events"),
    ])
    assert bp.time_panel.timeline == schema.TIMELINE
    assert ("Spatial3DView", "/") in _views(blueprint_for({"transform": ["/tool", "/world/block"]}))
    only_scalars = _views(blueprint_for({"scalars": ["/q"]}))
    assert only_scalars == [("TimeSeriesView", "/q")]  # no 3D view without transforms, no empty camera row
    assert isinstance(blueprint_for({"scalars": ["/q"]}).root_container, rrb.Horizontal)


def test_the_dataset_blueprint_covers_every_episode(catalog):
    """An episode without a camera does not hide another episode's camera."""
    with record.episode(catalog, "mix") as a:
        a.log_video_frame("/cameras/wrist", 0.0, frame(0))
    first = catalog.workspace.blueprint_path("mix").read_bytes()
    with record.episode(catalog, "mix") as b:
        b.log_scalars("/robot/q", 0.0, [1.0, 2.0])
    layout = json.loads((catalog.workspace.dataset_dir("mix") / LAYOUT_FILE).read_text())
    assert layout["image"] == ["/cameras/wrist"] and layout["scalars"] == ["/robot/q"]
    assert sorted(_views(blueprint_for(layout))) == [("Spatial2DView", "/cameras/wrist"), ("TimeSeriesView", "/robot/q")]
    assert catalog.workspace.blueprint_path("mix").read_bytes() != first  # rewritten when the layout grew
    assert catalog.dataset("mix").default_blueprint() is not None


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_the_recording_scripts_own_commit_is_provenance(tmp_path):
    """A team's loop in its own git checkout: its commit and dirty flag are recorded next to roboloop's."""
    project = tmp_path / "team"
    project.mkdir()
    script = project / "loop.py"
    script.write_text("import sys\nfrom roboloop import record\n"
                      "with record.episode(sys.argv[1], 'arm') as ep:\n    ep.log_scalars('/q', 0.0, 1.0)\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = _git(project, "rev-parse", "HEAD")
    ws = Workspace(tmp_path / "ws")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, str(script), str(ws.root)], env=env, check=True, cwd=tmp_path, timeout=120)
    script.write_text(script.read_text() + "# edited\n")  # a dirty checkout
    subprocess.run([sys.executable, str(script), str(ws.root)], env=env, check=True, cwd=tmp_path, timeout=120)
    with Catalog(ws, url="") as cat:
        rows = cat.segment_table("arm").to_pylist()
    assert sorted((r["episode.project_git_commit"], r["episode.project_git_dirty"]) for r in rows) == [(head, False), (head, True)]
    assert {r["episode.git_commit"] for r in rows} == {_git(REPO, "rev-parse", "HEAD")}  # roboloop's own, unchanged


def test_an_aborted_episode_that_logged_nothing_is_discarded(ws):
    with pytest.raises(ValueError, match="no sensor"):
        with record.episode(ws, "arm", on_error="abort") as ep:
            raise ValueError("no sensor")
    assert not ep.aborted and not ep.path.exists()


def test_success_and_failures_read_rollouts_of_any_robot(catalog):
    """Rollouts recorded through the API (no cells, no cube, no evaluation id; one judged on the spot as a success,
    one as a failure with its kind and moment, one not judged) through the rollout index that `roboloop success`
    and `failures` read."""
    judged = [{"success": True}, {"success": False, "failure_reason": "slipped", "failure_time_s": 0.3}, None]
    ids = []
    for outcome in judged:
        with record.episode(catalog, "arm", kind="rollout", policy="ckpt-7") as ep:
            for k in range(10):
                ep.log_scalars("/robot/joint_positions", k / 20, joints(k))
            if outcome:
                ep.set_properties("outcome", outcome)
        ids.append(ep.segment_id)
    table = load_rollouts(catalog.workspace, "arm_evals", needed=["episode.policy"], catalog_factory=lambda: catalog)
    groups = success_by(table, ["episode.policy"])
    assert [(g["episode.policy"], g["successes"]) for g in groups] == [("ckpt-7", 1)]
    fails = failures(table, dataset="arm_evals")
    assert [(f["segment_id"], f["failure_kind"], f["at_s"]) for f in fails] == [(ids[1], "slipped", 0.3)]
    assert fails[0]["open"] == f"roboloop open {ids[1]} --at 0.3 --dataset arm_evals"
    assert fails[0]["judged"] == "recorded"  # judged by the team's loop, not by a simulator
    ws = catalog.workspace
    catalog.close()
    code, out = _invoke(ws.root, "failures", "--dataset", "arm_evals")
    flat = " ".join(out.split())
    assert code == 0 and "recorded" in flat and "simulator" not in flat and "None" not in flat, out
    assert ("note: no nearest training episodes for rollouts without an evaluation: no eval id (recorded outside "
            "`roboloop eval`, e.g. with record.episode)") in flat
    code, out = _invoke(ws.root, "failures", "--dataset", "arm_evals", "--eval", "foo")
    assert code == 1 and "arm_evals has no episode.eval_id column: its rollouts were not made by `roboloop eval`" in " ".join(out.split())


def test_a_workspace_served_by_another_process_registers_at_once(request, monkeypatch):
    """With `roboloop serve` running on the workspace, an episode recorded by folder path is registered there when
    it closes (no restart needed), blueprint included."""
    ws, _url = request.getfixturevalue("remote_server")
    monkeypatch.delenv("ROBOLOOP_CATALOG", raising=False)
    ep = record_demo(ws.root, steps=4)
    assert ep.registered
    with Catalog(ws) as cat:  # attaches to the server: sees only what was registered there
        assert not cat.embedded
        assert cat.segment_table("arm").column("segment_id").to_pylist() == [ep.segment_id]
        assert cat.dataset("arm").default_blueprint() is not None


def test_a_transform_as_a_stream_field_says_to_log_it_with_log_scalars(catalog):
    ep = record_demo(catalog, steps=4)
    with pytest.raises(StreamError, match=r"/world/arm/tool has no component the loader can decode.*also log it as a "
                                          r"vector with log_scalars"):
        EpisodeStream(catalog, ("arm", [ep.segment_id]), fields={"pose": "/world/arm/tool"}, rate_hz=10, batch_size=8)
    with pytest.raises(StreamError) as err:  # not said of a stream that is no pose
        EpisodeStream(catalog, ("arm", [ep.segment_id]), fields={"log": "/events"}, rate_hz=10, batch_size=8)
    assert "log_scalars" not in str(err.value)
