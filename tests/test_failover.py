"""Failover: the primary crashes under load and a synchronous standby takes over.

A primary streams to a standby made with ``pg_basebackup -R``; the primary runs with
``synchronous_commit = remote_apply`` and names the standby in
``synchronous_standby_names``, so a commit is acknowledged only once the standby has
applied it. Workers execute the 5-step effects workflow of ``faults`` on the primary
while client threads keep starting runs; every start that returned is an acknowledged
run. A durable schedule fires the same workflow every second. Then every process of the
primary is killed at once, the standby is promoted with ``pg_ctl promote`` and new
workers are pointed at it. Every acknowledged run must exist there and succeed, with
each step's effects exactly once, and the schedule must have started one run for every
second, none lost or doubled across the failover.

The same failover with ``synchronous_commit = off`` and an asynchronous standby shows
what that setting loses (the last acknowledged starts and checkpoints) and what it
keeps: the runs on the promoted standby still succeed, each step's effects exactly once.

Nothing is mocked: real clusters, real worker sessions, real signals. The clusters are
this test's own (never the session cluster). ``DURABLE_CHAOS=1`` enables the long
variant (three failovers in a row, marked ``slow``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import wait_until
from faults import (
    CHAOS_WORKFLOWS,
    ThreadGroup,
    Workers,
    assert_exactly_once,
    query,
    status_counts,
    wait_all_finished,
)
from pgcluster import Cluster
from psycopg import sql
from psycopg.types.json import Jsonb

SLOW = pytest.mark.skipif(
    os.environ.get("DURABLE_CHAOS") != "1", reason="set DURABLE_CHAOS=1 to run"
)

WORKERS = 3
STARTERS = 2
STEP_SLEEP = 0.01


class Starters(ThreadGroup):
    """Client threads, each starting a run of ``app.five`` every ``pause`` seconds on
    its own connection until the connection breaks. ``acknowledged`` holds the id of
    every ``durable.start`` that returned; ``unanswered`` counts the threads whose
    connection broke (each one may have had one start in flight, outcome unknown)."""

    def __init__(self, server: Cluster, count: int, pause: float):
        super().__init__(count)
        self.server = server
        self.pause = pause
        self.lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.unanswered = 0

    def snapshot(self) -> list[str]:
        """The runs acknowledged so far."""
        with self.lock:
            return list(self.acknowledged)

    def _loop(self) -> None:
        try:
            with psycopg.connect(
                self.server.dsn(), autocommit=True, connect_timeout=5
            ) as conn:
                while not self.stop.wait(self.pause):  # pacing, not waiting for state
                    run = conn.execute(
                        "select durable.start('app.five', %s)::text",
                        [Jsonb({"sleep": STEP_SLEEP})],
                    ).fetchone()[0]
                    with self.lock:
                        self.acknowledged.append(run)
        except psycopg.Error:
            with self.lock:
                self.unanswered += 1


SCHEDULE = """
select durable.schedule(
    'tick', '1 seconds', 'app.five', '{"sleep": 0.01}',
    overlap => 'allow', catch_up => 'all'
);
"""


def new_primary(made: list[Cluster], commit: str) -> Cluster:
    """A primary with ``synchronous_commit = commit`` (no synchronous standby named
    yet), durable, the effects workflow and its schedule."""
    server = Cluster(settings={"synchronous_commit": commit}, name="failover_primary")
    made.append(server)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("create extension durable cascade")
        conn.execute(CHAOS_WORKFLOWS)
        conn.execute(SCHEDULE)
    return server


def replication(primary: Cluster) -> list[tuple[str, str, str]]:
    """(application_name, state, sync_state) of each standby connected to primary."""
    return query(
        primary,
        "select application_name, state, sync_state from pg_stat_replication",
    )


def make_synchronous(primary: Cluster, standby: Cluster) -> None:
    """Name the streaming standby in the primary's synchronous_standby_names and
    wait until the primary reports it as the synchronous one."""
    name = standby.application_name
    wait_until(lambda: replication(primary) == [(name, "streaming", "async")], 30)
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter system set synchronous_standby_names = {}").format(
                sql.Literal(name)
            )
        )
        conn.execute("select pg_reload_conf()")
    wait_until(lambda: replication(primary) == [(name, "streaming", "sync")], 30)


def count_present(server: Cluster, runs: list[str]) -> int:
    """How many of ``runs`` exist on ``server``."""
    return query(
        server,
        "select count(*) from durable._runs where id = any(%s::uuid[])",
        [runs],
    )[0][0]


def count_unfinished(server: Cluster, runs: list[str]) -> int:
    """How many of ``runs`` have not finished on ``server``."""
    return query(
        server,
        "select count(*) from durable._runs where id = any(%s::uuid[])"
        " and status not in ('succeeded', 'failed', 'cancelled')",
        [runs],
    )[0][0]


def slots(server: Cluster) -> list[int]:
    """The slots (epoch seconds) of the runs started by the schedule, in order."""
    return [
        int(slot)
        for (slot,) in query(
            server,
            "select extract(epoch from substr(idempotency_key, 15)::timestamptz)"
            " from durable._runs where idempotency_key like 'schedule:tick:%'"
            " order by 1",
        )
    ]


def gone(server: Cluster) -> bool:
    """Whether nothing accepts connections on the server's socket any more."""
    try:
        psycopg.connect(server.dsn(), connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


def reclaimed_in_log(server: Cluster) -> int:
    """Runs the workers of ``server`` reported as reclaimed in its log."""
    return sum(
        int(n)
        for n in re.findall(r"reclaimed (\d+) run\(s\) of ended workers", server.log())
    )


def fail_over(
    primary: Cluster,
    workers: Workers,
    standby: Cluster,
    synchronous: bool,
    load_seconds: float,
) -> dict:
    """Wait until the started ``standby`` streams (and, if ``synchronous``, is the
    primary's synchronous standby), load ``primary`` (executed by ``workers``), crash
    it, promote the standby; returns the figures of this failover."""
    figures: dict = {"standby": standby}
    if synchronous:
        make_synchronous(primary, standby)
    else:
        name = standby.application_name
        wait_until(lambda: replication(primary) == [(name, "streaming", "async")], 30)
    with Starters(primary, STARTERS, pause=0.025) as starters:
        loaded_at = time.monotonic() + load_seconds
        try:
            wait_until(
                lambda: time.monotonic() > loaded_at
                and status_counts(primary).get("succeeded", 0) >= 10,
                timeout=load_seconds + 30,
            )
        except pytest.fail.Exception:
            pytest.fail(
                f"no load: runs {status_counts(primary)}, {workers.errors} worker"
                f" errors, {len(starters.snapshot())} starts, log:\n"
                + primary.log()[-3000:]
            )
        # Acknowledged so far, and how many of them the standby shows already.
        acknowledged = starters.snapshot()
        figures["visible_before_crash"] = (
            count_present(standby, acknowledged),
            len(acknowledged),
        )
        # Crash at a moment when workers hold runs (as seen on the standby).
        wait_until(lambda: status_counts(standby).get("running", 0) > 0, 10)
        # Runs a client of the primary sees finished, just before the crash.
        finished = query(
            primary, "select id::text from durable._runs where status = 'succeeded'"
        )
        errors = workers.errors
        figures["crashed_wall"] = time.time()
        crashed_at = time.monotonic()
        primary.crash()
        assert gone(primary)
        # Every worker connection and every client connection broke.
        wait_until(
            lambda: workers.errors >= errors + WORKERS
            and starters.unanswered == STARTERS,
            10,
        )
    figures["acknowledged"] = starters.snapshot()
    figures["unanswered"] = starters.unanswered

    standby.promote()
    figures["promoted_at"] = time.monotonic()
    figures["promoted_wall"] = time.time()
    figures["promoted_after"] = figures["promoted_at"] - crashed_at
    assert query(standby, "select pg_is_in_recovery()")[0][0] is False
    recovery, promote, promoted = standby.log().partition("received promote request")
    assert promote
    assert "selected new timeline ID" in promoted
    # The standby lost its primary: the crash was real, seen from the other side.
    assert "could not receive data from WAL stream" in recovery
    if "pg_cron" in standby.settings.get("shared_preload_libraries", ""):
        # pg_cron's launcher does not run on a standby; it starts with the promotion.
        assert "pg_cron scheduler started" not in recovery
        wait_until(lambda: "pg_cron scheduler started" in standby.log(), 10)

    # The new primary before any worker touched it: the state at the crash.
    figures["states"] = status_counts(standby)
    figures["finished_before_crash"] = len(finished)
    figures["unfinished_again"] = count_unfinished(standby, [r for (r,) in finished])
    figures["in_flight"] = figures["states"].get("running", 0)
    figures["backlog"] = [
        run
        for (run,) in query(
            standby,
            "select id::text from durable._runs"
            " where status not in ('succeeded', 'failed', 'cancelled')",
        )
    ]
    figures["dead_workers"] = query(
        standby,
        "select count(*) from durable._workers as w"
        " where not durable._backend_alive(w.pid, w.backend_start, w.role)",
    )[0][0]
    # Runs were running when the primary died, each held by a (now dead) worker.
    assert 1 <= figures["in_flight"] <= figures["dead_workers"] <= WORKERS
    return figures


def failovers_under_load(
    made: list[Cluster],
    commit: str,
    synchronous: bool,
    failovers: int,
    load_seconds: float,
) -> dict:
    """``failovers`` crashes and promotions in a row, then workers on the last new
    primary until every run present there has finished; returns the figures."""
    primary = new_primary(made, commit)
    acknowledged: list[str] = []
    rounds = []
    for number in range(1, failovers + 1):
        standby = primary.standby(f"failover_standby{number}")
        made.append(standby)
        standby.start()
        # After the first round the promoted standby is the primary: its workers
        # run the backlog while its own standby is cloned and the next load runs.
        with Workers(primary, WORKERS) as workers:
            figures = fail_over(primary, workers, standby, synchronous, load_seconds)
        primary = standby
        acknowledged += figures["acknowledged"]
        # Acknowledged runs, of this and the earlier primaries, missing now.
        figures["missing"] = len(acknowledged) - count_present(primary, acknowledged)
        rounds.append(figures)

    last = rounds[-1]
    with Workers(primary, WORKERS):
        wait_until(lambda: count_unfinished(primary, last["backlog"]) == 0, 60)
        finished_after = time.monotonic() - last["promoted_at"]
        # The schedule keeps firing on the new primary; once it has, it is removed
        # so that the number of runs stops growing.
        wait_until(
            lambda: max(slots(primary), default=0) > last["promoted_wall"] + 1, 30
        )
        query(primary, "select durable.unschedule('tick')")
        present = query(primary, "select count(*) from durable._runs")[0][0]
        wait_all_finished(primary, present, timeout=60)
    return {
        "commit": commit,
        "primary": primary,
        "rounds": rounds,
        "acknowledged": acknowledged,
        "finished_after": finished_after,
        "present": present,
    }


def check_runs_present(result: dict) -> dict:
    """What holds after any failover for the runs the new primary has: each one
    succeeded with each step's effects exactly once, runs in flight at a crash were
    reclaimed, every schedule slot started one run. Returns the figures."""
    primary, rounds = result["primary"], result["rounds"]
    acknowledged, present = result["acknowledged"], result["present"]
    assert_exactly_once(primary, present)
    kept = count_present(primary, acknowledged)
    # Runs whose start was in flight at a crash may exist or not; nothing else.
    started = query(
        primary, "select count(*) from durable._runs where idempotency_key is null"
    )[0][0]
    unanswered = sum(figures["unanswered"] for figures in rounds)
    assert kept <= started <= kept + unanswered
    # One scheduled run for every second from before the first crash to after the
    # last promotion: no slot lost or doubled.
    fired = slots(primary)
    assert fired == list(range(fired[0], fired[-1] + 1))
    assert fired[0] < rounds[0]["crashed_wall"]
    assert rounds[-1]["promoted_wall"] < fired[-1]
    # Each run in flight at a crash was reclaimed once, by the new primary's
    # workers, and nothing else was; the dead workers' rows are gone.
    in_flight = sum(figures["in_flight"] for figures in rounds)
    reclaimed = sum(reclaimed_in_log(figures["standby"]) for figures in rounds)
    assert reclaimed == in_flight
    assert query(primary, "select count(*) from durable._workers")[0][0] == 0
    interrupted = query(
        primary,
        "select count(*) from durable._step_attempts"
        " where error->>'sqlstate' = 'DU040'",
    )[0][0]
    assert interrupted <= in_flight
    for number, figures in enumerate(rounds, 1):
        states = ", ".join(f"{n} {s}" for s, n in sorted(figures["states"].items()))
        print(
            f"\n{result['commit']}, failover {number}:"
            f" {len(figures['acknowledged'])} runs acknowledged,"
            f" {figures['finished_before_crash']} seen succeeded just before the"
            f" crash; on the standby at the crash {states};"
            f" promoted {figures['promoted_after']:.1f} s after the crash"
        )
    lost = len(acknowledged) - kept
    unfinished_again = sum(figures["unfinished_again"] for figures in rounds)
    print(
        f"{result['commit']}: {len(acknowledged)} runs acknowledged,"
        f" {lost} of them lost,"
        f" {unfinished_again} runs seen succeeded before a crash unfinished after it,"
        f" {started - kept} unanswered starts kept, {len(fired)} scheduled runs,"
        f" {in_flight} runs in flight at the crash(es) reclaimed,"
        f" {interrupted} DU040 attempts; the backlog finished"
        f" {result['finished_after']:.1f} s after the last promotion"
    )
    return {"lost": lost, "unfinished_again": unfinished_again}


@contextlib.contextmanager
def clusters() -> Iterator[list[Cluster]]:
    """A list to put the test's clusters in; all are destroyed at the end."""
    made: list[Cluster] = []
    try:
        yield made
    finally:
        for server in made:
            server.destroy()


@pytest.mark.parametrize(
    ("commit", "failovers", "load_seconds"),
    [
        pytest.param("remote_apply", 1, 3.0, id="remote_apply"),
        pytest.param("on", 1, 3.0, id="on"),
        pytest.param("remote_write", 1, 3.0, id="remote_write"),
        pytest.param(
            "remote_apply", 3, 8.0, id="remote_apply-three-failovers",
            marks=[pytest.mark.slow, SLOW],
        ),
    ],
)  # fmt: skip
def test_failover_to_synchronous_standby_loses_no_acknowledged_run(
    commit: str, failovers: int, load_seconds: float
):
    """A synchronous standby (``remote_apply``, ``on`` or ``remote_write``): crash of
    the primary under load, promotion of the standby; every acknowledged run exists
    there and succeeds, each step's effects exactly once, runs of the dead workers are
    reclaimed, every schedule slot fires once."""
    with clusters() as made:
        result = failovers_under_load(made, commit, True, failovers, load_seconds)
        for figures in result["rounds"]:
            seen, acknowledged = figures["visible_before_crash"]
            if commit == "remote_apply":
                # Whatever was acknowledged was visible on the standby already; with
                # on and remote_write it may still wait there to be applied...
                assert seen == acknowledged
            # ...but it had reached the standby: nothing acknowledged, on any primary
            # so far, went missing after the promotion...
            assert figures["missing"] == 0
            # ...and no run seen finished before the crash is unfinished after it (a
            # commit is visible on the primary only once the standby confirmed it).
            assert figures["unfinished_again"] == 0
        succeeded = query(
            result["primary"],
            "select count(*) from durable._runs"
            " where id = any(%s::uuid[]) and status = 'succeeded'",
            [result["acknowledged"]],
        )[0][0]
        assert succeeded == len(result["acknowledged"])
        assert check_runs_present(result)["lost"] == 0


@pytest.mark.parametrize("commit", ["off", "local"])
def test_failover_to_asynchronous_standby_keeps_effects_and_checkpoints_together(
    commit: str,
):
    """An asynchronous standby, with ``synchronous_commit = off`` (commits return
    before their WAL is flushed) or ``local`` (flushed on the primary only): the crash
    may take the last acknowledged commits with it (starts, checkpoints), but what the
    promoted standby has is a consistent prefix: every run there succeeds with each
    step's effects exactly once."""
    with clusters() as made:
        result = failovers_under_load(made, commit, False, 1, 3.0)
        check_runs_present(result)
