"""The training set as a query: selection + deterministic train/holdout split + provenance.

A **selection** is a dataset, a predicate over its properties and signals (friendly
names: `signals.arm_activity_right > 6 and scene.lighting = 'dim'`, see
`roboloop.predicate` for the grammar), an optional order and limit, and a holdout
fraction. `select()` resolves it against the catalog into segment id lists::

    sel = curate.select(catalog, "aloha", where="signals.arm_activity_right > 6", holdout=0.1)
    sel.dataset, sel.train_ids, sel.holdout_ids, sel.segment_ids, sel.digest
    curate.save(catalog, sel, "v1")            # a named row of the `selections` table
    curate.load(catalog, "v1")                 # the same ids, after any restart

Decisions:

- **Split.** Episodes that share a seed and scene conditions are one group and always
  land on the same side: an episode is in the holdout when `group_split_point(seed,
  conditions) < holdout`, the SHA-256 of its `episode.seed` and every `scene.*` condition
  (canonical text, sampled start-state numbers left out) mapped to [0, 1). A re-run with
  an explicit `--seed` records bit-identical duplicates under new segment ids; grouping
  keeps a duplicate from ever straddling the split. Episodes without a seed property
  (imported recordings) fall back to `split_point(segment_id)`. The position depends on
  nothing but the episode itself: adding episodes never moves an old one between train
  and holdout, every selection over a dataset agrees on which episodes are held out (so a
  v2 never trains on v1's holdout at the same fraction), and a larger fraction only moves
  episodes from train into holdout. With a small selection the holdout can be empty; it
  is then reported, not an error. An empty train set is an error.
- **Flags.** Segments with `quality.flagged = true` are left out unless
  `include_flagged=True`.
- **Determinism.** Without an order, ids are sorted by segment id; an order is
  tie-broken by segment id, so order + limit picks the same episodes every time.
- **Saving.** A selection is a row file of the table `selections` (`roboloop.rows`:
  `<workspace>/tables/selections/rows/<name>@<time>-....json`, append-only, the newest row
  of a name wins, published as the catalog table `selections` at every start), keyed by
  name. Saving a name that exists is an error unless `replace=True` (`--replace`): a name
  may already be the provenance of a training run, so it never changes meaning silently.
  The uniqueness check runs under the workspace lock `selections`, so two concurrent
  first saves of one name cannot both succeed, and saves of different names never lose
  each other (each writes its own file). An old workspace's Lance `selections` table is
  migrated to row files at the next start (`roboloop.catalog.restore.migrate_lance_tables`).
- **Digest.** SHA-256 over the dataset name and the train and holdout id lists (in
  order), so two selections with the same digest train and evaluate on the same episodes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from roboloop import faults, schema
from roboloop import rows as _rowfiles
from roboloop.catalog.client import Catalog
from roboloop.errors import RoboloopError, UnknownNameError
from roboloop.predicate import (
    EmptySelectionError,
    PredicateError,
    UnknownColumnError,
    compile_where,
    flagged_ids_from_table,
    given_where,
)
from roboloop.predicate.select import select_ids

log = logging.getLogger(__name__)

__all__ = [
    "Selection",
    "select",
    "save",
    "load",
    "list_selections",
    "delete",
    "split_point",
    "group_split_point",
    "split_points",
    "EmptySelectionError",
    "PredicateError",
    "UnknownColumnError",
    "UnknownSelectionError",
    "CurateError",
    "SELECTIONS_TABLE",
]

SELECTIONS_TABLE = schema.SELECTIONS_TABLE
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SELECTIONS_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False, metadata={"rerun:is_table_index": "true"}),
        pa.field("dataset", pa.string()),
        pa.field("predicate", pa.string()),
        pa.field("predicate_sql", pa.string()),
        pa.field("order", pa.string()),
        pa.field("limit", pa.int64()),
        pa.field("holdout", pa.float64()),
        pa.field("include_flagged", pa.bool_()),
        pa.field("segment_ids", pa.list_(pa.string())),
        pa.field("train_ids", pa.list_(pa.string())),
        pa.field("holdout_ids", pa.list_(pa.string())),
        pa.field("num_train", pa.int64()),
        pa.field("num_holdout", pa.int64()),
        pa.field("digest", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


class CurateError(RoboloopError):
    """A selection that cannot be saved or read as asked; the message says what to do."""


class UnknownSelectionError(CurateError, UnknownNameError):
    """A selection name that was never saved."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        listing = self.listing(available, "(none yet: create one with `roboloop curate`)")
        super().__init__(f"unknown selection {name!r}; saved selections: {listing}")


def split_point(segment_id: str) -> float:
    """A segment's fixed position in [0, 1): it is held out when this is below the holdout fraction."""
    digest = hashlib.sha256(segment_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


SAMPLED_SCENE = frozenset({"cube_x", "cube_y", "cube_yaw_deg"})
"""Scene properties that are sampled from (seed, conditions), not conditions: left out of the split key."""


def split_key(seed: int, conditions: dict[str, object]) -> str:
    """Canonical text of (seed, scene conditions): the identity of a group of duplicate episodes."""
    parts = [f"seed={int(seed)}"] + [f"{k}={conditions[k]!r}" for k in sorted(conditions) if conditions[k] is not None]
    return "\n".join(parts)


def group_split_point(seed: int, conditions: dict[str, object]) -> float:
    """The split position of every episode with this seed and these conditions (see `split_point`)."""
    return split_point(split_key(seed, conditions))


def split_points(table: pa.Table, ids: Sequence[str]) -> dict[str, float]:
    """Segment id -> its split position: by (seed, scene conditions) when the segment has a seed, else by id."""
    seed_col = schema.friendly_column(schema.EPISODE, schema.EPISODE_SEED)
    prefix = schema.SCENE + "."
    scene_cols = [c for c in table.column_names if c.startswith(prefix) and c[len(prefix):] not in SAMPLED_SCENE]
    wanted = set(ids)
    out: dict[str, float] = {}
    if table.num_rows and seed_col in table.column_names:
        cols = {c: table.column(c).to_pylist() for c in [schema.SEGMENT_ID, seed_col, *scene_cols]}
        for i, seg in enumerate(cols[schema.SEGMENT_ID]):
            seed = cols[seed_col][i]
            if seg in wanted and seed is not None:
                out[seg] = group_split_point(seed, {c[len(prefix):]: cols[c][i] for c in scene_cols})
    return {s: out.get(s, split_point(s)) for s in ids}


def ids_digest(dataset: str, train_ids: Sequence[str], holdout_ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(f"dataset\n{dataset}\ntrain\n".encode())
    h.update("\n".join(train_ids).encode())
    h.update(b"\nholdout\n")
    h.update("\n".join(holdout_ids).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Selection:
    """A resolved selection: which episodes of `dataset` to train on and which to hold out."""

    dataset: str
    segment_ids: tuple[str, ...]
    """Every selected id (train and holdout) in selection order."""
    train_ids: tuple[str, ...]
    holdout_ids: tuple[str, ...]
    where: str | None = None
    order: str | None = None
    limit: int | None = None
    holdout: float = 0.0
    include_flagged: bool = False
    predicate_sql: str | None = None
    name: str | None = None
    created_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))

    @property
    def digest(self) -> str:
        return ids_digest(self.dataset, self.train_ids, self.holdout_ids)


def select(
    catalog: Catalog,
    dataset: str,
    where: str | None = None,
    *,
    order: str | None = None,
    limit: int | None = None,
    holdout: float = 0.0,
    include_flagged: bool = False,
    name: str | None = None,
) -> Selection:
    """Resolve a selection against the catalog (nothing is saved; see `save`).

    Raises UnknownDatasetError, UnknownColumnError (listing the columns), PredicateError,
    or EmptySelectionError when nothing (or nothing for training) is selected.
    """
    if not 0.0 <= holdout < 1.0:
        raise PredicateError(f"holdout must be in [0, 1), got {holdout}")
    if limit is not None and limit <= 0:
        raise PredicateError(f"limit must be a positive number of episodes, got {limit}")
    table = catalog.segment_table(dataset)
    where = given_where(where)
    order = order.strip() if order and order.strip() else None
    sql = compile_where(where, table.column_names, dataset) if where else None
    ids = select_ids(table, where, order=order, limit=limit, include_flagged=include_flagged, dataset=dataset)
    if not ids:
        n_flagged = 0
        if not include_flagged and flagged_ids_from_table(table):
            n_flagged = len(select_ids(table, where, include_flagged=True, dataset=dataset))
        extra = f"; {n_flagged} flagged segment(s) matched but were left out (include them with --include-flagged)" if n_flagged else ""
        what = f"matches {where!r}" if where else "is available"
        raise EmptySelectionError(f"no episode of {dataset!r} ({table.num_rows} segments) {what}{extra}")
    points = split_points(table, ids)
    train = tuple(s for s in ids if points[s] >= holdout)
    held = tuple(s for s in ids if points[s] < holdout)
    if not train:
        raise EmptySelectionError(
            f"all {len(ids)} selected episode(s) fall in the holdout at fraction {holdout}; lower --holdout or select more episodes"
        )
    sel = Selection(
        dataset=dataset,
        segment_ids=tuple(ids),
        train_ids=train,
        holdout_ids=held,
        where=where,
        order=order,
        limit=limit,
        holdout=float(holdout),
        include_flagged=include_flagged,
        predicate_sql=sql,
        name=name,
    )
    return sel


# --- persistence ---------------------------------------------------------------------------

def _rows(catalog: Catalog) -> list[dict]:
    """Live selection rows, read from the row files (so a row this process just wrote is seen at once)."""
    return [r for r in _rowfiles.read_rows(catalog.workspace, SELECTIONS_TABLE) if r.get("name")]


def validate_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise PredicateError(f"invalid selection name {name!r}: use letters, digits, '_', '.' or '-' (max 64)")
    return name


def save(catalog: Catalog, selection: Selection, name: str | None = None, *, replace: bool = False) -> Selection:
    """Save `selection` as a named row of the `selections` table; returns it with its name set.

    An existing name is an error unless `replace`. The check and the write happen under
    the workspace lock `selections`, so of two processes saving one new name at once
    exactly one succeeds and the other gets the error.
    """
    name = validate_name(name or selection.name or "")
    sel = dataclasses.replace(selection, name=name)
    row = {
        "name": name,
        "dataset": sel.dataset,
        "predicate": sel.where or "",
        "predicate_sql": sel.predicate_sql or "",
        "order": sel.order or "",
        "limit": sel.limit,
        "holdout": sel.holdout,
        "include_flagged": sel.include_flagged,
        "segment_ids": list(sel.segment_ids),
        "train_ids": list(sel.train_ids),
        "holdout_ids": list(sel.holdout_ids),
        "num_train": len(sel.train_ids),
        "num_holdout": len(sel.holdout_ids),
        "digest": sel.digest,
        "created_at": sel.created_at,
    }
    ws = catalog.workspace
    with ws.lock(SELECTIONS_TABLE):
        existing = _rowfiles.read_row(ws, SELECTIONS_TABLE, name) if not replace else None
        if existing is not None:
            raise CurateError(
                f"a selection named {name!r} exists (over dataset {existing.get('dataset')!r}; selection names are unique "
                f"across the workspace); pass --replace (replace=True) to overwrite it or choose a new name"
            )
        faults.point("curate.checked")
        _rowfiles.write_row(ws, SELECTIONS_TABLE, name, row)
    _publish(catalog)
    return sel


def _publish(catalog: Catalog) -> None:
    """Refresh the catalog's `selections` table for `sql` (the row files stay the record)."""
    try:
        catalog.publish_rows(SELECTIONS_TABLE)
    except Exception as exc:  # noqa: BLE001 - the row is saved; only the SQL view is stale
        log.warning("selections saved, but the catalog table could not be refreshed: %s", exc)


def _from_row(row: dict) -> Selection:
    created = row["created_at"]
    if isinstance(created, str):
        created = _dt.datetime.fromisoformat(created)
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=_dt.UTC)
    sel = Selection(
        dataset=row["dataset"],
        segment_ids=tuple(row["segment_ids"] or ()),
        train_ids=tuple(row["train_ids"] or ()),
        holdout_ids=tuple(row["holdout_ids"] or ()),
        where=row["predicate"] or None,
        order=row["order"] or None,
        limit=row["limit"],
        holdout=float(row["holdout"] or 0.0),
        include_flagged=bool(row["include_flagged"]),
        predicate_sql=row["predicate_sql"] or None,
        name=row["name"],
        created_at=created,
    )
    if row["digest"] and row["digest"] != sel.digest:
        raise CurateError(f"selection {row['name']!r}: stored digest does not match its ids (table edited by hand?)")
    return sel


def load(catalog: Catalog, name: str) -> Selection:
    """The saved selection `name` (UnknownSelectionError listing saved names if absent)."""
    rows = _rows(catalog)
    for row in rows:
        if row["name"] == name:
            return _from_row(row)
    raise UnknownSelectionError(name, sorted(r["name"] for r in rows))


def list_selections(catalog: Catalog) -> list[Selection]:
    """Every saved selection, newest first."""
    sels = [_from_row(r) for r in _rows(catalog)]
    return sorted(sels, key=lambda s: s.created_at, reverse=True)


def delete(catalog: Catalog, name: str) -> None:
    """Remove a saved selection (a tombstone row; older rows stay on disk as history)."""
    rows = _rows(catalog)
    if name not in {r["name"] for r in rows}:
        raise UnknownSelectionError(name, sorted(r["name"] for r in rows))
    with catalog.workspace.lock(SELECTIONS_TABLE):
        _rowfiles.delete_row(catalog.workspace, SELECTIONS_TABLE, name)
    _publish(catalog)

