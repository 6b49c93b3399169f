"""Links to an episode that outlive the process (DESIGN.md, "Links that outlive the process").

A live catalog URL (``rerun+http://127.0.0.1:<port>/dataset/<entry id>?segment_id=...``)
dies with the embedded server that printed it, and entry ids and ports change on every
start. So roboloop offers two durable ways to look at an episode:

* ``roboloop open SEGMENT_ID [--at SECONDS]`` (:func:`open_command`): a command that
  starts (or attaches to) the catalog and opens the viewer on that segment at that
  moment; :func:`segment_url` builds the live URL when asked, never stored. ``open --print``
  prints a URL only while a server outlives the command (``roboloop serve``, ``--catalog``);
  with only its own embedded catalog it prints :func:`no_server_note` instead.
* ``roboloop.analyze.export.export_segment``: a self-contained ``.rrd`` (every layer merged,
  plus the dataset's default blueprint) that opens in the viewer without any catalog.
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
from roboloop.catalog.errors import CatalogError
from roboloop.workspace import Workspace

__all__ = [
    "find_segment_dataset",
    "has_display",
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
