"""The training run as a recording: a segment of `<dataset>_runs`, rewritten as new versions.

`RunLog` buffers what a run logs (scalars on the `step` and `epoch` timelines, sample
views on `chunk_step`) and `write(properties)` writes all of it into a NEW file
(`datasets/<ds>_runs/base/<run_id>.rrd`, then `<run_id>.1.rrd`, ...; atomically) and
registers it with REPLACE. A registered file is never touched again; restore registers
the newest version (`Workspace.segment_files`).

Entities (names in `schema`, section `# --- train ---`):
`/train/loss`, `/train/lr`, `/train/grad_norm` (every step), `/train/epoch_loss` (every
epoch), `/holdout/loss` (every `holdout_every` epochs), `/run` (text), and the sample views
under `/samples/<split>/<k>/` (split `train` or `holdout`, k < `samples`), logged at the
first, middle and last epoch on timelines `step` and `epoch` (the viewer shows the latest
one at the time cursor, so the default view shows them on any timeline):

- `chunk`: the predicted chunk (orange) over the target chunk (grey), one lane per joint, in
  normalized units (action std = 1; x = control steps ahead); `LineStrips2D`.
- `predicted`, `target`: the same chunks in joint units, exact (`Tensor` [chunk, 14]).
- `input`: the non-image inputs as the network saw them (augmented for training samples,
  normalized), concatenated (`BarChart`); `image`: a vision policy's input frame (`Image`).
- `info`: split, segment, time in the episode, epoch and the sample's L1 (`TextDocument`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from roboloop import schema
from roboloop.record.episode import APPLICATION_ID, send_property_group, write_memory_recording
from roboloop.workspace import atomic_path

SAMPLE_SPLITS = ("train", "holdout")
DEFAULT_JOINT_LABELS = [f"{arm}{j}" for arm in ("L", "R") for j in (*map(str, range(6)), "g")]
"""Lane labels of the chunk views: L0..L5, Lg (left arm joints, gripper), then R0..Rg (the order of every 14-joint stream)."""


def sample_path(split: str, k: int) -> str:
    """The entity under which sample `k` of `split` ("train" or "holdout") is shown."""
    return f"{schema.SAMPLES_ROOT}/{split}/{k}"


class RunLog:
    """Buffer one run's scalars and sample views; write versions of its recording."""

    def __init__(self, catalog, dataset: str, run_id: str, joint_names: Sequence[str] | None = None) -> None:
        self.catalog = catalog
        self.ws = catalog.workspace
        self.runs_dataset = schema.runs_dataset(dataset)
        self.run_id = run_id
        self.joint_names = list(joint_names) if joint_names else DEFAULT_JOINT_LABELS
        self._scalars: dict[str, tuple[list[int], list[int], list[float]]] = defaultdict(lambda: ([], [], []))
        self.samples: list[dict[str, Any]] = []
        """Sample views (`loop.SampleViews.views`), each written under `/samples/<split>/<k>/` at its step and epoch."""
        self.summary = ""

    def scalar(self, path: str, step: int, epoch: int, value: float) -> None:
        s, e, v = self._scalars[path]
        s.append(int(step))
        e.append(int(epoch))
        v.append(float(value))

    def restore_scalars(self, data: Mapping[str, Mapping[str, list]]) -> None:
        """Put back the scalars of a resumed run (as saved by `scalars_state`)."""
        for path, d in data.items():
            self._scalars[path] = (list(d["step"]), list(d["epoch"]), list(d["value"]))

    def restore_samples(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Put back the sample views of a resumed run (saved with its checkpoint)."""
        self.samples = [dict(v) for v in samples]

    def scalars_state(self) -> dict[str, dict[str, list]]:
        return {p: {"step": list(s), "epoch": list(e), "value": list(v)} for p, (s, e, v) in self._scalars.items()}

    def series(self, path: str) -> list[float]:
        return list(self._scalars[path][2]) if path in self._scalars else []

    def write(self, groups: Mapping[str, Mapping[str, Any]]) -> Path:
        """Write everything logged so far + the property groups as the next version; register it."""
        path = self.ws.next_version_path(self.runs_dataset, schema.BASE_LAYER, self.run_id)
        with atomic_path(path) as tmp:
            rec = rr.RecordingStream(APPLICATION_ID, recording_id=self.run_id, send_properties=True)
            try:
                sink = rec.memory_recording()  # not rec.save: see write_memory_recording (full disk)
                for group, values in groups.items():
                    send_property_group(rec, group, values)
                if self.summary:
                    rec.log(schema.RUN_SUMMARY_TEXT, rr.TextDocument(self.summary, media_type="text/markdown"), static=True)
                for p, (s, e, v) in self._scalars.items():
                    if not s:
                        continue
                    rec.send_columns(
                        p,
                        indexes=[rr.TimeColumn(schema.STEP_TIMELINE, sequence=np.asarray(s)), rr.TimeColumn(schema.EPOCH_TIMELINE, sequence=np.asarray(e))],
                        columns=rr.Scalars.columns(scalars=np.asarray(v, dtype=np.float64)),
                    )
                for p, (name, color, width, marker) in LOSS_STYLES.items():
                    if self._scalars.get(p, ((),))[0]:
                        rec.log(p, rr.SeriesLines(names=name, colors=color, widths=width), static=True)
                        if marker is not None:
                            rec.log(p, rr.SeriesPoints(names=name, colors=color, marker_sizes=marker), static=True)
                for base in sorted({sample_path(smp["split"], smp["k"]) for smp in self.samples}):
                    _log_lanes(rec, base, self.joint_names)
                for smp in self.samples:
                    _log_sample(rec, smp)
                write_memory_recording(rec, sink, tmp)
            finally:
                rec.disconnect()
        self.catalog.register_files(self.runs_dataset, [path], validate=False)
        return path


LANE = 4.0
"""Height of one joint's lane in the chunk view, in normalized units (values are clipped to +-0.48 LANE)."""
CHUNK_WIDTH = 120.0
"""Width of a whole chunk in the chunk view (same units): the chunk's first step at x = 0, its last at CHUNK_WIDTH."""
PREDICTED_COLOR = (255, 140, 0)
TARGET_COLOR = (170, 170, 170)
LANE_COLOR = (70, 70, 70)
LOSS_STYLES = {
    # entity: (series name, colour, line width, marker size or None)
    schema.TRAIN_LOSS: ("train (per step)", (110, 140, 200), 1.0, None),
    schema.TRAIN_EPOCH_LOSS: ("train (epoch mean)", (80, 130, 230), 1.5, None),
    schema.HOLDOUT_LOSS: ("holdout", (255, 140, 0), 3.0, 4.0),
}
"""How the loss curves are drawn: the holdout loss thick, with markers, in a colour of its own."""


def chunk_strips(predicted: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Line strips ([n, 2] points each) of a normalized [K, 14] predicted and target chunk, one lane per joint.

    Joint j's lane is centred at y = (j + 0.5) * LANE (2D views point y down: up is a larger value);
    x runs from 0 (the chunk's first step) to CHUNK_WIDTH (its last). Window steps past the episode
    end (`mask` False) are left out.
    """
    k = len(target)
    keep = np.ones(k, bool) if mask is None else np.asarray(mask, bool)
    x = (np.arange(k, dtype=np.float64) * (CHUNK_WIDTH / max(1, k - 1)))[keep]
    lim = 0.48 * LANE

    def strips(values: np.ndarray) -> list[np.ndarray]:
        v = np.clip(np.asarray(values, np.float64)[keep], -lim, lim)
        return [np.stack([x, (j + 0.5) * LANE - v[:, j]], axis=1) for j in range(v.shape[1])]

    return strips(predicted), strips(target)


def _log_lanes(rec, base: str, joint_names: Sequence[str]) -> None:
    """Static lane separators and joint labels of one chunk view (drawn under every epoch's chunks)."""
    n = len(joint_names)
    rec.log(f"{base}/chunk/lanes", rr.LineStrips2D([[[0.0, j * LANE], [CHUNK_WIDTH, j * LANE]] for j in range(n + 1)],
                                                    colors=[LANE_COLOR] * (n + 1), radii=0.08, draw_order=0.0), static=True)
    rec.log(f"{base}/chunk/joints", rr.Points2D([[-2.0, (j + 0.5) * LANE] for j in range(n)], radii=0.01,
                                                labels=list(joint_names), show_labels=True), static=True)


def _log_sample(rec, smp: Mapping[str, Any]) -> None:
    base = sample_path(smp["split"], smp["k"])
    rec.set_time(schema.STEP_TIMELINE, sequence=int(smp["step"]))
    rec.set_time(schema.EPOCH_TIMELINE, sequence=int(smp["epoch"]))
    pred, target = chunk_strips(np.asarray(smp["predicted_norm"]), np.asarray(smp["target_norm"]), np.asarray(smp["mask"]))
    rec.log(f"{base}/chunk", rr.LineStrips2D([*target, *pred], colors=[TARGET_COLOR] * len(target) + [PREDICTED_COLOR] * len(pred),
                                              radii=[0.45] * len(target) + [0.25] * len(pred), draw_order=1.0))
    for what in ("predicted", "target"):
        rec.log(f"{base}/{what}", rr.Tensor(np.asarray(smp[what], np.float64), dim_names=[schema.CHUNK_TIMELINE, "joint"]))
    rec.log(f"{base}/input", rr.BarChart(np.asarray(smp["input"], np.float64)))
    if smp.get("image") is not None:
        rec.log(f"{base}/image", rr.Image(np.asarray(smp["image"])))
    rec.log(f"{base}/info", rr.TextDocument(f"{smp['info']}\n\ninput bars: {smp['input_names']} (normalized, as the network saw them)",
                                            media_type="text/markdown"))
    rec.reset_time()


def run_blueprint(samples: int, *, image: bool = False):
    """Loss curves (per epoch), learning rate, gradient norm and the run summary on top; below, for the training
    and the holdout samples, the predicted vs target chunk above the inputs the network saw. The time panel
    starts on the `epoch` timeline, so every view has data without touching anything."""
    curves = rrb.Horizontal(
        rrb.TimeSeriesView(origin="/", contents=[schema.TRAIN_EPOCH_LOSS, schema.HOLDOUT_LOSS], name="train / holdout loss per epoch"),
        rrb.TimeSeriesView(origin=schema.TRAIN_LR, name="learning rate"),
        rrb.TimeSeriesView(origin=schema.TRAIN_GRAD_NORM, name="gradient norm"),
        rrb.TextDocumentView(origin=schema.RUN_SUMMARY_TEXT, name="run"),
    )
    rows = []
    for split in SAMPLE_SPLITS:
        cols = []
        for k in range(max(1, samples)):
            base = sample_path(split, k)
            parts = [rrb.Spatial2DView(origin=f"{base}/chunk", name=f"{split} {k}: predicted (orange) vs target, per joint")]
            if image:
                parts.append(rrb.Spatial2DView(origin=f"{base}/image", name=f"{split} {k}: input frame"))
            parts.append(rrb.BarChartView(origin=f"{base}/input", name=f"{split} {k}: inputs (normalized)",
                                          plot_legend=rrb.PlotLegend(visible=False)))
            parts.append(rrb.TextDocumentView(origin=f"{base}/info", name=f"{split} {k}"))
            cols.append(rrb.Vertical(*parts, row_shares=[5, 3, 2, 2] if image else [5, 2, 2]))
        rows.append(rrb.Horizontal(*cols))
    return rrb.Blueprint(
        rrb.Vertical(curves, *rows, row_shares=[2, 3, 3]),
        rrb.TimePanel(timeline=schema.EPOCH_TIMELINE, play_state="following", state="collapsed"),  # cursor: the last epoch
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
    )


def save_run_blueprint(catalog, dataset: str, samples: int, *, image: bool = False) -> Path:
    """Write `<dataset>_runs`'s default blueprint (atomically) and register it."""
    runs = schema.runs_dataset(dataset)
    final = catalog.workspace.blueprint_path(runs)
    with atomic_path(final) as tmp:
        run_blueprint(samples, image=image).save(APPLICATION_ID, tmp)
    catalog.ensure_dataset(runs)
    catalog.register_blueprint(runs, final)
    return final
