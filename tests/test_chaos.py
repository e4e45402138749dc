"""Chaos: worker backends killed with SIGKILL, server crashes, a poisoned run, and
a pg_dump / pg_restore of a database with runs in flight.

Every test here crashes, restarts or dumps a server, so each one works in its own
throwaway cluster (never the session cluster shared by the other modules). Nothing is
mocked: workers are real ``CALL durable.run_worker()`` sessions in threads, faults are
real signals sent to real processes. ``DURABLE_CHAOS=1`` enables the long variants
(marked ``slow``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time

import psycopg
import pytest
from conftest import wait_until
from faults import (
    FINISHED,
    Workers,
    assert_exactly_once,
    private_cluster,
    query,
    start_load,
    status_counts,
    wait_all_finished,
)
from pgcluster import Cluster
from psycopg.types.json import Jsonb

SLOW = pytest.mark.skipif(
    os.environ.get("DURABLE_CHAOS") != "1", reason="set DURABLE_CHAOS=1 to run"
)


def live_worker_pids(server: Cluster) -> list[int]:
    """Backend pids of the workers registered and alive right now."""
    try:
        return [
            pid
            for (pid,) in query(
                server,
                "select w.pid from durable._workers as w"
                " join pg_stat_activity as a on a.pid = w.pid",
            )
        ]
    except psycopg.Error:
        return []


def kill_workers(server: Cluster, runs: int, kills: int) -> tuple[int, float]:
    """Load ``runs`` runs, kill -9 a random worker backend ``kills`` times while
    three workers execute them; returns the kills done and the seconds taken."""
    started = time.monotonic()
    done = 0
    with Workers(server, 3):
        while done < kills:
            time.sleep(random.uniform(0.3, 1.0))  # a random moment, not a wait
            server.wait_ready()
            pids = live_worker_pids(server)
            if not pids:
                continue
            if status_counts(server).get("succeeded", 0) == runs:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(pids), signal.SIGKILL)
                done += 1
        server.wait_ready()
        wait_all_finished(server, runs, timeout=60 + runs / 20)
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("runs", "kills", "step_sleep"),
    [
        pytest.param(300, 10, 0.03, id="300-runs"),
        pytest.param(2000, 50, 0.02, id="2000-runs", marks=[pytest.mark.slow, SLOW]),
    ],
)
def test_worker_kill_9_loses_and_repeats_no_step(
    runs: int, kills: int, step_sleep: float
):
    """SIGKILL of worker backends (each one a crash-restart of the whole server):
    every run still succeeds and every step's effects commit exactly once."""
    with private_cluster("chaos-kill") as server:
        start_load(server, runs, sleep=step_sleep)
        done, seconds = kill_workers(server, runs, kills)
        assert done == kills, f"only {done} kills landed before the runs finished"
        assert_exactly_once(server, runs)
        lost = query(
            server,
            "select count(*) from durable._step_attempts"
            " where error->>'sqlstate' = 'DU040'",
        )[0][0]
        print(f"\n{runs} runs, {done} kill -9, {lost} lost attempts, {seconds:.1f}s")
        assert lost >= 1
        # Each kill was a real crash: the postmaster reset every backend.
        assert server.log().count("terminated by signal 9") >= done


def test_server_crash_immediate_stop_loses_nothing_committed():
    """``pg_ctl stop -m immediate`` mid-load, then start: workers resume, every run
    succeeds, and no step's effects are lost or doubled."""
    runs = 300
    with private_cluster("chaos-crash") as server:
        start_load(server, runs, sleep=0.005)
        with Workers(server, 3) as workers:
            wait_until(
                lambda: status_counts(server).get("succeeded", 0) >= runs // 3,
                timeout=30,
            )
            before = query(server, "select count(*) from app.effects")[0][0]
            server.stop("immediate")
            server.start()
            server.wait_ready()
            after = query(server, "select count(*) from app.effects")[0][0]
            # Everything committed before the crash survived it.
            assert after >= before
            wait_all_finished(server, runs, timeout=60)
            assert workers.errors >= 3  # every worker connection broke
        assert_exactly_once(server, runs)
        assert "database system was interrupted" in server.log()


POISON = """
create schema app;
create function app.poison(input jsonb) returns jsonb
language plpython3u as $$
import os
wf.step("die", lambda: os._exit(1))
return {"unreachable": True}
$$;

create function app.ordinary(input jsonb) returns jsonb
language plpython3u as $$
a = wf.step("a", "select 1 as one")
b = wf.step("b", lambda: 2)
return {"sum": a[0]["one"] + b}
$$;
-- Crashes caused by the poisoned run may interrupt the ordinary run too.
select durable.register_workflow('app.ordinary', retry => '{"max_attempts": 25}');
"""


def test_poisoned_run_fails_after_its_attempts_and_workers_survive():
    """A Python step that kills its backend (``os._exit(1)``) every time is given up
    with DU040 after its 3 attempts; an ordinary run beside it, and one started
    after it, still succeed."""
    with private_cluster("chaos-poison") as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(POISON)
            poison, alongside = (
                conn.execute("select durable.start(%s)::text", [name]).fetchone()[0]
                for name in ("app.poison", "app.ordinary")
            )
        with Workers(server, 2):

            def status(run: str) -> str:
                return query(
                    server, "select status from durable._runs where id = %s", [run]
                )[0][0]

            wait_until(lambda: status(poison) in FINISHED, timeout=45)
            after = query(server, "select durable.start('app.ordinary')::text")[0][0]
            wait_until(lambda: status(alongside) in FINISHED, timeout=30)
            wait_until(lambda: status(after) in FINISHED, timeout=30)
        state = query(
            server,
            "select status, error->>'sqlstate' from durable._runs where id = %s",
            [poison],
        )[0]
        assert state == ("failed", "DU040")
        attempts = query(
            server,
            "select attempt, error->>'sqlstate' from durable._step_attempts"
            " where run_id = %s order by attempt",
            [poison],
        )
        assert attempts == [(1, "DU040"), (2, "DU040"), (3, "DU040")]
        for run in (alongside, after):
            assert query(
                server,
                "select status, result from durable._runs where id = %s",
                [run],
            )[0] == ("succeeded", {"sum": 3})
        # Each attempt really took its backend (and so the server) down.
        assert (
            server.log().count("terminated by signal")
            + server.log().count("exited with exit code 1")
            >= 3
        )


DUMP_WORKFLOWS = """
create schema app;
create function app.plain(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("double", "select $1::int * 2 as n", [input["n"]])
return {"n": rows[0]["n"]}
$$;

create function app.nap(input jsonb) returns jsonb
language plpython3u as $$
before = wf.step("before", "select 'awake' as word")
wf.sleep(input["seconds"])
return {"word": before[0]["word"], "slept": input["seconds"]}
$$;

create function app.approval(input jsonb) returns jsonb
language plpython3u as $$
return {"answer": wf.wait_for_signal("answer")}
$$;
"""


def run_as_server_user(server: Cluster, *command: str) -> None:
    """Run a client binary as the cluster's OS user (``postgres`` when root)."""
    args = [str(server.bindir / command[0]), *command[1:]]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    subprocess.run(args, check=True, capture_output=True, text=True, cwd=server.base)


def dump_and_restore(server: Cluster, source: str, target: str) -> None:
    """pg_dump -Fc ``source`` and pg_restore it into a new database ``target``."""
    dump = server.base / f"{source}.dump"
    socket = ["-h", str(server.base), "-p", str(server.port), "-U", "postgres"]
    run_as_server_user(server, "pg_dump", *socket, "-Fc", "-f", str(dump), source)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {target}")
    run_as_server_user(
        server, "pg_restore", *socket, "--exit-on-error", "-d", target, str(dump)
    )


def drain_until(server: Cluster, dbname: str, runs: list[str], timeout: float) -> None:
    """Run workers on ``dbname`` until every run in ``runs`` has finished."""
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            conn.execute("call durable.run_worker(max_runtime => '0.3 seconds')")
            unfinished = conn.execute(
                "select count(*) from durable._runs where id = any(%s::uuid[])"
                " and status not in ('succeeded', 'failed', 'cancelled')",
                [runs],
            ).fetchone()[0]
            if unfinished == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{unfinished} run(s) unfinished after {timeout}s")


def prepare_dump_source(server: Cluster, signalled: bool = False) -> dict[str, str]:
    """Database ``src`` with runs succeeded, sleeping, waiting and pending (and, if
    ``signalled``, one more run that consumed a signal before the dump)."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("create database src")
    with psycopg.connect(server.dsn("src"), autocommit=True) as conn:
        conn.execute("create extension durable cascade")
        conn.execute(DUMP_WORKFLOWS)

        def begin(workflow: str, value: dict) -> str:
            return conn.execute(
                "select durable.start(%s, %s)::text", [workflow, Jsonb(value)]
            ).fetchone()[0]

        runs = {
            "succeeded": begin("app.plain", {"n": 21}),
            "sleeping": begin("app.nap", {"seconds": 4}),
            "waiting": begin("app.approval", {}),
        }
        if signalled:
            runs["signalled"] = begin("app.approval", {})
            conn.execute(
                "select durable.signal(%s, 'answer', '\"yes\"')", [runs["signalled"]]
            )
        conn.execute("call durable.run_worker(drain => true)")
        runs["pending"] = begin("app.plain", {"n": 50})
        states = dict(
            conn.execute(
                "select id::text, status from durable._runs where id = any(%s::uuid[])",
                [list(runs.values())],
            ).fetchall()
        )
    assert {name: states[run] for name, run in runs.items()} == {
        "succeeded": "succeeded",
        "sleeping": "sleeping",
        "waiting": "waiting",
        "pending": "pending",
        **({"signalled": "succeeded"} if signalled else {}),
    }
    return runs


EXPECTED = {
    "succeeded": {"n": 42},
    "sleeping": {"word": "awake", "slept": 4},
    "waiting": {"answer": "go"},
    "pending": {"n": 100},
}


def test_dump_restore_resumes_runs_in_flight():
    """Runs dumped while succeeded, sleeping, waiting and pending are all finished
    with the same results in the restored database."""
    with private_cluster("chaos-dump") as server:
        runs = prepare_dump_source(server)
        dump_and_restore(server, "src", "restored")
        with psycopg.connect(server.dsn("restored"), autocommit=True) as conn:
            conn.execute(
                "select durable.signal(%s, 'answer', '\"go\"')", [runs["waiting"]]
            )
        drain_until(server, "restored", list(runs.values()), timeout=20)
        results = dict(
            query(
                server,
                "select id::text, result from durable._runs where status = 'succeeded'",
                dbname="restored",
            )
        )
        assert {name: results.get(run) for name, run in runs.items()} == EXPECTED


@pytest.mark.parametrize("insert", ["signal", "new_workflow"])
def test_restored_database_accepts_new_signals_and_workflows(insert: str):
    """After pg_restore, a database whose runs already received signals and pinned
    workflow versions accepts new signals and new workflow versions."""
    with private_cluster("chaos-dump-seq") as server:
        runs = prepare_dump_source(server, signalled=True)
        dump_and_restore(server, "src", "restored")
        with psycopg.connect(server.dsn("restored"), autocommit=True) as conn:
            if insert == "signal":
                conn.execute(
                    "select durable.signal(%s, 'answer', '\"go\"')", [runs["waiting"]]
                )
                finished = [runs["waiting"]]
            else:
                conn.execute(
                    "create function app.fresh(input jsonb) returns jsonb"
                    " language plpython3u as $$ return {'fresh': True} $$"
                )
                finished = [
                    conn.execute("select durable.start('app.fresh')::text").fetchone()[
                        0
                    ]
                ]
        drain_until(server, "restored", finished, timeout=20)
