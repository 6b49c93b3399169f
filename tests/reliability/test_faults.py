"""Fault injection (issue 13): kill -9 inside writes, restart, nothing acknowledged is lost, nothing corrupt.

Each stage command runs in its own process (`tests/reliability/fault_driver.py`, which prints an `ACK` line for
every write its stage acknowledged). Per command: one clean run with `ROBOLOOP_FAULT_TRACE` (it
records which kill points the command passes and how often), then runs killed with SIGKILL at
seeded random (point, k-th hit) choices from that trace (`ROBOLOOP_FAULT=point:k`, see
`roboloop.faults`), each followed by a restart that checks the workspace, then one more clean run of
the same command, which must complete. After every run:

- every acknowledged episode / signals layer / quality verdict / selection is present (writes lost: 0);
- every file of every version decodes fully (`catalog.validate_rrds`) and matches the checksum recorded
  before its rename, and restore skips nothing
  (corrupt files: 0), every registered segment has its finished base file and nothing else is
  registered (nothing partial);
- no two episodes share a seed (a killed collect's reserved seeds are never handed out again);
- no temporary file of a killed writer survives the restart.

Figures (kill points tried / reached, writes lost, corrupt files) are printed (`pytest -s`) and
asserted. Adding train/evaluate: add a command to fault_driver.py and a row to `PLAN`.

Issue 19 adds: kill -9 of an evaluation with two workers (the workers die with it and register nothing after
it; the resume completes each (cell, index) pair once), two concurrent resumes of a dead run (one is refused),
and SIGTERM during training (handled like Ctrl-C: `interrupted`, resumable).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.errors import CorruptRecordingError
from roboloop.catalog.rrd import validate_rrds
from roboloop.faults import ENV_FAULT, ENV_TRACE
from roboloop.workspace import Workspace, check_checksum, is_temp_file

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parents[1] / "src")
DS = "f"
SEED = 13


@dataclass
class Figures:
    tried: int = 0
    killed: int = 0
    lost: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    points: Counter = field(default_factory=Counter)


@dataclass
class Acks:
    episodes: dict[str, int] = field(default_factory=dict)  # segment -> seed
    signals: dict[str, int] = field(default_factory=dict)  # segment -> newest acknowledged version
    quality: dict[str, str] = field(default_factory=dict)  # segment -> newest acknowledged reason (tags sort by run)
    selections: dict[str, str] = field(default_factory=dict)  # name -> digest
    runs: dict[str, str] = field(default_factory=dict)  # run id -> checkpoint sha256

    def add(self, stdout: str) -> None:
        for line in stdout.splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] != "ACK":
                continue
            _, kind, key, value = parts
            if kind == "episode":
                self.episodes[key] = int(value)
            elif kind == "signals":
                self.signals[key] = _version(value)
            elif kind == "quality":
                self.quality[key] = max(value, self.quality.get(key, ""))
            elif kind == "selection":
                self.selections[key] = value
            elif kind == "run":
                self.runs[key] = value


def _version(file_name: str) -> int:
    parts = file_name.split(".")
    return int(parts[-2]) if len(parts) > 2 and parts[-2].isdigit() else 0


def run(ws: Workspace, command: str, tag: str, *, fault: str | None = None, trace: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FAULT, ENV_TRACE, "ROBOLOOP_CATALOG")}
    env.update(PYTHONPATH=SRC, MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    if fault:
        env[ENV_FAULT] = fault
    if trace:
        env[ENV_TRACE] = str(trace)
    return subprocess.run([sys.executable, str(HERE / "fault_driver.py"), str(ws.root), command, tag],
                          capture_output=True, text=True, env=env, timeout=180)


def check(ws: Workspace, acks: Acks, figures: Figures, context: str) -> None:
    """Restart on the workspace and check everything acknowledged is there and nothing is broken."""
    files = [p for p in ws.datasets_dir.rglob("*.rrd") if not is_temp_file(p)] if ws.datasets_dir.is_dir() else []
    try:
        validate_rrds(files)  # one decoding child for all of them
    except CorruptRecordingError as exc:
        figures.corrupt.extend(f"{context}: {line}" for line in str(exc).splitlines())
    for p in files:  # a published file always has its checksum, written before the rename
        status, detail = check_checksum(p)
        if status != "ok":
            figures.corrupt.append(f"{context}: {p}: {detail}")
    with Catalog(ws, url="") as cat:
        for path, reason in cat.report.skipped:
            figures.corrupt.append(f"{context}: restore skipped {path}: {reason}")
        table = cat.segment_table(DS).to_pylist() if DS in cat.dataset_names() else []
        selections = {s.name: s for s in curate.list_selections(cat)}
        runs_ds = schema.runs_dataset(DS)
        runs = {r["run.run_id"]: r for r in cat.sql(f'SELECT "run.run_id", "run.status", "run.checkpoint_sha256" FROM {runs_ds}').to_pylist()} \
            if acks.runs and runs_ds in cat.dataset_names() else {}
        leftovers = ws.stale_temp_files()  # a catalog alone on the workspace removed every dead writer's temp file
    if leftovers:
        figures.corrupt.append(f"{context}: temporary files left after a start: {leftovers}")
    rows = {r[schema.SEGMENT_ID]: r for r in table}
    base = {p.stem for p in ws.segment_files(DS, schema.BASE_LAYER)}
    if set(rows) != base:  # registered == finished base files: nothing partial, nothing missing
        figures.corrupt.append(f"{context}: registered {sorted(set(rows) ^ base)} differ from the base files")
    seeds = Counter(r.get("episode.seed") for r in rows.values())
    reused = [s for s, n in seeds.items() if n > 1]
    if reused:
        figures.lost.append(f"{context}: seeds reused {reused}")
    for seg, seed in acks.episodes.items():
        if seg not in rows or rows[seg].get("episode.seed") != seed:
            figures.lost.append(f"{context}: episode {seg} (seed {seed})")
    for seg, version in acks.signals.items():
        present = [_version(p.name) for p in ws.segment_versions(DS, schema.SIGNALS_LAYER, seg)]
        if seg not in rows or schema.SIGNALS_LAYER not in (rows[seg][schema.LAYERS] or []) or not present or max(present) < version:
            figures.lost.append(f"{context}: signals of {seg} (version {version})")
    for seg, reason in acks.quality.items():
        have = rows.get(seg, {}).get("quality.reason")
        if have is None or have < reason:
            figures.lost.append(f"{context}: quality of {seg} ({reason!r}, found {have!r})")
    for run_id, sha in acks.runs.items():  # an acknowledged run: registered finished, with the checkpoint it reported
        from roboloop.train.loop import MODEL_FILE, sha256_file

        row = runs.get(run_id)
        model = ws.run_dir(run_id) / MODEL_FILE
        if row is None or row["run.status"] != "finished" or row["run.checkpoint_sha256"] != sha or not model.is_file() or sha256_file(model) != sha:
            figures.lost.append(f"{context}: run {run_id} (checkpoint {sha[:12]}, found {row})")
    for name, digest in acks.selections.items():
        if name not in selections or (name != "latest" and selections[name].digest != digest):
            figures.lost.append(f"{context}: selection {name}")


def campaign(ws: Workspace, tmp: Path, rng: random.Random, command: str, kills: int, acks: Acks, figures: Figures) -> None:
    """One command: a traced clean run, `kills` runs killed at random points, one clean run."""
    trace = tmp / f"trace-{command}.txt"
    first = run(ws, command, f"{command}-r00", trace=trace)
    assert first.returncode == 0 and "DONE" in first.stdout, first.stderr[-3000:]
    acks.add(first.stdout)
    check(ws, acks, figures, f"{command} clean")
    hits = Counter(trace.read_text().split())
    choices = sorted(hits)
    assert choices, f"{command} passed no kill point"
    order = rng.sample(choices, len(choices))  # every point of the command first, then random ones
    for i in range(1, kills + 1):
        point = order[i - 1] if i <= len(order) else rng.choice(choices)
        k = rng.randint(1, hits[point])
        res = run(ws, command, f"{command}-r{i:02d}", fault=f"{point}:{k}")
        figures.tried += 1
        acks.add(res.stdout)
        if res.returncode == -signal.SIGKILL:
            figures.killed += 1
            figures.points[f"{command}/{point}:{k}"] += 1
        else:  # the kth hit did not come this time (state changed): the run must have completed
            assert res.returncode == 0 and "DONE" in res.stdout, res.stderr[-3000:]
        check(ws, acks, figures, f"{command} killed at {point}:{k}")
    last = run(ws, command, f"{command}-r99")
    assert last.returncode == 0 and "DONE" in last.stdout, last.stderr[-3000:]  # the same command completes
    acks.add(last.stdout)
    check(ws, acks, figures, f"{command} after the kills")


def report(name: str, figures: Figures) -> None:
    print(f"\n[{name}] kill runs {figures.tried}, killed {figures.killed}, writes lost {len(figures.lost)}, "
          f"corrupt files {len(figures.corrupt)}; points {dict(sorted(figures.points.items()))}")
    assert not figures.lost, figures.lost
    assert not figures.corrupt, figures.corrupt


def test_the_check_sees_a_lost_write_and_a_corrupt_file(tmp_path, synthetic_episode):
    """The checker itself can fail: an acknowledged episode that is not there, a broken file."""
    ws = Workspace(tmp_path / "ws")
    synthetic_episode(ws, DS, "real", duration_s=0.2, properties={"episode": {"seed": 1}})
    broken = ws.segment_path(DS, schema.BASE_LAYER, "broken")
    data = ws.segment_path(DS, schema.BASE_LAYER, "real").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    acks, figures = Acks(), Figures()
    acks.add("ACK episode real 1\nACK episode ghost 2\nACK selection v9 abc\n")
    check(ws, acks, figures, "mutation")
    assert len(figures.lost) == 2 and "ghost" in figures.lost[0] and "v9" in figures.lost[1]
    assert any("broken" in c for c in figures.corrupt)


@pytest.mark.sim
@pytest.mark.slow
def test_kill9_collect_and_refine(tmp_path):
    """kill -9 inside collect (seed reservation, episode file, registration) and refine (signals versions)."""
    ws, rng, acks, figures = Workspace(tmp_path / "ws"), random.Random(SEED), Acks(), Figures()
    campaign(ws, tmp_path, rng, "collect", 8, acks, figures)
    campaign(ws, tmp_path, rng, "refine", 6, acks, figures)
    report("collect+refine", figures)
    assert figures.killed >= 12
    assert len(acks.episodes) >= 4 and set(acks.signals) >= set(acks.episodes)


@pytest.mark.sim
def test_kill9_flag_and_curate(tmp_path):
    """kill -9 inside flag (quality versions) and curate (selection rows under the lock)."""
    ws, rng, acks, figures = Workspace(tmp_path / "ws"), random.Random(SEED + 1), Acks(), Figures()
    for _ in range(2):
        setup = run(ws, "collect", "setup")
        assert setup.returncode == 0, setup.stderr[-3000:]
        acks.add(setup.stdout)
    campaign(ws, tmp_path, rng, "flag", 6, acks, figures)
    campaign(ws, tmp_path, rng, "curate", 6, acks, figures)
    report("flag+curate", figures)
    assert figures.killed >= 10


@pytest.mark.sim
@pytest.mark.slow
def test_kill9_train(tmp_path):
    """kill -9 inside train (checkpoint files, run recording versions, `train.registered`): acknowledged runs survive
    finished with their checkpoint; no file of a killed run breaks a restart."""
    ws, rng, acks, figures = Workspace(tmp_path / "ws"), random.Random(SEED + 2), Acks(), Figures()
    setup = run(ws, "collect", "setup")
    assert setup.returncode == 0, setup.stderr[-3000:]
    acks.add(setup.stdout)
    with Catalog(ws, url="") as cat:  # the selection is made here, so the trace holds only train's points
        curate.save(cat, curate.select(cat, DS, include_flagged=True), "train-all")
    campaign(ws, tmp_path, rng, "train", 4, acks, figures)
    report("train", figures)
    assert figures.killed >= 3 and len(acks.runs) >= 2


def test_damaged_newest_version_keeps_the_older_one_through_kills(tmp_path, synthetic_episode):
    """Issue 19.2: a damaged newest quality version (truncated; another segment's recording) must not make the
    start-up garbage collection of the next processes (killed inside their first write, then a clean one)
    delete the older version restore registers instead; the damaged files are left for `verify`."""
    ws = Workspace(tmp_path / "ws")
    for i, seg in enumerate(("a", "b")):
        synthetic_episode(ws, DS, seg, duration_s=0.2, properties={"episode": {"seed": i}})
    for tag in ("t1", "t2"):  # quality v0 (reason t1), then v1 (t2)
        res = run(ws, "flag", tag)
        assert res.returncode == 0 and "DONE" in res.stdout, res.stderr[-3000:]
    q = ws.layer_dir(DS, schema.QUALITY_LAYER)
    with Catalog(ws, url=""):  # alone: collects v0, registered v1
        pass
    assert sorted(p.name for p in q.glob("*.rrd")) == ["a.1.rrd", "b.1.rrd"]
    good = {p.name: p.read_bytes() for p in q.glob("*.rrd")}
    (q / "a.2.rrd").write_bytes(good["a.1.rrd"][:1000])  # truncated newer version
    (q / "b.2.rrd").write_bytes(good["a.1.rrd"])  # a newer version holding a's recording
    killed = run(ws, "flag", "t3", fault="file.written:1")  # starts (restore + gc), then dies inside its first write
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in q.glob("?.1.rrd")} == good  # the older versions survived the kill's start
    with Catalog(ws, url="") as cat:
        rows = {r[schema.SEGMENT_ID]: r for r in cat.segment_table(DS).to_pylist()}
        assert {s: rows[s]["quality.reason"] for s in rows} == {"a": "t2", "b": "t2"}
        assert sorted(p.name for p, _ in cat.report.skipped) == ["a.2.rrd", "b.2.rrd"]
    assert (q / "a.2.rrd").is_file() and (q / "b.2.rrd").is_file()  # reported, left on disk
    last = run(ws, "flag", "t4")  # a clean run writes version 3, which supersedes everything before it at the next start
    assert last.returncode == 0 and "DONE" in last.stdout, last.stderr[-3000:]
    with Catalog(ws, url="") as cat:
        assert {r[schema.SEGMENT_ID]: r["quality.reason"] for r in cat.segment_table(DS).to_pylist()} == {"a": "t4", "b": "t4"}
        assert not cat.report.skipped
    assert sorted(p.name for p in q.glob("*.rrd")) == ["a.3.rrd", "b.3.rrd"]


# --- issue 19: orphan workers, concurrent resumes, SIGTERM -----------------------------------------------------

def start(ws: Workspace, command: str, tag: str) -> subprocess.Popen:
    """`fault_driver.py` in the background (no kill point armed)."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FAULT, ENV_TRACE, "ROBOLOOP_CATALOG")}
    env.update(PYTHONPATH=SRC, MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(HERE / "fault_driver.py"), str(ws.root), command, tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_until(cond, timeout: float = 90, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def live_run(ws: Workspace) -> str | None:
    """The run id that a live process trains, once its first checkpoint exists."""
    from roboloop.workspace import WRITER_RUN

    for d in (ws.runs_dir.iterdir() if ws.runs_dir.is_dir() else []):
        if (d / "state.pt").is_file() and (d / "run.json").is_file() and ws.writer_alive(WRITER_RUN, d.name):
            return d.name
    return None


def _train_setup(ws: Workspace, acks: Acks) -> None:
    setup = run(ws, "collect", "setup")
    assert setup.returncode == 0, setup.stderr[-3000:]
    acks.add(setup.stdout)
    with Catalog(ws, url="") as cat:
        curate.save(cat, curate.select(cat, DS, include_flagged=True), "train-all")


@pytest.mark.sim
def test_kill9_eval_workers_die_with_their_parent_and_register_nothing(tmp_path):
    """kill -9 of `eval --workers 2` after its first registration: its workers die with it, no rollout appears or is
    registered after it, and a resume completes the evaluation with every (cell, index) pair once (distinct seeds)."""
    from roboloop.evaluate.run import finished_pairs

    ws, figures = Workspace(tmp_path / "ws"), Figures()
    evals = f"{DS}_evals"
    res = run(ws, "eval-workers", "E", fault="collect.registered:2")  # killed while registering its second rollout
    at_kill = {p.stem for p in ws.segment_files(evals, schema.BASE_LAYER)}
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    workers = [int(p) for line in res.stdout.splitlines() if line.startswith("WORKERS") for p in line.split()[1:]]
    acked = {line.split()[2] for line in res.stdout.splitlines() if line.startswith("ACK rollout")}
    assert len(workers) >= 2 and len(acked) == 1
    assert acked <= at_kill and len(at_kill) == 2  # the acknowledged one + the one the parent was registering
    wait_until(lambda: not any(process_alive(p) for p in workers), timeout=10, what=f"orphan workers {workers} to die")
    time.sleep(1.0)  # a surviving worker would finish a 40-step episode in this time
    files = {p.stem for p in ws.segment_files(evals, schema.BASE_LAYER)}
    assert files == at_kill, f"rollout files finished after the parent died: {sorted(files - at_kill)}"
    check(ws, Acks(), figures, "eval killed with workers")
    last = run(ws, "eval-workers", "E")  # the immediate resume
    assert last.returncode == 0 and "DONE" in last.stdout, last.stderr[-3000:]
    with Catalog(ws, url="") as cat:
        table = cat.segment_table(evals)
        seeds = table.column("episode.seed").to_pylist()
        assert table.num_rows == 8 and len(set(seeds)) == 8, sorted(seeds)
        assert len(finished_pairs(cat, evals, "E")) == 8
    report("eval workers", figures)


@pytest.mark.sim
def test_dead_run_two_concurrent_resumes_then_sigterm(tmp_path):
    """A training run killed with SIGKILL is listed dead; of two `--resume` started together one trains and the
    other is refused while it lives (only the one writes versions); SIGTERM at a seeded random moment then stops
    the survivor like Ctrl-C: registered `interrupted` (not left `running`), nothing broken."""
    from roboloop.train import list_runs, run_info

    ws, acks, figures, rng = Workspace(tmp_path / "ws"), Acks(), Figures(), random.Random(SEED + 19)
    _train_setup(ws, acks)
    first = start(ws, "train-long", "t")
    wait_until(lambda: live_run(ws) is not None, what="the run to train")
    run_id = live_run(ws)
    first.kill()
    first.wait(timeout=30)
    assert run_info(ws, run_id)["status"] == "running"  # as stored
    assert [r["status"] for r in list_runs(ws)] == [schema.STATUS_DEAD]
    versions = lambda: len(ws.segment_versions(schema.runs_dataset(DS), schema.BASE_LAYER, run_id))  # noqa: E731
    before = versions()
    a, b = start(ws, "resume", run_id), start(ws, "resume", run_id)
    try:
        wait_until(lambda: a.poll() is not None or b.poll() is not None, timeout=60, what="one resume to be refused")
        refused, survivor = (a, b) if a.poll() is not None else (b, a)
        _, err = refused.communicate(timeout=30)
        assert refused.returncode == 1 and "is being trained right now by another process" in err, err[-3000:]
        assert survivor.poll() is None
        wait_until(lambda: versions() == before + 1, what="the survivor's `running` version")
        assert [r["status"] for r in list_runs(ws)] == ["running"]
        time.sleep(rng.uniform(0.0, 1.0))
        survivor.send_signal(signal.SIGTERM)
        out, err = survivor.communicate(timeout=60)
        figures.tried += 1
        assert survivor.returncode == 130 and "INTERRUPTED" in out, err[-3000:]
    finally:
        for p in (a, b):
            p.kill()
            p.wait(timeout=30)
    assert versions() == before + 2  # the survivor's `running` and `interrupted` versions; nothing from the refused one
    assert run_info(ws, run_id)["status"] == "interrupted"
    assert [r["status"] for r in list_runs(ws)] == ["interrupted"]
    check(ws, acks, figures, "concurrent resumes, SIGTERM")
    with Catalog(ws, url="") as cat:
        row = cat.sql(f'SELECT "run.status" FROM {schema.runs_dataset(DS)} WHERE "run.run_id" = \'{run_id}\'').to_pylist()
    assert row == [{"run.status": "interrupted"}]
    report("concurrent resume + sigterm", figures)
