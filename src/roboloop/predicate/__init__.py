"""Predicates over a dataset's segment table, written with friendly column names.

Users write predicates like::

    signals.arm_activity_right > 6 and scene.lighting = 'dim'
    outcome.success and not (scene.region in ('left', 'far')) and signals.jerk_peak < 2e4
    episode.seed between 10 and 99 or segment_id like 'ep-0%'

A predicate is tokenized and parsed by the small grammar below into a tree, then
compiled to DataFusion SQL that is run over the dataset's friendly segment table
(`Catalog.segment_table`) by :func:`roboloop.predicate.select.select_ids` (this package's one
module that loads DataFusion: parsing and checking a predicate does not). Nothing a user types is spliced into SQL as text:

- identifiers must be columns of the segment table (`scene.lighting`, or the raw
  `property:scene:lighting`); they are emitted double-quoted. An unknown column raises
  `UnknownColumnError` listing the available ones. `"double quotes"` also denote an
  identifier (SQL style), e.g. for a column name with unusual characters.
- string literals take single quotes (`'dim'`, `'it''s'`); they are re-emitted with
  quotes doubled, so a value can never end its string early;
- numbers are re-rendered from the parsed Python int/float; `true`, `false`, `null`
  are keywords.

Grammar (keywords case-insensitive)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | predicate
    predicate  := sum [ cmp sum
                      | "is" ["not"] "null"
                      | ["not"] "in" "(" literal ("," literal)* ")"
                      | ["not"] "between" sum "and" sum
                      | ["not"] "like" string ]
    cmp        := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := column | number | string | "true" | "false" | "null" | "(" expr ")"

An order is `column [asc|desc] ("," column [asc|desc])*`.

Hostile input is refused with a `PredicateError`, never a crash: at most
`MAX_PREDICATE_CHARS` characters, `MAX_NESTING` levels of parentheses / `not` / unary
minus, `MAX_TERMS` binary operators.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from roboloop import schema
from roboloop.errors import RoboloopError

SEGMENT_ID = schema.SEGMENT_ID
FLAGGED_COLUMN = schema.friendly_column(schema.QUALITY, schema.QUALITY_FLAGGED)


def flagged_ids_from_table(table: pa.Table) -> list[str]:
    """Segment ids whose `quality.flagged` is true in a friendly segment table, sorted."""
    if table.num_rows == 0 or FLAGGED_COLUMN not in table.column_names:
        return []
    return sorted(s for s, f in zip(table.column(SEGMENT_ID).to_pylist(), table.column(FLAGGED_COLUMN).to_pylist()) if f is True)


class PredicateError(RoboloopError, ValueError):
    """A predicate or order that cannot be parsed or evaluated; the message says why."""


class UnknownColumnError(PredicateError):
    """A column name that the dataset's segment table does not have."""

    def __init__(self, name: str, available: Sequence[str], dataset: str | None = None) -> None:
        self.name = name
        self.available = sorted(available)
        where = f" in dataset {dataset!r}" if dataset else ""
        hint = ""
        if not set(self.available) - {schema.SEGMENT_ID, schema.LAYERS}:
            hint = "\n  (the dataset has no episodes yet (0 segments), so it has no property columns: collect or import episodes first)"
        elif name.startswith(f"{schema.SIGNALS}."):
            hint = "\n  (signals appear after `roboloop refine`; check the name in the list)"
        elif "." not in name and not name.startswith(schema.PROPERTY_PREFIX):
            hint = "\n  (string values take single quotes: scene.lighting = 'dim')"
        super().__init__(f"unknown column {name!r}{where}; available columns: {', '.join(self.available)}{hint}")


class EmptySelectionError(PredicateError):
    """A selection that matched no episode."""


# --- tokens --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:[.:][A-Za-z0-9_]+)*)
  | (?P<op><=|>=|<>|!=|==|=|<|>|\(|\)|,|\+|-|\*|/)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false", "between", "like", "asc", "desc"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, ident, kw, op, end
    value: object
    pos: int


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PredicateError(f"unexpected character {text[pos]!r} at position {pos}: {_caret(text, pos)}")
        kind = m.lastgroup
        raw = m.group()
        if kind == "number":
            value: object = float(raw) if any(c in raw for c in ".eE") else int(raw)
            out.append(Token("number", value, pos))
        elif kind == "string":
            out.append(Token("string", raw[1:-1].replace("''", "'"), pos))
        elif kind == "qident":
            out.append(Token("ident", raw[1:-1].replace('""', '"'), pos))
        elif kind == "ident":
            low = raw.lower()
            out.append(Token("kw", low, pos) if low in _KEYWORDS else Token("ident", raw, pos))
        elif kind == "op":
            out.append(Token("op", "=" if raw == "==" else ("!=" if raw == "<>" else raw), pos))
        pos = m.end()
    out.append(Token("end", None, len(text)))
    return out


def _caret(text: str, pos: int) -> str:
    return f"{text[:pos]} >>> {text[pos:]}"


# --- tree ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str  # as resolved to a segment-table column


@dataclass(frozen=True)
class Literal:
    value: object  # int, float, str, bool, None


@dataclass(frozen=True)
class Unary:
    op: str  # "not", "-"
    operand: object


@dataclass(frozen=True)
class Binary:
    op: str  # and, or, =, !=, <, <=, >, >=, +, -, *, /, like, not like
    left: object
    right: object


@dataclass(frozen=True)
class IsNull:
    operand: object
    negated: bool


@dataclass(frozen=True)
class InList:
    operand: object
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class Between:
    operand: object
    low: object
    high: object
    negated: bool


MAX_PREDICATE_CHARS = 10_000
"""Longest predicate accepted (a selection is a query a person writes, not a list of ids)."""
MAX_NESTING = 40
"""Deepest nesting of parentheses, `not` and unary minus (deeper input is refused, not a RecursionError)."""
MAX_TERMS = 256
"""Most binary operators (and/or/comparisons/arithmetic) in one predicate."""


class Parser:
    """The `--where` grammar's recursive-descent parser: `Parser(text, resolve).parse()` is the expression tree
    (`resolve` maps a column name as written to the column it means)."""

    def __init__(self, text: str, resolve) -> None:
        if len(text) > MAX_PREDICATE_CHARS:
            raise PredicateError(f"predicate too long ({len(text)} characters, at most {MAX_PREDICATE_CHARS})")
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.depth = 0
        self.terms = 0

    @contextlib.contextmanager
    def nested(self) -> Iterator[None]:
        """Guard one level of recursion (parenthesis, not, unary minus)."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.error(f"predicate nested too deeply (at most {MAX_NESTING} levels)")
        try:
            yield
        finally:
            self.depth -= 1

    def binary(self, op: str, left, right) -> Binary:
        self.terms += 1
        if self.terms > MAX_TERMS:
            self.error(f"predicate has too many terms (at most {MAX_TERMS} operators)")
        return Binary(op, left, right)

    # helpers
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: object = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (value is None or tok.value == value)

    def accept(self, kind: str, value: object = None) -> Token | None:
        return self.next() if self.at(kind, value) else None

    def expect(self, kind: str, value: object, what: str) -> Token:
        if not self.at(kind, value):
            self.error(f"expected {what}")
        return self.next()

    def error(self, message: str):
        tok = self.peek()
        found = "end of predicate" if tok.kind == "end" else repr(self.text[tok.pos :].split()[0] if self.text[tok.pos :].split() else tok.value)
        raise PredicateError(f"{message} at position {tok.pos} (found {found}): {_caret(self.text, tok.pos)}")

    # grammar
    def parse(self):
        if self.at("end"):
            raise PredicateError("empty predicate")
        node = self.expr()
        if not self.at("end"):
            self.error("unexpected text after the predicate (missing 'and'/'or'?)")
        return node

    def expr(self):
        node = self.and_expr()
        while self.accept("kw", "or"):
            node = self.binary("or", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.accept("kw", "and"):
            node = self.binary("and", node, self.not_expr())
        return node

    def not_expr(self):
        if self.accept("kw", "not"):
            with self.nested():
                return Unary("not", self.not_expr())
        return self.predicate()

    def predicate(self):
        left = self.sum()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("=", "!=", "<", "<=", ">", ">="):
            self.next()
            return self.binary(tok.value, left, self.sum())
        if self.accept("kw", "is"):
            negated = bool(self.accept("kw", "not"))
            self.expect("kw", "null", "'null' after 'is'")
            return IsNull(left, negated)
        negated = bool(self.accept("kw", "not"))
        if self.accept("kw", "in"):
            self.expect("op", "(", "'(' after 'in'")
            values = [self.literal()]
            while self.accept("op", ","):
                values.append(self.literal())
            self.expect("op", ")", "')' closing the 'in' list")
            return InList(left, tuple(values), negated)
        if self.accept("kw", "between"):
            low = self.sum()
            self.expect("kw", "and", "'and' in 'between ... and ...'")
            return Between(left, low, self.sum(), negated)
        if self.accept("kw", "like"):
            tok = self.peek()
            if tok.kind != "string":
                self.error("expected a quoted pattern after 'like'")
            self.next()
            return Binary("not like" if negated else "like", left, Literal(tok.value))
        if negated:
            self.error("expected 'in', 'between' or 'like' after 'not'")
        return left

    def sum(self):
        node = self.product()
        while self.at("op", "+") or self.at("op", "-"):
            node = self.binary(self.next().value, node, self.product())
        return node

    def product(self):
        node = self.unary()
        while self.at("op", "*") or self.at("op", "/"):
            node = self.binary(self.next().value, node, self.unary())
        return node

    def unary(self):
        if self.accept("op", "-"):
            with self.nested():
                return Unary("-", self.unary())
        return self.atom()

    def atom(self):
        tok = self.peek()
        if tok.kind == "op" and tok.value == "(":
            self.next()
            with self.nested():
                node = self.expr()
            self.expect("op", ")", "')'")
            return node
        if tok.kind == "ident":
            self.next()
            return Column(self.resolve(tok.value))
        return self.literal()

    def literal(self) -> Literal:
        tok = self.peek()
        if tok.kind in ("number", "string"):
            self.next()
            return Literal(tok.value)
        if tok.kind == "op" and tok.value == "-" and self.tokens[self.i + 1].kind == "number":
            self.next()
            return Literal(-self.next().value)  # type: ignore[operator]
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.next()
            return Literal({"true": True, "false": False, "null": None}[tok.value])
        self.error("expected a column, a number, a 'quoted string', true, false or null")


# --- compile -------------------------------------------------------------------------------

def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PredicateError(f"number out of range: {value}")
        return repr(float(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise PredicateError(f"unsupported literal {value!r}")


def to_sql(node) -> str:
    """Compile a parsed predicate tree to a DataFusion SQL expression."""
    if isinstance(node, Column):
        return quote_ident(node.name)
    if isinstance(node, Literal):
        return quote_literal(node.value)
    if isinstance(node, Unary):
        return f"(NOT {to_sql(node.operand)})" if node.op == "not" else f"(- {to_sql(node.operand)})"
    if isinstance(node, Binary):
        op = {"and": "AND", "or": "OR", "like": "LIKE", "not like": "NOT LIKE"}.get(node.op, node.op)
        return f"({to_sql(node.left)} {op} {to_sql(node.right)})"
    if isinstance(node, IsNull):
        return f"({to_sql(node.operand)} IS {'NOT ' if node.negated else ''}NULL)"
    if isinstance(node, InList):
        values = ", ".join(quote_literal(v.value) for v in node.values)
        return f"({to_sql(node.operand)} {'NOT ' if node.negated else ''}IN ({values}))"
    if isinstance(node, Between):
        neg = "NOT " if node.negated else ""
        return f"({to_sql(node.operand)} {neg}BETWEEN {to_sql(node.low)} AND {to_sql(node.high)})"
    raise PredicateError(f"cannot compile {node!r}")


def columns_of(node) -> set[str]:
    """Column names a predicate tree refers to."""
    if isinstance(node, Column):
        return {node.name}
    out: set[str] = set()
    for attr in ("operand", "left", "right", "low", "high"):
        child = getattr(node, attr, None)
        if child is not None:
            out |= columns_of(child)
    return out


def resolver(columns: Sequence[str], dataset: str | None = None):
    """A function mapping a user-written column name onto a segment-table column (or raising)."""
    available = list(columns)
    known = set(available)

    def resolve(name: str) -> str:
        if name in known:
            return name
        friendly = schema.friendly_name(name)  # property:scene:region -> scene.region
        if friendly and friendly in known:
            return friendly
        raise UnknownColumnError(name, available, dataset)

    return resolve


def given_where(where: str | None) -> str | None:
    """`where` stripped; None when no predicate was given (None). A blank string is an error, not "everything":
    `--where "$FILTER"` with an unset variable must not silently select every episode."""
    if where is None:
        return None
    if not isinstance(where, str):
        raise PredicateError(f"a predicate is text, got {type(where).__name__}")
    if not where.strip():
        raise PredicateError(f"the predicate is empty ({where!r}): leave --where out to select every episode, "
                             "or write one, e.g. \"outcome.success\" or \"scene.region = 'left'\"")
    return where.strip()


def compile_where(text: str, columns: Sequence[str], dataset: str | None = None, types: Mapping[str, pa.DataType] | None = None) -> str:
    """Parse `text` against the available `columns`; return the SQL expression.

    With `types` (column -> Arrow type), a comparison of a column with a literal of the
    wrong kind (`outcome.success > 'abc'`) raises `PredicateTypeError` naming the column,
    its type and what to write instead.
    """
    try:
        node = Parser(text, resolver(columns, dataset)).parse()
        if types is not None:
            check_types(node, types)
        return to_sql(node)
    except RecursionError:  # the limits above keep well below it; this is the last guard
        raise PredicateError("predicate nested too deeply") from None


class PredicateTypeError(PredicateError):
    """A column compared with a value of another kind (a string with a number column, ...)."""


_KIND_HINT = {
    "boolean": "use true or false, e.g. {col} = true",
    "number": "use a number, e.g. {col} > 3",
    "text": "quote text with single quotes, e.g. {col} = 'dim'",
}


def _column_kind(t: pa.DataType) -> str | None:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    return None  # lists, timestamps, ...: left to the engine


def _literal_kind(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def _describe_literal(value: object) -> str:
    kind = _literal_kind(value)
    shown = quote_literal(value) if kind != "number" else repr(value)
    return f"{shown} (a {'string' if kind == 'text' else kind})"


def check_types(node, types: Mapping[str, pa.DataType]) -> None:
    """Refuse comparisons of a column with a literal of another kind (boolean, number, text)."""

    def pair(col, lit) -> None:
        if not (isinstance(col, Column) and isinstance(lit, Literal)) or col.name not in types:
            return
        ck, lk = _column_kind(types[col.name]), _literal_kind(lit.value)
        if ck is None or lk is None or ck == lk:
            return
        raise PredicateTypeError(
            f"cannot compare {col.name} (a {ck} column, type {types[col.name]}) with {_describe_literal(lit.value)}: "
            + _KIND_HINT[ck].format(col=col.name)
        )

    if isinstance(node, Binary):
        if node.op in ("like", "not like"):
            if isinstance(node.left, Column) and node.left.name in types:
                ck = _column_kind(types[node.left.name])
                if ck not in (None, "text"):
                    raise PredicateTypeError(
                        f"'like' matches text, but {node.left.name} is a {ck} column (type {types[node.left.name]}): "
                        + _KIND_HINT[ck].format(col=node.left.name)
                    )
        elif node.op in ("=", "!=", "<", "<=", ">", ">="):
            pair(node.left, node.right)
            pair(node.right, node.left)
        check_types(node.left, types)
        check_types(node.right, types)
    elif isinstance(node, InList):
        for v in node.values:
            pair(node.operand, v)
        check_types(node.operand, types)
    elif isinstance(node, Between):
        pair(node.operand, node.low)
        pair(node.operand, node.high)
        for child in (node.operand, node.low, node.high):
            check_types(child, types)
    elif isinstance(node, (Unary, IsNull)):
        check_types(node.operand, types)


def compile_order(text: str, columns: Sequence[str], dataset: str | None = None) -> list[tuple[str, bool]]:
    """Parse `col [asc|desc], ...` into (column, descending) pairs."""
    resolve = resolver(columns, dataset)
    p = Parser(text, resolve)
    out: list[tuple[str, bool]] = []
    while True:
        tok = p.peek()
        if tok.kind != "ident":
            p.error("expected a column name in the order")
        p.next()
        desc = False
        if p.accept("kw", "desc"):
            desc = True
        else:
            p.accept("kw", "asc")
        out.append((resolve(str(tok.value)), desc))
        if p.accept("op", ","):
            continue
        if not p.at("end"):
            p.error("expected ',' or the end of the order")
        return out
