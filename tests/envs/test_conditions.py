"""The one condition vocabulary (envs/conditions.py, the transfer cube's axes in envs/aloha/conditions.py)
against the four rules it replaced.

The old rules are copied below verbatim from the code before issue 20 (`evaluate.canonical_label` /
`cell_key`, `analyze_gaps._canon` / `cell_key` / `parse_cell_key`, `plan.canonical_conditions`,
`sim/conditions._choose` and `from_names`'s distractor count); the seeds in `RECORDED_SEEDS` were
printed once by the old `evaluate.cell_key` + `cell_seed`. For every axis and every label, alias and
number form, each call site must give what its old rule gave wherever the old rule accepted the input.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest

from roboloop.analyze import gaps as ag
from roboloop.collect.plan import PlanError, PlanItem, canonical_conditions, conditions_key
from roboloop.collect.run import scene_properties
from roboloop.envs.aloha.conditions import (
    AXES,
    DISTRACTOR_SETS,
    LIGHTINGS,
    MAX_DISTRACTORS,
    REGION_ALIASES,
    REGIONS,
    TABLES,
    YAWS,
    SceneConditions,
    start_state,
)
from roboloop.envs.conditions import Axis, Vocabulary
from roboloop.evaluate.run import GridError, canonical_label, cell_key, cell_seed, parse_cell_key, parse_grid, valid_labels

TABLES_BY_AXIS = {"region": REGIONS, "yaw": YAWS, "lighting": LIGHTINGS, "table": TABLES, "distractors": DISTRACTOR_SETS}


# --- the old rules, verbatim -------------------------------------------------------------------

def old_valid_labels(axis):
    if axis == "region":
        return sorted(REGIONS) + sorted(REGION_ALIASES)
    if axis == "distractors":
        return sorted(DISTRACTOR_SETS) + [str(n) for n in range(MAX_DISTRACTORS + 1)]
    return sorted(TABLES_BY_AXIS[axis])


def old_canonical_label(axis, label):  # evaluate.canonical_label
    valid = old_valid_labels(axis)
    key = str(label).strip().lower()
    if axis == "region":
        key = REGION_ALIASES.get(key, key)
    if axis == "distractors" and key.isdigit() and int(key) <= MAX_DISTRACTORS:
        names = {n: name for name, n in DISTRACTOR_SETS.items()}
        key = names.get(int(key), key)
    if key not in valid:
        raise GridError(f"unknown {axis} label {label!r}; valid {axis} labels: {', '.join(valid)}")
    return key


def old_eval_cell_key(cell):  # evaluate.cell_key
    return ",".join(f"{axis}={old_canonical_label(axis, label)}" for axis, label in sorted(cell.items()))


def old_canon(axis, value):  # analyze_gaps._canon
    if value is None:
        return None
    text = str(value).strip().lower()
    if axis == "region":
        return REGION_ALIASES.get(text, text)
    if axis == "distractors":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(int(value))
        return str(DISTRACTOR_SETS.get(text, text))
    return text


def old_gaps_cell_key(cell):  # analyze_gaps.cell_key
    return ",".join(f"{k}={v}" for k, v in sorted(cell.items()))


def old_gaps_parse_cell_key(key):  # analyze_gaps.parse_cell_key
    out = {}
    if not key:
        return out
    for part in str(key).split(","):
        axis, sep, label = part.partition("=")
        if not sep or not axis.strip():
            raise ValueError(key)
        out[axis.strip()] = label.strip()
    return out


def old_plan_label(axis, value):  # plan.canonical_conditions, one axis
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PlanError(value)
    text = str(value).strip().lower()
    if axis == "region":
        text = REGION_ALIASES.get(text, text)
        ok = text in REGIONS
    elif axis == "distractors":
        ok = text in DISTRACTOR_SETS or (text.isdigit() and 0 <= int(text) <= 4)
    else:
        ok = text in TABLES_BY_AXIS[axis]
    if not ok:
        raise PlanError(value)
    return text


def old_choose(kind, value, table, aliases=None):  # sim/conditions._choose
    key = str(value).strip().lower()
    if aliases and key in aliases:
        key = aliases[key]
    if key not in table:
        raise ValueError(value)
    return key, table[key]


def old_distractor_count(distractors):  # SceneConditions.from_names, then __post_init__'s range check
    if isinstance(distractors, int) and not isinstance(distractors, bool):
        n = distractors
    elif str(distractors).strip().isdigit():
        n = int(str(distractors).strip())
    else:
        _, n = old_choose("distractors", distractors, DISTRACTOR_SETS)
    if not 0 <= n <= MAX_DISTRACTORS:
        raise ValueError(n)
    return n


def outcome(fn, *args):
    """("ok", value) or ("error", exception type)."""
    try:
        return "ok", fn(*args)
    except ValueError as exc:
        return "error", type(exc)


# --- every form an old rule may have seen ------------------------------------------------------

NUMBER_FORMS = [0, 1, 2, 3, 4, 5, -1, "0", "1", "2", "3", "4", "5", "00", "01", "02", "03", "04", "004", " 2 ",
                "-1", "+2", "2.0", "\u00b2", "\u0662", "\u0663"]
OTHER_FORMS = ["", "custom", "bogus", True, False, "NONE", " Few ", "MANY"]


def forms(axis):
    base = list(TABLES_BY_AXIS[axis]) + (list(REGION_ALIASES) if axis == "region" else [])
    variants = [v for b in base for v in (b, b.upper(), f"  {b.title()} ")]
    return variants + NUMBER_FORMS + OTHER_FORMS


AXIS_FORMS = [(axis, v) for axis in AXES.names for v in forms(axis)]
# Inputs an old rule rejected that the one rule reads as a count (a count written with a leading zero).
NEWLY_ACCEPTED_BY_EVALUATE = {"01", "03", "\u0663"}


@pytest.mark.parametrize(("axis", "value"), AXIS_FORMS)
def test_evaluate_labels_and_keys_unchanged(axis, value):
    old, new = outcome(old_canonical_label, axis, value), outcome(canonical_label, axis, value)
    if old[0] == "ok":
        assert new == old
        assert cell_key({axis: value}) == old_eval_cell_key({axis: value})
        assert parse_cell_key(f"{axis}={value}") == {axis: old[1]}
    elif axis == "distractors" and value in NEWLY_ACCEPTED_BY_EVALUATE:
        assert new == ("ok", str(int(value)))
    else:
        assert new == ("error", GridError)


@pytest.mark.parametrize(("axis", "value"), AXIS_FORMS)
def test_plan_labels_unchanged(axis, value):
    old = outcome(old_plan_label, axis, value)
    new = outcome(lambda a, v: canonical_conditions({a: v})[a], axis, value)
    if old[0] == "ok":
        assert new == old
        assert conditions_key({axis: new[1]}) == f"{axis}={old[1]}"
    else:
        assert new == ("error", PlanError)


@pytest.mark.parametrize(("axis", "value"), AXIS_FORMS)
def test_scene_conditions_unchanged(axis, value):
    """`SceneConditions.from_names` (what collect records as `scene.*`) builds the same scene."""
    if axis == "distractors":
        old = outcome(old_distractor_count, value)
        new = outcome(lambda v: SceneConditions.from_names(distractors=v).distractors, value)
        assert new == old if old[0] == "ok" else new[0] == "error"
        return
    old = outcome(old_choose, axis, value, TABLES_BY_AXIS[axis], REGION_ALIASES if axis == "region" else None)
    new = outcome(lambda v: SceneConditions.from_names(**{axis: v}), value)
    if old[0] == "ok":
        assert new == ("ok", SceneConditions.from_names(**{axis: old[1][0]}))
        assert scene_properties(new[1]) == scene_properties(SceneConditions.from_names(**{axis: old[1][0]}))
    else:
        assert new[0] == "error"


STORED = [None, 0, 1, 2, 3, 4, 7, -1, "0", "2", "4", "few", "FEW", " none", "many", "1", "3", "near", "far", "left",
          "right", "default", "custom", "Custom", "dim", "normal", "any", "none", "2.0", "-15..15", "", "bogus"]


@pytest.mark.parametrize("axis", [*AXES.names, "colour"])
def test_gaps_comparisons_unchanged(axis):
    """Two stored labels (or a cell's label and a stored one) match exactly when they matched before."""
    for a, b in itertools.product(STORED, repeat=2):
        assert (old_canon(axis, a) == old_canon(axis, b)) == (AXES.comparable(axis, a) == AXES.comparable(axis, b)), (a, b)
    # the one change: a count written with a leading zero now names its count
    assert AXES.comparable("distractors", "02") == AXES.comparable("distractors", 2) == "few"


@pytest.mark.parametrize("key", ["", "lighting=dim,yaw=any", "yaw=a", " yaw = Any ,region=near", "distractors=2",
                                 "foo=bar", "a=1,a=2"])
def test_gaps_cell_keys_unchanged(key):
    assert ag.parse_cell_key(key) == old_gaps_parse_cell_key(key)
    cell = old_gaps_parse_cell_key(key)
    assert ag.cell_key(cell) == old_gaps_cell_key(cell)


@pytest.mark.parametrize("key", ["lighting", "=dim", "yaw=any,,region=left"])
def test_bad_cell_keys_are_errors_in_both_places(key):
    with pytest.raises(ag.GapError):
        ag.parse_cell_key(key)
    with pytest.raises(GridError):
        parse_cell_key(key)


# Printed once by the old code: `evaluate.cell_key(cell)` and `[cell_seed(key, i) for i in (0, 1, 29)]`.
RECORDED_SEEDS = [
    ({"region": "near"}, "region=left", [1796575858, 2044986159, 1675390938]),
    ({"region": "far", "yaw": "any"}, "region=right,yaw=any", [2100258418, 1644525614, 1596121406]),
    ({"distractors": "2", "lighting": "DIM"}, "distractors=few,lighting=dim", [1493351956, 1234099933, 1752839668]),
    ({"distractors": 3, "table": "wood"}, "distractors=3,table=wood", [2131228494, 1335935758, 1770055038]),
    ({"distractors": "many", "region": "wide", "yaw": "small", "lighting": "bright", "table": "blue"},
     "distractors=many,lighting=bright,region=wide,table=blue,yaw=small", [1182612611, 1294332171, 1973172984]),
    ({"distractors": "0"}, "distractors=none", [1530014656, 1897597597, 1125790800]),
]


@pytest.mark.parametrize(("cell", "key", "seeds"), RECORDED_SEEDS)
def test_cell_keys_and_seeds_unchanged(cell, key, seeds):
    assert cell_key(cell) == key == AXES.cell_key(cell)
    assert [cell_seed(key, i) for i in (0, 1, 29)] == seeds


def test_grid_keys_unchanged():
    grid = parse_grid("region=near,far distractors=0,1,few,3,4 yaw=none,any")
    keys = grid.keys()
    assert keys[:2] == ["distractors=none,region=left,yaw=none", "distractors=none,region=left,yaw=any"]
    assert hashlib.sha256("|".join(keys).encode()).hexdigest() == "449e50632a7b68dcc479464fa24837d54d25a418d2f8b3cf5489fc6bf147ab5f"
    assert keys == [old_eval_cell_key(c) for c in grid.cells()]


def test_plan_items_keep_what_they_were_given():
    """Where plans and grids disagreed, each keeps its stored form: a plan item says what was written
    (`distractors = "2"` stays "2", its key `distractors=2`), a grid cell key names the count."""
    item = PlanItem({"distractors": 2, "region": "NEAR"}, 3)
    assert item.conditions == {"distractors": "2", "region": "left"} and item.key == "distractors=2,region=left"
    assert cell_key(item.conditions) == "distractors=few,region=left"
    assert item.scene_conditions() == SceneConditions.from_names(distractors="few", region="left")


def test_yaw_label_and_start_state():
    for name, (lo, hi) in YAWS.items():
        assert scene_properties(SceneConditions(yaw_min=lo, yaw_max=hi))["yaw"] == name
    assert scene_properties(SceneConditions(yaw_min=-5, yaw_max=5))["yaw"] == "custom"
    s = start_state([0.1, 0.5, 0.02, 0.9238795325, 0.0, 0.0, 0.3826834324])
    assert s == {"cube_x": 0.1, "cube_y": 0.5, "cube_yaw_deg": pytest.approx(45.0)}
    assert ag.START_COLUMNS == ("scene.cube_x", "scene.cube_y", "scene.cube_yaw_deg")


def test_vocabulary_rules():
    v = Vocabulary((Axis("region", ("default", "left"), {"near": "left"}),
                    Axis("n", ("none", "few"), counts={"none": 0, "few": 2}, max_count=4)))
    assert v.cell_key({"region": " NEAR", "n": 2}) == "n=few,region=left"
    assert v.parse_cell_key("n=03,region=default") == {"n": "3", "region": "default"}
    assert v.label("n", "02") == "02" and v.lookup("n", "02") == "few" and v.lookup("n", 5) is None
    assert v.axis("n").count("few") == 2 and v.axis("n").count("3") == 3
    with pytest.raises(ValueError, match="unknown condition axis 'x'; valid axes: region, n"):
        v.canonical("x", "a")
    with pytest.raises(ValueError, match="valid region labels: default, left, near"):
        v.canonical("region", "far")
    with pytest.raises(ValueError, match="name no canonical label"):
        Axis("r", ("a",), {"b": "c"})


# Printed once by the old `sim/conditions.py` for the same calls.
OLD_SCENE_MESSAGES = [
    ({"region": "middle"}, "unknown region 'middle'; valid region presets: back, default, front, left, right, wide, far, near"),
    ({"distractors": "lots"}, "unknown distractors 'lots'; valid distractors presets: few, many, none"),
    ({"distractors": "7"}, "distractors must be an int in [0, 4] or one of none, few, many, got 7"),
    ({"distractors": -1}, "distractors must be an int in [0, 4] or one of none, few, many, got -1"),
    ({"yaw": "big"}, "unknown yaw 'big'; valid yaw presets: any, none, small"),
    ({"table": "red"}, "unknown table 'red'; valid table presets: blue, dark, green, light, wood"),
]


@pytest.mark.parametrize(("kw", "message"), OLD_SCENE_MESSAGES)
def test_scene_condition_messages_unchanged(kw, message):
    with pytest.raises(ValueError) as exc:
        SceneConditions.from_names(**kw)
    assert str(exc.value) == message
    with pytest.raises(ValueError) as exc:
        SceneConditions(lighting="dusk")
    assert str(exc.value) == "unknown lighting 'dusk'; valid lighting presets: bright, custom, dim, normal"


@pytest.mark.parametrize("axis", AXES.names)
def test_label_lists_in_messages_unchanged(axis):
    assert valid_labels(axis) == old_valid_labels(axis)  # evaluate's messages and examples
    old_plan = {"region": list(REGIONS) + list(REGION_ALIASES), "distractors": list(DISTRACTOR_SETS) + ["0-4"]}
    assert AXES.axis(axis).described() == old_plan.get(axis, list(TABLES_BY_AXIS[axis]))  # plan's messages
