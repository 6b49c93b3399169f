"""Reading RRD files without a catalog: structural checks, recording ids, full decoding.

`inspect_rrd` and `quick_check_rrd` look at a file's header and footer; `read_recording_id`
reads its recording id (the segment id) from the first bytes; `validate_rrd(s)` and
`decode_problems` decode every chunk in a child process, so a decoder crash on a damaged
file is that file's error and not the end of the caller. The workspace's checksums
(`workspace.check_checksum`) catch what decoding cannot.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import roboloop
from roboloop.catalog.errors import CorruptRecordingError, first_line

_RRD_MAGIC = b"RRF2"
_RRD_FOOTER_MAGIC = b"RRF2FOOT"


def quick_check_rrd(path: Path) -> str | None:
    """Cheap structural check (header and footer magic); returns a reason string when broken.

    Files written by a finished `RecordingStream` end with a footer; a truncated or
    half-copied file does not.
    """
    return inspect_rrd(path)[0]


def inspect_rrd(path: Path) -> tuple[str | None, str | None]:
    """(what is broken or None, the recording id from the first message or None), with one open and two small reads.

    The structural check of `quick_check_rrd` plus :func:`recording_id_from_header`'s parse of
    the first bytes; restore calls it for every file, so it reads no more than that.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 16:
                return f"file too small to be an RRD ({size} bytes)", None
            head = fh.read(4096)
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except OSError as exc:
        return f"cannot read file: {exc}", None
    if head[:4] != _RRD_MAGIC:
        return "not an RRD file (wrong header)", None
    if _RRD_FOOTER_MAGIC not in tail:
        return "truncated RRD (no footer: the writer did not finish)", None
    return None, _recording_id_from_head(head)


def validate_rrd(path: str | os.PathLike[str]) -> str:
    """Decode an RRD completely; return its recording id (= segment id) or raise CorruptRecordingError.

    Checks the header and footer, opens the manifest, then decodes every chunk of every
    store in the file (recordings and blueprints): what `rerun rrd verify` does. A flipped
    byte inside compressed chunk data fails the LZ4 or Arrow decoding; a flipped byte in
    the footer fails its CRC. (Raw payload bytes that are stored uncompressed, e.g. H.264
    samples, decode whatever their value: the workspace's checksums catch those, see
    `workspace.check_checksum`.) The decoding runs in a child process (:func:`decode_problems`),
    so a decoder panic that aborts is this file's error, not the end of the caller.
    """
    return validate_rrds([path])[Path(path)]


def validate_rrds(paths: Iterable[str | os.PathLike[str]]) -> dict[Path, str]:
    """`validate_rrd` for many files with one decoding child: path -> recording id; raises CorruptRecordingError
    naming every broken file (one per line) after checking all of them."""
    files = [Path(p) for p in paths]
    problems: dict[Path, str] = {}
    todo = []
    for f in files:
        reason = "no such file" if not f.is_file() else quick_check_rrd(f)
        if reason:
            problems[f] = reason
        else:
            todo.append(f)
    for f, reason in zip(todo, decode_problems([(f, False) for f in todo])):
        if reason:
            problems[f] = reason
    ids: dict[Path, str] = {}
    for f in files:
        if f in problems:
            continue
        try:
            ids[f] = read_recording_id(f)
        except CorruptRecordingError as exc:
            problems[f] = str(exc).removeprefix(f"{f}: ")
    if problems:
        raise CorruptRecordingError("\n".join(f"{f}: {why}" for f, why in problems.items()))
    return ids


def decode_problem(path: Path, *, blueprint: bool = False) -> str | None:
    """Decode every chunk of every store of an RRD in this process; return what is broken, or None when all of it decodes.

    A recording file must hold a recording; with `blueprint`, the file is a blueprint (.rbl)
    and must hold one. Some damaged files make the decoder panic and abort the process
    (SIGABRT): callers that must survive any bytes use :func:`decode_problems`, which runs this
    in a child process.
    """
    from rerun.chunk import RrdReader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = RrdReader(path)
            recordings, blueprints = reader.recordings(), reader.blueprints()
            if blueprint and not blueprints:
                return "holds no blueprint"
            if not blueprint and not recordings:
                return "the file holds no recording (only a blueprint?)"
            for store in [*recordings, *blueprints]:
                for _chunk in reader.stream(store=store):
                    pass
    except BaseException as exc:  # any decoding failure is the answer (pyo3's PanicException is a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"unreadable {'blueprint' if blueprint else 'RRD'}: {first_line(exc)}"
    return None


DECODE_TIMEOUT_S = 600.0
"""Longest one file may take to decode in the child before it counts as broken (a decoder that hangs)."""
_DECODE_REPLY = "ROBOLOOP-DECODE "


def decode_problems(items: Sequence[tuple[Path, bool]], *, timeout_s: float = DECODE_TIMEOUT_S) -> list[str | None]:
    """`decode_problem` for each (path, is_blueprint), decoded in a child process that a decoder crash cannot take this one down with.

    One child decodes the files one after the other (one start-up, ~1 s, for the batch),
    answering per file, so a crash is pinned on the file being decoded: that file's problem
    says the decoder crashed (the signal, and the panic message when there is one), and a new
    child goes on with the next file. A file that takes longer than `timeout_s` is reported
    likewise (the child is killed). Returns one problem (or None) per item, in order.
    """
    return list(iter_decode_problems(items, timeout_s=timeout_s))


def iter_decode_problems(items: Iterable[tuple[Path, bool]], *, timeout_s: float = DECODE_TIMEOUT_S) -> Iterator[str | None]:
    """:func:`decode_problems`, yielding each file's answer as soon as it is known (for progress display)."""
    child: DecodeChild | None = None
    try:
        for path, blueprint in items:
            if child is None:
                child = DecodeChild()
            problem, alive = child.decode(Path(path), blueprint, timeout_s)
            if not alive:
                child.close()
                child = None
            yield problem
    finally:
        if child is not None:
            child.close()


class DecodeChild:
    """A `python -c` child running :func:`decode_child_main`: a request line in, a reply line out per file."""

    def __init__(self) -> None:
        src = str(Path(roboloop.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]), RUST_BACKTRACE="0")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from roboloop.catalog.rrd import decode_child_main; decode_child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
        )
        self.buf = b""

    def decode(self, path: Path, blueprint: bool, timeout_s: float) -> tuple[str | None, bool]:
        """(problem or None, whether the child is still usable)."""
        try:
            self.proc.stdin.write((json.dumps({"path": str(path), "blueprint": blueprint}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed(), False
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith(_DECODE_REPLY):
                    return json.loads(text[len(_DECODE_REPLY):])["problem"], True
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                self.proc.wait()
                return f"the RRD decoder did not finish within {timeout_s:.0f} s on this file (killed)", False
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    return self._crashed(), False
                self.buf += data

    def _crashed(self) -> str:
        rc = self.proc.wait()
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in {s.value for s in signal.Signals} else f"exit code {rc}"
        self.stderr.seek(0)
        lines = [ln.strip() for ln in self.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        i = next((k for k, ln in enumerate(lines) if "panicked" in ln), None)
        what = ""
        if i is not None:
            what = ": " + lines[i] + (f" {lines[i + 1]}" if i + 1 < len(lines) and not lines[i + 1].startswith("note:") else "")
        elif lines:  # not a panic: say what the child said last (e.g. a Python error)
            what = f": {lines[-1]}"
        return f"unreadable RRD: the decoder crashed on this file ({how}{what})"

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def decode_child_main() -> None:
    """The decoding child of :func:`decode_problems`: reads {"path", "blueprint"} lines, answers one reply line each."""
    for line in sys.stdin:
        req = json.loads(line)
        problem = decode_problem(Path(req["path"]), blueprint=bool(req.get("blueprint")))
        sys.stdout.write(_DECODE_REPLY + json.dumps({"problem": problem}) + "\n")
        sys.stdout.flush()


RECORDING_INFO_ENTITY = "/__properties"
"""Where a recording written with `send_properties=True` (a base recording) keeps its RecordingInfo.
Layer files are written without it (FIELD-NOTES: it would overwrite the base's)."""


def has_recording_info(path: str | os.PathLike[str]) -> bool:
    """True when the RRD's recording carries its own RecordingInfo properties (it is a base recording, not a layer)."""
    from rerun.chunk import RrdReader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = RrdReader(path)
            for store in reader.recordings():
                if any(str(chunk.entity_path) == RECORDING_INFO_ENTITY for chunk in reader.stream(store=store)):
                    return True
    except Exception as exc:  # any decoding failure: the file is not usable
        raise CorruptRecordingError(f"{path}: unreadable RRD: {first_line(exc)}") from exc
    return False


def read_recording_id(path: str | os.PathLike[str]) -> str:
    """The recording id of an RRD's first recording, cheaply (no chunk is decoded).

    Fast path (~20 us): the file's first message, the recording's `SetStoreInfo`, parsed
    from the first bytes (:func:`recording_id_from_header`). When that does not parse
    (another layout), the manifest is read through `rerun.chunk.RrdReader` (~1 ms).
    Raises CorruptRecordingError when the file holds no recording or is unreadable.
    """
    from rerun.chunk import RrdReader

    fast = recording_id_from_header(path)
    if fast is not None:
        return fast

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recordings = RrdReader(path).recordings()
    except Exception as exc:
        raise CorruptRecordingError(f"{path}: unreadable RRD: {first_line(exc)}") from exc
    if not recordings:
        raise CorruptRecordingError(f"{path}: the file holds no recording (only a blueprint?)")
    return recordings[0].recording_id


def recording_id_from_header(path: str | os.PathLike[str]) -> str | None:
    """The recording id in an RRD's first message when it is a recording's `SetStoreInfo`, else None.

    Layout (rerun 0.41 RRF2): a 12-byte stream header (`RRF2`, version, options), then
    messages as (kind u64 LE, length u64 LE, protobuf payload); kind 1 = `SetStoreInfo`
    {info = 2: StoreInfo {store_id = 2: StoreId {kind = 1 (1 = recording), recording_id = 2}}}.
    Anything unexpected returns None (the caller falls back to the manifest).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    return _recording_id_from_head(head)


def _recording_id_from_head(head: bytes) -> str | None:
    if len(head) < 28 or head[:4] != _RRD_MAGIC:
        return None
    kind = int.from_bytes(head[12:20], "little")
    size = int.from_bytes(head[20:28], "little")
    if kind != 1 or size <= 0 or 28 + size > len(head):
        return None
    try:
        info = _pb_field(head[28 : 28 + size], 2)
        store_id = _pb_field(info, 2) if info is not None else None
        if store_id is None or _pb_varint_field(store_id, 1) != 1:
            return None
        rid = _pb_field(store_id, 2)
        return rid.decode("utf-8") if rid else None
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def _pb_varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _pb_fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _pb_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _pb_varint(buf, i)
        elif wire == 2:
            n, i = _pb_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i : i + n], i + n
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, value


def _pb_field(buf: bytes, number: int) -> bytes | None:
    return next((v for n, w, v in _pb_fields(buf) if n == number and w == 2), None)


def _pb_varint_field(buf: bytes, number: int) -> int | None:
    return next((v for n, w, v in _pb_fields(buf) if n == number and w == 0), None)


def file_uri(path: Path) -> str:
    """`file://` URI of a path. Absolute paths are used as they are (workspace paths are absolute and
    resolved already; `Path.resolve()` would cost an lstat per path component, ~0.7 ms per file)."""
    path = Path(path)
    return (path if path.is_absolute() else path.resolve()).as_uri()

