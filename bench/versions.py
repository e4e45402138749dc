#!/usr/bin/env python3
"""Throughput of two installed versions of durable, side by side in one cluster.

Used to show what a release costs or saves against the one before it, measured in the
same run on the same machine (the full bench compares durable with a plain queue and
with DBOS, not with itself). Each version gets a database of its own
(``CREATE EXTENSION durable VERSION '<v>'``) with the bench's workflows; rounds of
1-step and 10-step runs are drained by one worker, alternating between the versions so
that a disturbance of the machine hits both alike. Prints runs/s per version, the
median of the rounds, and the ratio of the newer to the older.

    python3 bench/versions.py                      # the last two installed versions
    python3 bench/versions.py --old 0.2.0 --new 0.3.0 --runs 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tools"))

from pgcluster import Cluster  # noqa: E402
from run import CLUSTER_SETTINGS  # noqa: E402

WORKFLOWS = {"bench.one": 1, "bench.ten": 10}


def installed_versions(cluster: Cluster) -> list[str]:
    """The versions of durable the server can install, oldest first."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "select version from pg_available_extension_versions"
            " where name = 'durable'"
        ).fetchall()
    return sorted((row[0] for row in rows), key=lambda v: tuple(map(int, v.split("."))))


def prepare(cluster: Cluster, version: str) -> str:
    """A database with durable ``version`` and the bench's workflows; its name."""
    dbname = "v" + version.replace(".", "_")
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {dbname}")
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(f"create extension durable version '{version}' cascade")
        conn.execute((BENCH / "schema.sql").read_text())
    return dbname


def drain_rate(conn: psycopg.Connection, workflow: str, runs: int) -> float:
    """Start ``runs`` runs of ``workflow``, drain them with one worker: runs/s."""
    conn.execute(
        "select durable.start(%s) from generate_series(1, %s)", [workflow, runs]
    )
    began = time.perf_counter()
    conn.execute("call durable.run_worker(drain => true, max_runtime => '1 hour')")
    elapsed = time.perf_counter() - began
    left = conn.execute(
        "select count(*) from durable._runs where status <> 'succeeded'"
    ).fetchone()[0]
    if left:
        raise RuntimeError(f"{left} runs of {workflow} did not succeed")
    conn.execute("truncate durable._runs, durable._steps")
    conn.execute("checkpoint")
    return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the older version (default: second newest)")
    parser.add_argument("--new", help="the newer version (default: newest)")
    parser.add_argument("--runs", type=int, default=2000, help="runs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()

    cluster = Cluster(settings=CLUSTER_SETTINGS, name="durable-versions").start()
    try:
        versions = installed_versions(cluster)
        old = args.old or versions[-2]
        new = args.new or versions[-1]
        databases = {version: prepare(cluster, version) for version in (old, new)}
        sessions = {
            version: psycopg.connect(cluster.dsn(dbname), autocommit=True)
            for version, dbname in databases.items()
        }
        rates: dict[tuple[str, str], list[float]] = {}
        for workflow in WORKFLOWS:
            for conn in sessions.values():  # a warm-up round, not counted
                drain_rate(conn, workflow, args.runs // 4)
            for _ in range(args.rounds):
                for version, conn in sessions.items():
                    rate = drain_rate(conn, workflow, args.runs)
                    rates.setdefault((workflow, version), []).append(rate)
        for conn in sessions.values():
            conn.close()
    finally:
        cluster.destroy()

    print(
        f"durable {old} vs {new}: one worker, {args.runs} runs a round,"
        f" median of {args.rounds} rounds"
    )
    print(f"{'workflow':<12}{old:>12}{new:>12}{'ratio':>9}  unit")
    for workflow, steps in WORKFLOWS.items():
        before = statistics.median(rates[(workflow, old)])
        after = statistics.median(rates[(workflow, new)])
        unit = "runs/s" if steps == 1 else "runs/s (10 steps)"
        ratio = after / before
        print(f"{workflow:<12}{before:>12,.0f}{after:>12,.0f}{ratio:>8.2f}x  {unit}")


if __name__ == "__main__":
    main()
