"""The peer benchmark: DBOS Transact for Python running the bench's workflow shapes.

Run by ``bench/run.py`` with the interpreter of ``bench/.venv`` (where
``bench/requirements.txt`` is installed), never imported by it. It launches DBOS once
against a PostgreSQL system database, runs every measurement it is given, and prints
one JSON document on stdout.

The workflows have the shapes of the durable ones: a workflow of 1 or 10 steps that do
nothing. Two step kinds are measured:

- ``step``: ``@DBOS.step()`` functions that return None. DBOS checkpoints each step's
  output in its system database, one write and one commit per step, as durable commits
  one checkpoint per step. This is the fastest durable step DBOS has, so it is the
  baseline that the bench's targets are judged against.
- ``transaction``: a ``SELECT 1`` through ``@datasource.transaction()``, whose output is
  recorded in the same transaction as the statement, as a durable SQL step records its
  checkpoint with its statement. It is the like-for-like semantics, and slower.

Workflows are called directly (synchronously) rather than enqueued: that is DBOS's
fastest way to run a workflow (an enqueued one waits for the queue poller); each call
still writes the workflow's status row, the step checkpoints and the final status.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource

WARMUP = 20


def build_workflows(datasource: SQLAlchemyDatasource) -> dict[tuple[str, int], Any]:
    """The four workflows, by (step kind, number of steps)."""

    @DBOS.step()
    def noop() -> None:
        return None

    @datasource.transaction(isolation_level="READ COMMITTED")
    def select_one() -> int:
        return datasource.sql_session().execute(sa.text("SELECT 1")).scalar_one()

    @DBOS.workflow()
    def one_step() -> None:
        noop()

    @DBOS.workflow()
    def ten_steps() -> None:
        for _ in range(10):
            noop()

    @DBOS.workflow()
    def one_transaction() -> None:
        select_one()

    @DBOS.workflow()
    def ten_transactions() -> None:
        for _ in range(10):
            select_one()

    return {
        ("step", 1): one_step,
        ("step", 10): ten_steps,
        ("transaction", 1): one_transaction,
        ("transaction", 10): ten_transactions,
    }


def measure(workflow: Callable[[], None], threads: int, seconds: float) -> dict:
    """Call ``workflow`` in a loop on ``threads`` threads for about ``seconds``."""
    for _ in range(WARMUP):
        workflow()
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds

    def loop(index: int) -> None:
        done = 0
        while time.perf_counter() < deadline:
            workflow()
            done += 1
        counts[index] = done

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    return {"workflows": sum(counts), "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the database")
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="KIND:STEPS:THREADS:SECONDS",
        help="one measurement, e.g. step:1:8:5 (repeatable)",
    )
    args = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "durable-bench",
        "system_database_url": args.url,
        # Logging each workflow at INFO costs time; production runs log warnings.
        "log_level": "WARNING",
    }
    DBOS(config=config)
    datasource = SQLAlchemyDatasource.create(args.url)
    workflows = build_workflows(datasource)
    DBOS.launch()
    results = []
    try:
        for spec in args.run:
            kind, steps, threads, seconds = spec.split(":")
            outcome = measure(
                workflows[(kind, int(steps))], int(threads), float(seconds)
            )
            results.append(
                {"kind": kind, "steps": int(steps), "threads": int(threads), **outcome}
            )
    finally:
        DBOS.destroy()
    print(json.dumps({"dbos": results}))


if __name__ == "__main__":
    main()
