"""Hostile concurrency (issue 19, items 5-8): two writers of one evaluation or run, dead writers, a diverging run.

Real processes (`python -m roboloop.cli`), a real catalog, the real simulator; expectations are
computed independently of the code under test (the planned (cell, index) pairs, the rollout files
on disk, the process table).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roboloop import schema
from roboloop.analyze import rollouts as analyze
from roboloop.catalog import index as episode_index
from roboloop.catalog.client import Catalog
from roboloop.catalog.verify import verify
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.evaluate.run import (
    EvalConfig,
    EvaluateError,
    eval_row,
    evaluate,
    finished_pairs,
    list_evals,
    parse_grid,
    plan_pairs,
    resolve_policy,
    rollout_jobs,
)
from roboloop.workspace import WRITER_EVAL, WRITER_RUN, Workspace

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parents[1] / "src")
GRID = "region=default,right"


def cli(ws: Workspace, *args: str, wait: bool = True, timeout: float = 120):
    """`python -m roboloop.cli --workspace WS ARGS` in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBOLOOP_")}
    env.update(PYTHONPATH=SRC, MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "roboloop.cli", "--workspace", str(ws.root), *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


START_TIMEOUT = 600.0
"""Seconds a `train` or `eval` process may take to be interruptible (its first checkpoint, its first rollout): a few
when the machine is quiet, minutes at a load of hundreds."""
STOP_TIMEOUT = 300.0
"""Seconds a `train` or `eval` process may take to stop after SIGTERM (a few when the machine is quiet)."""


def wait_for(cond, timeout: float = 60, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def planned(n: int) -> set[tuple[str, int]]:
    cfg = EvalConfig(policy="scripted", grid=parse_grid(GRID), episodes_per_cell=n)
    return {(key, i) for _, _, key, i, _ in plan_pairs(cfg)}


# --- item 5: one writer per evaluation; every reader counts a (cell, index) once ----------------------------

@pytest.mark.sim
def test_second_writer_of_an_evaluation_is_refused_and_a_killed_one_is_listed_dead(tmp_path):
    ws = Workspace(tmp_path / "ws")
    first = cli(ws, "eval", "--policy", "scripted", "--grid", GRID, "-n", "1", "--name", "E", "--steps", "10")
    assert first.returncode == 0, first.stderr
    a = cli(ws, "eval", "--resume", "E", "-n", "50", "--steps", "10", wait=False)  # long enough to outlive b's start
    try:
        wait_for(lambda: ws.writer_alive(WRITER_EVAL, "E"), what="the first resume to hold the evaluation")
        b = cli(ws, "eval", "--resume", "E", "-n", "50", "--steps", "10")
        assert a.poll() is None, "the first writer ended before the second asked: the test proves nothing"
        assert b.returncode == 1
        assert "being written by another running process" in b.stdout + b.stderr
        assert "Traceback" not in b.stdout + b.stderr
        assert a.wait(timeout=120) == 0, a.stderr.read()
    finally:
        a.kill()
    ids = episode_index.segment_ids_on_disk(ws, "aloha_evals")
    assert len(ids) == 100  # 2 cells x 50, each pair once
    with Catalog(ws, url="") as cat:
        assert set(finished_pairs(cat, "aloha_evals", "E")) == planned(50)
    # a writer killed with SIGKILL: its row still says `running`, every listing says dead
    k = cli(ws, "eval", "--policy", "scripted", "--grid", GRID, "-n", "200", "--name", "K", "--steps", "10", wait=False)
    wait_for(lambda: any(i.startswith("K-") for i in episode_index.segment_ids_on_disk(ws, "aloha_evals")), what="a rollout of K")
    k.send_signal(signal.SIGKILL)
    k.wait(timeout=30)
    assert eval_row(ws, "K")["status"] == "running"  # as stored: nobody was left to write anything else
    assert {r["eval_id"]: r["status"] for r in list_evals(ws)} == {"E": "finished", "K": schema.STATUS_DEAD}
    shown = cli(ws, "evals", "--format", "json")
    assert shown.returncode == 0
    assert {r["eval_id"]: r["status"] for r in map(json.loads, shown.stdout.splitlines())} == {"E": "finished", "K": "dead"}


@pytest.mark.sim
def test_readers_count_a_pair_once_and_verify_names_the_duplicates(catalog):
    """What two concurrent writers used to leave (the same pairs recorded twice) is counted once everywhere."""
    cfg = EvalConfig(policy="scripted", grid=parse_grid(GRID), episodes_per_cell=3, eval_id="D", steps=5, cameras=())
    evaluate(catalog, cfg)
    # a second writer of the same pairs, as before the lock: indices 1 and 2 of both cells again
    source = resolve_policy(catalog.workspace, "scripted")
    again = [p for p in plan_pairs(cfg) if p[3] >= 1]
    spec = RecordingSpec(cameras=())
    dup = collect(catalog, CollectConfig(dataset="aloha_evals", kind=schema.KIND_ROLLOUT, steps=5, spec=spec),
                  jobs=rollout_jobs("D", source, again))
    for r in dup.results:
        episode_index.write_row(catalog.workspace, "aloha_evals", r.segment_id, r.properties)
    ws = catalog.workspace
    assert len(episode_index.segment_ids_on_disk(ws, "aloha_evals")) == 6 + 4
    table = analyze.load_rollouts(ws, "aloha_evals", ["D"])
    by_cell = {r["episode.cell"]: r["n"] for r in analyze.success_by(table, ["episode.cell"])}
    assert by_cell == {"region=default": 3, "region=right": 3}
    assert analyze.success_by(analyze.rollout_table(catalog, "aloha_evals", ["D"]), ["episode.cell"])[0]["n"] == 3
    assert set(finished_pairs(catalog, "aloha_evals", "D")) == planned(3)
    report = verify(ws, "aloha_evals")
    dups = sorted(p.name for p, problem in report.problems if "duplicate rollout" in problem)
    # the kept one of each pair is the smaller segment id; the other is reported
    props = {r.segment_id: r.properties for r in dup.results}
    expected = []
    for sid in props:
        pair = (props[sid]["episode"]["cell"], props[sid]["episode"]["index_in_cell"])
        twin = next(s for s in episode_index.segment_ids_on_disk(ws, "aloha_evals")
                    if s != sid and s.startswith(f"D-c{0 if pair[0] == 'region=default' else 1:02d}-i{pair[1]:04d}-"))
        expected.append(f"{max(sid, twin)}.rrd")
    assert dups == sorted(expected) and len(report.problems) == 4


@pytest.mark.sim
def test_sigterm_interrupts_an_evaluation_and_its_workers_stop(tmp_path):
    """`kill` (SIGTERM) of `eval --workers 2` is Ctrl-C: exit 130, the row says interrupted, no worker survives."""
    ws = Workspace(tmp_path / "ws")
    p = cli(ws, "eval", "--policy", "scripted", "--grid", GRID, "-n", "100", "--workers", "2", "--steps", "60", "--name", "T",
            wait=False)
    wait_for(lambda: len(episode_index.segment_ids_on_disk(ws, "aloha_evals")) >= 1 or p.poll() is not None,
             timeout=START_TIMEOUT, what="a first rollout")
    assert p.poll() is None, f"eval exited with {p.returncode} before its first rollout"
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=STOP_TIMEOUT) == 130  # (its stderr is not read: an orphaned worker would hold the pipe open)
    assert eval_row(ws, "T")["status"] == "interrupted"
    assert [r["status"] for r in list_evals(ws)] == ["interrupted"]

    def gone(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(lambda: all(gone(c) for c in children), timeout=60, what=f"workers {children} to stop")


# --- item 7: a run's process is its lock --------------------------------------------------------------------

def _synthetic_selection(tmp_path) -> Workspace:
    from tests.train.test_train import make_dataset, small_cfg

    ws = Workspace(tmp_path / "ws")
    with Catalog(ws, url="") as cat:
        make_dataset(cat)
    (tmp_path / "cfg.json").write_text(small_cfg(epochs=100000, checkpoint_every=1, holdout_every=1000, samples=0).to_json())
    return ws


def _start_train(ws: Workspace, tmp_path, *args: str):
    p = cli(ws, "train", *(args or ("--config", str(tmp_path / "cfg.json"))), wait=False)

    def running() -> str | None:
        runs = [d for d in ws.runs_dir.iterdir() if (d / "run.json").is_file()] if ws.runs_dir.is_dir() else []
        for d in runs:
            info = json.loads((d / "run.json").read_text())
            if info["status"] == "running" and ws.writer_alive(WRITER_RUN, d.name) and (d / "state.pt").is_file():
                return d.name
        return None

    # ready to be interrupted: its run says `running`, it holds the run's lock and has a first checkpoint. Started on a
    # loaded machine this can take minutes (imports, the catalog, the first epoch): wait long, but not for a dead process.
    wait_for(lambda: running() is not None or p.poll() is not None, timeout=START_TIMEOUT, what="the run to start")
    assert p.poll() is None, f"train exited with {p.returncode} before its run started: {p.stderr.read()[-3000:]}"
    return p, running()


def test_killed_run_is_dead_everywhere_and_a_second_resume_is_refused(tmp_path):
    from roboloop.train import list_runs, run_info

    ws = _synthetic_selection(tmp_path)
    p, run_id = _start_train(ws, tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert run_info(ws, run_id)["status"] == "running"  # as stored: nobody was left to write anything else
    assert [r["status"] for r in list_runs(ws)] == [schema.STATUS_DEAD]
    shown = cli(ws, "runs", "--json")
    assert json.loads(shown.stdout)[0]["status"] == "dead"
    with pytest.raises(EvaluateError, match=f"train --resume {run_id}"):
        resolve_policy(ws, run_id)
    # two resumes at once: the second is refused while the first lives
    a, _ = _start_train(ws, tmp_path, "--resume", run_id)
    try:
        b = cli(ws, "train", "--resume", run_id)
        assert b.returncode == 1 and "is being trained right now by another process" in b.stdout + b.stderr
        assert "Traceback" not in b.stdout + b.stderr
        assert [r["status"] for r in list_runs(ws)] == ["running"]
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    from roboloop.train import list_runs, run_info

    ws = _synthetic_selection(tmp_path)
    p, run_id = _start_train(ws, tmp_path)
    p.send_signal(signal.SIGTERM)
    try:  # stopping writes the run's `interrupted` version and registers it: seconds, minutes on a loaded machine
        code = p.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"train did not stop within {STOP_TIMEOUT} s of SIGTERM: {p.communicate()[1][-3000:]}")
    assert code == 130, p.stderr.read()
    info = run_info(ws, run_id)
    assert info["status"] == "interrupted"
    assert [r["status"] for r in list_runs(ws)] == ["interrupted"]
    assert not ws.stale_temp_files()


# --- item 8: a non-finite loss fails the run ----------------------------------------------------------------

def test_non_finite_loss_stops_the_run_failed(tmp_path):
    from roboloop.train import TrainError, run_info, train
    from tests.train.test_train import make_dataset, small_cfg

    ws = Workspace(tmp_path / "ws")
    with Catalog(ws, url="") as cat:
        make_dataset(cat)
        with pytest.raises(TrainError, match="loss became (nan|inf)") as exc:
            train(cat, small_cfg(epochs=3, lr=float("inf")))
        assert "--lr" in str(exc.value)
        run_id = next(ws.runs_dir.iterdir()).name
        assert run_info(ws, run_id)["status"] == schema.RUN_STATUS_FAILED
        row = cat.sql(f'SELECT "run.status" FROM syn_runs WHERE "run.run_id" = \'{run_id}\'').to_pylist()
        assert row == [{"run.status": "failed"}]
    (tmp_path / "inf.json").write_text(small_cfg(epochs=3).to_json())
    r = cli(ws, "train", "--config", str(tmp_path / "inf.json"), "--lr", "inf")
    assert r.returncode == 1 and "training diverged" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
