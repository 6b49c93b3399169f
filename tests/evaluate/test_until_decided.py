"""Sequential evaluation end to end: real simulator, real catalog, short rollouts, no cameras.

Expectations are computed here independently: seeds from the seed rule written out,
decisions by replaying the recorded outcomes (read back from the catalog) through a fresh
`PairedSequentialTest` at the Bonferroni level.
"""

from __future__ import annotations

import hashlib
import math
import os

import pytest

from roboloop import rows, schema
from roboloop.evaluate.run import EvalConfig, EvaluateError, evaluate, parse_grid
from roboloop.evaluate.until_decided import SequentialEvalError, evaluate_until_decided, metric_value, sequential_rows
from roboloop.stats.sequential import PairedSequentialTest, SequentialConfig
from tests.fixtures.policies import HoldStill

pytestmark = pytest.mark.sim


def _cfg(**kw) -> EvalConfig:
    base = {"dataset": "demo", "grid": parse_grid("region=near"), "episodes_per_cell": 2, "steps": 100, "cameras": ()}
    base.update(kw)
    if isinstance(base["grid"], str):
        base["grid"] = parse_grid(base["grid"])
    return EvalConfig(**base)


def _seed(key: str, index: int) -> int:
    return 2**30 + int.from_bytes(hashlib.sha256(f"{key}#{index}".encode()).digest()[:8], "big") % 2**30


def _rollouts(catalog, eval_id: str) -> dict[tuple[str, int], dict]:
    out = {}
    for r in catalog.segment_table("demo_evals").to_pylist():
        if r["episode.eval_id"] == eval_id:
            pair = (r["episode.cell"], r["episode.index_in_cell"])
            assert pair not in out, f"{eval_id} ran {pair} twice"
            out[pair] = r
    return out


def _files(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def test_large_effect_decided_in_few_rounds_row_and_top_up_to_a_fixed_grid(catalog):
    # at 130 steps the scripted demonstrator lifts the cube (stage 2 of 4) on every seed; holding still reaches none
    evaluate(catalog, _cfg(eval_id="still", policy="hold-still", steps=130), policy_factory=HoldStill)
    seq = SequentialConfig(metric="stage", alpha=0.1, margin=0.1, round_size=4, max_per_cell=40)
    events = []
    rep = evaluate_until_decided(catalog, _cfg(eval_id="scr", steps=130, episodes_per_cell=14), against="still", seq=seq,
                                 baseline_factory=HoldStill, on_round=events.append)
    key = "region=left"
    base, chal = _rollouts(catalog, "still"), _rollouts(catalog, "scr")
    # independent expectation: replay the recorded stages pair by pair
    t = PairedSequentialTest(alpha=0.1, margin=0.1)
    decided_at = None
    for i in range(len(chal)):
        if t.update(base[(key, i)]["outcome.stage"] / 4, chal[(key, i)]["outcome.stage"] / 4) != "undecided" and decided_at is None:
            decided_at = i + 1
    assert decided_at is not None and t.state().decision == "improved"
    used = math.ceil(decided_at / 4) * 4
    assert rep.decisions == {key: "improved"} and rep.status == "finished" and rep.done
    assert len(chal) == used == len(rep.results) and used <= 16  # a few rounds, not the 40 allowed
    # the baseline had 2 rollouts: it was topped up on the same seed rule, paired one to one
    assert sorted(base) == [(key, i) for i in range(used)] and len(rep.baseline_results) == used - 2
    for pair, r in chal.items():
        assert r["episode.seed"] == base[pair]["episode.seed"] == _seed(*pair)
        assert r["episode.kind"] == "rollout" and r["episode.policy"] == "scripted-handover-v1"
    assert {r["episode.policy"] for r in base.values()} == {"hold-still-v0"}

    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "scr")
    assert row["against"] == "still" and row["status"] == "finished" and row["finished"] == used
    (cell,) = row[schema.EVAL_SEQUENTIAL]["cells"]
    assert (cell["cell"], cell["decision"], cell["n"], cell["decided_at"], cell["stop_round"]) == (
        key, "improved", used, decided_at, used // 4)
    assert row[schema.EVAL_SEQUENTIAL]["pairs"][key] == [[0.0, 0.5]] * used
    assert sequential_rows(row)[0]["rollouts"] == used and sequential_rows(row)[0]["fixed_n"] == 2
    brow = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "still")
    assert brow["extended_by"] == ["scr"] and brow["extra_rollouts"] == used - 2
    assert [(e.round, e.finished) for e in events] == [(r, f) for r in range(1, used // 4 + 1) for f in (False, True)]
    assert events[-1].active == 0 and events[-1].decisions()["improved"] == 1

    # top up to the fixed grid of 14: only the missing indices run; the sequential result stays on the row
    top = evaluate(catalog, _cfg(eval_id="scr", steps=130, episodes_per_cell=14), resume=True)
    assert top.skipped == used and sorted(r.properties["episode"]["index_in_cell"] for r in top.results) == list(range(used, 14))
    assert sorted(_rollouts(catalog, "scr")) == [(key, i) for i in range(14)]
    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "scr")
    assert row["episodes_per_cell"] == 14 and row["finished"] == 14
    assert row[schema.EVAL_SEQUENTIAL]["cells"][0]["n"] == used and row["against"] == "still"
    # resuming the finished sequential evaluation reads no top-up rollout as evidence and runs nothing
    again = evaluate_until_decided(catalog, _cfg(eval_id="scr", steps=130, episodes_per_cell=14), against="still", seq=seq,
                                   resume=True)
    assert again.results == [] and again.sequential["cells"][0]["n"] == used and again.decisions == {key: "improved"}


def test_self_comparison_declares_nothing_and_resume_continues_the_sequence(catalog):
    grid = "region=near,far"
    evaluate(catalog, _cfg(eval_id="a", grid=grid))  # scripted, 2 per cell, 100 steps: stages 0 or 1 by seed
    seq = SequentialConfig(metric="stage", alpha=0.1, margin=0.5, round_size=3, max_per_cell=9)
    seen = []

    def interrupt(result):
        seen.append(result)
        if len(seen) == 7:  # 2 baseline top-ups, then the 5th of round 1's 6 challenger rollouts
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_until_decided(catalog, _cfg(eval_id="b1", grid=grid), against="a", seq=seq, on_result=interrupt)
    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "b1")
    assert row["status"] == "interrupted" and len(_rollouts(catalog, "b1")) == 5  # registered before the interrupt
    with pytest.raises(SequentialEvalError, match="other sequential settings"):
        evaluate_until_decided(catalog, _cfg(eval_id="b1", grid=grid), against="a",
                               seq=SequentialConfig(metric="success", alpha=0.1, margin=0.5, round_size=3, max_per_cell=9),
                               resume=True)
    r1 = evaluate_until_decided(catalog, _cfg(eval_id="b1", grid=grid), against="a", seq=seq, resume=True)
    r2 = evaluate_until_decided(catalog, _cfg(eval_id="b2", grid=grid), against="a", seq=seq)
    assert r1.skipped == 5  # replayed: region=left 0..2 (a full round), region=right 0..1 (finished first)
    s1, s2 = r1.sequential, r2.sequential
    assert s1["pairs"] == s2["pairs"] and any(a != 0 for v in s1["pairs"].values() for a, _ in v)  # varied values
    strip = ("cell", "n", "decision", "decided_at", "stop_round", "stopped", "estimate")
    assert [{k: c[k] for k in strip} for c in s1["cells"]] == [{k: c[k] for k in strip} for c in s2["cells"]]
    assert set(r1.decisions.values()) | set(r2.decisions.values()) <= {"no_difference", "undecided"}
    assert "no_difference" in r1.decisions.values()
    assert s1["overall"]["decision"] not in ("improved", "regressed")
    # every pair ran once, on the baseline's seed, and the baseline was topped up on the same rule
    b1, base = _rollouts(catalog, "b1"), _rollouts(catalog, "a")
    assert len(b1) == sum(c["n"] for c in s1["cells"]) and len(r1.results) == len(b1) - 5
    for pair, r in b1.items():
        assert r["episode.seed"] == base[pair]["episode.seed"] == _seed(*pair)
        assert r["outcome.stage"] == base[pair]["outcome.stage"]  # same policy, same scene: the same outcome
    assert rows.read_row(catalog.workspace, schema.EVALS_TABLE, "b1")["status"] == "finished"


def test_bad_input_gets_a_clear_error_and_writes_nothing(catalog):
    evaluate(catalog, _cfg(eval_id="a", steps=4, episodes_per_cell=1))
    root = catalog.workspace.root
    before = _files(root)
    good = SequentialConfig()
    cases = [
        (dict(against="nope"), "no evaluation 'nope'"),
        (dict(cfg=_cfg(steps=4, grid="region=near,far")), "grid"),
        (dict(cfg=_cfg(steps=4, dataset="other")), "dataset"),
        (dict(cfg=_cfg(steps=5)), "steps"),
        (dict(seq={"alpha": 1.5}), r"alpha must lie in \(0, 1\)"),
        (dict(seq={"alpha": 0.0}), r"alpha must lie in \(0, 1\)"),
        (dict(seq={"margin": 1.5}), r"margin must lie in \(0, 1\]"),
        (dict(seq={"margin": 0.0}), r"margin must lie in \(0, 1\]"),
        (dict(seq={"round_size": 10, "max_per_cell": 5}), "max_per_cell"),
        (dict(seq={"metric": "reward"}), "metric"),
        (dict(cfg=_cfg(steps=4, eval_id="a")), "against itself"),
        (dict(cfg=_cfg(steps=4, policy="run-nope")), "run 'run-nope'"),
        (dict(cfg=_cfg(steps=4, eval_id="fresh"), resume=True), "no such evaluation"),
        (dict(cfg=_cfg(steps=4, eval_id="a"), against="a", resume=True), "against itself"),
    ]
    for kw, msg in cases:
        args = {"cfg": _cfg(steps=4), "against": "a", "seq": good, **kw}
        cfg = args.pop("cfg")
        with pytest.raises(EvaluateError, match=msg):
            evaluate_until_decided(catalog, cfg, **args)
        assert _files(root) == before, kw
    # an existing eval id that is not the baseline
    evaluate(catalog, _cfg(eval_id="other", steps=4, episodes_per_cell=1))
    before = _files(root)
    with pytest.raises(SequentialEvalError, match="exists already"):
        evaluate_until_decided(catalog, _cfg(steps=4, eval_id="other"), against="a", seq=good)
    with pytest.raises(SequentialEvalError, match="not a sequential evaluation"):
        evaluate_until_decided(catalog, _cfg(steps=4, eval_id="other"), against="a", seq=good, resume=True)
    assert _files(root) == before


def test_cli_until_decided_plan_eval_compare_success(tmp_path):
    import json

    from typer.testing import CliRunner

    from roboloop.cli import app

    ws = tmp_path / "ws"

    def run(*args: str, code: int = 0) -> str:
        res = CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
        assert res.exit_code == code, res.output + repr(res.exception)
        return res.output

    run("eval", "--policy", "scripted", "--grid", "region=near", "-n", "3", "--steps", "60", "--cameras", "", "--name", "a", "-d", "demo")
    before = _files(ws)
    assert "alpha must lie in (0, 1)" in run("eval", "--policy", "scripted", "--against", "a", "--until-decided", "--alpha", "2",
                                             "--cameras", "", code=1)
    assert "margin must lie in (0, 1]" in run("eval", "--policy", "scripted", "--against", "a", "--until-decided", "--margin", "1.5",
                                              "--cameras", "", code=1)
    assert "grid" in run("eval", "--policy", "scripted", "--against", "a", "--until-decided", "--grid", "region=far",
                         "--cameras", "", code=1)
    assert "--until-decided" in run("eval", "--policy", "scripted", "--against", "a", code=1)
    assert _files(ws) == before
    # at 60 steps nothing is grasped yet: both score 0 on every seed, no difference within the margin
    out = run("eval", "--policy", "scripted", "--against", "a", "--until-decided", "--metric", "stage", "--alpha", "0.1",
              "--margin", "0.5", "--round", "4", "--max-per-cell", "12", "--cameras", "", "--name", "b")
    assert "round 2: 0 cell(s) active; no diff 1" in out and "no_difference" in out
    row = rows.read_row(ws_obj(ws), schema.EVALS_TABLE, "b")
    (cell,) = row[schema.EVAL_SEQUENTIAL]["cells"]
    assert (cell["decision"], cell["n"], cell["stop_round"]) == ("no_difference", 8, 2) and row["config"]["steps"] == 60

    cmp = {r["group"]: r for r in map(json.loads, run("compare", "a", "b", "--format", "json").splitlines())}
    assert (cmp["region=left"]["seq_decision"], cmp["region=left"]["seq_rollouts"], cmp["region=left"]["seq_stop_round"]) == (
        "no_difference", 8, 2)
    assert cmp["region=left"]["n_pairs"] == 8 and cmp["overall"]["seq_decision"] == "no_difference"
    got = [json.loads(x) for x in run("success", "-d", "demo_evals", "--eval", "b", "--format", "json").splitlines()]
    assert [(g["n"], g["seq_decision"], g["seq_rollouts"]) for g in got] == [(8, "no_difference", 8)]
    assert "sequential decision" in run("success", "-d", "demo_evals", "--eval", "a", "--eval", "b", "--by", "episode.eval_id")

    plan = [json.loads(x) for x in run("plan-eval", "--baseline", "b", "--effect", "0.3", "--sims", "50", "--format", "json").splitlines()]
    assert [(p["cell"], p["baseline_n"], p["baseline_rate"]) for p in plan] == [("region=left", 8, 0.0)]
    assert plan[0]["fixed_n"] > 0 and 0 < plan[0]["sequential_mean"] <= plan[0]["sequential_p90"]
    assert "no evaluation 'nope'" in run("plan-eval", "--baseline", "nope", code=1)

    assert "nothing to continue" in run("eval", "--resume", "b")
    # top up to a full grid of 10 from the CLI: only indices 8 and 9 run
    out = run("eval", "--resume", "b", "-n", "10")
    assert "0/2 successes" in out and "8 rollout(s) were already done" in out
    assert len(_rollouts_ws(ws, "b")) == 10


def ws_obj(path):
    from roboloop.workspace import Workspace

    return Workspace(path)


def _rollouts_ws(path, eval_id):
    from roboloop.catalog import index as episode_index

    return [r for r in episode_index.read(ws_obj(path), "demo_evals") if r["episode.eval_id"] == eval_id]


def test_an_unlabelled_rollout_is_never_a_failure_of_the_sequential_test():
    assert metric_value({schema.OUTCOME_SUCCESS: False}, schema.METRIC_SUCCESS) == 0.0
    assert metric_value({schema.OUTCOME_SUCCESS: True}, schema.METRIC_SUCCESS) == 1.0
    with pytest.raises(SequentialEvalError, match="unlabelled"):
        metric_value({schema.OUTCOME_SUCCESS: None}, schema.METRIC_SUCCESS)
