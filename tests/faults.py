"""Shared pieces of the fault tests (chaos, failover, load): private clusters, worker
threads that survive crashes, the 5-step effects workflow and its exactly-once check."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Self

import psycopg
from conftest import wait_until
from pgcluster import Cluster
from psycopg.types.json import Jsonb

STEPS = 5
FINISHED = ("succeeded", "failed", "cancelled")


# Each step inserts one row; the table has no unique constraint, so a step whose
# effects committed twice would show as a count of 2.
CHAOS_WORKFLOWS = f"""
create schema app;
create table app.effects (run_id uuid not null, step integer not null);

create function app.five(input jsonb) returns jsonb
language plpython3u as $$
for n in range(1, {STEPS} + 1):
    wf.step(
        f"step{{n}}",
        "insert into app.effects select $1, $2 from pg_sleep($3)",
        [wf.run_id, n, input.get("sleep", 0)],
    )
return {{"steps": {STEPS}}}
$$;

-- A kill can interrupt the same run several times; the test is about duplicates and
-- lost runs, not about running out of attempts, so the workflow gets many of them.
select durable.register_workflow(
    'app.five', retry => '{{"max_attempts": 25, "initial_interval": 0.05}}'
);
"""


@contextlib.contextmanager
def private_cluster(name: str) -> Iterator[Cluster]:
    """A throwaway cluster of this test with durable in its ``postgres`` database."""
    server = Cluster(name=name).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
        yield server
    finally:
        server.destroy()


class ThreadGroup:
    """Threads that each run ``_loop`` from the start of a ``with`` block until its
    end (``stop`` is set then; the threads are joined)."""

    def __init__(self, count: int):
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, daemon=True) for _ in range(count)
        ]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _loop(self) -> None:
        raise NotImplementedError


class Workers(ThreadGroup):
    """Worker threads, each looping ``CALL durable.run_worker()`` on its own
    connection and reconnecting after errors (killed backend, crash, restart).
    ``errors`` counts the errors, ``by_sqlstate`` and ``messages`` describe them."""

    def __init__(
        self,
        server: Cluster,
        count: int,
        dbname: str = "postgres",
        max_runtime: str = "5 seconds",
    ):
        super().__init__(count)
        self.server = server
        self.dbname = dbname
        self.max_runtime = max_runtime
        self.errors = 0
        self.by_sqlstate: Counter = Counter()
        self.messages: list[str] = []

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(
                    self.server.dsn(self.dbname), autocommit=True, connect_timeout=5
                ) as conn:
                    while not self.stop.is_set():
                        conn.execute(
                            "call durable.run_worker(max_runtime => %s)",
                            [self.max_runtime],
                        )
            except psycopg.Error as exc:
                self.errors += 1
                self.by_sqlstate[exc.sqlstate] += 1
                self.messages.append(str(exc))
                # Back-off before reconnecting while the server restarts.
                self.stop.wait(0.1)


def connect_retrying(server: Cluster, dbname: str = "postgres") -> psycopg.Connection:
    """A connection to a server that may be restarting (fails after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(server.dsn(dbname), autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def query(server: Cluster, sql: str, params=None, dbname: str = "postgres") -> list:
    """Run one statement on a fresh connection, reconnecting across restarts."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with connect_retrying(server, dbname) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def status_counts(server: Cluster) -> dict[str, int]:
    """Runs by status."""
    return dict(query(server, "select status, count(*) from durable._runs group by 1"))


def start_load(server: Cluster, runs: int, sleep: float) -> None:
    """Install the chaos workflow and start ``runs`` runs of it."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(CHAOS_WORKFLOWS)
        conn.execute(
            "select durable.start('app.five', %s) from generate_series(1, %s)",
            [Jsonb({"sleep": sleep}), runs],
        )


def wait_all_finished(server: Cluster, runs: int, timeout: float) -> None:
    """Poll until every run has finished (the test fails at the deadline)."""
    wait_until(
        lambda: sum(
            count
            for status, count in status_counts(server).items()
            if status in FINISHED
        )
        == runs,
        timeout=timeout,
    )


def assert_exactly_once(server: Cluster, runs: int) -> None:
    """Every run succeeded, every (run, step) effect exists exactly once, none is
    left running without a live worker."""
    assert status_counts(server) == {"succeeded": runs}
    rows, distinct, duplicated = query(
        server,
        "select count(*), count(distinct (run_id, step)),"
        " count(*) filter (where n > 1)"
        " from (select run_id, step, count(*) over (partition by run_id, step) as n"
        " from app.effects) as e",
    )[0]
    assert (rows, distinct, duplicated) == (runs * STEPS, runs * STEPS, 0)
    orphans = query(
        server,
        "select count(*) from durable._runs as r where r.status = 'running'"
        " and not exists (select from durable._workers as w where w.id = r.worker_id"
        " and durable._backend_alive(w.pid, w.backend_start, w.role))",
    )[0][0]
    assert orphans == 0
