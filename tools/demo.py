#!/usr/bin/env python3
"""`make demo`: run the example workflows in a throwaway cluster and show the result."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from pgcluster import Cluster, server_version
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent


def table(cursor: psycopg.Cursor) -> str:
    """Render a cursor's result like psql's aligned format."""
    names = [column.name for column in cursor.description]
    rows = [["" if v is None else str(v) for v in row] for row in cursor.fetchall()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def show(conn: psycopg.Connection, title: str, sql: str) -> None:
    print(f"\n== {title}")
    print(table(conn.execute(sql)))


def main() -> int:
    cluster = Cluster(name="durable-demo").start()
    print(
        f"throwaway PostgreSQL {server_version()} cluster on port {cluster.port}"
        f" in {cluster.base}"
    )
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
            for example in ("orders.sql", "payments.sql"):
                conn.execute((ROOT / "examples" / example).read_text())
            print("\n== start runs and a schedule")
            for order_id, sku in ((1, "apple"), (2, "pear")):
                run = conn.execute(
                    "select durable.start('app.ship_order', %s)",
                    [Jsonb({"order_id": order_id, "sku": sku})],
                ).fetchone()[0]
                print(f"app.ship_order for order {order_id} ({sku}): run {run}")
            run = conn.execute(
                "select durable.start('app.charge', %s)",
                [Jsonb({"order_id": 1, "amount": 9.5})],
            ).fetchone()[0]
            print(f"app.charge for order 1: run {run}")
            conn.execute("select durable.schedule('report', '2 seconds', 'app.report')")
            print("schedule 'report': app.report every 2 seconds")
            print("\n== CALL durable.run_worker(max_runtime => '5 seconds')")
            conn.execute("call durable.run_worker(max_runtime => '5 seconds')")
            conn.execute("select durable.unschedule('report')")
            show(
                conn,
                "durable.steps (a retried step shows its attempts)",
                "select r.workflow, s.seq, s.name, s.kind, s.status, s.attempts,"
                " left(s.output::text, 60) as output from durable.steps as s"
                " join durable.runs as r on r.id = s.run_id"
                " where r.workflow <> 'app.report' order by r.created_at, s.seq",
            )
            show(
                conn,
                "failed attempts (durable._step_attempts)",
                "select seq, attempt, error->>'message' as error"
                " from durable._step_attempts order by started_at",
            )
            show(
                conn,
                "durable.runs",
                "select workflow, status, attempt, result::text as result,"
                " round(extract(epoch from duration)::numeric, 2) as seconds"
                " from durable.runs order by created_at",
            )
            statuses = {
                row[0]
                for row in conn.execute("select status from durable.runs").fetchall()
            }
        return 0 if statuses == {"succeeded"} else 1
    finally:
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
