"""durable.start_on_trigger(): runs started by table changes, in their transaction."""

from __future__ import annotations

import psycopg
import pytest
from conftest import drain

SETUP = """
create schema if not exists app;
create table if not exists app.orders (id int primary key, sku text);
create or replace function app.on_order(input jsonb) returns jsonb
language plpython3u as $$
return {"op": input["op"], "table": input["schema"] + "." + input["table"],
        "new": input["new"], "old": input["old"]}
$$;
drop trigger if exists start_run on app.orders;
create trigger start_run after insert or update or delete on app.orders
for each row execute function durable.start_on_trigger('app.on_order', 'id');
"""


@pytest.fixture(autouse=True)
def setup(conn):
    conn.execute(SETUP)
    conn.execute("delete from app.orders")
    conn.execute("delete from durable._runs")


def results(conn):
    return [
        row[0]
        for row in conn.execute(
            "select result from durable.runs where workflow = 'app.on_order'"
            " order by created_at, result->>'op'"
        ).fetchall()
    ]


def test_insert_update_delete_each_start_a_run_with_the_row(conn):
    conn.execute("insert into app.orders values (1, 'apple')")
    drain(conn)
    assert results(conn) == [
        {"op": "INSERT", "table": "app.orders", "new": {"id": 1, "sku": "apple"},
         "old": None},
    ]  # fmt: skip
    key = conn.execute("select idempotency_key from durable.runs").fetchone()[0]
    assert key == "app.orders:id:1"


def test_the_key_column_makes_one_run_per_row(conn):
    conn.execute("insert into app.orders values (2, 'pear')")
    conn.execute("update app.orders set sku = 'fig' where id = 2")
    assert conn.execute("select count(*) from durable.runs").fetchone()[0] == 1


def test_without_a_key_every_change_starts_a_run(conn):
    conn.execute("drop trigger start_run on app.orders")
    conn.execute(
        "create trigger start_run after update or delete on app.orders for each row"
        " execute function durable.start_on_trigger('app.on_order')"
    )
    conn.execute("insert into app.orders values (3, 'kiwi')")
    conn.execute("update app.orders set sku = 'lime' where id = 3")
    conn.execute("delete from app.orders where id = 3")
    drain(conn)
    ops = [(r["op"], (r["new"] or {}).get("sku"), (r["old"] or {}).get("sku"))
           for r in results(conn)]  # fmt: skip
    assert sorted(ops, key=str) == sorted(
        [("UPDATE", "lime", "kiwi"), ("DELETE", None, "lime")], key=str
    )


def test_a_rolled_back_change_starts_nothing(connect):
    conn = connect(autocommit=False)
    conn.execute("insert into app.orders values (4, 'plum')")
    conn.rollback()
    check = connect()
    assert check.execute("select count(*) from durable.runs").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("trigger", "sqlstate"),
    [
        ("before insert on app.orders for each row"
         " execute function durable.start_on_trigger('app.on_order')", "0A000"),
        ("after insert on app.orders for each row"
         " execute function durable.start_on_trigger()", "22023"),
        ("after insert on app.orders for each row"
         " execute function durable.start_on_trigger('app.on_order', 'nope')", "42703"),
        ("after insert on app.orders for each row"
         " execute function durable.start_on_trigger('app.missing')", "42883"),
    ],
)  # fmt: skip
def test_misuse_is_a_clear_error_and_rolls_back_the_change(conn, trigger, sqlstate):
    conn.execute("drop trigger start_run on app.orders")
    conn.execute(f"create trigger start_run {trigger}")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("insert into app.orders values (5, 'date')")
    assert raised.value.sqlstate == sqlstate
    assert raised.value.diag.message_hint
    assert conn.execute("select count(*) from app.orders").fetchone()[0] == 0
