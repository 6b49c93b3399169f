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

- **Split.** A segment is in the holdout when `split_point(segment_id) < holdout`, where
  `split_point` maps the SHA-256 of the segment id to [0, 1). It depends on nothing but
  the id: adding episodes never moves an old one between train and holdout, every
  selection over a dataset agrees on which episodes are held out (so a v2 never trains
  on v1's holdout at the same fraction), and a larger fraction only moves episodes from
  train into holdout. With a small selection the holdout can be empty; it is then
  reported, not an error. An empty train set is an error.
- **Flags.** Segments with `quality.flagged = true` are left out unless
  `include_flagged=True`.
- **Determinism.** Without an order, ids are sorted by segment id; an order is
  tie-broken by segment id, so order + limit picks the same episodes every time.
- **Saving.** Selections are rows of the catalog table `selections` (Lance, persisted
  under `<workspace>/tables/selections/`, restored on every start), keyed by name. Saving
  a name that exists is an error unless `replace=True` (`--replace`): a name may already
  be the provenance of a training run, so it never changes meaning silently. A stricter
  threshold is a new selection (`v2`) or an explicit replace.
- **Digest.** SHA-256 over the dataset name and the train and holdout id lists (in
  order), so two selections with the same digest train and evaluate on the same episodes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from roboloop.catalog import Catalog, CatalogError
from roboloop.errors import UnknownNameError
from roboloop.predicate import EmptySelectionError, PredicateError, UnknownColumnError, compile_where, flagged_ids_from_table, select_ids

__all__ = [
    "Selection",
    "select",
    "save",
    "load",
    "list_selections",
    "delete",
    "split_point",
    "EmptySelectionError",
    "PredicateError",
    "UnknownColumnError",
    "UnknownSelectionError",
    "SELECTIONS_TABLE",
]

SELECTIONS_TABLE = "selections"
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


class UnknownSelectionError(CatalogError, UnknownNameError):
    """A selection name that was never saved."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        listing = self.listing(available, "(none yet: create one with `roboloop curate`)")
        super().__init__(f"unknown selection {name!r}; saved selections: {listing}")


def split_point(segment_id: str) -> float:
    """A segment's fixed position in [0, 1): it is held out when this is below the holdout fraction."""
    digest = hashlib.sha256(segment_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


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
    where = where.strip() if where and where.strip() else None
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
    train = tuple(s for s in ids if split_point(s) >= holdout)
    held = tuple(s for s in ids if split_point(s) < holdout)
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
    if SELECTIONS_TABLE not in catalog.table_names():
        return []
    return catalog.table(SELECTIONS_TABLE).reader().to_arrow_table().to_pylist()


def validate_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise PredicateError(f"invalid selection name {name!r}: use letters, digits, '_', '.' or '-' (max 64)")
    return name


def save(catalog: Catalog, selection: Selection, name: str | None = None, *, replace: bool = False) -> Selection:
    """Save `selection` as a named row of the `selections` table; returns it with its name set.

    An existing name is an error unless `replace`.
    """
    name = validate_name(name or selection.name or "")
    existing = {r["name"] for r in _rows(catalog)}
    if name in existing and not replace:
        raise CatalogError(
            f"a selection named {name!r} exists; pass --replace (replace=True) to overwrite it or choose a new name"
        )
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
    tb = catalog.table(SELECTIONS_TABLE, SELECTIONS_SCHEMA)  # created on first save
    tb.upsert(pa.RecordBatch.from_pylist([row], schema=SELECTIONS_SCHEMA))
    return sel


def _from_row(row: dict) -> Selection:
    created = row["created_at"]
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
        raise CatalogError(f"selection {row['name']!r}: stored digest does not match its ids (table edited by hand?)")
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
    """Remove a saved selection."""
    rows = _rows(catalog)
    if name not in {r["name"] for r in rows}:
        raise UnknownSelectionError(name, sorted(r["name"] for r in rows))
    keep = [r for r in rows if r["name"] != name]
    tb = catalog.table(SELECTIONS_TABLE)
    tb.overwrite(pa.RecordBatch.from_pylist(keep, schema=SELECTIONS_SCHEMA))
