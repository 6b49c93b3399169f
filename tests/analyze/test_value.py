"""Demonstration value (`roboloop value`, analyze/value.py): the estimator ranks demonstrations that teach a
planted bias lowest, `signals.value` is written with its provenance and is a curation query, and bad
input is an error that says what to do."""

from __future__ import annotations

import functools
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
    expert_losses,
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


def evaluation_rollouts(cat, eval_id: str) -> list[str]:
    """The segment ids of evaluation `eval_id`'s rollouts, sorted."""
    return sorted(r["segment_id"] for r in cat.segment_table(schema.evals_dataset(DS)).to_pylist() if r.get("episode.eval_id") == eval_id)


@pytest.fixture(scope="module")
def judged(valued):
    """`valued` with every other rollout of its evaluation labelled a success (5 control steps fail them all), so a
    value can be estimated: 6 successful and 6 failed rollouts. Labelling the same rollouts again changes nothing."""
    cat, run_id, eval_id = valued
    label(cat, schema.evals_dataset(DS), evaluation_rollouts(cat, eval_id)[::2], success=True,
          note="a test's stand-in for a judged success")
    return valued


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


def _demos_and_episodes(rng, prefix: str, draw=None) -> tuple[dict, dict]:
    """8 synthetic demonstrations' output gradients (a component they all share plus their own) and 24 episodes, each
    behaving as one demonstration taught it (that one's gradient plus noise): {episode: (gradient, demonstration)},
    with `draw()` appended when given (drawn right after the episode's gradient, from the same generator)."""
    shared = 5.0 * rng.normal(size=256)
    demos = {f"d{i}": shared + rng.normal(size=256) for i in range(8)}
    episodes = {}
    for i in range(24):
        d = f"d{i % 8}"
        g = demos[d] + 0.3 * rng.normal(size=256)
        episodes[f"{prefix}{i}"] = (g, d) if draw is None else (g, d, draw())
    return demos, episodes


def test_kernel_estimator_blames_the_demonstrations_whose_behaviour_the_failed_rollouts_show():
    """Known answer for `estimator="kernel"` (pure): every rollout's output gradient is one demonstration's plus noise
    (it behaved as the policy learned from that one), plus a component all episodes share; the rollouts that behaved
    as the planted ones failed. Those rank lowest, with negative values; every other demonstration is positive."""
    rng = np.random.default_rng(0)
    demos, behaved = _demos_and_episodes(rng, "r")
    planted = {"d2", "d6"}
    rollouts = {e: g for e, (g, _) in behaved.items()}
    outcomes = {e: 0.0 if d in planted else 1.0 for e, (_, d) in behaved.items()}
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


def test_value_writes_a_signal_that_curate_queries_with_provenance(valued, request):
    cat, run_id, eval_id = valued
    rows = cat.segment_table(schema.evals_dataset(DS)).to_pylist()
    assert len(evaluation_rollouts(cat, eval_id)) == 12 and not any(r.get("outcome.success") for r in rows)  # 5 steps: all fail
    with pytest.raises(DemoValueError, match=r"0 successful and 12 failed.*at least 2 of each outcome.*--metric stage"):
        demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id))
    with pytest.raises(DemoValueError, match=r"12 judged rollout\(s\), 0 of them at another stage than the most common one"):
        demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id, metric="stage"))  # 5 steps: every rollout at stage 0
    request.getfixturevalue("judged")  # now judged: 6 successes, 6 failures
    seen = []
    res = demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id, estimator="loss"), progress=lambda d, t: seen.append((d, t)))
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


def test_the_report_shows_the_values_and_what_curating_by_value_did(judged):
    cat, run_id, eval_id = judged
    table = cat.segment_table(DS).to_pylist()
    values = stored_values(table, run_id) or demonstration_value(cat, ValueConfig(run=run_id, eval=eval_id)).values  # alone: none yet
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


def test_the_value_command_prints_the_lowest_with_open_commands_and_refuses_bad_input(judged):
    from typer.testing import CliRunner

    from roboloop.cli import app
    from roboloop.cli.value_cmds import register

    register(app)
    cat, run_id, eval_id = judged
    env = {"ROBOLOOP_CATALOG": "", "COLUMNS": "250"}
    from roboloop.catalog.client import Catalog

    def stored() -> tuple[set, dict]:  # what the command registered, seen anew
        with Catalog(Workspace(cat.workspace.root), url="") as fresh:
            rows = fresh.segment_table(DS).to_pylist()
        return {r["signal_versions.value"] for r in rows}, {r["segment_id"]: r["signals.value"] for r in rows}

    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--lowest", "3"], env=env)
    assert res.exit_code == 0, res.output
    assert f"signals.value for 8 training demonstration(s) of run {run_id}, from 12 rollout(s) of {eval_id} (6 successful)" in res.stdout
    versions, values = stored()
    assert versions == {2} and res.stdout.count("roboloop open syn-0") == 3  # the default: the kernel estimator's version
    # the curation it suggests follows the values' signs: a `> 0` filter only when some are below 0, else the order
    assert ('signals.value > 0' in res.stdout) == any(v < 0 for v in values.values())
    assert '--order "signals.value desc" --limit 5' in res.stdout
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--estimator", "loss"], env=env)
    assert res.exit_code == 0, res.output
    versions, values = stored()
    assert versions == {1} and ('signals.value > 0' in res.stdout) == any(v < 0 for v in values.values())
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", eval_id, "--estimator", "knn"], env=env)
    assert res.exit_code != 0 and "estimator must be one of loss, kernel, expert" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["--workspace", str(cat.workspace.root), "value", "--run", run_id, "--eval", "nope"], env=env)
    assert res.exit_code == 1 and "unknown evaluation 'nope'" in res.output and "Traceback" not in res.output


def test_expert_estimator_blames_the_demonstrations_taught_where_the_policy_departs_from_the_expert():
    """Known answer for `expert_values` (pure): every labelled episode's output gradient is one demonstration's plus
    noise (the policy behaved there as it learned from that one); where it behaved as a planted demonstration taught,
    the policy is far from the expert's labels (a large L1). Those demonstrations rank lowest and negative. The score
    is a log-likelihood: scaling every loss by a constant changes nothing; an episode without labelled steps (no loss)
    is left out; fewer than 2 labelled episodes is an error."""
    rng = np.random.default_rng(1)
    demos, behaved = _demos_and_episodes(rng, "e", draw=lambda: rng.uniform(0.8, 1.25))
    planted = {"d3", "d5"}
    labelled = {e: g for e, (g, _, _) in behaved.items()}
    losses = {e: (0.9 if d in planted else 0.05) * u for e, (_, d, u) in behaved.items()}
    labelled["e-unlabelled"] = demos["d0"] + 0.3 * rng.normal(size=256)
    values = expert_values(demos, labelled, losses)
    assert set(sorted(values, key=values.get)[:2]) == planted, values
    assert all((v < 0) == (d in planted) for d, v in values.items()), values
    scaled = expert_values(demos, labelled, {e: 7.0 * v for e, v in losses.items()})
    assert all(scaled[d] == pytest.approx(v) for d, v in values.items())
    without = expert_values(demos, {e: g for e, g in labelled.items() if e != "e-unlabelled"}, losses)
    assert without == values
    with pytest.raises(DemoValueError, match=r"1 corrective episode\(s\) with expert-labelled steps.*at least 2"):
        expert_values(demos, labelled, {"e0": 0.1})


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


def test_expert_value_reads_the_runs_corrective_labels_and_names_them(valued):
    """End to end on the synthetic run: corrective episodes of the run (the policy drove with the planted bias, the
    expert labelled the clean action) in their own dataset. The written values are the pure estimator's on the run's
    sketches and on the policy's loss against the expert's labels, which is lower than against what was executed;
    the labels' source is the provenance. An intervention without a takeover step, or a run without corrective
    episodes, is an error saying what to do."""
    cat, run_id, _ = valued
    ws = cat.workspace
    labs = [f"lab-{i}" for i in range(6)]
    cat.register_files("synlab", [_write_labelled(ws, "synlab", sid, 0.07 * i - 0.17, run_id, 200 + i) for i, sid in enumerate(labs)])
    res = demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels="synlab"))
    assert res.rollouts == 6 and res.eval == "corrective:synlab" and res.successes == 0
    policy = load_policy(ws, run_id)
    losses = expert_losses(cat, "synlab", labs, policy.model, policy.cfg)
    executed = dict(episode_losses(cat, "synlab", labs, policy))
    assert set(losses) == set(labs) and all(losses[e] < executed[e] for e in labs), (losses, executed)
    sketch = functools.partial(episode_gradients, cat, model=policy.model, cfg=policy.cfg, projections=8)
    want = expert_values(dict(sketch(DS, [f"syn-{i:03d}" for i in range(8)])), dict(sketch("synlab", labs)), losses)
    scale = max(abs(v) for v in want.values())
    assert res.values == pytest.approx({d: v / scale for d, v in want.items()}, abs=1e-5)
    table = {r["segment_id"]: r for r in cat.segment_table(DS).to_pylist()}
    assert {(table[s]["signals.value_eval"], table[s]["signal_versions.value"]) for s in res.values} == {("corrective:synlab", 3)}
    cat.register_files("synhw", [_write_labelled(ws, "synhw", f"hw-{i}", 0.0, run_id, 300 + i, mode=schema.MODE_INTERVENTION)
                                 for i in range(2)])
    with pytest.raises(DemoValueError, match=r"0 corrective episode\(s\) with expert-labelled steps"):
        demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels="synhw", write=False))
    with pytest.raises(DemoValueError, match=rf"no corrective episodes of run {run_id}.*collect --corrective --run {run_id} --mode dagger"):
        demonstration_value(cat, ValueConfig(run=run_id, estimator="expert", labels=DS, write=False))
    with pytest.raises(RoboloopError, match="not an evaluation"):
        ValueConfig(run=run_id, eval="e", estimator="expert")
    with pytest.raises(RoboloopError, match="metric applies to the loss and kernel estimators"):
        ValueConfig(run=run_id, estimator="expert", metric="stage")

    from typer.testing import CliRunner

    from roboloop.cli import app
    from roboloop.cli.value_cmds import register

    register(app)
    env, root = {"ROBOLOOP_CATALOG": "", "COLUMNS": "250"}, str(ws.root)
    res = CliRunner().invoke(app, ["--workspace", root, "value", "--run", run_id, "--estimator", "expert", "--labels", "synlab", "--lowest", "2"], env=env)
    assert res.exit_code == 0, res.output
    assert f"of run {run_id}, from the expert's labels in 6 corrective episode(s) of the run in synlab (0 successful)" in res.stdout
    assert res.stdout.count("roboloop open syn-0") == 2
    res = CliRunner().invoke(app, ["--workspace", root, "value", "--run", run_id, "--eval", "e", "--estimator", "expert"], env=env)
    assert res.exit_code != 0 and "not an evaluation" in res.output and "Traceback" not in res.output


def episode_losses(cat, dataset: str, ids: list[str], policy):
    """(segment id, the policy's L1 against the executed actions), the ordinary training targets, for comparison."""
    from roboloop.stream import EpisodeStream
    from roboloop.train.features import encode_batch, stream_fields

    stream = EpisodeStream(cat, (dataset, ids), fields=stream_fields(policy.model.specs), rate_hz=policy.cfg.rate_hz,
                           batch_size=100_000, shuffle=False)
    for batch in stream:
        enc = encode_batch(policy.model.specs, batch, policy.cfg)
        for ep in sorted(set(batch["episode_index"].tolist())):
            mask = batch["episode_index"] == ep
            loss, _ = policy.model.loss({k: v[mask] for k, v in enc.items()})
            yield stream.segment_ids[ep], loss.item()
