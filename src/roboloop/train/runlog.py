"""The training run as a recording: a segment of `<dataset>_runs`, rewritten as new versions.

`RunLog` buffers what a run logs (scalars on the `step` and `epoch` timelines, sample
views on `chunk_step`) and `write(properties)` writes all of it into a NEW file
(`datasets/<ds>_runs/base/<run_id>.rrd`, then `<run_id>.1.rrd`, ...; atomically) and
registers it with REPLACE. A registered file is never touched again; restore registers
the newest version (`Workspace.segment_files`).

Entities (names in `schema`, section `# --- train ---`):
`/train/loss`, `/train/lr`, `/train/grad_norm` (every step), `/holdout/loss` (every
`holdout_every` epochs), `/samples/<k>/predicted|target` (14 joints over `chunk_step`),
`/samples/<k>/frame` (vision: the exact model input after its transforms), `/run` (text).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.episode import APPLICATION_ID, send_property_group, write_memory_recording
from roboloop.workspace import atomic_path


def sample_path(k: int, what: str) -> str:
    return f"{schema.SAMPLES_ROOT}/{k}/{what}"


class RunLog:
    """Buffer one run's scalars and sample views; write versions of its recording."""

    def __init__(self, catalog, dataset: str, run_id: str, joint_names: Sequence[str] | None = None) -> None:
        self.catalog = catalog
        self.ws = catalog.workspace
        self.runs_dataset = schema.runs_dataset(dataset)
        self.run_id = run_id
        self.joint_names = list(joint_names) if joint_names else [f"j{i}" for i in range(14)]
        self._scalars: dict[str, tuple[list[int], list[int], list[float]]] = defaultdict(lambda: ([], [], []))
        self.samples: list[dict[str, Any]] = []
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

    def scalars_state(self) -> dict[str, dict[str, list]]:
        return {p: {"step": list(s), "epoch": list(e), "value": list(v)} for p, (s, e, v) in self._scalars.items()}

    def series(self, path: str) -> list[float]:
        return list(self._scalars[path][2]) if path in self._scalars else []

    def write(self, groups: Mapping[str, Mapping[str, Any]]) -> Path:
        """Write everything logged so far + the property groups as the next version; register it."""
        import rerun as rr

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
                for smp in self.samples:
                    k = smp["k"]
                    offsets = np.arange(len(smp["predicted"]))
                    for what in ("predicted", "target"):
                        rec.log(sample_path(k, what), rr.SeriesLines(names=[f"{what} {n}" for n in self.joint_names]), static=True)
                        rec.send_columns(
                            sample_path(k, what),
                            indexes=[rr.TimeColumn(schema.CHUNK_TIMELINE, sequence=offsets)],
                            columns=rr.Scalars.columns(scalars=np.asarray(smp[what], dtype=np.float64)),
                        )
                    if smp.get("frame") is not None:
                        rec.log(sample_path(k, "frame"), rr.Image(smp["frame"]), static=True)
                    rec.log(sample_path(k, "info"), rr.TextDocument(smp["info"]), static=True)
                write_memory_recording(rec, sink, tmp)
            finally:
                rec.disconnect()
        self.catalog.register_files(self.runs_dataset, [path], validate=False)
        return path


def run_blueprint(samples: int):
    """Loss curves, learning rate and gradient norm on top; sample views below."""
    import rerun.blueprint as rrb

    curves = rrb.Horizontal(
        rrb.TimeSeriesView(origin="/", contents=[schema.TRAIN_LOSS, schema.HOLDOUT_LOSS], name="train / holdout loss"),
        rrb.TimeSeriesView(origin=schema.TRAIN_LR, name="learning rate"),
        rrb.TimeSeriesView(origin=schema.TRAIN_GRAD_NORM, name="gradient norm"),
        rrb.TextDocumentView(origin=schema.RUN_SUMMARY_TEXT, name="run"),
    )
    views = []
    for k in range(max(1, samples)):
        views.append(
            rrb.Vertical(
                rrb.TimeSeriesView(
                    origin=f"{schema.SAMPLES_ROOT}/{k}",
                    contents=[sample_path(k, "predicted"), sample_path(k, "target")],
                    name=f"sample {k}: predicted vs target (timeline chunk_step)",
                ),
                rrb.Spatial2DView(origin=sample_path(k, "frame"), name=f"sample {k}: model input"),
                row_shares=[2, 1],
            )
        )
    return rrb.Blueprint(rrb.Vertical(curves, rrb.Horizontal(*views), row_shares=[1, 1]), collapse_panels=False)


def save_run_blueprint(catalog, dataset: str, samples: int) -> Path:
    """Write `<dataset>_runs`'s default blueprint (atomically) and register it."""
    runs = schema.runs_dataset(dataset)
    final = catalog.workspace.blueprint_path(runs)
    with atomic_path(final) as tmp:
        run_blueprint(samples).save(APPLICATION_ID, tmp)
    catalog.ensure_dataset(runs)
    catalog.register_blueprint(runs, final)
    return final
