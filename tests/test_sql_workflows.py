"""SQL-declared workflows: define, validate, run, pin, builders, diagrams."""

from __future__ import annotations

import json

import psycopg
import pytest
from conftest import drain, run_state, start, work_until_finished
from psycopg.types.json import Jsonb

SETUP = """
create schema if not exists app;
drop table if exists app.jobs;
create table app.jobs (id int primary key, done boolean not null default false);
insert into app.jobs select g from generate_series(1, 7) g;
create or replace function app.double(input jsonb) returns jsonb
language plpython3u as $$
return {"doubled": [2 * x for x in input["from"]]}
$$;
"""

BATCHES = {
    "steps": [
        {
            "name": "loop",
            "repeat": [
                {"name": "batch",
                 "sql": "select id from app.jobs where not done order by id limit $1",
                 "params": ["input.size"]},
                {"name": "work",
                 "sql": "update app.jobs set done = true where id = any($1)"
                        " returning id",
                 "params": ["steps.batch[*].id"]},
            ],
            "until": "select not exists (select 1 from app.jobs where not done)",
            "max_iterations": 10,
        },
        {"parallel": [[{"name": "a", "sql": "select 1 as one"}],
                      [{"name": "b", "sql": "select 2 as two"}]]},
        {"name": "total", "sql": "select id from app.jobs where done"},
        {"name": "check", "if": "select $1::int = 7", "params": ["steps.total.length"],
         "then": [], "else": []},
        {"name": "child", "workflow": "app.double",
         "input": {"from": "steps.total[*].id"}},
    ]
}  # fmt: skip


@pytest.fixture(autouse=True)
def setup(conn):
    conn.execute(SETUP)


def define(conn, name, definition, **options):
    names = "".join(f", {key} => %s" for key in options)
    return conn.execute(
        f"select durable.define_workflow(%s, %s{names})",
        [name, Jsonb(definition), *options.values()],
    ).fetchone()[0]


def test_define_and_run_a_sql_workflow(conn):
    assert define(conn, "app.batches", BATCHES) == "app.batches"
    run = start(conn, "app.batches", {"size": 3})
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    result = state["result"]
    assert result["loop"] == {"iterations": 3}
    assert result["a"] == [{"one": 1}] and result["b"] == [{"two": 2}]
    assert result["child"] == {"doubled": [2, 4, 6, 8, 10, 12, 14]}
    branches = conn.execute(
        "select count(*) from durable.runs where parent_id = %s and workflow ="
        " 'app.batches'",
        [run],
    ).fetchone()[0]
    assert branches == 2


def test_unqualified_names_resolve_through_search_path(conn):
    conn.execute("set search_path = app, public")
    assert define(conn, "short", {"steps": [{"name": "x", "sql": "select 1"}]}) == (
        "app.short"
    )
    run = start(conn, "short")
    assert run_state(conn, run)["workflow"] == "app.short"
    conn.execute("reset search_path")


@pytest.mark.parametrize(
    ("definition", "fragment"),
    [
        ({"steps": [{"name": "x", "sql": "select 1", "bogus": 1}]}, "bogus"),
        ({"steps": [{"sql": "select 1"}]}, "name"),
        ({"steps": [{"name": "x", "sql": "select 1"},
                    {"name": "x", "sql": "select 2"}]},
         '"x"'),
        ({"steps": [{"name": "a", "sql": "select $1", "params": ["steps.b"]},
                    {"name": "b", "sql": "select 1"}]}, '"b"'),
        ({"steps": [{"name": "x", "sql": "selec 1"}]}, "syntax error"),
        ({"steps": [{"name": "x", "sql": "select 1; select 2"}]}, "2 SQL statements"),
        ({"steps": [{"name": "loop", "repeat": [{"name": "y", "sql": "select 1"}],
                     "until": "select true"}]}, "max_iterations"),
        ({"stages": []}, "stages"),
    ],
)  # fmt: skip
def test_invalid_definitions_are_refused_and_nothing_is_written(
    conn, definition, fragment
):
    with pytest.raises(psycopg.Error) as raised:
        define(conn, "app.invalid", definition)
    assert raised.value.sqlstate in ("22023", "42601")
    assert fragment in raised.value.diag.message_primary
    assert "app.invalid" in raised.value.diag.message_primary
    assert raised.value.diag.message_hint
    written = conn.execute(
        "select count(*) from durable._workflow_versions where workflow = 'app.invalid'"
    ).fetchone()[0]
    assert written == 0


def test_a_name_taken_by_a_function_is_refused(conn):
    with pytest.raises(psycopg.errors.DuplicateFunction):
        define(conn, "app.double", {"steps": [{"name": "x", "sql": "select 1"}]})


def test_redefining_pins_in_flight_runs_to_their_version(conn):
    first = {"steps": [{"name": "wait", "wait_for_signal": "go"},
                       {"name": "v", "sql": "select 1 as version"}]}  # fmt: skip
    define(conn, "app.versioned", first)
    old = start(conn, "app.versioned")
    drain(conn)
    assert run_state(conn, old)["status"] == "waiting"
    define(
        conn, "app.versioned", {"steps": [{"name": "v", "sql": "select 2 as version"}]}
    )
    new = start(conn, "app.versioned")
    conn.execute("select durable.signal(%s, 'go')", [old])
    work_until_finished(conn, [old, new])
    assert run_state(conn, old)["result"]["v"] == [{"version": 1}]
    assert run_state(conn, new)["result"]["v"] == [{"version": 2}]


def test_sleep_and_signal_steps(conn):
    define(conn, "app.approve", {"steps": [
        {"sleep": "0.2 seconds"},
        {"name": "decision", "wait_for_signal": "approve", "timeout": "1 hour"},
        {"name": "echo", "sql": "select $1::jsonb as got",
         "params": ["steps.decision"]},
    ]})  # fmt: skip
    run = start(conn, "app.approve")
    conn.execute("select durable.signal(%s, 'approve', '{\"ok\": true}')", [run])
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"]["echo"] == [{"got": {"ok": True}}]


def test_builders_produce_the_canonical_json(conn):
    built = conn.execute(
        """
        select durable.seq(
            durable.sql_step('batch', 'select id from app.jobs limit $1',
                             '["input.size"]', retry => '{"max_attempts": 5}',
                             timeout => '30 seconds'),
            durable.sleep_step('10 minutes'),
            durable.signal_step('approval', 'approve', '1 day'),
            durable.parallel_step(durable.steps(durable.sql_step('a', 'select 1')),
                                  durable.steps(durable.sql_step('b', 'select 2'))),
            durable.if_step('select $1::int > 0', '[]', params =>
                            '["steps.batch.length"]'),
            durable.child_step('child', 'app.double', '{"from": "steps.batch[*].id"}'),
            durable.repeat_step(durable.steps(durable.sql_step('again', 'select 1')),
                                'select true', 3)
        )
        """
    ).fetchone()[0]
    assert built["steps"][0] == {
        "name": "batch", "sql": "select id from app.jobs limit $1",
        "params": ["input.size"], "retry": {"max_attempts": 5}, "timeout": "00:00:30",
    }  # fmt: skip
    assert built["steps"][2] == {
        "name": "approval",
        "wait_for_signal": "approve",
        "timeout": "1 day",
    }
    assert define(conn, "app.built", built) == "app.built"


def test_graph_of_a_sql_workflow(conn):
    define(conn, "app.small", {"steps": [
        {"name": "first", "sql": "select 1"},
        {"if": "select true", "then": [{"name": "yes", "sql": "select 2"}],
         "else": [{"name": "no", "sql": "select 3"}]},
    ]})  # fmt: skip
    graph = conn.execute("select durable.graph('app.small')").fetchone()[0]
    assert graph.startswith("flowchart TD\n")
    for node in ('"first"', '"yes"', '"no"', "-->"):
        assert node in graph


def test_graph_of_a_python_workflow_is_a_clear_error(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.graph('app.double')")
    assert raised.value.sqlstate == "42809"
    assert "explain" in raised.value.diag.message_hint


def test_explain_draws_the_steps_a_run_took(conn):
    run = start(conn, "app.double", {"from": [1]})
    work_until_finished(conn, [run])
    define(
        conn,
        "app.two",
        {
            "steps": [
                {"name": "one", "sql": "select 1"},
                {"name": "two", "sql": "select 2"},
            ]
        },
    )
    run = start(conn, "app.two")
    work_until_finished(conn, [run])
    chart = conn.execute("select durable.explain(%s)", [run]).fetchone()[0]
    assert chart.startswith("flowchart TD\n")
    assert "one<br/>sql · succeeded" in chart
    assert "s1 --> s2" in chart
    assert 'finish(["succeeded"])' in chart
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.explain(gen_random_uuid())")
    assert raised.value.sqlstate == "DU010"


def test_definition_is_stored_in_canonical_form(conn):
    define(conn, "app.canon", {"steps": [{"sql": "select $1", "name": "x",
                                          "params": [1]}]})  # fmt: skip
    source = conn.execute(
        "select source from durable._workflow_versions where workflow = 'app.canon'"
    ).fetchone()[0]
    assert json.loads(source)["steps"][0]["params"] == [{"value": 1}]


def test_nested_parallel_in_if_in_repeat_and_a_race(conn):
    define(conn, "app.nested", {"steps": [
        {"name": "loop", "repeat": [
            {"name": "tick", "sql": "select nextval('app.ticks') as n"},
            {"name": "even", "if": "select $1::int % 2 = 0",
             "params": ["steps.tick[0].n"],
             "then": [{"parallel": [[{"name": "left", "sql": "select 'l' as side"}],
                                    [{"name": "right", "sql": "select 'r' as side"}]]}],
             "else": []},
        ], "until": "select $1::int >= 4", "params": ["steps.tick[0].n"],
         "max_iterations": 10},
        {"name": "first", "race": [[{"sleep": "1 hour"}],
                                   [{"name": "quick", "sql": "select 42 as answer"}]]},
    ]})  # fmt: skip
    conn.execute("drop sequence if exists app.ticks")
    conn.execute("create sequence app.ticks")
    run = start(conn, "app.nested")
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    result = state["result"]
    assert result["loop"] == {"iterations": 4}
    assert result["left"] == [{"side": "l"}] and result["right"] == [{"side": "r"}]
    assert result["first"]["winner"] == 1
    assert result["quick"] == [{"answer": 42}]
    # Two even iterations, two branches each, plus the two branches of the race.
    children = conn.execute(
        "select count(*) from durable.runs where parent_id = %s", [run]
    ).fetchone()[0]
    assert children == 6
    sleeper = conn.execute(
        "select id from durable.runs where parent_id = %s and status <> 'succeeded'",
        [run],
    ).fetchone()[0]
    work_until_finished(conn, [sleeper])
    assert run_state(conn, sleeper)["status"] == "cancelled"
