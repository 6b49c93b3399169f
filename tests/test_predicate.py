"""The predicate grammar on its own (no catalog): parsing, SQL compilation, hostile input, evaluation."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from roboloop.errors import RoboloopError
from roboloop.predicate import (
    MAX_NESTING,
    MAX_PREDICATE_CHARS,
    MAX_TERMS,
    PredicateError,
    UnknownColumnError,
    compile_order,
    compile_where,
)
from roboloop.predicate.select import select_ids

COLUMNS = ["segment_id", "scene.lighting", "scene.region", "signals.jerk_peak", "outcome.success", "episode.seed", "quality.flagged"]


def table() -> pa.Table:
    return pa.table(
        {
            "segment_id": ["a", "b", "c", "d", "e"],
            "scene.lighting": ["dim", "normal", "dim", "bright", "x' OR 1=1 --"],
            "scene.region": ["left", "right", "far", "left", None],
            "signals.jerk_peak": [1.0e4, 6.0e4, 2.5e4, None, 9.0e4],
            "outcome.success": [True, False, True, True, False],
            "episode.seed": [1, 2, 3, 40, 5],
            "quality.flagged": [None, False, False, True, None],
        }
    )


@pytest.mark.parametrize(
    "text, sql",
    [
        ("scene.lighting = 'dim'", "(\"scene.lighting\" = 'dim')"),
        ("signals.jerk_peak > 5e4 and not outcome.success", '(("signals.jerk_peak" > 50000.0) AND (NOT "outcome.success"))'),
        ("episode.seed between 1 and 9", '("episode.seed" BETWEEN 1 AND 9)'),
        ("episode.seed not between 1 and 9", '("episode.seed" NOT BETWEEN 1 AND 9)'),
        ("scene.region in ('left', 'far')", "(\"scene.region\" IN ('left', 'far'))"),
        ("scene.region not in ('left')", "(\"scene.region\" NOT IN ('left'))"),
        ("segment_id like 'ep-0%'", "(\"segment_id\" LIKE 'ep-0%')"),
        ("scene.region is not null", '("scene.region" IS NOT NULL)'),
        ("-episode.seed * 2 + 1 >= 3", '((((- "episode.seed") * 2) + 1) >= 3)'),
        ("episode.seed = 1 or episode.seed = 2 and outcome.success",
         '(("episode.seed" = 1) OR (("episode.seed" = 2) AND "outcome.success"))'),
        ('"scene.lighting" = \'dim\'', "(\"scene.lighting\" = 'dim')"),
        ("outcome.success = TRUE", '("outcome.success" = TRUE)'),
    ],
)
def test_compiles_to_expected_sql(text, sql):
    assert compile_where(text, COLUMNS) == sql


def test_keywords_are_case_insensitive_and_precedence_is_sql():
    assert compile_where("NOT outcome.success AND episode.seed < 3 OR scene.region IS NULL", COLUMNS) == (
        '(((NOT "outcome.success") AND ("episode.seed" < 3)) OR ("scene.region" IS NULL))'
    )


def test_string_literals_cannot_break_out():
    sql = compile_where("scene.lighting = 'x'' OR 1=1 --'", COLUMNS)
    assert sql == "(\"scene.lighting\" = 'x'' OR 1=1 --')"
    # evaluated: it is one string value, which matches exactly the one row holding it
    assert select_ids(table(), "scene.lighting = 'x'' OR 1=1 --'") == ["e"]
    assert select_ids(table(), "scene.lighting = 'dim'") == ["a", "c"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("scene.lighting = 'dim'; DROP TABLE segments", "unexpected character ';'"),
        ("scene.lighting = 'unterminated", "unexpected character"),
        ("", "empty predicate"),
        ("   ", "empty predicate"),
        ("(", "expected a column"),
        ("episode.seed = 1 or", "found end of predicate"),
        ("episode.seed in ()", "expected a column"),
        ("episode.seed = 1e309", "out of range"),
        ("episode.seed = 1 episode.seed = 2", "missing 'and'/'or'"),
        ("scene.region not 'left'", "after 'not'"),
        ("segment_id like 5", "quoted pattern"),
        ("scene.region is 'left'", "'null' after 'is'"),
    ],
)
def test_malformed_input_is_a_predicate_error_with_position(text, message):
    with pytest.raises(PredicateError, match=message) as err:
        compile_where(text, COLUMNS)
    assert isinstance(err.value, RoboloopError)


def test_identifiers_must_be_columns():
    with pytest.raises(UnknownColumnError, match="available columns: .*scene.lighting") as err:
        compile_where('"scene.lighting"" OR 1=1 --" = 1', COLUMNS)
    assert err.value.name == 'scene.lighting" OR 1=1 --'
    with pytest.raises(UnknownColumnError, match="single quotes"):
        compile_where("scene.lighting = dim", COLUMNS)  # a bare word is a column name: hint at quoting
    with pytest.raises(UnknownColumnError, match="refine"):
        compile_where("signals.nope > 1", COLUMNS)


def test_resource_limits_refuse_instead_of_crashing():
    ok = "(" * MAX_NESTING + "episode.seed = 1" + ")" * MAX_NESTING
    assert compile_where(ok, COLUMNS).count("episode.seed") == 1
    for text in (
        "(" * (MAX_NESTING + 1) + "episode.seed = 1" + ")" * (MAX_NESTING + 1),
        "(" * 5000 + "episode.seed",
        "not " * 2000 + "outcome.success",
        "-" * 500 + "1 = 1",
    ):
        with pytest.raises(PredicateError, match="nested too deeply"):
            compile_where(text, COLUMNS)
    with pytest.raises(PredicateError, match="too many terms"):
        compile_where(" or ".join(["episode.seed = 1"] * (MAX_TERMS + 1)), COLUMNS)
    with pytest.raises(PredicateError, match="too long"):
        compile_where("x" * (MAX_PREDICATE_CHARS + 1), COLUMNS)


def test_random_token_soup_only_ever_raises_predicate_error_and_compiled_sql_always_parses():
    """Fuzz: whatever a user types either compiles to SQL that DataFusion can parse, or is a PredicateError."""
    from datafusion import SessionContext

    ctx = SessionContext()
    ctx.register_record_batches("segments", [table().to_batches()])
    pieces = [
        "scene.lighting", "episode.seed", "outcome.success", "signals.jerk_peak", '"scene.region"', "nope",
        "'dim'", "'it''s'", "'", '"', "1", "2.5", "-", "+", "*", "/", "1e3", "(", ")", ",", "=", "!=", "<>", "<", ">=",
        "and", "or", "not", "in", "is", "null", "true", "false", "between", "like", ";", "--", "\\", "$", "%", "\x00",
    ]
    rng = random.Random(1234)
    compiled = 0
    for _ in range(1500):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 9)))
        try:
            sql = compile_where(text, COLUMNS)
        except PredicateError:
            continue
        compiled += 1
        try:
            ctx.sql(f"SELECT segment_id FROM segments WHERE {sql}").to_arrow_table()
        except Exception as exc:  # noqa: BLE001 - type errors are fine, SQL syntax errors are not
            assert "ParserError" not in str(exc) and "syntax" not in str(exc).lower(), (text, sql, exc)
    assert compiled > 50  # the fuzz reached the compiler, not only the tokenizer


def test_select_ids_orders_limits_and_leaves_flagged_out():
    t = table()
    assert select_ids(t) == ["a", "b", "c", "e"]  # d is flagged
    assert select_ids(t, include_flagged=True) == ["a", "b", "c", "d", "e"]
    assert select_ids(t, "outcome.success", order="signals.jerk_peak desc") == ["c", "a"]
    assert select_ids(t, None, order="episode.seed desc", limit=2) == ["e", "c"]
    assert select_ids(t, "scene.region in ('left', 'far')", include_flagged=True) == ["a", "c", "d"]
    with pytest.raises(PredicateError, match="limit"):
        select_ids(t, limit=-1)


def test_order_parsing():
    assert compile_order("signals.jerk_peak desc, episode.seed", COLUMNS) == [("signals.jerk_peak", True), ("episode.seed", False)]
    assert compile_order("episode.seed ASC", COLUMNS) == [("episode.seed", False)]
    with pytest.raises(PredicateError, match="expected ','"):
        compile_order("signals.jerk_peak sideways", COLUMNS)
    with pytest.raises(PredicateError, match="expected a column name"):
        compile_order("episode.seed asc,", COLUMNS)
    with pytest.raises(UnknownColumnError):
        compile_order("nope", COLUMNS)
