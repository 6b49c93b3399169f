"""Links to an episode that outlive the process (DESIGN.md, "Links that outlive the process").

A live catalog URL (``rerun+http://127.0.0.1:<port>/dataset/<entry id>?segment_id=...``)
dies with the embedded server that printed it, and entry ids and ports change on every
start. So roboloop offers two durable ways to look at an episode:

* ``roboloop open SEGMENT_ID [--at SECONDS]`` (:func:`open_command`): a command that
  starts (or attaches to) the catalog and opens the viewer on that segment at that
  moment; :func:`segment_url` builds the live URL when asked, never stored. ``open --print``
  prints a URL only while a server outlives the command (``roboloop serve``, ``--catalog``);
  with only its own embedded catalog it prints :func:`no_server_note` instead.
* :func:`export_segment`: a self-contained ``.rrd`` (every layer merged, plus the
  dataset's default blueprint) that opens in the viewer without any catalog.
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from roboloop import schema
from roboloop.catalog.client import CatalogError
from roboloop.workspace import Workspace, atomic_path

__all__ = [
    "export_segment",
    "export_segments",
    "find_segment_dataset",
    "has_display",
    "nearest_training_episode",
    "no_server_note",
    "open_command",
    "segment_url",
    "view",
    "viewer_argv",
    "viewer_command",
    "wait_for_interrupt",
]


def segment_url(catalog, dataset: str, segment_id: str, at_s: float | None = None) -> str:
    """The live viewer URL of a segment with the time cursor at `at_s` seconds (valid while the catalog runs)."""
    ds = catalog.dataset(dataset)
    if at_s is None:
        return ds.segment_url(segment_id)
    return ds.segment_url(segment_id, timeline=schema.TIMELINE, start=_dt.timedelta(seconds=max(0.0, float(at_s))))


def open_command(segment_id: str, at_s: float | None = None, dataset: str | None = None) -> str:
    """The `roboloop open ...` command line that shows the segment at `at_s` (works after restarts)."""
    parts = ["roboloop", "open", segment_id]
    if at_s is not None:
        parts += ["--at", f"{max(0.0, float(at_s)):g}"]
    if dataset:
        parts += ["--dataset", dataset]
    return " ".join(shlex.quote(p) for p in parts)


def no_server_note(segment_id: str, at_s: float | None = None, dataset: str | None = None, *,
                   with_nearest: bool = False) -> list[str]:
    """What `open --print` says when only its own embedded catalog could serve the URL (dead once it exits).

    Instead of a URL that stops working when the command returns: the command that opens the
    viewer and serves the episode until the viewer closes, and how to get a URL that stays
    valid (a `roboloop serve` kept running on the workspace; `open --print` then attaches to it).
    """
    cmd = open_command(segment_id, at_s, dataset) + (" --with-nearest" if with_nearest else "")
    return [
        "no catalog server is running for this workspace: a viewer URL printed now would stop working when this command exits.",
        f"open it (serves the episode until the viewer closes):  {cmd}",
        f"or keep a server running (`roboloop serve`, in another terminal), then `{cmd} --print` prints a URL valid while it runs",
    ]


def find_segment_dataset(workspace: Workspace, segment_id: str) -> str:
    """The dataset whose base layer holds `segment_id` (looked up in the workspace, no catalog)."""
    schema.validate_segment_id(segment_id)
    hits = [d for d in workspace.datasets() if workspace.segment_path(d, schema.BASE_LAYER, segment_id).is_file()]
    if not hits:
        raise CatalogError(f"no dataset in {workspace.root} holds segment {segment_id!r}; "
                           "check the id (e.g. with `roboloop failures`) or pass --dataset")
    if len(hits) > 1:
        raise CatalogError(f"segment {segment_id!r} is in several datasets ({', '.join(hits)}); pass --dataset")
    return hits[0]


def nearest_training_episode(catalog, dataset: str, segment_id: str) -> dict:
    """The training episode whose start state is nearest rollout `segment_id`'s (`analyze_gaps.nearest_training`):
    `nearest_train_id`, `nearest_dataset`, `nearest_distance`. A rollout of a policy without a training run has none."""
    from roboloop.analyze.gaps import nearest_training

    rows = [r for r in catalog.segment_table(dataset).to_pylist() if r.get(schema.SEGMENT_ID) == segment_id]
    if not rows:
        raise CatalogError(f"no segment {segment_id!r} in {dataset!r}")
    why = nearest_training(catalog, rows)
    if "nearest_train_id" not in rows[0]:
        reason = next(iter(why.values()), "it is not a rollout of an evaluation")
        raise CatalogError(f"{segment_id} has no nearest training episode: {reason}")
    return rows[0]


def export_segment(catalog, dataset: str, segment_id: str, path: str | os.PathLike[str]) -> Path:
    """Write one segment as a self-contained RRD: every layer merged + the dataset's default blueprint.

    The file keeps the segment id as its recording id and opens in the viewer with no
    catalog running. Written atomically.
    """
    import rerun as rr

    from roboloop.record.episode import APPLICATION_ID, write_memory_recording

    ds = catalog.dataset(dataset)
    store = ds.segment_store(segment_id)
    blueprint = _dataset_blueprint(catalog.workspace, dataset, store)
    final = Path(path)
    with atomic_path(final) as tmp:
        rec = rr.RecordingStream(APPLICATION_ID, recording_id=segment_id, send_properties=False)
        try:
            sink = rec.memory_recording()  # not rec.save: see write_memory_recording (full disk)
            if blueprint is not None:
                rec.send_blueprint(blueprint)
            rec.send_chunks(store)
            write_memory_recording(rec, sink, tmp)
        finally:
            rec.disconnect()
    return final


def export_segments(catalog, dataset: str, segment_ids, out_dir: str | os.PathLike[str]) -> list[Path]:
    """`export_segment` for each id into `out_dir/<segment_id>.rrd`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [export_segment(catalog, dataset, sid, out / f"{sid}.rrd") for sid in segment_ids]


def _dataset_blueprint(workspace: Workspace, dataset: str, store):
    """The dataset's default blueprint, rebuilt from the cameras the segment recorded.

    It is the blueprint `collect` saved for the dataset (recording.default_blueprint of
    the same cameras): camera views for exactly the camera streams the file holds.
    """
    from roboloop.envs.aloha.recording import default_blueprint

    prefix = schema.CAMERA_ROOT + "/"
    cams = sorted({str(e)[len(prefix):] for e in _entity_paths(store) if str(e).startswith(prefix)})
    return default_blueprint(cams)


def _entity_paths(store) -> list[str]:
    try:
        return [str(e) for e in store.schema().entity_paths()]
    except Exception:  # noqa: BLE001 - schema introspection is best effort; no camera views then
        return []


def has_display() -> bool:
    """Whether a graphical viewer can open here."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform == "darwin"


def viewer_command(target: str) -> str:
    """How to open `target` (a URL or an .rrd) in the native viewer, with H.264 decoding working."""
    venv_bin = Path(sys.prefix) / "bin"
    if shutil.which("ffmpeg") is None and (venv_bin / "ffmpeg").exists():
        return f'PATH="{venv_bin}:$PATH" rerun {shlex.quote(target)}'
    return f"rerun {shlex.quote(target)}"


def viewer_argv(targets: Sequence[str]) -> list[str] | None:
    """The command line opening `targets` in the native viewer, or None when no `rerun` executable is installed."""
    exe = shutil.which("rerun") or str(Path(sys.prefix) / "bin" / "rerun")
    return [exe, *targets] if os.path.exists(exe) else None


def wait_for_interrupt() -> None:
    """Block until Ctrl-C (keeps an embedded catalog serving its URLs)."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return


def view(urls: Sequence[str], *, embedded: bool, say: Callable[[str], None] = print) -> None:
    """Open `urls` in the native viewer; with an `embedded` catalog, keep serving until the viewer closes (or Ctrl-C).

    Without a display or a viewer, `say` how to open each URL instead (and, embedded, serve until Ctrl-C).
    """
    argv = viewer_argv(urls)
    if argv is None or not has_display():
        say("no display here; open in a viewer on this machine:")
        for u in urls:
            say(f"  {viewer_command(u)}")
        if embedded:
            say("the catalog serves these URLs until Ctrl-C")
            wait_for_interrupt()
        return
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # the viewer finds ffmpeg there
    proc = subprocess.Popen(argv, env=env)
    if not embedded:
        return
    say("viewer open; the embedded catalog serves it until the viewer closes (or Ctrl-C)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
