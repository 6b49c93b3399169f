"""Demonstration value (`roboloop value`, analyze/value.py): the estimator ranks demonstrations that teach a
planted bias lowest, `signals.value` is written with its provenance and is a curation query, and bad
input is an error that says what to do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from roboloop import curate, schema
from roboloop.analyze.value import (
    DemoValueError,
    ValueConfig,
    demonstration_value,
    describe,
    episode_gradients,
    expert_values,
    influence_values,
    kernel_values,
    stored_values,
    uses_value,
)
from roboloop.errors import RoboloopError
from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid
from roboloop.record.episode import EpisodeRecorder
from roboloop.refine.labels import label
from roboloop.report.data import ReportData
from roboloop.report.render import render_report
from roboloop.train import load_policy, train
from roboloop.workspace import Workspace
from tests.train.test_train import DS, STEPS, _trajectory, small_cfg

BIAS = 0.4
"""Added to every joint target of a "sloppy" synthetic demonstration (and of a failed synthetic rollout)."""
SLOPPY = {"syn-001", "syn-005"}


def write_episode(ws: Workspace, dataset: str, segment_id: str, offset: float, bias: float, seed: int):
    """An episode whose action is known: joint_targets(t) = joint_positions(t + dt) + bias; the cube's x = offset."""
    t = np.arange(STEPS) / schema.CONTROL_HZ
    path = ws.segment_path(dataset, schema.BASE_LAYER, segment_id)
    with EpisodeRecorder(path, segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, _trajectory(offset, t))
        rec.log_scalar_columns(schema.JOINT_TARGETS, t, _trajectory(offset, t + 1.0 / schema.CONTROL_HZ) + bias)
        rec.log_scalar_columns(schema.CUBE_POSE, t, np.tile([offset, 0.5, 0.02, 1.0, 0.0, 0.0, 0.0], (STEPS, 1)))
        rec.set_properties("episode", {"kind": "demo", "seed": seed})
    return path


@pytest.fixture(scope="module")
def valued(tmp_path_factory):
    """8 synthetic demonstrations (2 of them sloppy: biased targets), a small policy trained on all of them,
    and a real evaluation of it (a few control steps per rollout in the simulator)."""
    from roboloop.catalog.client import Catalog

    cat = Catalog(Workspace(tmp_path_factory.mktemp("value") / "ws"), url="")
    try:
        ws = cat.workspace
        paths = [write_episode(ws, DS, f"syn-{i:03d}", -0.2 + 0.4 * i / 7, BIAS if f"syn-{i:03d}" in SLOPPY else 0.0, i)
                 for i in range(8)]
        cat.register_files(DS, paths)
        curate.save(cat, curate.select(cat, DS, holdout=0.0), "sel")
        res = train(cat, small_cfg(epochs=10, samples=0))
        rep = evaluate(cat, EvalConfig(dataset=DS, policy=res.run_id, grid=parse_grid("lighting=normal,dim"), episodes_per_cell=6,
                                       cameras=(), steps=5))
        yield cat, res.run_id, rep.eval_id
    finally:
        cat.close()


def test_estimator_ranks_the_planted_biased_demonstrations_lowest(valued):
    """Known answer: successful rollouts executed the clean action, failed ones the biased one (what the sloppy demos
    teach). The demonstrations that pull the policy towards the failed rollouts' actions are the sloppy ones."""
    cat, run_id, _ = valued
    ws = cat.workspace
    policy = load_policy(ws, run_id)
    rollouts = {f"roll-{i:02d}": (0.05 * i - 0.15, i % 2 == 0) for i in range(8)}  # (cube x, success)
    cat.register_files("synroll", [write_episode(ws, "synroll", sid, x, 0.0 if ok else BIAS, 100 + i)
                                   for i, (sid, (x, ok)) in enumerate(rollouts.items())])
    demos = dict(episode_gradients(cat, DS, [f"syn-{i:03d}" for i in range(8)], policy.model, policy.cfg))
    rolls = dict(episode_gradients(cat, "synroll", list(rollouts), policy.model, policy.cfg))
    values = influence_values(demos, rolls, {sid: float(ok) for sid, (_, ok) in rollouts.items()})
    ranked = sorted(values, key=values.get)
    assert set(ranked[:2]) == SLOPPY, values
    assert all(values[s] < 0 for s in SLOPPY), values


def test_kernel_estimator_blames_the_demonstrations_whose_behaviour_the_failed_rollouts_show():
    """Known answer for `estimator="kernel"` (pure): every rollout's output gradient is one demonstration's plus noise
    (it behaved as the policy learned from that one), plus a component all episodes share; the rollouts that behaved
    as the planted ones failed. Those rank lowest, with negative values; every other demonstration is positive."""
    rng = np.random.default_rng(0)
    shared = 5.0 * rng.normal(size=256)
    demos = {f"d{i}": shared + rng.normal(size=256) for i in range(8)}
    planted = {"d2", "d6"}
    rollouts, outcomes = {}, {}
    for i in range(24):
        d = f"d{i % 8}"
        rollouts[f"r{i}"] = demos[d] + 0.3 * rng.normal(size=256)
        outcomes[f"r{i}"] = 0.0 if d in planted else 1.0
    values = kernel_values(demos, rollouts, outcomes)
    assert set(sorted(values, key=values.get)[:2]) == planted, values
    assert all((v < 0) == (d in planted) for d, v in values.items()), values
    same = kernel_values(demos, rollouts, {r: 1.0 - o for r, o in outcomes.items()})
    assert all(same[d] == pytest.approx(-v) for d, v in values.items())  # outcomes flipped: values flip sign


def test_projected_output_gradients_are_fixed_and_follow_the_states(valued):
    """The kernel's sketches: fixed projections (the same episode gives the same sketch), and nearer states give more
    similar sketches (once the shared component is removed)."""
    cat, run_id, _ = valued
    policy = load_policy(cat.workspace, run_id)
    demos = [f"syn-{i:03d}" for i in range(8)]
    sk = dict(episode_gradients(cat, DS, demos, policy.model, policy.cfg, projections=4, sketch=2048))
    assert {g.shape for g in sk.values()} == {(4 * 2048,)}
    again = dict(episode_gradients(cat, DS, demos[:2], policy.model, policy.cfg, projections=4, sketch=2048))
    assert np.array_equal(again["syn-000"], sk["syn-000"])
    shared = np.mean(list(sk.values()), axis=0)
    c = {d: (g - shared) / np.linalg.norm(g - shared) for d, g in sk.items()}
    assert c["syn-000"] @ c["syn-001"] > c["syn-000"] @ c["syn-004"] > c["syn-000"] @ c["syn-007"]


def test_value_writes_a_signal_that_curate_queries_with_provenance(valued):
    cat, run_id, eval_id = valued
    evals_ds = schema.evals_dataset(DS)
    rows = cat.segment_table(evals_ds).to_pylist()
    ids = sorted(r["segment_id"] for r in rows if r.get("episode.eval_id") == eval_id)
    assert len(ids) == 12 and not any(r.get("outcome.success") for r in rows)  # 5 steps: every rollout fails
    with pytest.raises(DemoValueError, match=r"0 successful and 12 failed.*at least 2 of each outcome.*--metric stage"):
        demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id))
    with pytest.raises(DemoValueError, match=r"12 judged rollout\(s\), 0 of them at another stage than the most common one"):
        demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id, metric="stage"))  # 5 steps: every rollout at stage 0
    label(cat, evals_ds, ids[::2], success=True, note="a test's stand-in for a judged success")
    seen = []
    res = demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id), progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)  # 8 demonstrations + 12 rollouts
    assert res.rollouts == 12 and res.successes == 6 and set(res.values) == {f"syn-{i:03d}" for i in range(8)}
    assert max(abs(v) for v in res.values.values()) == pytest.approx(1.0)
    table = {r["segment_id"]: r for r in cat.segment_table(DS).to_pylist()}
    for seg, v in res.values.items():
        assert table[seg]["signals.value"] == pytest.approx(v)
        assert table[seg]["signals.value_run"] == run_id and table[seg]["signals.value_eval"] == eval_id
        assert table[seg]["signal_versions.value"] == 1
    positive = curate.select(cat, DS, "signals.value > 0")
    assert set(positive.segment_ids) == {s for s, v in res.values.items() if v > 0}
    ordered = curate.select(cat, DS, order="signals.value desc", limit=3)
    assert list(ordered.segment_ids) == sorted(res.values, key=res.values.get, reverse=True)[:3]


def test_value_refuses_what_it_cannot_estimate_from(valued):
    cat, run_id, _ = valued
    scripted = evaluate(cat, EvalConfig(dataset=DS, policy="scripted", episodes_per_cell=1, cameras=(), steps=2))
    with pytest.raises(DemoValueError, match=rf"evaluated 'scripted', not run {run_id}.*roboloop eval --run {run_id}"):
        demonstration_value(cat, ValueConfig(run=run_id, eval=scripted.eval_id))
    with pytest.raises(RoboloopError, match="unknown evaluation"):
        demonstration_value(cat, ValueConfig(run=run_id, eval="nope"))
    with pytest.raises(RoboloopError, match="unknown run"):
        demonstration_value(cat, ValueConfig(run="nope", eval=scripted.eval_id))
    with pytest.raises(RoboloopError, match="eval must name"):
        ValueConfig(run=run_id, eval="")


def test_no_roboloop_module_reads_the_hidden_properties():
    """`hidden.*` is planted truth for scoring a method: no stage may read it (only collect's operator writes it)."""
    src = Path(__file__).resolve().parents[2] / "src" / "roboloop"
    query = re.compile(r"""["']hidden\.|:hidden:|schema\.HIDDEN\b""")
    readers = [str(p.relative_to(src)) for p in src.rglob("*.py")
               if query.search(p.read_text()) and p.relative_to(src) != Path("collect/run.py")]
    assert readers == []


def test_the_report_shows_the_values_and_what_curating_by_value_did(valued):
    cat, run_id, eval_id = valued
    table = cat.segment_table(DS).to_pylist()
    values = stored_values(table, run_id)
    if not values:  # run alone: value the run first
        label(cat, schema.evals_dataset(DS), sorted(r["segment_id"] for r in cat.segment_table(schema.evals_dataset(DS)).to_pylist()
                                                    if r.get("episode.eval_id") == eval_id)[::2], success=True)
        values = demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id)).values
    assert stored_values(table, "another-run") == {} and len(values) == 8
    summary = describe(values, 3)
    assert sum(summary["counts"]) == 8 and summary["lowest"] == sorted(values.items(), key=lambda kv: kv[1])[:3]
    lowest = summary["lowest"][0][0]
    data = ReportData(values=[{"label": "v1", "run_id": run_id, "dataset": DS, "evals": [eval_id], "summary": summary,
                               "lowest": [{"segment_id": seg, "value": v, "command": f"roboloop open {seg} --dataset {DS}"}
                                          for seg, v in summary["lowest"]]}],
                      value_curation=[{"label": "v3", "run_id": "run-x", "selection": "v3", "predicate": "signals.value > 0",
                                       "order": "", "num_train": 5, "value_runs": [run_id]}])
    html = render_report(data)
    assert f"roboloop open {lowest} --dataset {DS}" in html and "Runs curated by value" in html and "signals.value &gt; 0" in html
    assert uses_value("outcome.success and signals.value > 0") and uses_value("signals.value desc") and not uses_value("outcome.success")


def test_the_value_command_prints_the_lowest_with_open_commands_and_refuses_bad_input(valued):
    from typer.testing import CliRunner

    from roboloop.cli import app
    from roboloop.cli.value_cmds import register

    register(app)
    cat, run_id, eval_id = valued
    env = {"ROBOLOOP_CATALOG": "", "COLUMNS": "250"}
    if not curate.select(cat, DS, "signals.value is not null").segment_ids:  # run alone: give the rollouts both outcomes
        label(cat, schema.evals_dataset(DS), sorted(r["segment_id"] for r in cat.segment_table(schema.evals_dataset(DS)).to_pylist()
                                                    if r.get("episode.eval_id") == eval_id)[::2], success=True)
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--lowest", "3"], env=env)
    assert res.exit_code == 0, res.output
    assert f"signals.value for 8 training demonstration(s) of run {run_id}, from 12 rollout(s) of {eval_id} (6 successful)" in res.stdout
    assert res.stdout.count("roboloop open syn-0") == 3 and 'signals.value > 0' in res.stdout
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--estimator", "kernel"], env=env)
    assert res.exit_code == 0, res.output
    from roboloop.catalog.client import Catalog

    with Catalog(Workspace(cat.workspace.root), url="") as fresh:  # what the command registered, seen anew
        assert {r["signal_versions.value"] for r in fresh.segment_table(DS).to_pylist()} == {2}  # the kernel estimator's version
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--estimator", "knn"], env=env)
    assert res.exit_code != 0 and "estimator must be one of loss, kernel" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", "nope"], env=env)
    assert res.exit_code == 1 and "unknown evaluation 'nope'" in res.output and "Traceback" not in res.output


def test_expert_estimator_is_the_first_order_change_of_the_expert_loss():
    """Known answer for `expert_values` (pure), on a linear policy y = W x with a squared loss, whose gradients are
    exact: demonstrations labelled by the expert's W* plus a planted offset pull W away from the expert; the value of
    each one is the decrease of the loss on the expert's labels at other (visited) states from a small gradient step
    on it, divided by the step size, which is computed here independently by taking that step."""
    rng = np.random.default_rng(3)
    offset = np.array([1.5, -1.0, 0.8])
    w_expert = rng.normal(size=(3, 4))
    w = w_expert + 0.05 * rng.normal(size=(3, 4))
    w[:, 0] += offset / 3  # a policy fitted to the mix (a third planted): its intercept pulled toward the offset

    def grad(x, y):  # d/dW of mean_i |W x_i - y_i|^2 / 2
        return ((x @ w.T - y).T @ x / len(x)).ravel()

    def expert_loss(wt, x):
        return float(np.mean(np.sum((x @ wt.T - x @ w_expert.T) ** 2, axis=1)) / 2)

    planted = {"d1", "d4"}
    demos = {}
    for i in range(6):
        x = np.c_[np.ones(20), rng.normal(size=(20, 3))]  # x[:, 0] = 1: the intercept
        y = x @ w_expert.T + (offset if f"d{i}" in planted else 0.0)
        demos[f"d{i}"] = (x, y)
    visited = {f"r{i}": np.c_[np.ones(30), rng.normal(size=(30, 3))] for i in range(5)}
    labelled = {r: grad(x, x @ w_expert.T) for r, x in visited.items()}
    labelled["r-unlabelled"] = np.zeros(12)  # an episode without a labelled step is left out
    values = expert_values({d: grad(x, y) for d, (x, y) in demos.items()}, labelled)
    eta = 1e-5
    for d, (x, y) in demos.items():
        stepped = w - eta * grad(x, y).reshape(3, 4)
        drop = np.mean([expert_loss(w, v) - expert_loss(stepped, v) for v in visited.values()]) / eta
        assert values[d] == pytest.approx(drop, rel=1e-3)
    assert set(sorted(values, key=values.get)[:2]) == planted and all(values[d] < 0 for d in planted), values
    with pytest.raises(DemoValueError, match="no corrective episode has an expert-labelled step"):
        expert_values({"d0": np.ones(12)}, {"r": np.zeros(12)})


def _write_labelled(ws: Workspace, dataset: str, segment_id: str, offset: float, run_id: str, seed: int, *,
                    mode: str = schema.MODE_DAGGER, source: float = 0.0):
    """A corrective episode of `run_id`: the policy drove with the sloppy bias, the expert labelled the clean action."""
    t = np.arange(STEPS) / schema.CONTROL_HZ
    path = ws.segment_path(dataset, schema.BASE_LAYER, segment_id)
    with EpisodeRecorder(path, segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, _trajectory(offset, t))
        rec.log_scalar_columns(schema.JOINT_TARGETS, t, _trajectory(offset, t + 1.0 / schema.CONTROL_HZ) + BIAS)
        rec.log_scalar_columns(schema.CUBE_POSE, t, np.tile([offset, 0.5, 0.02, 1.0, 0.0, 0.0, 0.0], (STEPS, 1)))
        rec.log_scalar_columns(schema.CONTROL_SOURCE, t, np.full((STEPS, 1), source))
        rec.log_scalar_columns(schema.CONTROL_EXPERT_ACTION, t, _trajectory(offset, t + 1.0 / schema.CONTROL_HZ))
        rec.set_properties("episode", {"kind": schema.KIND_CORRECTIVE, "seed": seed, "corrected_run": run_id, "corrective_mode": mode})
        rec.set_properties("outcome", {"success": False})
    return path


def test_expert_value_ranks_the_planted_demonstrations_lowest_and_names_its_labels(valued):
    """End to end on the synthetic run: where the run's policy drove, the expert labelled the clean action; the two
    biased demonstrations pull the policy away from it. The value is written with the labels' source as provenance;
    an intervention without a takeover step, or a run without corrective episodes, is an error saying what to do."""
    cat, run_id, _ = valued
    ws = cat.workspace
    cat.register_files("synlab", [_write_labelled(ws, "synlab", f"lab-{i}", 0.06 * i - 0.15, run_id, 200 + i) for i in range(6)])
    res = demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels="synlab"))
    assert res.rollouts == 6 and res.eval == "corrective:synlab"
    assert {s for s, _ in res.lowest(2)} == SLOPPY, res.values
    assert all(res.values[s] < 0 for s in SLOPPY) and np.median([v for s, v in res.values.items() if s not in SLOPPY]) > 0, res.values
    table = {r["segment_id"]: r for r in cat.segment_table(DS).to_pylist()}
    assert {(table[s]["signals.value_eval"], table[s]["signal_versions.value"]) for s in res.values} == {("corrective:synlab", 3)}
    cat.register_files("synhw", [_write_labelled(ws, "synhw", "hw-0", 0.0, run_id, 300, mode=schema.MODE_INTERVENTION)])
    with pytest.raises(DemoValueError, match="no corrective episode has an expert-labelled step"):
        demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels="synhw", write=False))
    with pytest.raises(DemoValueError, match=rf"no failed corrective episodes of run {run_id}.*collect --corrective --run {run_id} --mode dagger"):
        demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels=DS, failed_only=True, write=False))
    with pytest.raises(RoboloopError, match="not an evaluation"):
        ValueConfig(run=run_id, eval="e", estimator="expert")
