"""Running a predicate: the segment ids of an Arrow table that match a `--where`, ordered and limited (DataFusion SQL).

The grammar, the compilation to SQL and the type checks are in :mod:`roboloop.predicate`; this module only runs the
compiled SQL, so code that parses or checks predicates does not load DataFusion.
"""

from __future__ import annotations

import pyarrow as pa
from datafusion import SessionContext

from roboloop.predicate import (
    FLAGGED_COLUMN,
    SEGMENT_ID,
    Parser,
    PredicateError,
    columns_of,
    compile_order,
    compile_where,
    given_where,
    quote_ident,
    resolver,
)

__all__ = ["select_ids"]


def select_ids(
    table: pa.Table,
    where: str | None = None,
    *,
    order: str | None = None,
    limit: int | None = None,
    include_flagged: bool = False,
    dataset: str | None = None,
) -> list[str]:
    """Segment ids of `table` (a friendly segment table) matching `where`, ordered and limited.

    Flagged segments (`quality.flagged` true) are left out unless `include_flagged`.
    Without an order, ids come sorted by segment id; an order is tie-broken by segment id,
    so the result is deterministic.
    """
    columns = table.column_names
    clauses = []
    where = given_where(where)
    if where is not None:
        clauses.append(compile_where(where, columns, dataset, types={f.name: f.type for f in table.schema}))
    if not include_flagged and FLAGGED_COLUMN in columns:
        flagged = quote_ident(FLAGGED_COLUMN)
        clauses.append(f"({flagged} IS NULL OR {flagged} = FALSE)")
    keys = compile_order(order, columns, dataset) if order and order.strip() else []
    if limit is not None and limit < 0:
        raise PredicateError(f"limit must be >= 0, got {limit}")
    if table.num_rows == 0:
        return []
    sql = f"SELECT {quote_ident(SEGMENT_ID)} FROM segments"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    order_sql = [f"{quote_ident(c)} {'DESC' if d else 'ASC'} NULLS LAST" for c, d in keys]
    order_sql.append(f"{quote_ident(SEGMENT_ID)} ASC")
    sql += " ORDER BY " + ", ".join(order_sql)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    ctx = SessionContext()
    ctx.register_record_batches("segments", [table.to_batches()])
    try:
        result = ctx.sql(sql).to_arrow_table()
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        used = sorted(columns_of(Parser(where, resolver(columns, dataset)).parse())) if where is not None else []
        kinds = "; ".join(f"{c} is {table.schema.field(c).type}" for c in used)
        raise PredicateError(f"cannot evaluate the predicate {where!r}: {msg}" + (f"\n  ({kinds})" if kinds else "")) from exc
    return [str(s) for s in result.column(0).to_pylist()]
