"""Collection plans: which scene conditions to demonstrate next, and how many episodes of each.

"Plans belong to collect" (DESIGN.md): this module defines the plan type, its TOML file
format and its rows; :mod:`roboloop.collect.plan_run` executes plans. ``analyze`` builds plans with
this module (``roboloop.analyze.gaps.make_plan``) without loading the rollout loop, and neither module
imports ``analyze``.

A plan file::

    name = "plan-eval-v1"
    dataset = "aloha"
    seed_rule = "after-dataset-max"
    reason = "coverage gaps found by `roboloop gaps --eval eval-v1`"
    source_eval = "eval-v1"
    created_at = "2026-11-23T14:00:00+00:00"

    [[items]]
    count = 20
    reason = "0/30 rollouts covered, 2/30 succeeded"
    conditions = { yaw = "any", lighting = "normal" }

    [[suggestions]]            # cells that need inspection, not collection
    cell = "region=left,yaw=none"
    action = "inspect"
    detail = "roboloop failures ..."

- **Conditions** are canonical labels on the grid axes (``region``, ``yaw``, ``lighting``,
  ``table``, ``distractors``; aliases such as ``near`` are resolved, unknown labels are an
  error listing the valid ones); an axis left out takes ``SceneConditions.from_names``'s
  default. Each item's episodes are collected with ``SceneConditions.from_names(**labels)``.
- **Seeds** (``seed_rule = "after-dataset-max"``, the only rule): the episodes get
  consecutive seeds after the highest demonstration seed the dataset holds (registered or
  written to disk), reserved under a workspace lock so two concurrent collects never share
  one; all stay below ``schema.DEMO_SEED_LIMIT``, hence disjoint from every evaluation seed.
- **Rows.** Saving and executing a plan writes its row to table ``schema.PLANS_TABLE``
  (``roboloop.rows``), with ``status`` planned / executing / executed / interrupted and,
  once run, the seeds and the segment ids collected per item. Executing a plan again runs
  only what is missing (items whose collected episodes are still in the dataset count
  as done), so an interrupted plan resumes.
- **Recording settings** follow what the dataset already holds (its most common cameras,
  size and rates), so planned episodes look like the rest of the dataset; pass ``spec`` to
  override.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from roboloop import rows, schema
from roboloop.envs import DEFAULT_TASK, UnknownTaskError, get_task_spec
from roboloop.envs.conditions import Vocabulary
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "SEED_RULES",
    "SEED_RULE_AFTER_MAX",
    "Plan",
    "PlanError",
    "PlanItem",
    "canonical_conditions",
    "conditions_key",
    "load_plan",
    "plan_row",
    "read_plan",
    "plan_summary",
    "save_plan",
    "write_plan",
    "write_plan_row",
]

SEED_RULE_AFTER_MAX = "after-dataset-max"
SEED_RULES = (SEED_RULE_AFTER_MAX,)
STATUS_PLANNED = "planned"
STATUS_EXECUTING = "executing"
STATUS_EXECUTED = "executed"
STATUS_INTERRUPTED = "interrupted"


class PlanError(RoboloopError, ValueError):
    """A plan (or plan file) is invalid or cannot be executed; the message says what to fix."""


# --- conditions ----------------------------------------------------------------------------

def _item_task(labels: Mapping[str, Any]) -> str:
    """The task a plan item's conditions name (`task = "..."`, checked), else the default task."""
    value = labels.get(schema.TASK_AXIS, DEFAULT_TASK)
    if isinstance(value, bool) or not isinstance(value, str):
        raise PlanError(f"condition {schema.TASK_AXIS} must be a task name (string), got {value!r}")
    try:
        return get_task_spec(value.strip().lower()).name
    except UnknownTaskError as exc:
        raise PlanError(str(exc)) from None


def canonical_conditions(labels: Mapping[str, Any]) -> dict[str, str]:
    """Validate condition labels and return them as labels of the axes of the item's task (its `task`
    label, else the default task; aliases resolved, a distractor count kept as written:
    `Vocabulary.label`), keys sorted. `task` stays only when given.

    Raises PlanError naming the bad axis or label and listing the valid ones.
    """
    if not isinstance(labels, Mapping):
        raise PlanError(f"conditions must be a table of axis = label, got {labels!r}")
    task = _item_task(labels)
    vocabulary = get_task_spec(task).vocabulary
    out: dict[str, str] = {schema.TASK_AXIS: task} if schema.TASK_AXIS in labels else {}
    for axis, value in labels.items():
        if axis == schema.TASK_AXIS:
            continue
        if axis not in vocabulary.names:
            raise PlanError(f"unknown condition axis {axis!r}; valid axes: {', '.join((*vocabulary.names, schema.TASK_AXIS))} "
                            f"(of task {task!r})")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise PlanError(f"condition {axis} must be a label (string), got {value!r}")
        label = vocabulary.label(axis, value)
        if label is None:
            valid = vocabulary.axis(axis).described()
            raise PlanError(f"unknown {axis} label {value!r}; valid {axis} labels: {', '.join(valid)}")
        out[axis] = label
    return dict(sorted(out.items()))


def conditions_key(conditions: Mapping[str, str]) -> str:
    """Canonical key of a set of conditions (a grid cell key; "" for no conditions)."""
    return Vocabulary.format_key(conditions)


# --- the plan type -------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanItem:
    """Collect `count` demonstrations (or, with `kind = "corrective"`, corrective episodes of `run`) under `conditions`."""

    conditions: Mapping[str, str]
    """Canonical condition labels, axis -> label (validated, aliases resolved)."""
    count: int
    """Number of episodes to collect (>= 1)."""
    reason: str = ""
    """Why (e.g. the cell's success and coverage)."""
    kind: str = schema.KIND_DEMO
    """`demo` (the scripted demonstrator) or `corrective` (the policy of `run` drives, the task's expert labels)."""
    run: str = ""
    """Corrective items: the training run whose policy drives."""
    mode: str = schema.MODE_GATED
    """Corrective items: `dagger`, `gated` or `expert` (`collect.corrective`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", canonical_conditions(self.conditions))
        where = f"item {conditions_key(self.conditions) or '(defaults)'}"
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise PlanError(f"{where}: count must be an integer >= 1, got {self.count!r}")
        if not isinstance(self.reason, str):
            raise PlanError(f"item reason must be a string, got {self.reason!r}")
        if self.kind not in (schema.KIND_DEMO, schema.KIND_CORRECTIVE):
            raise PlanError(f"{where}: kind must be {schema.KIND_DEMO!r} or {schema.KIND_CORRECTIVE!r}, got {self.kind!r}")
        if self.kind == schema.KIND_CORRECTIVE and not (isinstance(self.run, str) and self.run):
            raise PlanError(f"{where}: a corrective item names the training run whose policy drives (run = \"RUN_ID\")")
        if self.mode not in schema.CORRECTIVE_MODES:
            raise PlanError(f"{where}: mode must be one of {', '.join(schema.CORRECTIVE_MODES)}, got {self.mode!r}")

    @property
    def corrective(self) -> bool:
        return self.kind == schema.KIND_CORRECTIVE

    @property
    def key(self) -> str:
        return conditions_key(self.conditions)

    @property
    def slot(self) -> str:
        """What identifies the item in a plan: its cell key, plus `corrective RUN` for a corrective item (a plan may
        ask for demonstrations and corrective episodes in one cell)."""
        return f"{self.key} corrective {self.run}" if self.corrective else self.key

    @property
    def task(self) -> str:
        """The task this item's episodes run (its `task` label, else the default task)."""
        return self.conditions.get(schema.TASK_AXIS, DEFAULT_TASK)

    def scene_conditions(self):
        """The conditions (`Task.conditions`) this item's episodes are collected under."""
        labels = {a: v for a, v in self.conditions.items() if a != schema.TASK_AXIS}
        try:
            return get_task_spec(self.task).conditions(labels)
        except ValueError as exc:
            raise PlanError(f"item {self.key}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"conditions": dict(self.conditions), "count": self.count, "reason": self.reason}
        if self.corrective:  # demonstration items keep their old form
            out.update(kind=self.kind, run=self.run, mode=self.mode)
        return out


@dataclass(frozen=True)
class Plan:
    """A collection plan: items of (conditions, count), a seed rule and where it came from."""

    name: str
    """Plan name (row key of the plans table; letters, digits, '_', '.', '-')."""
    dataset: str
    """Demonstration dataset to collect into."""
    items: tuple[PlanItem, ...] = ()
    """What to collect; conditions are distinct across items."""
    seed_rule: str = SEED_RULE_AFTER_MAX
    """How seeds are chosen (only "after-dataset-max": after the highest seed the dataset holds)."""
    reason: str = ""
    """Why this plan exists (one line)."""
    source_eval: str = ""
    """Evaluation id the plan was derived from ("" if written by hand)."""
    suggestions: tuple[Mapping[str, str], ...] = ()
    """Actions other than collection (cell, action, detail), e.g. inspect a covered cell that fails."""
    created_at: str = ""
    """ISO 8601 UTC time the plan was made."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PlanError("a plan needs a name (letters, digits, '_', '.', '-')")
        try:
            rows.validate_key(self.name)
        except ValueError as exc:
            raise PlanError(f"invalid plan name: {exc}") from None
        try:
            schema.validate_demo_dataset_name(self.dataset)
        except (ValueError, TypeError) as exc:
            raise PlanError(f"plan {self.name!r}: {exc}") from None
        items = [_plan_item(self.name, i, it) for i, it in enumerate(self.items)]
        _check_distinct_cells(self.name, items)
        object.__setattr__(self, "items", tuple(items))
        total = sum(it.count for it in items)
        if total > schema.MAX_EPISODES_PER_RUN:
            raise PlanError(
                f"plan {self.name!r} asks for {total:,} episodes, more than one plan may collect "
                f"(at most {schema.MAX_EPISODES_PER_RUN:,}); split it into several plans of up to "
                f"{schema.MAX_EPISODES_PER_RUN:,} episodes and execute them one after the other"
            )
        if self.seed_rule not in SEED_RULES:
            raise PlanError(f"plan {self.name!r}: unknown seed_rule {self.seed_rule!r}; valid: {', '.join(SEED_RULES)}")
        sugg = []
        for s in self.suggestions:
            if not isinstance(s, Mapping) or not all(isinstance(v, str) for v in s.values()):
                raise PlanError(f"plan {self.name!r}: a suggestion is a table of strings (cell, action, detail), got {s!r}")
            sugg.append(dict(s))
        object.__setattr__(self, "suggestions", tuple(sugg))
        for f in ("reason", "source_eval", "created_at"):
            if not isinstance(getattr(self, f), str):
                raise PlanError(f"plan {self.name!r}: {f} must be a string, got {getattr(self, f)!r}")

    @property
    def total(self) -> int:
        """Episodes the plan collects in all."""
        return sum(it.count for it in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "seed_rule": self.seed_rule,
            "reason": self.reason,
            "source_eval": self.source_eval,
            "created_at": self.created_at,
            "items": [it.to_dict() for it in self.items],
            "suggestions": [dict(s) for s in self.suggestions],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        if not isinstance(d, Mapping):
            raise PlanError(f"a plan is a table, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise PlanError(f"unknown plan keys {sorted(unknown)}; valid keys: {', '.join(sorted(names))}")
        for required in ("name", "dataset"):
            if required not in d:
                raise PlanError(f"a plan needs {required!r}")
        kw = dict(d)
        items = kw.get("items", ())
        if not isinstance(items, (list, tuple)):
            raise PlanError("'items' must be an array of tables ([[items]])")
        kw["items"] = tuple(items)
        kw["suggestions"] = tuple(kw.get("suggestions", ()))
        return cls(**kw)

    def to_toml(self) -> str:
        """TOML text: top-level keys, then one `[[items]]` (with its `[items.conditions]`) per item and
        one `[[suggestions]]` per suggestion; every value is written by tomli-w."""
        d = self.to_dict()
        parts = [tomli_w.dumps({k: v for k, v in d.items() if k not in ("items", "suggestions")})]
        for it in d["items"]:
            parts.append("[[items]]\n" + tomli_w.dumps({k: v for k, v in it.items() if k != "conditions"}))
            parts.append("[items.conditions]\n" + tomli_w.dumps(it["conditions"]))
        for s in d["suggestions"]:
            parts.append("[[suggestions]]\n" + tomli_w.dumps(s))
        return "\n".join(parts)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "plan") -> Plan:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{source} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data)
        except PlanError as exc:
            raise PlanError(f"{source}: {exc}") from None



def _plan_item(name: str, i: int, it) -> PlanItem:
    """Item `i` of plan `name` as a PlanItem (given as one, or as a table with conditions, count and reason)."""
    if isinstance(it, PlanItem):
        return it
    if not isinstance(it, Mapping):
        raise PlanError(f"plan {name!r} item {i + 1}: expected conditions and a count, got {it!r}")
    keys = ("conditions", "count", "reason", "kind", "run", "mode")
    unknown = set(it) - set(keys)
    if unknown:
        raise PlanError(f"plan {name!r} item {i + 1}: unknown keys {sorted(unknown)}; valid keys: {', '.join(keys)}")
    if "count" not in it:
        raise PlanError(f"plan {name!r} item {i + 1}: missing 'count'")
    return PlanItem(it.get("conditions", {}), it["count"], it.get("reason", ""), it.get("kind", schema.KIND_DEMO),
                    it.get("run", ""), it.get("mode", schema.MODE_GATED))


def _check_distinct_cells(name: str, items: list[PlanItem]) -> None:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.slot in seen:
            raise PlanError(
                f"plan {name!r}: items {seen[it.slot] + 1} and {i + 1} have the same conditions "
                f"({it.slot or 'defaults'}); merge them into one item"
            )
        seen[it.slot] = i


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write `plan` as TOML to `path` (atomically)."""
    return atomic_write_text(Path(path), plan.to_toml())


def read_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (PlanError names the file and the problem)."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan file {p}: {exc.strerror or exc}") from None
    return Plan.from_toml(text, source=str(p))


def load_plan(workspace: Workspace, ref: str | Path) -> Plan:
    """A plan from a file path, or else by name from the plans table (every saved plan is there)."""
    p = Path(ref)
    if p.is_file() or p.suffix == ".toml" or len(p.parts) > 1:
        return read_plan(p)
    row = plan_row(workspace, str(ref))
    if row is None:
        names = [r[rows.KEY_FIELD] for r in rows.read_rows(workspace, schema.PLANS_TABLE)]
        raise PlanError(f"no plan file or saved plan named {str(ref)!r}; saved plans: {', '.join(names) or '(none: run `roboloop plan`)'}")
    fields = {f.name for f in dataclasses.fields(Plan)}
    return Plan.from_dict({k: v for k, v in row.items() if k in fields})


def plan_row(workspace: Workspace, name: str) -> dict[str, Any] | None:
    """The newest row of plan `name` in the plans table, or None."""
    return rows.read_row(workspace, schema.PLANS_TABLE, name)


def write_plan_row(workspace: Workspace, plan: Plan, status: str, **extra: Any) -> None:
    """The plan's row in table `schema.PLANS_TABLE`: the plan, `status`, its total and `extra` (seeds, collected ids)."""
    row = {**plan.to_dict(), "status": status, "total": plan.total, **extra}
    rows.write_row(workspace, schema.PLANS_TABLE, plan.name, row)


def save_plan(workspace: Workspace, plan: Plan, path: str | Path | None = None) -> Path | None:
    """Store the plan's row (status "planned") and, with `path`, write its TOML file there.

    Saving the same plan again (same dataset and items) keeps what earlier executions
    collected, so executing it again collects only what is missing.
    """
    prev = plan_row(workspace, plan.name) or {}
    same = prev.get("items") == plan.to_dict()["items"] and prev.get("dataset") == plan.dataset
    write_plan_row(workspace, plan, STATUS_PLANNED, **({"collected": prev["collected"]} if same and prev.get("collected") else {}))
    return write_plan(plan, path) if path is not None else None


def plan_summary(plan: Plan) -> list[str]:
    """Readable lines: one per item, then the suggestions."""
    lines = [f"{it.count:4d} x {it.key or '(default conditions)'}" + (f" corrective ({it.mode}) from {it.run}" if it.corrective else "")
             + (f"   # {it.reason}" if it.reason else "") for it in plan.items]
    lines += [f"   {s.get('action', 'note')}: {s.get('cell', '')} {s.get('detail', '')}".rstrip() for s in plan.suggestions]
    return lines

