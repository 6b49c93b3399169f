"""Training beyond one process: `train(catalog, cfg)` with `cfg.nproc > 1`, on one machine or a cluster.

One machine (`roboloop train --nproc 2`): :func:`launch` runs in the calling process, which
keeps its `Catalog` (and so the embedded catalog server, if it owns one) alive, and starts
`nproc` rank processes with `torch.multiprocessing` **spawn** (fork deadlocks with the
catalog client). Each rank joins a gloo process group (`MASTER_ADDR=127.0.0.1`, a free
port), attaches to the catalog by its URL (`Catalog(workspace, url)`), sets torch threads
to 1, and runs `roboloop.train.loop.fit` as its rank of the group. Rank 0 reports progress and
its `TrainResult` back through a queue; only rank 0 writes the run folder, checkpoints and
registers the run recording (so the run is registered once, `run.config.nproc = nproc`).

A cluster (several machines, one rank per process): a catalog server every node can reach
(`roboloop serve` on the machine with the workspace listens on 127.0.0.1: tunnel its port,
or run a Rerun catalog server on a reachable address over the same files); the workspace
at the same path on every node (a shared file system). Then on each node::

    torchrun --nnodes N --nproc-per-node P --node-rank R --master-addr HOST0 --master-port 29500 \\
        -m roboloop.train.distributed --workspace /shared/ws --catalog rerun+http://HOST0:9876 \\
        --config cfg.json --run-id run-... [--resume RUN_ID]

`cfg.json` is a `TrainConfig` with `nproc = N * P` (the global batch is split over the
ranks); every node must pass the same `--run-id` (`roboloop.train.new_run_id()`).
torchrun sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; :func:`main` reads them. The same
command works on this machine (`--nnodes 1 --nproc-per-node 2`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue as _queue
import signal
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from roboloop.catalog.client import Catalog
from roboloop.errors import Terminated
from roboloop.train.config import TrainConfig, TrainError
from roboloop.train.loop import TrainResult, fit, load_config, new_run_id
from roboloop.workspace import Workspace, die_with_parent

TIMEOUT = timedelta(minutes=10)
"""How long a collective may wait for a missing rank before the group fails."""


class DistributedTrainError(TrainError):
    """A training rank failed; the message carries the rank's own error."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(catalog, cfg: TrainConfig, *, on_progress: Callable | None = None, resume: str | None = None,
           run_id: str | None = None) -> TrainResult:
    """Run `cfg.nproc` ranks on this machine (spawn, gloo) and return rank 0's `TrainResult`.

    `catalog` must stay alive here while the ranks run (it may own the server they attach to).
    Ctrl-C reaches every rank (same process group); rank 0 then registers the run `interrupted`.
    """
    if not getattr(catalog, "url", None):
        raise TrainError("training with nproc > 1 needs a catalog reachable by URL (its ranks attach to it)")
    run_id = resume or run_id or new_run_id()
    ctx = torch.multiprocessing.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    args = (cfg.nproc, catalog.url, str(catalog.workspace.root), cfg.to_json(), run_id, resume, port, q, os.getpid())
    procs = torch.multiprocessing.start_processes(_rank_main, args=args, nprocs=cfg.nproc, join=False, start_method="spawn")
    got = _Received()
    interrupted = False
    try:
        _listen(q, procs.processes, got, on_progress)
    except KeyboardInterrupt as exc:
        interrupted = True
        if isinstance(exc, Terminated):  # SIGTERM reached the launcher only (Ctrl-C reaches the whole group): pass it on
            _interrupt(procs.processes)
    finally:
        _reap(procs.processes, wait=None if interrupted else 60)
    _drain(q, got)  # anything sent just before the ranks exited
    if interrupted:
        raise KeyboardInterrupt
    return _outcome(got, procs.processes, cfg, run_id)


class _Received:
    """What the ranks sent the launcher: rank 0's result, the other ranks' final weights digests, errors."""

    def __init__(self) -> None:
        self.result: TrainResult | None = None
        self.weights: dict[int, str] = {}
        self.errors: list[tuple[int, str, str]] = []

    def take(self, kind: str, payload) -> None:
        if kind == "result":
            self.result = payload
        elif kind == "weights":
            self.weights[payload[0]] = payload[1]
        elif kind == "error":
            self.errors.append(payload)


def _listen(q, processes, got: _Received, on_progress: Callable | None) -> None:
    """Take the ranks' messages until every rank has exited (progress goes to `on_progress`)."""
    while True:
        try:
            kind, payload = q.get(timeout=0.2)
        except _queue.Empty:
            if all(not p.is_alive() for p in processes):
                return
            continue
        if kind == "progress":
            if on_progress is not None:
                on_progress(payload)
        else:
            got.take(kind, payload)


def _drain(q, got: _Received) -> None:
    while True:
        try:
            kind, payload = q.get_nowait()
        except _queue.Empty:
            return
        got.take(kind, payload)


def _interrupt(processes) -> None:
    for p in processes:
        if p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGINT)


def _reap(processes, wait: float | None) -> None:
    """Join every rank (`wait` seconds each at most), then kill any still alive."""
    for p in processes:
        p.join(timeout=wait)
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()


def _outcome(got: _Received, processes, cfg: TrainConfig, run_id: str) -> TrainResult:
    """Rank 0's result, or the error that stopped the ranks; checks every rank ended with the same weights."""
    result = got.result
    unfinished = result is None or result.status != "finished"
    killed = [(r, -p.exitcode) for r, p in enumerate(processes) if p.exitcode is not None and p.exitcode < 0]
    if killed and unfinished:
        r, sig = killed[0]
        raise DistributedTrainError(f"training rank {r} was killed by signal {sig}; the other ranks stopped. The run keeps its last "
                                    f"complete checkpoint: continue it with `roboloop train --resume {run_id}`")
    if got.errors and unfinished:
        first = sorted(got.errors)[0]
        if first[1] == "KeyboardInterrupt":
            raise KeyboardInterrupt
        raise DistributedTrainError(f"training rank {first[0]} failed: {first[2]}")
    if result is None:
        codes = [p.exitcode for p in processes]
        raise DistributedTrainError(f"training ranks exited without a result (exit codes {codes}); see their output above")
    result.rank_weights_sha256 = result.rank_weights_sha256[:1] + [got.weights.get(r, "") for r in range(1, cfg.nproc)]
    if result.status == "finished" and len(set(result.rank_weights_sha256)) != 1:
        raise DistributedTrainError(f"run {result.run_id}: the ranks' final weights differ ({result.rank_weights_sha256}); gradients were not synchronized")
    return result


def _rank_main(rank: int, world: int, url: str, ws_root: str, cfg_json: str, run_id: str, resume: str | None, port: int, q,
               launcher_pid: int) -> None:
    die_with_parent(launcher_pid)  # the launcher holds the run's lock: no rank outlives it
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)

    def report(p) -> None:
        q.put(("progress", p))

    try:
        res = run_rank(ws_root, url, TrainConfig.from_json(cfg_json), run_id=run_id, resume=resume, on_progress=report)
        q.put(("result", res) if rank == 0 else ("weights", (rank, res.rank_weights_sha256[0])))
    except BaseException as exc:  # noqa: BLE001 - every failure (also Ctrl-C) is reported to the launcher, then the rank exits 1
        q.put(("error", (rank, type(exc).__name__, f"{type(exc).__name__}: {exc}")))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_rank(ws_root: str, url: str, cfg: TrainConfig, *, run_id: str, resume: str | None = None, on_progress=None):
    """One rank inside an initialized process group: attach to the catalog by URL and train as this rank."""
    torch.set_num_threads(1)
    with Catalog(Workspace(Path(ws_root)), url=url) as cat:
        return fit(cat, cfg, rank=dist.get_rank(), world=dist.get_world_size(), on_progress=on_progress, resume=resume, run_id=run_id)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `torchrun ... -m roboloop.train.distributed` (see the module doc)."""
    ap = argparse.ArgumentParser(prog="python -m roboloop.train.distributed", description="One training rank started by torchrun.")
    ap.add_argument("--workspace", required=True, help="Workspace folder (the same path on every node).")
    ap.add_argument("--catalog", required=True, help="Catalog URL every rank attaches to (roboloop serve).")
    ap.add_argument("--config", help="TrainConfig JSON file (nproc = the world size).")
    ap.add_argument("--run-id", help="The run id, identical on every node.")
    ap.add_argument("--resume", help="Continue this interrupted run (its own config).")
    a = ap.parse_args(argv)
    if a.resume:
        cfg = load_config(Workspace(Path(a.workspace)), a.resume)
    elif a.config:
        cfg = TrainConfig.from_json(Path(a.config).read_text())
    else:
        ap.error("pass --config FILE or --resume RUN_ID")
    if not (a.run_id or a.resume):
        ap.error("pass --run-id (the same on every node) or --resume")
    dist.init_process_group("gloo", timeout=TIMEOUT)  # env:// from torchrun
    try:
        res = run_rank(a.workspace, a.catalog, cfg, run_id=a.resume or a.run_id, resume=a.resume)
        if dist.get_rank() == 0:
            print(f"run {res.run_id} {res.status}: {res.epochs_done} epochs, train loss {res.final_train_loss}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
