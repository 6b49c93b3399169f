"""Worker processes that outlive one collect: started once, reused by every collect of a loop.

Starting a worker costs seconds (spawning Python, importing MuJoCo, Rerun and, for a trained
policy, torch, then building the simulator: ~4 s of CPU each on 2 cores), so a loop of short
collects (the rounds of a sequential evaluation, the stages of `roboloop demo`) spends much of
its time starting processes. Inside ``with reuse_workers(n):`` every `collect` that asks for
``n`` local workers (and so every evaluation, sequential round and plan execution) runs on one
pool of ``n`` processes, started by the first collect and stopped when the block ends. Outside
such a block nothing changes: each collect starts and stops its own workers (a `WorkerPool` that
lives for the call).

Library use::

    from roboloop.collect.pool import reuse_workers

    with reuse_workers(2):
        evaluate(cat, cfg_a)   # starts the 2 workers
        evaluate(cat, cfg_b)   # reuses them (new policy, same simulator)

**What a worker keeps.** A job names a `Context` (for collect: the task, the recording spec and
the policy factory); a worker builds a context the first time one of its jobs names it and keeps
it for later jobs (at most `MAX_CONTEXTS`, least recently used dropped). Contexts can share
values a worker builds once (`shared`/`release`): collect's contexts of one task and recording spec
share one simulator, whatever their policy. Results do not depend on what a worker ran before:
every episode resets the simulator from its seed and the policy with `reset()`, exactly as the
episodes of one collect always have on a worker they share.

**Every worker** dies with its parent (`workspace.die_with_parent`), runs torch on one thread
(DESIGN "Threads": ``torch.set_num_threads(1)``, and ``OMP_NUM_THREADS=1`` before torch is
imported), and is replaced after `max_jobs_per_worker` jobs (`MAX_JOBS_PER_WORKER`). A pool whose worker died
(``BrokenProcessPool``) is replaced by a new one at the next submit.

**Shutting down.** `close` (the end of the block, normally or by an exception, KeyboardInterrupt
included) cancels queued jobs, lets running ones finish (at most one per worker) and waits for the
processes to exit. A collect that fails inside a block cancels its own queued jobs and waits for its
running ones (`abandon`) before the error reaches the caller, so the next collect starts on idle
workers.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import multiprocessing as mp
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from roboloop.workspace import die_with_parent

__all__ = [
    "MAX_CONTEXTS",
    "MAX_JOBS_PER_WORKER",
    "Context",
    "WorkerPool",
    "abandon",
    "active_pool",
    "release",
    "reuse_workers",
    "shared",
    "worker_parent",
]

MAX_JOBS_PER_WORKER = 1000
"""Jobs (episodes) a worker runs before it is replaced: Rerun 0.41 leaks two native threads per RecordingStream, and a
process that has written ~7,700 recordings can no longer start threads."""
MAX_CONTEXTS = 4
"""Contexts a worker keeps (least recently used dropped): a demo uses three (the demonstrator, v1, v2)."""


@dataclass(frozen=True)
class Context:
    """What a worker builds once and hands to every job that names it: ``builder(*args)``, pickled.

    `key` is a digest of the pickled builder and arguments: two contexts made from equal
    arguments are one context in a worker.
    """

    key: str
    blob: bytes

    @classmethod
    def of(cls, builder: Callable[..., Any], *args: Any) -> Context:
        blob = pickle.dumps((builder, args), protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.sha256(blob).hexdigest()[:32], blob)


# --- in a worker process -------------------------------------------------------------------------

_STATE: dict[str, Any] = {"parent": None}
_CONTEXTS: OrderedDict[str, Any] = OrderedDict()
_SHARED: dict[str, list[Any]] = {}  # key -> [value, references]


def _init(parent_pid: int) -> None:
    die_with_parent(parent_pid)  # a killed collect/eval takes its workers with it
    os.environ["OMP_NUM_THREADS"] = "1"  # torch imported later (by a policy) starts with one thread
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    _STATE["parent"] = parent_pid


def worker_parent() -> int | None:
    """In a pool worker: the pid of the process that owns the pool (None elsewhere)."""
    return _STATE["parent"]


def shared(key: str, build: Callable[[], Any]) -> Any:
    """In a worker: the value under `key`, built by `build()` the first time; each call takes a reference
    that `release(key)` gives back."""
    entry = _SHARED.get(key)
    if entry is None:
        entry = _SHARED[key] = [build(), 0]
    entry[1] += 1
    return entry[0]


def release(key: str) -> None:
    """Give back a reference taken by `shared`; the last one closes the value (its `close()`, if any)."""
    entry = _SHARED.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _SHARED[key]
        _close(entry[0])


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


def _context(key: str, blob: bytes) -> Any:
    if key in _CONTEXTS:
        _CONTEXTS.move_to_end(key)
        return _CONTEXTS[key]
    builder, args = pickle.loads(blob)
    value = _CONTEXTS[key] = builder(*args)
    while len(_CONTEXTS) > MAX_CONTEXTS:
        _close(_CONTEXTS.popitem(last=False)[1])
    return value


def _call(key: str, blob: bytes, fn: Callable[..., Any], args: tuple) -> Any:
    return fn(_context(key, blob), *args)


# --- in the parent ---------------------------------------------------------------------------------

class WorkerPool:
    """`workers` spawned processes that run ``fn(context_value, *args)`` jobs (see the module docstring)."""

    def __init__(self, workers: int, *, max_jobs_per_worker: int | None = MAX_JOBS_PER_WORKER) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.max_jobs_per_worker = max_jobs_per_worker
        self.closed = False
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init,
                                   initargs=(os.getpid(),), max_tasks_per_child=self.max_jobs_per_worker)

    def submit(self, context: Context, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(value of context, *args)`` in a worker (building the context there first if it has not yet)."""
        if self.closed:
            raise RuntimeError("the worker pool is closed")
        try:
            return self._executor.submit(_call, context.key, context.blob, fn, args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start over with new processes
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            return self._executor.submit(_call, context.key, context.blob, fn, args)

    def close(self) -> None:
        """Cancel queued jobs, let running ones finish, stop the processes (idempotent)."""
        if not self.closed:
            self.closed = True
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def abandon(futures: Iterable[Future], discard: Callable[[Any], None] | None = None) -> None:
    """After an error: cancel the jobs not started yet and wait for the running ones; `discard(result)` is called
    for each that still finished (e.g. to delete a file nobody will publish). Their errors are dropped."""
    running = [f for f in futures if not f.cancel()]
    for fut in wait(running).done:
        if discard is not None and not fut.cancelled() and fut.exception() is None:
            discard(fut.result())


_ACTIVE: contextvars.ContextVar[WorkerPool | None] = contextvars.ContextVar("roboloop_worker_pool", default=None)


def active_pool(workers: int) -> WorkerPool | None:
    """The pool of the innermost open `reuse_workers` block when it has `workers` workers, else None."""
    pool = _ACTIVE.get()
    return pool if pool is not None and not pool.closed and pool.workers == workers else None


@contextlib.contextmanager
def reuse_workers(workers: int, *, max_jobs_per_worker: int | None = MAX_JOBS_PER_WORKER) -> Iterator[WorkerPool | None]:
    """Within the block, every collect with `workers` local workers runs on one pool (see the module docstring).

    The processes start with the first job and stop when the block ends (`WorkerPool.close`). Inside an
    open block with the same number of workers, the outer pool serves (nothing new starts). With fewer
    than 2 workers there is nothing to reuse (collect runs episodes in its own process): yields None.
    """
    if workers < 2:
        yield None
        return
    outer = active_pool(workers)
    if outer is not None:
        yield outer
        return
    pool = WorkerPool(workers, max_jobs_per_worker=max_jobs_per_worker)
    token = _ACTIVE.set(pool)
    try:
        yield pool
    finally:
        _ACTIVE.reset(token)
        pool.close()
