"""Fault-injection hook: `point(name)` kills the process (SIGKILL) at a named point inside a write.

Writers call :func:`point` at the moments a crash is most damaging (DESIGN.md, "Fault
injection kills inside writes"): after a file is written and before its rename, between
the rename and the registration, during a row commit. In normal runs it is one dict
lookup and does nothing. With the environment variable ``ROBOLOOP_FAULT=<name>[:<k>]``
the process kills itself with ``SIGKILL`` (no clean-up, no ``finally``, like ``kill -9``)
the k-th time (default the first) it reaches point ``<name>``. ``ROBOLOOP_FAULT_TRACE=FILE``
appends every point reached (one name a line) to FILE, to see which points a command has.

Points (grep ``faults.point(`` for the list)::

    file.written        workspace.atomic_path: temp file complete and fsynced, not renamed yet
    file.renamed        workspace.atomic_path: renamed into place (not registered / not acknowledged)
    seeds.reserved      record.seeds.reserve_seeds: reservation written, no episode run yet
    collect.step        collect.run_episode: after each control step (the episode file is half written)
    collect.registered  collect: episode registered, not yet acknowledged to the caller
    layer.registered    refine / flag / unflag: layer versions registered, not acknowledged
    curate.checked      curate.save: unique name checked under the lock, row not written yet
    train.registered    train: the run's final recording version registered, run.json not yet updated

Adding a stage (train, evaluate): call ``faults.point("<stage>.<moment>")`` at its
commit points and add the points to ``tests/reliability/test_faults.py``'s table of commands.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT = "ROBOLOOP_FAULT"
ENV_TRACE = "ROBOLOOP_FAULT_TRACE"

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """A named kill point; does nothing unless ``ROBOLOOP_FAULT`` names it (see the module docstring)."""
    spec = os.environ.get(ENV_FAULT)
    trace = os.environ.get(ENV_TRACE)
    if not spec and not trace:
        return
    n = _hits[name] = _hits.get(name, 0) + 1
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{name}\n")
    if spec:
        target, _, k = spec.partition(":")
        if target == name and n == (int(k) if k else 1):
            os.kill(os.getpid(), signal.SIGKILL)
