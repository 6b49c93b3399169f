"""Training on corrective episodes: the expert's action is the target where the expert labelled a step, and
`--expert-steps-only` drops exactly the policy-controlled steps of an intervention recorded through the public API;
the CLI loop collect -> train -> collect --corrective --run -> curate -> train on a real simulator and catalog."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from roboloop import curate, record, schema
from roboloop.collect.plan import Plan, PlanItem, write_plan
from roboloop.stream import EpisodeStream, Field
from roboloop.train import TrainConfig, load_config, train
from roboloop.train.corrective import control_fields, expert_targets, segment_labelling
from roboloop.workspace import Workspace

HZ = 50
K = 4
N_DEMO, N_CORR = 30, 60
TAKEOVER = range(20, 40)  # the person holds the robot for these control steps of the corrective episode


def _record(catalog):
    """A teleoperated demonstration and an intervention episode (a policy drove; a person took over for TAKEOVER)."""
    with record.episode(catalog.workspace, "arm", kind="demo", catalog=catalog) as ep:
        for k in range(N_DEMO):
            ep.log_scalars(schema.JOINT_POSITIONS, k / HZ, np.full(3, k * 0.01))
            ep.log_scalars(schema.JOINT_TARGETS, k / HZ, np.full(3, 10 + k))
    executed, intended = np.zeros((N_CORR, 3)), {}
    with record.episode(catalog.workspace, "arm", kind="corrective", policy="run-arm-1", catalog=catalog) as ep:
        for k in range(N_CORR):
            person = k in TAKEOVER
            executed[k] = 100 + k if person else -k  # the person's command during the takeover, else the policy's
            ep.log_scalars(schema.JOINT_POSITIONS, k / HZ, np.full(3, k * 0.01))
            ep.log_scalars(schema.JOINT_TARGETS, k / HZ, executed[k])
            if person:
                intended[k] = executed[k] + 0.25  # e.g. the leader arm's reading before the follower's limits
            ep.log_control(k / HZ, source=person, expert_action=intended.get(k))
    return ep, executed, intended


def test_expert_steps_only_drops_exactly_the_policy_steps_of_an_intervention(catalog):
    ep, executed, intended = _record(catalog)
    rows = {r["segment_id"]: r for r in catalog.segment_table("arm").to_pylist()}
    row = rows[ep.segment_id]
    assert row["episode.kind"] == "corrective" and row["episode.corrective_mode"] == schema.MODE_INTERVENTION
    assert row["episode.expert_fraction"] == pytest.approx(len(TAKEOVER) / N_CORR)
    assert row["episode.corrected_run"] == "run-arm-1"

    ids = sorted(rows)
    stream = EpisodeStream(catalog, ("arm", ids), rate_hz=HZ, batch_size=10_000, shuffle=False, fields={
        "action": Field(schema.JOINT_TARGETS, window=range(K)), **control_fields(K, 3)})
    labelling = segment_labelling(catalog, "arm", stream.segment_ids)
    for only in (False, True):
        for batch in stream:
            enc = expert_targets({"action": batch["action"].float(), "action_mask": batch["action_mask"].bool()}, batch,
                                 labelling, only)
            for b in range(len(batch["frame_index"])):
                seg = stream.segment_ids[int(batch["episode_index"][b])]
                for j in range(K):
                    step = int(batch["frame_index"][b]) + j
                    n = N_CORR if seg == ep.segment_id else N_DEMO
                    valid = step < n
                    if seg != ep.segment_id:  # a demonstration: its own action, every step
                        want, keep = 10 + min(step, n - 1), valid
                    elif step in TAKEOVER:  # the person's labelled action
                        want, keep = intended[step], valid
                    else:  # the policy's own step: its executed action, dropped with expert_steps_only
                        want, keep = executed[min(step, n - 1)][0], valid and not only
                    assert bool(enc["action_mask"][b, j]) == keep, (seg, step, only)
                    if keep:
                        assert float(enc["action"][b, j, 0]) == pytest.approx(want), (seg, step)

    # the training loop applies it: a run on the mix, with and without the option (config and digest tell them apart)
    curate.save(catalog, curate.select(catalog, "arm", holdout=0.0), "mix")
    cfg = TrainConfig(dataset="arm", selection="mix", state=(schema.JOINT_POSITIONS,), chunk=K, epochs=1, batch_size=32,
                      episode_steps=N_CORR, samples=0, expert_steps_only=True)
    res = train(catalog, cfg)
    assert res.status == "finished" and load_config(catalog.workspace, res.run_id).expert_steps_only
    assert cfg.digest() != cfg.replace(expert_steps_only=False).digest()
    assert "expert_steps_only" not in cfg.replace(expert_steps_only=False).flat()  # runs without it keep their columns


@pytest.mark.sim
def test_cli_corrective_collection_from_a_trained_run(tmp_path, monkeypatch):
    from roboloop.catalog.client import Catalog
    from roboloop.cli import app

    monkeypatch.delenv("ROBOLOOP_CATALOG", raising=False)
    root = tmp_path / "ws"

    def cli(*args: str, code: int = 0) -> str:
        res = CliRunner().invoke(app, ["--workspace", str(root), *args], env={"COLUMNS": "200"})
        assert res.exit_code == code, res.output
        return res.output

    cli("collect", "-d", "aloha", "-n", "2", "--steps", "60", "--cameras", "", "--seed", "0")
    cli("curate", "-d", "aloha", "--name", "v1", "--where", "outcome.steps = 60", "--holdout", "0")
    run = re.search(r"run (run-\w+) finished", cli("train", "-d", "aloha", "-s", "v1", "--epochs", "1")).group(1)
    out = cli("collect", "--corrective", "--run", run, "--mode", "dagger", "-n", "1", "--grid", "yaw=none,any", "--steps", "60")
    assert "2 corrective episode(s)" in out and "expert in control 0% of steps" in out
    assert "--run" in cli("collect", "--corrective", code=1)
    assert "--corrective" in cli("collect", "--mode", "gated", code=1)

    with Catalog(Workspace(root), url="") as cat:
        rows = cat.sql('SELECT "episode.corrected_run" AS r, "episode.corrective_mode" AS m, "scene.yaw" AS y, '
                       '"episode.seed" AS s FROM aloha WHERE "episode.kind" = \'corrective\' ORDER BY y').to_pylist()
        assert [(r["r"], r["m"], r["y"]) for r in rows] == [(run, "dagger", "any"), (run, "dagger", "none")]
        assert sorted(r["s"] for r in rows) == [2, 3]  # seeds continue after the demonstrations', reserved like collect's
    out = cli("curate", "-d", "aloha", "--name", "corr", "--where", "episode.kind = 'corrective'", "--holdout", "0")
    assert re.search(r"train: aloha-s000002-\w+, aloha-s000003-\w+\n", out)  # exactly the corrective episodes

    # a plan asks for corrective episodes of the run in a cell; `collect --plan` loads the run (as the demo does)
    plan = Plan("fix", "aloha", (PlanItem({"yaw": "any"}, 1, kind="corrective", run=run, mode="gated"),))
    write_plan(plan, tmp_path / "fix.toml")
    assert "1 x yaw=any corrective (gated) from " + run in cli("collect", "--plan", str(tmp_path / "fix.toml"), "--steps", "60")
    with Catalog(Workspace(root), url="") as cat:
        rows = cat.sql('SELECT "episode.corrective_mode" AS m FROM aloha WHERE "episode.kind" = \'corrective\'').to_pylist()
        assert sorted(r["m"] for r in rows) == ["dagger", "dagger", "gated"]
