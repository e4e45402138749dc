#!/usr/bin/env python3
"""`make demo`: run the example workflows in a throwaway cluster and show the result."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from pgcluster import Cluster
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


def main() -> int:
    cluster = Cluster(name="durable-demo").start()
    print(f"throwaway cluster on port {cluster.port} in {cluster.base}")
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
            conn.execute((ROOT / "examples" / "orders.sql").read_text())
            print("\n== start two runs of app.ship_order")
            runs = {}
            for order_id, sku in ((1, "apple"), (2, "pear")):
                runs[sku] = conn.execute(
                    "select durable.start('app.ship_order', %s)",
                    [Jsonb({"order_id": order_id, "sku": sku})],
                ).fetchone()[0]
                print(f"order {order_id} ({sku}): run {runs[sku]}")
            print("\n== CALL durable.run_worker(drain => true)")
            conn.execute("call durable.run_worker(drain => true)")
            print("\n== durable.steps")
            print(
                table(
                    conn.execute(
                        "select r.input->>'sku' as sku, s.seq, s.name, s.kind,"
                        " s.status, s.output::text as output from durable.steps as s"
                        " join durable.runs as r on r.id = s.run_id"
                        " order by r.created_at, s.seq"
                    )
                )
            )
            print("\n== durable.runs")
            print(
                table(
                    conn.execute(
                        "select input->>'sku' as sku, status, result::text as result"
                        " from durable.runs"
                        " order by created_at"
                    )
                )
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
