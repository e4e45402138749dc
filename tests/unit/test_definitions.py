"""Tests for durable.definitions: validation, paths, execution with a fake wf, graph.

The fake ``wf`` records every durable call, answers with canned rows, and runs the
children of parallel and race steps by calling ``execute`` again with their
``__branch__`` input, as the engine does with child runs of the same workflow.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import zlib
from decimal import Decimal
from typing import Any, Callable

import pytest
from durable import definitions
from durable.errors import DurableError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WF = "app.flow"


def ok(definition: Any, check_sql: Callable | None = None) -> dict:
    return definitions.validate(WF, definition, check_sql)


def rejects(
    definition: Any, *fragments: str, sqlstate: str = "22023", check_sql=None
) -> DurableError:
    """Assert that validation fails naming the workflow and each fragment."""
    with pytest.raises(DurableError) as caught:
        definitions.validate(WF, definition, check_sql)
    error = caught.value
    message = str(error)
    assert f"workflow {WF}" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert error.sqlstate == sqlstate, (error.sqlstate, message)
    assert error.hint, message
    return error


def sql(name: str, text: str = "SELECT 1", **extra: Any) -> dict:
    return {"name": name, "sql": text, **extra}


def steps(*items: dict) -> dict:
    return {"steps": list(items)}


# ------------------------------------------------------------------ top level


@pytest.mark.parametrize(
    ("definition", "fragment"),
    [
        (None, "must be an object"),
        ([sql("a")], "must be an object"),
        ("{}", "must be an object"),
        ({}, '"steps" must be a non-empty list'),
        ({"steps": []}, '"steps" must be a non-empty list'),
        ({"steps": {"a": 1}}, '"steps" must be a non-empty list'),
        ({"steps": [sql("a")], "retry": {}}, 'unknown top-level key "retry"'),
    ],
)
def test_top_level_rejected(definition, fragment):
    rejects(definition, fragment)


def test_top_level_accepted():
    assert ok(steps(sql("a"))) == {"steps": [sql("a", params=[])]}


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("SELECT 1", "steps[0]: a step must be an object, not str"),
        (["SELECT 1"], "steps[0]: a step must be an object, not list"),
        ({"name": "a"}, "steps[0]: the step has no kind key (it has name)"),
        ({}, "the step has no kind key (it has no keys)"),
        ({"name": "a", "sql": "SELECT 1", "sleep": 1}, 'both "sql" and "sleep"'),
        ({"if": "SELECT true", "then": [], "repeat": [sql("x")]}, 'both "if"'),
    ],
)
def test_step_shape_rejected(item, fragment):
    rejects(steps(item), fragment)


# ---------------------------------------------------------------- kinds: keys

VALID_STEPS = {
    "sql": sql(
        "a", "SELECT $1", params=["input.x"], retry={"max_attempts": 2}, timeout=5
    ),
    "sleep": {"name": "nap", "sleep": "10 minutes"},
    "wait_for_signal": {"name": "a", "wait_for_signal": "go", "timeout": "1 day"},
    "if": {
        "name": "a",
        "if": "SELECT $1",
        "params": [{"value": True}],
        "then": [sql("t")],
        "else": [sql("e")],
    },
    "workflow": {"name": "a", "workflow": "app.other", "input": {"n": 1}, "timeout": 9},
    "parallel": {"name": "a", "parallel": [[sql("p")], [sql("q")]]},
    "race": {"name": "a", "race": [[sql("p")], [sql("q")]]},
    "repeat": {
        "name": "a",
        "repeat": [sql("body")],
        "until": "SELECT $1",
        "params": ["steps.body.length"],
        "max_iterations": 10,
    },
}


@pytest.mark.parametrize("kind", definitions.KINDS)
def test_every_allowed_key_is_accepted(kind):
    step = VALID_STEPS[kind]
    assert set(step) == set(definitions.ALLOWED[kind])
    assert ok(steps(step))["steps"][0]["name"] == "a" or kind == "sleep"


@pytest.mark.parametrize("kind", definitions.KINDS)
def test_unknown_key_lists_the_allowed_keys(kind):
    step = {**VALID_STEPS[kind], "colour": "red"}
    error = rejects(steps(step), 'unknown key "colour"', f"in a {kind} step")
    for key in definitions.ALLOWED[kind]:
        assert key in str(error)


def test_unknown_key_suggests_a_close_match():
    error = rejects(steps(sql("a", parms=[])), 'step "a"', 'unknown key "parms"')
    assert "Did you mean params?" in error.hint


def test_key_of_another_kind_is_unknown():
    rejects(steps(sql("a", then=[])), 'step "a"', 'unknown key "then"')
    rejects(steps({"sleep": 1, "timeout": 3}), "steps[0]", 'unknown key "timeout"')


@pytest.mark.parametrize("kind", ["sql", "wait_for_signal", "workflow"])
def test_name_is_required(kind):
    step = {k: v for k, v in VALID_STEPS[kind].items() if k != "name"}
    rejects(steps(step), "steps[0]", f"a {kind} step needs a name")
    rejects(steps({**step, "name": None}), f"a {kind} step needs a name")


@pytest.mark.parametrize("kind", ["sleep", "if", "parallel", "race", "repeat"])
def test_name_is_optional(kind):
    step = {k: v for k, v in VALID_STEPS[kind].items() if k != "name"}
    assert "name" not in ok(steps(step))["steps"][0]
    assert "name" not in ok(steps({**step, "name": None}))["steps"][0]


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ({"name": "a", "sql": ""}, '"sql" must be SQL text'),
        ({"name": "a", "sql": "   "}, '"sql" must be SQL text'),
        ({"name": "a", "sql": 1}, '"sql" must be SQL text, not 1'),
        ({"name": "a", "sql": None}, '"sql" must be SQL text, not null'),
    ],
)
def test_sql_text_rejected(step, fragment):
    rejects(steps(step), 'step "a"', fragment)


def test_sql_with_several_statements_is_a_syntax_error():
    rejects(
        steps(sql("a", "SELECT 1; DROP TABLE x")),
        'step "a"',
        "holds 2 SQL statements",
        sqlstate="42601",
    )
    rejects(steps(sql("a", "-- nothing")), 'step "a"', "holds no SQL", sqlstate="42601")
    assert ok(steps(sql("a", "SELECT ';' AS semi;")))


def test_sql_step_timeout_and_retry():
    assert ok(steps(sql("a", timeout="30 seconds")))["steps"][0]["timeout"] == (
        "30 seconds"
    )
    rejects(steps(sql("a", timeout=0)), 'step "a"', "timeout 0 must be longer")
    rejects(steps(sql("a", timeout="0 s")), 'step "a"', "must be longer than zero")
    rejects(steps(sql("a", timeout="soon")), 'step "a"', 'invalid timeout "soon"')
    rejects(steps(sql("a", timeout=-1)), 'step "a"', "cannot be negative")
    rejects(steps(sql("a", retry={"max_attempts": 0})), 'step "a"', "max_attempts")
    rejects(steps(sql("a", retry={"tries": 3})), 'step "a"', "unknown retry option")
    rejects(steps(sql("a", retry=[3])), 'step "a"', '"retry" must be an object')
    canonical = ok(steps(sql("a", retry={"max_attempts": 5, "jitter": None})))
    assert canonical["steps"][0]["retry"] == {"max_attempts": 5}


def test_sleep():
    assert ok(steps({"sleep": 0}))["steps"] == [{"sleep": 0}]
    assert ok(steps({"sleep": "1h30m"}))["steps"] == [{"sleep": "1h30m"}]
    rejects(steps({"sleep": "later"}), "steps[0]", 'invalid sleep "later"')
    rejects(steps({"sleep": None}), "steps[0]", "invalid sleep null")
    rejects(steps({"name": "nap", "sleep": True}), 'step "nap"', "invalid sleep")


def test_wait_for_signal():
    step = ok(steps({"name": "a", "wait_for_signal": "go"}))["steps"][0]
    assert step == {"name": "a", "wait_for_signal": "go"}
    rejects(
        steps({"name": "a", "wait_for_signal": ""}),
        'step "a"',
        '"wait_for_signal" must be non-empty text',
    )
    rejects(steps({"name": "a", "wait_for_signal": 3}), 'step "a"', "not 3")
    rejects(
        steps({"name": "a", "wait_for_signal": "go", "timeout": 0}),
        'step "a"',
        "must be longer than zero",
    )


def test_workflow_step():
    step = ok(steps({"name": "c", "workflow": "app.child"}))["steps"][0]
    assert step == {"name": "c", "workflow": "app.child"}
    rejects(steps({"name": "c", "workflow": ""}), 'step "c"', '"workflow" must be')
    rejects(steps({"name": "c", "workflow": ["x"]}), 'step "c"', '"workflow" must be')
    rejects(
        steps({"name": "c", "workflow": "app.x", "timeout": "0"}),
        'step "c"',
        "longer than zero",
    )
    rejects(
        steps({"name": "c", "workflow": "app.x", "input": {"n": float("nan")}}),
        'step "c"',
        "input is not a JSON value",
    )
    rejects(
        steps({"name": "c", "workflow": "app.x", "input": {1: 2}}),
        'step "c"',
        "object key 1 is not text",
    )


def test_workflow_input_paths():
    definition = steps(
        sql("a"),
        {
            "name": "c",
            "workflow": "app.x",
            "input": {
                "rows": "steps.a",
                "ids": ["steps.a[*].id", "input.size"],
                "text": "just text",
                "literal": {"value": "steps.nothing"},
                "number": 3,
            },
        },
    )
    assert ok(definition)["steps"][1]["input"] == definition["steps"][1]["input"]
    bad = copy.deepcopy(definition)
    bad["steps"][1]["input"]["ids"][0] = "steps.b[*].id"
    rejects(bad, 'step "c"', 'input "steps.b[*].id" refers to unknown step "b"')
    bad["steps"][1]["input"]["ids"][0] = "steps.a[x]"
    rejects(bad, 'step "c"', 'input "steps.a[x]" is not a valid path')
    bad["steps"][1]["input"] = "steps.c"
    rejects(bad, 'step "c"', "refers to the step itself")


def test_if_step():
    step = ok(steps({"if": "SELECT true", "then": []}))["steps"][0]
    assert step == {"if": "SELECT true", "params": [], "then": [], "else": []}
    rejects(steps({"if": "SELECT true"}), "steps[0]", 'a if step needs "then"')
    rejects(steps({"if": "SELECT true", "then": {}}), "steps[0]", '"then" must be')
    rejects(
        steps({"if": "SELECT true", "then": [], "else": "x"}),
        "steps[0]",
        '"else" must be a list of steps',
    )
    rejects(
        steps({"if": "", "then": [], "name": "cond"}), 'step "cond"', '"if" must be'
    )
    rejects(
        steps({"if": "SELECT 1; SELECT 2", "then": []}),
        "steps[0]",
        '"if" holds 2',
        sqlstate="42601",
    )
    rejects(
        steps({"if": "SELECT true", "then": [{"sleep": "x"}]}),
        "steps[0].then[0]",
        "invalid sleep",
    )
    rejects(
        steps({"if": "SELECT true", "then": [], "else": [{"sleep": -1}]}),
        "steps[0].else[0]",
    )


@pytest.mark.parametrize("kind", ["parallel", "race"])
def test_parallel_and_race(kind):
    step = ok(steps({kind: [[sql("a")], [sql("b")], [{"sleep": 1}]]}))["steps"][0]
    assert len(step[kind]) == 3
    rejects(steps({kind: [[sql("a")]]}), "steps[0]", "at least 2 branches")
    rejects(steps({kind: []}), "steps[0]", "at least 2 branches")
    rejects(steps({kind: {"a": []}}), "steps[0]", "at least 2 branches")
    rejects(
        steps({"name": "p", kind: [[sql("a")], []]}),
        'step "p"',
        f"{kind}[1] must be a non-empty list of steps",
    )
    rejects(
        steps({kind: [[sql("a")], sql("b")]}),
        "steps[0]",
        f"{kind}[1] must be a non-empty list",
    )
    rejects(
        steps({kind: [[sql("a")], [sql("b"), {"sleep": "x"}]]}),
        f"steps[0].{kind}[1][1]",
    )


def test_repeat_step():
    base = {"repeat": [sql("a")], "until": "SELECT true", "max_iterations": 3}
    assert ok(steps(base))["steps"][0] == {
        **base,
        "repeat": [sql("a", params=[])],
        "params": [],
    }
    assert ok(steps({**base, "max_iterations": 3.0}))["steps"][0]["max_iterations"] == 3
    assert ok(steps({**base, "max_iterations": 100000}))
    for missing in ("until", "max_iterations"):
        step = {k: v for k, v in base.items() if k != missing}
        rejects(steps(step), "steps[0]", f'a repeat step needs "{missing}"')
    assert (
        ok(steps({**base, "max_iterations": Decimal("7")}))["steps"][0][
            "max_iterations"
        ]
        == 7
    )
    for bound in (0, 100001, 2.5, Decimal("2.5"), Decimal("sNaN"), True, "10", None):
        rejects(
            steps({**base, "name": "loop", "max_iterations": bound}),
            'step "loop"',
            '"max_iterations" must be a whole number from 1 to 100000',
        )
    rejects(steps({**base, "repeat": []}), "steps[0]", '"repeat" must be a non-empty')
    rejects(steps({**base, "until": 5}), "steps[0]", '"until" must be SQL text')


def test_nesting_depth_is_bounded():
    inner: list = [sql("leaf")]
    for _ in range(40):
        inner = [{"if": "SELECT true", "then": inner}]
    rejects({"steps": inner}, "nested more than 32 levels")


# ---------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "a step name must be non-empty text"),
        (3, "a step name must be non-empty text, not 3"),
        (["a"], "a step name must be non-empty text"),
        ("a.b", 'step name "a.b" must not contain'),
        ("a[0]", 'step name "a[0]" must not contain'),
        ("x]", 'step name "x]" must not contain'),
    ],
)
def test_bad_names(name, fragment):
    rejects(steps(sql("first"), sql(name)), "steps[1]", fragment)
    rejects(steps({"sleep": 1, "name": name}), "steps[0]", fragment)


def test_names_may_hold_other_characters():
    definition = steps(sql("with space"), sql('quote"d', params=["steps.with space"]))
    assert ok(definition)


@pytest.mark.parametrize(
    "definition",
    [
        steps(sql("a"), sql("a")),
        steps(sql("a"), {"parallel": [[sql("b")], [sql("a")]]}),
        steps({"parallel": [[sql("a")], [sql("a")]]}),
        steps(
            {"repeat": [sql("a"), sql("a")], "until": "SELECT 1", "max_iterations": 2}
        ),
        steps({"if": "SELECT 1", "then": [sql("a")], "else": [sql("a")]}),
        steps({"name": "a", "sleep": 1}, sql("a")),
        steps({"name": "a", "parallel": [[sql("a")], [sql("b")]]}),
    ],
)
def test_duplicate_names_rejected_everywhere(definition):
    rejects(definition, 'step "a"', 'duplicate step name "a", also used by steps[')


# ---------------------------------------------------------------------- params


def test_params_canonical_form():
    canonical = ok(
        steps(
            sql("a"),
            sql(
                "b",
                "SELECT $1, $2, $3, $4, $5, $6",
                params=["steps.a[0].id", 1, 2.5, True, None, {"value": [1, "x"]}],
            ),
        )
    )
    assert canonical["steps"][1]["params"] == [
        "steps.a[0].id",
        {"value": 1},
        {"value": 2.5},
        {"value": True},
        {"value": None},
        {"value": [1, "x"]},
    ]


@pytest.mark.parametrize(
    ("param", "fragment"),
    [
        ("hello", 'params[0] "hello" is not a valid path'),
        ("steps", 'params[0] "steps" is not a valid path'),
        ("input..a", "a field name must follow the dot"),
        ("steps.a[", "expected [<index>]"),
        (["x"], 'params[0] ["x"] is neither a path nor a literal'),
        ({"val": 1}, "is neither a path nor a literal"),
        ({"value": 1, "type": "int"}, "is neither a path nor a literal"),
        ({"value": float("inf")}, "params[0] is not a JSON value"),
        (float("nan"), "params[0] is not a JSON value"),
        ({"value": {"k": object()}}, "params[0] is not a JSON value"),
    ],
)
def test_bad_params(param, fragment):
    error = rejects(steps(sql("a", params=[param])), 'step "a"', fragment)
    assert "{" + '"value": ...}' in error.hint or "JSON" in error.hint


def test_params_must_be_a_list():
    rejects(steps(sql("a", params="input")), 'step "a"', '"params" must be a list')
    assert ok(steps(sql("a", params=None)))["steps"][0]["params"] == []


# ----------------------------------------------------------------- references


def test_reference_to_an_earlier_step():
    assert ok(steps(sql("a"), sql("b", params=["steps.a"])))


def test_reference_to_a_later_step():
    rejects(
        steps(sql("a", params=["steps.b[0].id"]), sql("b")),
        'step "a"',
        'params[0] "steps.b[0].id" refers to step "b", which does not run before',
    )


def test_reference_to_itself():
    rejects(
        steps(sql("a", params=["steps.a"])), 'step "a"', "refers to the step itself"
    )


def test_reference_to_an_unknown_step():
    error = rejects(
        steps(sql("batch"), sql("a", params=["steps.bacth"])),
        'step "a"',
        'refers to unknown step "bacth"',
    )
    assert "Did you mean batch?" in error.hint


def test_branch_steps_are_visible_after_the_branches_only():
    parallel = {"parallel": [[sql("a")], [sql("b"), sql("c", params=["steps.b"])]]}
    assert ok(steps(parallel, sql("d", params=["steps.a", "steps.c"])))
    sibling = {"race": [[sql("a")], [sql("b", params=["steps.a"])]]}
    rejects(steps(sibling), 'step "b"', 'refers to step "a", which does not run')


def test_if_branches_are_visible_after_the_if():
    branching = {
        "name": "check",
        "if": "SELECT $1",
        "params": ["steps.a.length"],
        "then": [sql("t")],
        "else": [sql("e", params=["steps.a"])],
    }
    assert ok(steps(sql("a"), branching, sql("z", params=["steps.t", "steps.e"])))
    bad = copy.deepcopy(branching)
    bad["else"][0]["params"] = ["steps.t"]
    rejects(steps(sql("a"), bad), 'step "e"', 'refers to step "t"')
    bad = copy.deepcopy(branching)
    bad["params"] = ["steps.t"]
    rejects(steps(sql("a"), bad), 'step "check"', 'refers to step "t"')
    bad = copy.deepcopy(branching)
    bad["params"] = ["steps.check"]
    rejects(steps(sql("a"), bad), 'step "check"', "refers to the step itself")
    bad = copy.deepcopy(branching)
    bad["then"][0]["params"] = ["steps.check"]
    rejects(steps(sql("a"), bad), 'step "t"', 'refers to step "check"')


def test_loop_references():
    loop = {
        "name": "loop",
        "repeat": [sql("x"), sql("y", params=["steps.x"])],
        "until": "SELECT $1 > 3",
        "params": ["steps.y.length"],
        "max_iterations": 5,
    }
    assert ok(steps(loop, sql("after", params=["steps.y", "steps.loop.iterations"])))
    bad = copy.deepcopy(loop)
    bad["repeat"][0]["params"] = ["steps.y"]
    rejects(steps(bad), 'step "x"', 'refers to step "y", which does not run before')
    bad = copy.deepcopy(loop)
    bad["params"] = ["steps.loop"]
    rejects(steps(bad), 'step "loop"', "refers to the step itself")


def test_input_references_are_always_allowed():
    assert ok(steps(sql("a", params=["input", "input.a.b", "input.items[0]"])))


# ------------------------------------------------------------------ check_sql


class SqlChecker:
    def __init__(self, bad: str = "SYNTAX", name_in_message: bool = False):
        self.calls: list[tuple[str, str]] = []
        self.bad = bad
        self.name_in_message = name_in_message

    def __call__(self, label: str, text: str) -> None:
        self.calls.append((label, text))
        if self.bad in text:
            where = f"{label}: " if self.name_in_message else ""
            raise DurableError(
                f'{where}syntax error at or near "{self.bad}"',
                sqlstate="42601",
                hint="Check the SQL.",
            )


def test_check_sql_sees_every_sql_text():
    checker = SqlChecker()
    definition = steps(
        sql("a", "SELECT 1"),
        {"if": "SELECT 2", "then": [sql("b", "SELECT 3")]},
        {
            "name": "loop",
            "repeat": [{"sleep": 1}],
            "until": "SELECT 4",
            "max_iterations": 1,
        },
        {"repeat": [{"sleep": 1}], "until": "SELECT 5", "max_iterations": 1},
        {"name": "c", "if": "SELECT 6", "then": []},
    )
    ok(definition, checker)
    assert checker.calls == [
        ('step "a"', "SELECT 1"),
        ("steps[1] (if)", "SELECT 2"),
        ('step "b"', "SELECT 3"),
        ('step "loop" (until)', "SELECT 4"),
        ("steps[3] (until)", "SELECT 5"),
        ('step "c" (if)', "SELECT 6"),
    ]


def test_check_sql_error_gets_the_step_name():
    error = rejects(
        steps(sql("a"), sql("b", "SELEC SYNTAX")),
        'workflow app.flow: step "b": syntax error at or near "SYNTAX"',
        sqlstate="42601",
        check_sql=SqlChecker(),
    )
    assert error.hint == "Check the SQL."
    rejects(
        steps({"if": "SYNTAX", "then": []}),
        "steps[0] (if): syntax error",
        sqlstate="42601",
        check_sql=SqlChecker(),
    )


def test_check_sql_error_with_a_short_step_name():
    error = rejects(steps(sql("a", "SYNTAX")), sqlstate="42601", check_sql=SqlChecker())
    assert str(error) == 'workflow app.flow: step "a": syntax error at or near "SYNTAX"'


def test_check_sql_error_that_names_the_step_is_kept():
    error = rejects(
        steps(sql("b", "SYNTAX")),
        sqlstate="42601",
        check_sql=SqlChecker(name_in_message=True),
    )
    assert str(error) == 'workflow app.flow: step "b": syntax error at or near "SYNTAX"'


def test_check_sql_runs_after_the_other_checks():
    checker = SqlChecker()
    rejects(steps(sql("a", "SYNTAX"), sql("a")), "duplicate", check_sql=checker)
    assert checker.calls == []


# ------------------------------------------------------------ canonical form

EXAMPLE = {
    "steps": [
        {
            "name": "batch",
            "sql": "SELECT id FROM app.jobs WHERE NOT done LIMIT $1",
            "params": ["input.size"],
        },
        {
            "sql": "UPDATE app.jobs SET done = true WHERE id = ANY($1)",
            "name": "work",
            "params": ["steps.batch[*].id"],
            "retry": {"max_attempts": 5},
            "timeout": "30 seconds",
        },
        {"parallel": [[sql("a", "SELECT 1")], [sql("b", "SELECT 2")]]},
        {"race": [[sql("c", "SELECT 3")], [{"sleep": 1}, sql("d", "SELECT 4")]]},
        {"sleep": "10 minutes"},
        {"name": "approval", "wait_for_signal": "approve", "timeout": "1 day"},
        {
            "if": "SELECT $1::int > 0",
            "params": ["steps.batch.length"],
            "then": [sql("more", "SELECT $1", params=[7])],
        },
        {"name": "child", "workflow": "app.other", "input": {"from": "steps.batch"}},
        {
            "repeat": [sql("tick", "UPDATE app.jobs SET done = true")],
            "until": "SELECT NOT EXISTS (SELECT 1 FROM app.jobs WHERE NOT done)",
            "max_iterations": 1000,
        },
    ]
}


def test_canonical_form():
    original = copy.deepcopy(EXAMPLE)
    canonical = ok(EXAMPLE)
    assert original == EXAMPLE  # not mutated
    assert canonical["steps"][1] == {
        "name": "work",
        "sql": "UPDATE app.jobs SET done = true WHERE id = ANY($1)",
        "params": ["steps.batch[*].id"],
        "retry": {"max_attempts": 5},
        "timeout": "30 seconds",
    }
    assert list(canonical["steps"][1]) == ["name", "sql", "params", "retry", "timeout"]
    assert canonical["steps"][2]["parallel"][0] == [sql("a", "SELECT 1", params=[])]
    assert canonical["steps"][6] == {
        "if": "SELECT $1::int > 0",
        "params": ["steps.batch.length"],
        "then": [sql("more", "SELECT $1", params=[{"value": 7}])],
        "else": [],
    }
    assert canonical["steps"][8]["params"] == []
    assert json.loads(json.dumps(canonical)) == canonical
    assert ok(canonical) == canonical
    canonical["steps"][0]["params"].append("input")
    assert original == EXAMPLE  # a new dict, sharing nothing


# ---------------------------------------------------------------------- paths

CONTEXT = {
    "input": {"size": 3, "items": [{"id": 7}, {"id": 8}], "a": {"b": "deep"}},
    "steps": {
        "batch": [{"id": 1, "length": "L"}, {"id": 2}, {"name": "no id"}],
        "obj": {"x": 1, "y": {"z": [10, 20]}, "a.b": "dotted"},
        "nothing": None,
        "scalar": 5,
    },
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("input", CONTEXT["input"]),
        ("input.size", 3),
        ("input.a.b", "deep"),
        ("input.items[0]", {"id": 7}),
        ("input.items[1].id", 8),
        ("input.items[-1].id", 8),
        ("input.items[*].id", [7, 8]),
        ("input.items.length", 2),
        ("input.length", 3),
        ("steps.batch", CONTEXT["steps"]["batch"]),
        ("steps.batch[0].id", 1),
        ("steps.batch[*].id", [1, 2, None]),
        ("steps.batch.length", 3),
        ("steps.batch[0].length", 2),
        ('steps.batch[0]["length"]', "L"),
        ("steps.batch[*].length", [2, 1, 1]),
        ("steps.obj.y.z[1]", 20),
        ("steps.obj.y.z[*]", [10, 20]),
        ('steps.obj["a.b"]', "dotted"),
        ("steps.obj.length", 3),
        # missing things are null
        ("input.missing", None),
        ("input.missing.deeper[0]", None),
        ("input.items[2]", None),
        ("input.items[-3]", None),
        ("steps.batch[5].id", None),
        ("steps.unknown", None),
        ("steps.unknown[*].id", None),
        ("steps.nothing.length", None),
        ("steps.scalar.length", None),
        ("steps.scalar[0]", None),
        ("steps.scalar.x", None),
        ("steps.obj[*]", None),
        ("steps.obj[0]", None),
        ("steps.batch.id", None),
    ],
)
def test_resolve(path, value):
    assert definitions.resolve(path, CONTEXT) == value


def test_resolve_in_odd_contexts():
    assert definitions.resolve("steps.a", {}) is None
    assert definitions.resolve("steps.a", {"steps": None}) is None
    assert definitions.resolve("input", None) is None
    assert definitions.resolve("input", {"input": [1]}) == [1]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "inputs",
        "input x",
        "steps",
        "steps.",
        "steps.[0]",
        "step.a",
        "input.",
        "input..a",
        "input.a.",
        "input[",
        "input[]",
        "input[01]",
        "input[-0]",
        "input[1.5]",
        "input[a]",
        "input[**]",
        'input["a"',
        'input["a]',
        "input]",
        "input.a]",
        " input",
    ],
)
def test_invalid_paths(path):
    with pytest.raises(DurableError) as caught:
        definitions.resolve(path, CONTEXT)
    assert caught.value.sqlstate == "22023"
    assert "invalid path" in str(caught.value)
    assert caught.value.hint
    rejects(steps(sql("a", params=[path])), 'step "a"', "is not a valid path")


def test_resolve_rejects_non_text():
    with pytest.raises(DurableError, match="expected text"):
        definitions.resolve(3, CONTEXT)  # type: ignore[arg-type]


# --------------------------------------------------------------------- branch

NESTED = steps(
    sql("a"),
    {
        "parallel": [
            [sql("b")],
            [
                {
                    "if": "SELECT 1",
                    "then": [{"race": [[sql("c")], [sql("d")]]}],
                    "else": [sql("e")],
                }
            ],
        ]
    },
    {"repeat": [sql("f")], "until": "SELECT 1", "max_iterations": 2},
)


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("1.parallel.0", ["b"]),
        ("1.parallel.1.0.then.0.race.1", ["d"]),
        ("1.parallel.1.0.else", ["e"]),
        ("2.repeat", ["f"]),
    ],
)
def test_branch(path, names):
    assert [s.get("name") for s in definitions.branch(NESTED, path)] == names


@pytest.mark.parametrize(
    "path",
    [
        "",
        "0",
        "1",
        "1.parallel",
        "1.parallel.2",
        "1.race.0",
        "9.parallel.0",
        "a.b",
        "1.parallel.0.0",
        "1.parallel.x",
        "2.until",
        "1.parallel.\u00b2",
        None,
    ],
)
def test_branch_errors(path):
    with pytest.raises(DurableError) as caught:
        definitions.branch(NESTED, path, workflow=WF)
    assert f"workflow {WF}" in str(caught.value)
    assert caught.value.sqlstate == "22023"
    assert caught.value.hint


# ------------------------------------------------------------------- execute


def jsonb_order(value: Any) -> Any:
    """A value as jsonb gives it back: object keys by length, then bytes."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {key: jsonb_order(value[key]) for key in keys}
    if isinstance(value, list):
        return [jsonb_order(item) for item in value]
    return value


def canned_rows(name: str, text: str, params: list) -> Any:
    """Rows for the fake: conditions tagged in their SQL, else two rows."""
    if text.startswith("SELECT cond"):
        return [{"ok": zlib.crc32(name.encode()) % 2 == 0}]
    if text.startswith("SELECT until"):
        return [{"done": int(name.rsplit("#", 1)[1]) >= 2}]
    return [{"step": name, "id": 1, "params": params}, {"step": name, "id": 2}]


class FakeWf:
    """Records durable calls; parallel and race run the branches as children."""

    def __init__(
        self,
        definition: dict,
        *,
        workflow: str = WF,
        rows: Callable[[str, str, list], Any] = canned_rows,
        signals: dict | None = None,
        children: dict | None = None,
        winner: int = 0,
        replay: bool = False,
    ):
        self.definition = definition
        self.workflow = workflow
        self.rows = rows
        self.signals = signals or {}
        self.children = children or {}
        self.winner = winner
        self.replay = replay
        self.calls: list[tuple] = []
        self.branch_runs: list[tuple[dict, FakeWf]] = []
        self.started: dict[str, str] = {}

    def spawn(self) -> FakeWf:
        return FakeWf(
            self.definition,
            workflow=self.workflow,
            rows=self.rows,
            signals=self.signals,
            children=self.children,
            winner=self.winner,
            replay=self.replay,
        )

    def out(self, value: Any) -> Any:
        """Return values go through JSON (and jsonb key order on replay)."""
        value = json.loads(json.dumps(value))
        return jsonb_order(value) if self.replay else value

    def step(self, name, action, params=None, *, retry=None, timeout=None):
        assert isinstance(name, str) and name
        json.dumps(params)
        self.calls.append(("step", name, action, params, retry, timeout))
        return self.out(self.rows(name, action, params))

    def sleep(self, duration):
        self.calls.append(("sleep", duration))

    def wait_for_signal(self, name, timeout=None):
        self.calls.append(("wait_for_signal", name, timeout))
        return self.out(self.signals.get(name))

    def start_child(self, workflow, input=None):
        json.dumps(input)
        run_id = f"run-{len(self.started) + 1}"
        self.started[run_id] = workflow
        self.calls.append(("start_child", workflow, input))
        return run_id

    def wait(self, run_id, timeout=None):
        self.calls.append(("wait", run_id, timeout))
        return self.out(self.children.get(self.started[run_id]))

    def run_branch(self, call: tuple) -> Any:
        workflow, child_input = call
        assert workflow == self.workflow
        child_input = json.loads(json.dumps(child_input))  # as stored by start
        child = self.spawn()
        result = definitions.execute(child, self.definition, child_input)
        self.branch_runs.append((child_input, child))
        return self.out(result)

    def parallel(self, calls):
        self.calls.append(("parallel", [c[1]["__branch__"] for c in calls]))
        return [self.run_branch(call) for call in calls]

    def race(self, calls):
        self.calls.append(("race", [c[1]["__branch__"] for c in calls]))
        results = [self.run_branch(call) for call in calls]
        return self.winner, results[self.winner]

    def trace(self) -> list:
        """Every call of this run and its branch runs, in order."""
        nested = [child.trace() for _, child in self.branch_runs]
        return [call[:2] for call in self.calls] + nested


def run(definition: dict, run_input: Any = None, **options: Any):
    canonical = ok(definition)
    wf = FakeWf(canonical, **options)
    return definitions.execute(wf, canonical, run_input), wf


def test_execute_sql_steps():
    definition = steps(
        sql("a", "SELECT $1, $2", params=["input.n", 5], retry={"max_attempts": 2}),
        sql("b", "SELECT $1", params=["steps.a[*].id"], timeout="5 s"),
    )
    result, wf = run(definition, {"n": 4})
    assert wf.calls == [
        ("step", "a", "SELECT $1, $2", [4, 5], {"max_attempts": 2}, None),
        ("step", "b", "SELECT $1", [[1, 2]], None, "5 s"),
    ]
    assert result["a"] == canned_rows("a", "SELECT $1, $2", [4, 5])
    assert list(result) == ["a", "b"]


def test_execute_sleep_signal_and_child():
    definition = steps(
        {"name": "nap", "sleep": "10 minutes"},
        {"sleep": 2},
        {"name": "ok", "wait_for_signal": "approve", "timeout": "1 day"},
        {"name": "late", "wait_for_signal": "never"},
        sql("a"),
        {
            "name": "kid",
            "workflow": "app.kid",
            "input": {
                "rows": "steps.a[*].id",
                "who": "input.who",
                "approved": "steps.ok.yes",
                "text": "plain",
                "literal": {"value": "steps.a"},
                "list": ["input", 1, None],
            },
            "timeout": 60,
        },
    )
    result, wf = run(
        definition,
        {"who": "ada"},
        signals={"approve": {"yes": True}},
        children={"app.kid": {"done": 1}},
    )
    assert wf.calls == [
        ("sleep", "10 minutes"),
        ("sleep", 2),
        ("wait_for_signal", "approve", "1 day"),
        ("wait_for_signal", "never", None),
        ("step", "a", "SELECT 1", [], None, None),
        (
            "start_child",
            "app.kid",
            {
                "rows": [1, 2],
                "who": "ada",
                "approved": True,
                "text": "plain",
                "literal": "steps.a",
                "list": [{"who": "ada"}, 1, None],
            },
        ),
        ("wait", "run-1", 60),
    ]
    assert result["nap"] is None
    assert result["ok"] == {"yes": True}
    assert result["late"] is None
    assert result["kid"] == {"done": 1}


def test_execute_child_without_input():
    _, wf = run(steps({"name": "kid", "workflow": "app.kid"}))
    assert wf.calls[0] == ("start_child", "app.kid", None)


def condition(value: Any) -> Callable:
    def rows(name, text, params):
        if text.startswith("SELECT cond"):
            return value
        return [{"id": 1}]

    return rows


@pytest.mark.parametrize(
    ("rows", "branch"),
    [
        ([{"c": True}], "then"),
        ([{"c": False}], "else"),
        ([{"c": None}], "else"),
        ([], "else"),
        ([{"c": 3}], "then"),
        ([{"c": 0}], "else"),
        ([{"c": True}, {"c": False}], "then"),
    ],
)
def test_execute_if(rows, branch):
    definition = steps(
        sql("a"),
        {
            "if": "SELECT cond $1",
            "params": ["steps.a.length"],
            "then": [sql("t")],
            "else": [sql("e")],
        },
        sql("z", params=["steps.t[0].id", "steps.e[0].id"]),
    )
    result, wf = run(definition, rows=condition(rows))
    assert wf.calls[1] == ("step", "if@1", "SELECT cond $1", [1], None, None)
    taken = "t" if branch == "then" else "e"
    assert wf.calls[2][1] == taken
    assert wf.calls[3][3] == ([1, None] if taken == "t" else [None, 1])
    assert taken in result and ({"t", "e"} - {taken}).isdisjoint(result)


def test_execute_named_and_nested_if_labels():
    definition = steps(
        {
            "parallel": [
                [{"sleep": 1}],
                [
                    {"name": "check", "if": "SELECT cond", "then": [sql("inner")]},
                    {"if": "SELECT cond", "then": []},
                ],
            ]
        },
    )
    result, wf = run(definition, rows=condition([{"c": True}]))
    child = wf.branch_runs[1][1]
    assert [c[1] for c in child.calls] == ["check", "inner", "if@0.parallel.1.1"]
    assert result == {"inner": [{"id": 1}], "check": True}


def test_execute_if_condition_with_two_columns_fails():
    definition = steps({"name": "check", "if": "SELECT cond", "then": []})
    with pytest.raises(DurableError) as caught:
        run(definition, rows=condition([{"a": True, "b": False}]))
    assert 'step "check"' in str(caught.value)
    assert "returned 2 columns" in str(caught.value)
    assert caught.value.hint


def until_after(iterations: int) -> Callable:
    def rows(name, text, params):
        if text.startswith("SELECT until"):
            return [{"done": int(name.rsplit("#", 1)[1]) >= iterations}]
        return [{"id": 1, "params": params}]

    return rows


def test_execute_repeat():
    definition = steps(
        {
            "name": "loop",
            "repeat": [sql("x", params=[{"value": 1}]), {"sleep": 1}],
            "until": "SELECT until $1",
            "params": ["steps.x[0].id"],
            "max_iterations": 5,
        },
        sql("after", params=["steps.loop.iterations"]),
    )
    result, wf = run(definition, rows=until_after(3))
    assert [c[:2] for c in wf.calls] == [
        ("step", "x"),
        ("sleep", 1),
        ("step", "loop#1"),
        ("step", "x"),
        ("sleep", 1),
        ("step", "loop#2"),
        ("step", "x"),
        ("sleep", 1),
        ("step", "loop#3"),
        ("step", "after"),
    ]
    assert wf.calls[2][3] == [1]
    assert wf.calls[-1][3] == [3]
    assert result["loop"] == {"iterations": 3}


def test_loop_body_output_is_the_latest_iteration():
    counter = itertools.count(1)

    def rows(name, text, params):
        if text.startswith("SELECT until"):
            return until_after(2)(name, text, params)
        return [{"call": next(counter)}]

    definition = steps(
        {"repeat": [sql("x")], "until": "SELECT until", "max_iterations": 5}
    )
    result, _ = run(definition, rows=rows)
    assert result == {"x": [{"call": 2}]}


def test_execute_unnamed_repeat_labels():
    definition = steps(
        sql("a"),
        {"repeat": [sql("x")], "until": "SELECT until", "max_iterations": 9},
    )
    _, wf = run(definition, rows=until_after(2))
    assert [c[1] for c in wf.calls] == ["a", "x", "until@1#1", "x", "until@1#2"]


def test_execute_repeat_reaching_max_iterations_fails():
    definition = steps(
        {"repeat": [sql("x")], "until": "SELECT until", "max_iterations": 2}
    )
    with pytest.raises(DurableError) as caught:
        run(definition, rows=until_after(3))
    message = str(caught.value)
    assert "workflow app.flow: repeat steps[0] reached max_iterations (2)" in message
    assert caught.value.hint


def test_execute_parallel_runs_branches_as_children():
    definition = steps(
        sql("a"),
        sql("unused"),
        {
            "name": "both",
            "parallel": [
                [sql("b", params=["steps.a[0].id"])],
                [sql("c", params=["input.n"]), sql("d", params=["steps.c.length"])],
            ],
        },
        sql("z", params=["steps.b[0].id", "steps.d[0].id"]),
    )
    result, wf = run(definition, {"n": 7})
    assert wf.calls[2] == ("parallel", ["2.parallel.0", "2.parallel.1"])
    inputs = [child_input for child_input, _ in wf.branch_runs]
    assert inputs[0] == {
        "__branch__": "2.parallel.0",
        "context": {"input": None, "steps": {"a": result["a"]}},
    }
    assert inputs[1] == {
        "__branch__": "2.parallel.1",
        "context": {"input": {"n": 7}, "steps": {}},
    }
    children = [child for _, child in wf.branch_runs]
    assert children[0].calls == [("step", "b", "SELECT 1", [1], None, None)]
    assert [c[3] for c in children[1].calls] == [[7], [2]]
    assert wf.calls[3] == ("step", "z", "SELECT 1", [1, 1], None, None)
    assert list(result) == ["a", "unused", "b", "c", "d", "both", "z"]
    assert result["both"] == [{"b": result["b"]}, {"c": result["c"], "d": result["d"]}]


def test_execute_branch_input_directly():
    canonical = ok(NESTED)
    wf = FakeWf(canonical)
    branch_input = {
        "__branch__": "1.parallel.0",
        "context": {"input": None, "steps": {"a": [{"id": 5}]}},
    }
    result = definitions.execute(wf, canonical, branch_input)
    assert result == {"b": canned_rows("b", "SELECT 1", [])}
    assert wf.calls == [("step", "b", "SELECT 1", [], None, None)]


def test_execute_bad_branch_input():
    canonical = ok(NESTED)
    with pytest.raises(DurableError, match="no branch"):
        definitions.execute(FakeWf(canonical), canonical, {"__branch__": "7.race.0"})


@pytest.mark.parametrize("winner", [0, 1])
def test_execute_race_keeps_the_winner_only(winner):
    definition = steps(
        {"name": "r", "race": [[sql("fast")], [sql("slow"), sql("slower")]]},
        sql("z", params=["steps.fast.length", "steps.slower.length"]),
    )
    result, wf = run(definition, winner=winner)
    assert wf.calls[0] == ("race", ["0.race.0", "0.race.1"])
    won = ["fast"] if winner == 0 else ["slow", "slower"]
    assert [k for k in result if k not in ("r", "z")] == won
    assert result["r"] == {"winner": winner, "result": {k: result[k] for k in won}}
    assert wf.calls[1][3] == ([2, None] if winner == 0 else [None, 2])


def test_execute_nested_branches():
    _, wf = run(NESTED, rows=condition([{"c": True}]))
    assert wf.calls[1] == ("parallel", ["1.parallel.0", "1.parallel.1"])
    second = wf.branch_runs[1][1]
    assert second.calls[0][1] == "if@1.parallel.1.0"
    assert second.calls[1] == (
        "race",
        ["1.parallel.1.0.then.0.race.0", "1.parallel.1.0.then.0.race.1"],
    )


def test_execute_the_example():
    canonical = ok(EXAMPLE)
    wf = FakeWf(
        canonical, rows=condition([{"c": True}]), children={"app.other": {"ok": 1}}
    )
    rows_rule = canned_rows
    wf.rows = lambda name, text, params: (
        [{"done": True}]
        if text.startswith("SELECT NOT EXISTS")
        else [{"positive": True}]
        if text.startswith("SELECT $1::int")
        else rows_rule(name, text, params)
    )
    result = definitions.execute(wf, canonical, {"size": 2})
    assert [c[:2] for c in wf.calls] == [
        ("step", "batch"),
        ("step", "work"),
        ("parallel", ["2.parallel.0", "2.parallel.1"]),
        ("race", ["3.race.0", "3.race.1"]),
        ("sleep", "10 minutes"),
        ("wait_for_signal", "approve"),
        ("step", "if@6"),
        ("step", "more"),
        ("start_child", "app.other"),
        ("wait", "run-1"),
        ("step", "tick"),
        ("step", "until@8#1"),
    ]
    assert wf.calls[0][3] == [2]
    assert wf.calls[1][3] == [[1, 2]]
    assert wf.calls[6][3] == [2]
    assert wf.calls[8][2] == {"from": result["batch"]}
    assert set(result) == {
        "batch",
        "work",
        "a",
        "b",
        "c",
        "more",
        "approval",
        "child",
        "tick",
    }


# ----------------------------------------------------- random definitions

SIMPLE_KINDS = ("sql", "sql", "sleep", "wait_for_signal", "workflow")
NESTED_KINDS = ("if", "parallel", "race", "repeat")
SUFFIXES = ("", ".length", "[0]", "[0].id", "[*].id", "[-1]", '["odd key"]')
INPUT_PATHS = ("input", "input.size", "input.items[0]", "input.items[*].id")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-9, 9) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2)
    | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)


@st.composite
def valid_definitions(draw: Callable, max_depth: int = 3) -> dict:
    """Random valid definitions, nested up to ``max_depth`` levels."""
    counter = itertools.count()

    def fresh() -> str:
        return f"s{next(counter)}"

    def path(visible: set[str]) -> Any:
        choices = [st.sampled_from(INPUT_PATHS)]
        if visible:
            choices.append(
                st.builds(
                    "steps.{}{}".format,
                    st.sampled_from(sorted(visible)),
                    st.sampled_from(SUFFIXES),
                )
            )
        return draw(st.one_of(*choices))

    def params(visible: set[str]) -> list:
        literal = st.one_of(
            st.builds(lambda v: {"value": v}, JSON_VALUES),
            st.integers(-3, 3),
            st.booleans(),
            st.none(),
        )
        return [
            path(visible) if draw(st.booleans()) else draw(literal)
            for _ in range(draw(st.integers(0, 2)))
        ]

    def maybe_name(item: dict) -> dict:
        return {"name": fresh(), **item} if draw(st.booleans()) else item

    def sequence(visible: set[str], depth: int) -> tuple[list, set[str]]:
        local = set(visible)
        items = []
        for _ in range(draw(st.integers(1, 3 if depth == 0 else 2))):
            kinds = SIMPLE_KINDS + (NESTED_KINDS if depth < max_depth else ())
            item, defined = make(draw(st.sampled_from(kinds)), local, depth)
            items.append(item)
            local |= defined
        return items, local - visible

    def make(kind: str, visible: set[str], depth: int) -> tuple[dict, set[str]]:
        if kind == "sql":
            item = {"name": fresh(), "sql": "SELECT 1", "params": params(visible)}
            if draw(st.booleans()):
                item["retry"] = {"max_attempts": draw(st.integers(1, 5))}
            if draw(st.booleans()):
                item["timeout"] = draw(st.sampled_from([1, 2.5, "30 seconds"]))
            return item, {item["name"]}
        if kind == "sleep":
            item = maybe_name({"sleep": draw(st.sampled_from([0, 1, "1 minute"]))})
            return item, {item["name"]} if "name" in item else set()
        if kind == "wait_for_signal":
            item = {"name": fresh(), "wait_for_signal": draw(st.sampled_from("ab"))}
            return item, {item["name"]}
        if kind == "workflow":
            item = {"name": fresh(), "workflow": "app.child"}
            if draw(st.booleans()):
                item["input"] = {"p": path(visible), "lit": draw(JSON_VALUES)}
            return item, {item["name"]}
        name = fresh() if draw(st.booleans()) else None
        if kind == "if":
            then, defined = sequence(visible, depth + 1)
            item = {"if": "SELECT cond", "params": params(visible), "then": then}
            if draw(st.booleans()):
                item["else"], other = sequence(visible, depth + 1)
                defined |= other
        elif kind in ("parallel", "race"):
            item, defined = {kind: []}, set()
            for _ in range(draw(st.integers(2, 3 if depth == 0 else 2))):
                branch, names = sequence(visible, depth + 1)
                item[kind].append(branch)
                defined |= names
        else:
            body, defined = sequence(visible, depth + 1)
            item = {
                "repeat": body,
                "until": "SELECT until",
                "params": params(visible | defined),
                "max_iterations": draw(st.integers(2, 4)),
            }
        if name is not None:
            item = {"name": name, **item}
            defined = defined | {name}
        return item, defined

    items, _ = sequence(set(), 0)
    return {"steps": items}


def all_steps(items: list) -> list[tuple[list, int]]:
    """(list, index) of every step, in document order."""
    found = []
    for i, item in enumerate(items):
        found.append((items, i))
        for _, nested in definitions._children(item):
            found.extend(all_steps(nested))
    return found


REQUIRED = {
    "sql": ("sql", "name"),
    "sleep": ("sleep",),
    "wait_for_signal": ("wait_for_signal", "name"),
    "workflow": ("workflow", "name"),
    "if": ("if", "then"),
    "parallel": ("parallel",),
    "race": ("race",),
    "repeat": ("repeat", "until", "max_iterations"),
}
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(valid_definitions())
def test_random_definitions_are_valid_and_canonical(definition):
    original = copy.deepcopy(definition)
    canonical = ok(definition, SqlChecker())
    assert definition == original
    assert json.loads(json.dumps(canonical)) == canonical
    assert ok(canonical) == canonical
    assert ok(json.loads(json.dumps(canonical))) == canonical


@FAST
@given(valid_definitions(), st.data())
def test_random_mutations_are_rejected(definition, data):
    definition = copy.deepcopy(definition)
    located = all_steps(definition["steps"])
    named = [items[i]["name"] for items, i in located if "name" in items[i]]
    mutation = data.draw(
        st.sampled_from(["drop", "unknown", "duplicate", "later", "itself"])
    )
    items, i = data.draw(st.sampled_from(located))
    item = items[i]
    kind = definitions._kind(item)
    if mutation == "drop":
        del item[data.draw(st.sampled_from(REQUIRED[kind]))]
        rejects(definition)
    elif mutation == "unknown":
        item["bogus"] = 1
        rejects(definition, 'unknown key "bogus"', f"in a {kind} step")
    elif mutation == "duplicate" and len(named) >= 1:
        other = data.draw(st.sampled_from(named))
        if item.get("name") == other:
            item = {"name": other, "sleep": 1}
            items.insert(i + 1, item)
        item["name"] = other
        rejects(definition)
    elif mutation == "itself" and kind == "sql":
        item["params"].append(f"steps.{item['name']}")
        rejects(definition, f'step "{item["name"]}"', "refers to the step itself")
    elif named:
        target = data.draw(st.sampled_from(named))
        definition["steps"].insert(0, sql("first", params=[f"steps.{target}[0]"]))
        rejects(definition, 'step "first"', f'step "{target}", which does not run')


@FAST
@given(valid_definitions())
def test_execution_replays_identically(definition):
    canonical = ok(definition)
    first = FakeWf(canonical)
    result = definitions.execute(first, canonical, {"size": 2, "items": [{"id": 1}]})
    second = FakeWf(canonical, replay=True)  # recorded outputs in jsonb key order
    again = definitions.execute(second, canonical, {"size": 2, "items": [{"id": 1}]})
    assert first.trace() == second.trace()
    assert [c[:2] for c in first.calls] == [c[:2] for c in second.calls]
    assert jsonb_order(result) == jsonb_order(again)
    json.dumps(result)


# ---------------------------------------------------------------------- graph

SMALL = {
    "steps": [
        {"name": "load", "sql": "SELECT * FROM app.jobs"},
        {
            "name": 'say "hi"',
            "if": "SELECT $1 > 0 AND 'a' <> '#b'",
            "params": ["steps.load.length"],
            "then": [{"name": "ship", "sql": "SELECT 1"}],
        },
        {"parallel": [[{"sleep": 60}], [{"name": "w", "wait_for_signal": "go|now"}]]},
        {
            "repeat": [{"name": "kid", "workflow": "app.<kid>"}],
            "until": "SELECT\n  `done`",
            "max_iterations": 3,
        },
    ]
}
SMALL_GRAPH = """\
flowchart TD
    begin(["app.flow"])
    n0["load"]
    begin --> n0
    n1{"say #quot;hi#quot;: if SELECT $1 #gt; 0 AND 'a' #lt;#gt; '#35;b'"}
    n0 --> n1
    n1_then_0["ship"]
    n1 -->|"then"| n1_then_0
    n2{{"parallel"}}
    n1_then_0 --> n2
    n1 -->|"else"| n2
    n2_parallel_0_0(["sleep 1min"])
    n2 --> n2_parallel_0_0
    n2_parallel_1_0[/"w: signal go#124;now"/]
    n2 --> n2_parallel_1_0
    n2_join{{"join"}}
    n2_parallel_0_0 --> n2_join
    n2_parallel_1_0 --> n2_join
    n3(["repeat, at most 3 times"])
    n2_join --> n3
    n3_repeat_0[["kid: app.#lt;kid#gt;"]]
    n3 --> n3_repeat_0
    n3_repeat_0 -.->|"until SELECT #96;done#96;"| n3
    finish(["end"])
    n3_repeat_0 --> finish
"""


def test_graph_of_a_small_definition():
    assert definitions.graph(WF, SMALL) == SMALL_GRAPH


def test_graph_race_and_long_labels():
    text = definitions.graph(
        "app.r", steps({"race": [[sql("a")], [sql("b" * 80)]], "name": "r"})
    )
    assert 'n0{{"r: race"}}' in text
    assert 'n0_join{{"first wins"}}' in text
    assert '["' + "b" * 45 + '..."]' in text


def test_graph_rejects_invalid_definitions():
    with pytest.raises(DurableError):
        definitions.graph(WF, steps({"sleep": "x"}))


NODE = re.compile(
    r"    ([A-Za-z][A-Za-z0-9_]*)"
    r'(\["|\(\["|\[\["|\{"|\{\{"|\[/")([^"]*)("\]|"\]\)|"\]\]|"\}|"\}\}|"/\])'
)
EDGE = re.compile(
    r'    ([A-Za-z][A-Za-z0-9_]*) (-->|-\.->)(\|"[^"|]*"\|)? ([A-Za-z][A-Za-z0-9_]*)'
)
PAIRS = {'["': '"]', '(["': '"])', '[["': '"]]', '{"': '"}', '{{"': '"}}', '[/"': '"/]'}


def check_mermaid(text: str) -> None:
    """A structural check of the flowchart: ids, shapes, labels, edges."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    for line in lines[1:]:
        node, edge = NODE.fullmatch(line), EDGE.fullmatch(line)
        assert node or edge, line
        if node:
            assert PAIRS[node.group(2)] == node.group(4), line
            assert not set(node.group(3)) & set('"<>`|\n'), line
            nodes.append(node.group(1))
        else:
            assert edge.group(1) in nodes and edge.group(4) in nodes, line
            edges.append((edge.group(1), edge.group(4)))
    assert len(nodes) == len(set(nodes))
    assert "end" not in nodes
    reachable, todo = {"begin"}, ["begin"]
    while todo:
        current = todo.pop()
        for source, target in edges:
            if source == current and target not in reachable:
                reachable.add(target)
                todo.append(target)
    assert reachable == set(nodes)


def test_graph_is_well_formed_for_the_example():
    check_mermaid(definitions.graph(WF, EXAMPLE))
    check_mermaid(SMALL_GRAPH)


@FAST
@given(valid_definitions())
def test_graph_is_well_formed_for_random_definitions(definition):
    text = definitions.graph(WF, definition)
    check_mermaid(text)
    assert text == definitions.graph(WF, ok(definition))
    ids = [m.group(1) for m in map(NODE.fullmatch, text.splitlines()) if m]
    step_ids = [i for i in ids if not i.endswith("_join")]
    assert len(step_ids) == len(all_steps(definition["steps"])) + 2  # begin, finish


@given(st.text(max_size=30))
def test_graph_labels_are_escaped(name):
    definition = steps({"name": name or "x", "sleep": 1})
    try:
        text = definitions.graph(WF, definition)
    except DurableError:
        assert any(c in name for c in ".[]")
        return
    check_mermaid(text)
