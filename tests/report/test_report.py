"""The HTML report: complete, self-contained, built from plain tables (synthetic data)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from roboloop.catalog.links import open_command
from roboloop.report.data import EvalSection, ReportData
from roboloop.report.render import SECTIONS, render_report

CELLS = [f"lighting={lt},yaw={yw}" for lt in ("dim", "normal") for yw in ("any", "none", "small")]


def _cells(rates: dict[str, int], n: int = 30) -> list[dict]:
    from roboloop.stats.intervals import wilson

    out = []
    for cell in CELLS:
        k = rates[cell]
        lo, hi = wilson(k, n)
        out.append({"cell": cell, "n": n, "successes": k, "rate": k / n, "ci_low": lo, "ci_high": hi, "mean_stage": 2.5, "failing": hi < 0.8})
    return out


def synthetic_report_data() -> ReportData:
    v1 = {c: (2 if "yaw=any" in c else 4 if "yaw=small" in c else 30) for c in CELLS}
    v2 = {c: (27 if "yaw=any" in c else 29 if "yaw=small" in c else 30) for c in CELLS}
    coverage = []
    for rank, cell in enumerate(sorted(CELLS, key=lambda c: ("none" in c, "small" in c, c)), start=1):
        gap = "yaw=none" not in cell
        coverage.append({
            "rank": rank, "cell": cell, "n": 30, "successes": v1[cell], "covered": 1 if gap else 24,
            "covered_fraction": (1 if gap else 24) / 30, "median_distance": 9.3 if gap else 0.7, "train_near": 1 if gap else 41, "train_in_cell_by_label": 0 if gap else 50,
            "verdict": "coverage_gap" if gap else "fine", "fails": gap,
            "advice": f"collect demonstrations under {cell}" if gap else "",
        })
    failures = [
        {"cell": "lighting=dim,yaw=any", "segment_id": f"aloha_evals-s{i}", "seed": 2**30 + i, "reason": "never_touched",
         "stage": "none", "time_s": 2.0 + i, "command": open_command(f"aloha_evals-s{i}", 2.0 + i), "rrd": f"report_files/aloha_evals-s{i}.rrd" if i == 0 else ""}
        for i in range(3)
    ]
    steps = np.arange(0, 3000, 10)
    curves = {
        "v1": {"train": (steps, 0.5 * np.exp(-steps / 800) + 0.02), "holdout": (steps, 0.55 * np.exp(-steps / 900) + 0.03)},
        "v2": {"train": (steps, 0.45 * np.exp(-steps / 700) + 0.015), "holdout": (steps, 0.5 * np.exp(-steps / 800) + 0.025)},
    }
    comparison = [
        {"cell": c, "n_pairs": 30, "rate_a": v1[c] / 30, "rate_b": v2[c] / 30, "diff": (v2[c] - v1[c]) / 30,
         "diff_low": (v2[c] - v1[c]) / 30 - 0.15, "diff_high": min(1.0, (v2[c] - v1[c]) / 30 + 0.15), "test": "mcnemar-exact",
         "p_value": 1e-7 if v2[c] != v1[c] else 1.0, "p_adjusted": 6e-7 if v2[c] != v1[c] else 1.0,
         "verdict": "improved" if v2[c] > v1[c] else "no change"}
        for c in CELLS
    ]
    return ReportData(
        title="roboloop: close-the-loop report",
        created_at="2026-11-23 15:00 UTC",
        workspace="/tmp/ws",
        evals=[
            EvalSection("eval-v1", "v1", run_id="run-v1", policy="run-v1", evals_dataset="aloha_evals", cells=_cells(v1), coverage=coverage, failures=failures),
            EvalSection("eval-v2", "v2", run_id="run-v2", policy="run-v2", evals_dataset="aloha_evals", cells=_cells(v2)),
        ],
        comparison=comparison,
        comparison_labels=("v1", "v2"),
        loss_curves=curves,
        selections=[
            {"label": "v1", "run_id": "run-v1", "selection": "train", "dataset": "aloha", "predicate": "outcome.success = true", "num_train": 45, "num_holdout": 5, "digest": "abc123"},
            {"label": "v2", "run_id": "run-v2", "selection": "train-2", "dataset": "aloha", "predicate": "outcome.success = true", "num_train": 72, "num_holdout": 8, "digest": "def456"},
        ],
        plans=[{"name": "plan-eval-v1", "source_eval": "eval-v1", "status": "executed", "total": 30,
                "items": [{"conditions": {"lighting": "dim", "yaw": "any"}, "count": 15}, {"conditions": {"lighting": "normal", "yaw": "any"}, "count": 15}]}],
        notes=["v1 trained on yaw none only"],
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids, self.imgs, self.hrefs, self.srcs, self.scripts, self.links = [], [], [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if "href" in a:
            self.hrefs.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
        self.scripts += tag in ("script", "iframe", "object", "embed")
        self.links += tag == "link"


def test_report_is_complete_and_self_contained(tmp_path):
    text = render_report(synthetic_report_data())
    (tmp_path / "report.html").write_text(text)
    p = _Collector()
    p.feed(text)
    assert p.ids == list(SECTIONS)  # every section, in order
    # heatmaps v1 + v2, coverage v1, comparison, loss = 5 images, all decodable PNGs embedded inline
    assert len(p.imgs) == 5
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
    assert not p.scripts and not p.links
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert "@import" not in text and "url(" not in text
    assert all(not re.match(r"^[a-z][a-z0-9+.-]*:", h) for h in p.hrefs)  # only relative links
    assert all(s.startswith("data:") for s in p.srcs)
    # content: the commands that open failures at their moment, the queries, the plan
    assert "roboloop open aloha_evals-s1 --at 3" in text
    assert 'href="report_files/aloha_evals-s0.rrd"' in text
    assert "outcome.success = true" in text and ">72<" in text
    assert "plan-eval-v1" in text and "15 x lighting=dim, yaw=any" in text
    assert "coverage_gap" in text and "mcnemar-exact" in text


def test_report_degrades_gracefully_with_one_evaluation():
    data = synthetic_report_data()
    data.evals = data.evals[1:]
    data.comparison, data.loss_curves, data.plans, data.selections = [], {}, [], []
    text = render_report(data)
    p = _Collector()
    p.feed(text)
    assert p.ids == list(SECTIONS)
    assert "nothing to compare" in text and "training coverage unknown" in text and "no loss curves" in text
    assert len(p.imgs) == 1


def test_text_is_escaped():
    data = synthetic_report_data()
    data.evals, data.comparison, data.loss_curves = [], [], {}  # no plots needed here
    data.selections[0]["predicate"] = "scene.lighting = 'dim' and signals.x < 3 <script>"
    text = render_report(data)
    assert "<script>" not in text and "&lt;script&gt;" in text


@pytest.mark.parametrize(("t", "expected"), [(2.5, "roboloop open seg-1 --at 2.5"), (None, "roboloop open seg-1"), (-1.0, "roboloop open seg-1 --at 0")])
def test_open_command(t, expected):
    """The report's failure commands are `links.open_command`'s, the one `roboloop failures` prints."""
    assert open_command("seg-1", t) == expected


def _write_run(ws, catalog, run_id: str, steps_per_epoch: int, epochs: int, *, epoch_loss: bool):
    """A run recording like train's: per-step loss on `step` + `epoch`, holdout every 2 epochs (and after the last)."""
    import rerun as rr

    from roboloop import schema

    path = ws.segment_path("aloha_runs", schema.BASE_LAYER, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("roboloop", recording_id=run_id)
    rec.save(str(path))
    steps = np.arange(1, steps_per_epoch * epochs + 1)
    epoch_of = (steps - 1) // steps_per_epoch
    loss = 1.0 / steps + 0.01 * (steps % 3)  # noisy within an epoch
    rec.send_columns("/train/loss", indexes=[rr.TimeColumn("step", sequence=steps), rr.TimeColumn("epoch", sequence=epoch_of)],
                     columns=rr.Scalars.columns(scalars=loss))
    means = np.array([loss[epoch_of == e].mean() for e in range(epochs)])
    hold_e = np.array([e for e in range(epochs) if (e + 1) % 2 == 0 or e == epochs - 1])
    hold = 2.0 / (1 + hold_e)
    rec.send_columns("/holdout/loss", indexes=[rr.TimeColumn("step", sequence=(hold_e + 1) * steps_per_epoch), rr.TimeColumn("epoch", sequence=hold_e)],
                     columns=rr.Scalars.columns(scalars=hold))
    if epoch_loss:
        rec.send_columns("/train/epoch_loss", indexes=[rr.TimeColumn("step", sequence=np.arange(1, epochs + 1) * steps_per_epoch),
                         rr.TimeColumn("epoch", sequence=np.arange(epochs))], columns=rr.Scalars.columns(scalars=means))
    rec.flush()
    rec.disconnect()
    catalog.register_files("aloha_runs", [path])
    return means, hold_e, hold


def test_loss_curves_are_per_epoch_so_runs_of_different_size_compare(ws, catalog):
    """The glue reads the train and holdout loss on timeline `epoch` (epochs done on x), whatever a run's steps per epoch;
    a run recorded before `/train/epoch_loss` existed gets the per-step loss averaged per epoch."""
    from roboloop.report.data import _loss_curves

    small_means, small_he, small_hold = _write_run(ws, catalog, "run-small", 4, 6, epoch_loss=True)
    big_means, big_he, big_hold = _write_run(ws, catalog, "run-big", 11, 5, epoch_loss=False)
    small = _loss_curves(catalog, "aloha", "run-small")
    big = _loss_curves(catalog, "aloha", "run-big")
    assert small["train"][0] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and big["train"][0] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert small["train"][1] == pytest.approx(small_means) and big["train"][1] == pytest.approx(big_means)
    assert small["holdout"][0] == [float(e + 1) for e in small_he] == [2.0, 4.0, 6.0]
    assert big["holdout"][0] == [2.0, 4.0, 5.0]
    assert small["holdout"][1] == pytest.approx(small_hold) and big["holdout"][1] == pytest.approx(big_hold)


def test_loss_plot_draws_holdout_on_top_with_markers_per_epoch():
    from roboloop.report.plots import loss_figure as _loss_figure

    fig = _loss_figure({"v1": {"train": ([1, 2, 3, 4], [1.0, 0.5, 0.3, 0.2]), "holdout": ([2, 4], [0.6, 0.25])},
                        "v2": {"train": ([1, 2], [1.0, 0.4]), "holdout": ([2], [0.45])}})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"v1 train", "v1 holdout", "v2 train", "v2 holdout"}
    for run in ("v1", "v2"):
        train, hold = lines[f"{run} train"], lines[f"{run} holdout"]
        assert hold.get_zorder() > train.get_zorder()  # drawn over the train curve
        assert hold.get_marker() not in (None, "None", "") and train.get_marker() in (None, "None", "")
        assert hold.get_linewidth() > train.get_linewidth()
        assert hold.get_color() == train.get_color()  # one colour per run
    assert list(lines["v1 holdout"].get_xdata()) == [2, 4]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_sequential_decisions_show_only_when_present():
    data = synthetic_report_data()
    assert "Sequential decision" not in render_report(data)
    data.sequential = [
        {"label": "v2", "eval_id": "ev-v2", "against": "ev-v1", "cell": "lighting=dim,yaw=any", "decision": "improved",
         "rollouts": 10, "fixed_n": 30, "stop_round": 2, "decided_at": 9, "estimate": 0.8, "ci_low": 0.31, "ci_high": 1.0,
         "metric": "stage"},
    ]
    text = render_report(data)
    p = _Collector()
    p.feed(text)
    assert p.ids == list(SECTIONS)  # a table inside the comparison section, no new section
    section = text[text.index('id="comparison"'):text.index('id="coverage"')]
    assert "Sequential decision" in section and "ev-v1" in section and "improved" in section
    assert re.search(r">10<.*>30<.*>2<.*>9<", section, re.S)
