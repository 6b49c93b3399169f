"""`train(catalog, cfg)`: the one training entry, in one process or several.

In a live process group (a rank started by `torchrun` or by :func:`launch`) it trains as
that rank (`loop.fit` with the group's rank and size). Otherwise it takes the run's writer
lock and either trains here (`cfg.nproc == 1`) or launches `cfg.nproc` ranks on this
machine (`distributed.launch`) and returns rank 0's result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from roboloop.train.config import TrainConfig, TrainError
from roboloop.train.distributed import launch
from roboloop.train.loop import TrainProgress, TrainResult, fit, new_run_id
from roboloop.workspace import WRITER_RUN, Workspace


def train(
    catalog,
    cfg: TrainConfig,
    *,
    on_progress: Callable[[TrainProgress], None] | None = None,
    resume: str | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train `cfg.policy` on the selection `cfg.selection`; register the run in `<dataset>_runs`.

    With `cfg.nproc > 1` and no process group yet, launches the ranks and returns rank 0's result.

    The training process (the launcher with `nproc > 1`) holds the run's writer lock for
    its lifetime (DESIGN): `runs` shows a run whose process is gone as dead, and a second
    process training the same run (two `--resume RUN` at once) is refused with TrainError.
    Ranks of a process group do not take it (their launcher holds it; under `torchrun`
    nobody does). A non-finite loss stops the run with TrainError and status `failed`.
    """
    rank, world = process_group()
    if world > 1:
        return fit(catalog, cfg, rank=rank, world=world, on_progress=on_progress, resume=resume, run_id=run_id)
    run_id = resume or run_id or new_run_id()
    ws: Workspace = catalog.workspace
    with ws.writer(WRITER_RUN, run_id) as mine:
        if not mine:
            pid = ws.writer_pid(WRITER_RUN, run_id)
            raise TrainError(f"run {run_id!r} is being trained right now by another process{f' (pid {pid})' if pid else ''}; "
                             f"wait for it to end (see `roboloop runs`), or stop it (Ctrl-C, kill) and then "
                             f"`roboloop train --resume {run_id}`")
        if cfg.nproc > 1:
            return launch(catalog, cfg, on_progress=on_progress, resume=resume, run_id=run_id)
        return fit(catalog, cfg, on_progress=on_progress, resume=resume, run_id=run_id)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the live torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
