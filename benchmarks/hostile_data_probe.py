"""Issue 19 probes (items 1-4), run through the `roboloop` command of a chosen source tree.

    python benchmarks/hostile_data_probe.py [--src OTHER/src] [--flips 300] [--restore-episodes 200] [--only NAME]

`--src` selects the roboloop code the commands run (default: this checkout's src), so the
same probes measure before (e.g. `git archive <commit> src | tar -x -C /tmp/old`) and after.
Episodes are recorded by this checkout's code (scripted transfer cube, physics only, 300 steps).
Bit flips: `--flips` seeded single-bit flips of one recorded episode, classified by the old
checks (header/footer, full decode in a child process, recording id: what `verify` and `import`
did before) and by this checkout's `verify` (which adds the workspace checksum) over a
workspace that holds every flipped copy as a version of the episode with the record written
for the intact file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OWN_SRC = HERE.parent / "src"
sys.path.insert(0, str(OWN_SRC))

from roboloop.catalog.rrd import DecodeChild, quick_check_rrd, read_recording_id  # noqa: E402
from roboloop.workspace import Workspace, checksum_record_path  # noqa: E402


def cli(src: Path, ws: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src), MUJOCO_GL="egl", ROBOLOOP_CATALOG="")
    return subprocess.run([sys.executable, "-c", "from roboloop.cli import main; main()", "--workspace", str(ws), "--catalog", "", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def collect(ws: Path, n: int, steps: int = 300) -> list[Path]:
    res = cli(OWN_SRC, ws, "collect", "-d", "d", "--episodes", str(n), "--steps", str(steps), "--cameras", "")
    assert res.returncode == 0, res.stderr[-2000:]
    return sorted(Workspace(ws).layer_dir("d", "base").glob("*.rrd"))


def rrd_count(ws: Path) -> int:
    return len(list((ws / "datasets").rglob("*.rrd"))) if (ws / "datasets").is_dir() else 0


def probe_export(src: Path, tmp: Path) -> dict:
    ws = tmp / "ws"
    collect(ws, 3, 40)
    assert cli(OWN_SRC, ws, "curate", "-d", "d", "--name", "all").returncode == 0
    out = {}
    for name, target in (("workspace", ws), ("datasets/", ws / "datasets")):
        before = rrd_count(ws)
        res = cli(src, ws, "export-lerobot", "--selection", "all", "--fps", "10", "--overwrite", str(target))
        out[name] = f"rc {res.returncode}, episodes {before} -> {rrd_count(ws)}"
        if rrd_count(ws) < before:  # rebuild for the next probe
            shutil.rmtree(ws)
            collect(ws, 3, 40)
            cli(OWN_SRC, ws, "curate", "-d", "d", "--name", "all")
    other = tmp / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    res = cli(src, ws, "export-lerobot", "--selection", "all", "--fps", "10", "--overwrite", str(other))
    out["unrelated folder"] = f"rc {res.returncode}, notes.txt {'kept' if (other / 'notes.txt').exists() else 'deleted'}"
    plain = tmp / "plain.txt"
    plain.write_text("x")
    res = cli(src, ws, "export-lerobot", "--selection", "all", "--fps", "10", "--overwrite", str(plain))
    out["plain file"] = f"rc {res.returncode}, file {'kept' if plain.is_file() else 'replaced/deleted'}"
    return out


def probe_damaged_version(src: Path, tmp: Path) -> dict:
    out = {}
    for case in ("truncated", "other segment"):
        ws = tmp / f"ws-{case.replace(' ', '-')}"
        files = collect(ws, 3, 40)
        s, u = files[0], files[2]
        damaged = s.with_name(s.stem + ".1.rrd")
        damaged.write_bytes(s.read_bytes()[:1000] if case == "truncated" else u.read_bytes())
        res = cli(src, ws, "ls")
        sql = cli(src, ws, "sql", "SELECT count(*) AS n FROM d", "--format", "json")
        n = json.loads(sql.stdout.splitlines()[0])["n"] if sql.returncode == 0 else f"sql rc {sql.returncode}"
        out[case] = (f"ls rc {res.returncode}; segments {n} of 3; S.rrd {'on disk' if s.exists() else 'DELETED'}; "
                     f"S.1.rrd {'on disk' if damaged.exists() else 'deleted'}")
    return out


def flips(data: bytes, n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        b = bytearray(data)
        b[pos] ^= 1 << bit
        yield pos, bit, bytes(b)


def classify_old(path: Path, child_box: list) -> str:
    """What the checks before issue 19 said about a file: 'detected', 'undetected' or 'abort' (the decoder panicked)."""
    if quick_check_rrd(path):
        return "detected"
    if child_box[0] is None:
        child_box[0] = DecodeChild()
    problem, alive = child_box[0].decode(path, False, 120)
    if not alive:
        child_box[0].close()
        child_box[0] = None
        return "abort"
    if problem:
        return "detected"
    try:
        return "undetected" if read_recording_id(path) == path.stem.split(".")[0] else "detected"
    except Exception:  # noqa: BLE001
        return "detected"


def probe_panic(src: Path, tmp: Path) -> dict:
    ws = tmp / "ws-panic"
    ep = collect(ws, 1)[0]
    data = ep.read_bytes()
    scratch = tmp / "scan" / ep.name
    scratch.parent.mkdir()
    box = [None]
    found = None
    for pos, bit, b in flips(data, 5000, 7):
        scratch.write_bytes(b)
        if classify_old(scratch, box) == "abort":
            found = (pos, bit, b)
            break
    if box[0]:
        box[0].close()
    assert found, "no panicking flip found"
    pos, bit, b = found
    ep.write_bytes(b)
    v = cli(src, ws, "verify")
    bad = tmp / "incoming" / ep.name
    bad.parent.mkdir()
    bad.write_bytes(b)
    i = cli(src, tmp / "ws-import", "import", str(bad), "-d", "x")
    named = lambda r: "named" if ep.name in r.stdout + r.stderr else "not named"  # noqa: E731
    return {"flip": f"bit {bit} of byte {pos} of a {len(data) // 1024} KB episode",
            "verify": f"rc {v.returncode}, file {named(v)}", "import": f"rc {i.returncode}, file {named(i)}"}


def probe_flips(n: int, tmp: Path) -> dict:
    """Before: the old checks; after: this checkout's verify (checksums) on every flipped copy."""
    from roboloop.catalog.verify import verify

    ws_dir = tmp / "ws-flips"
    ep = collect(ws_dir, 1)[0]
    data = ep.read_bytes()
    seg = ep.stem
    record = checksum_record_path(ep).read_text()
    ws = Workspace(ws_dir)
    before = {"detected": 0, "undetected": 0, "abort": 0}
    box = [None]
    for k, (_pos, _bit, b) in enumerate(flips(data, n, 1), start=1):
        p = ep.with_name(f"{seg}.{k}.rrd")
        p.write_bytes(b)
        rec = checksum_record_path(p)
        rec.write_text(record)  # the record written for the intact file
        before[classify_old(p, box)] += 1
    if box[0]:
        box[0].close()
    t0 = time.perf_counter()
    rep = verify(ws, "d")
    seconds = time.perf_counter() - t0
    caught = {p.name for p, _ in rep.problems}
    after_undetected = sum(1 for k in range(1, n + 1) if f"{seg}.{k}.rrd" not in caught)
    crashed = sum(1 for _, why in rep.problems if "decoder crashed" in why)
    return {"flips": n, "before (old verify/import checks)": before,
            "after (verify)": {"undetected": after_undetected, "decoder crashes named": crashed, "verify seconds": round(seconds, 1)}}


def probe_restore(src: Path, tmp: Path, n: int) -> dict:
    ws = tmp / "ws-restore"
    collect(ws, n, 40)
    code = ("import sys, time, statistics; from roboloop.catalog.client import Catalog; from roboloop.workspace import Workspace\n"
            "ts=[]\nfor _ in range(3):\n    t=time.perf_counter(); c=Catalog(Workspace(sys.argv[1]), url=''); ts.append(c.report.seconds); c.close()\n"
            "print(statistics.median(ts))")
    env = dict(os.environ, PYTHONPATH=str(src), MUJOCO_GL="egl")
    res = subprocess.run([sys.executable, "-c", code, str(ws)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return {"episodes": n, "restore seconds (median of 3)": round(float(res.stdout.strip().splitlines()[-1]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=OWN_SRC)
    ap.add_argument("--flips", type=int, default=300)
    ap.add_argument("--restore-episodes", type=int, default=200)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    src = args.src.resolve()
    probes = {
        "1 export --overwrite": lambda t: probe_export(src, t),
        "2 damaged newest version": lambda t: probe_damaged_version(src, t),
        "3 decoder-panicking flip": lambda t: probe_panic(src, t),
        "4 bit flips": lambda t: probe_flips(args.flips, t),
        "restore time": lambda t: probe_restore(src, t, args.restore_episodes),
    }
    for name, fn in probes.items():
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name}: {json.dumps(fn(Path(tmp)))}", flush=True)


if __name__ == "__main__":
    main()
