"""Step timeouts: the worker interrupts its own step (durable.alarm), one worker is
enough, and the interrupt never reaches a later statement of the worker."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from conftest import drain, run_state, start, work_until_finished
from durable import alarm, context
from psycopg.types.json import Jsonb

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.effects (run_id uuid, step text);
create sequence if not exists app.tries;

create or replace function app.nap(input jsonb) returns jsonb
language plpython3u as $$
wf.step("nap", "select pg_sleep($1)", [input["sleep"]], timeout=input["timeout"],
        retry={"max_attempts": input.get("max", 1), "initial_interval": 0.01,
               "jitter": 0})
wf.step("after", "insert into app.effects values ($1, 'after')", [wf.run_id])
return {"ok": True}
$$;

create or replace function app.slow_first(input jsonb) returns jsonb
language plpython3u as $$
wf.step("nap",
        "select pg_sleep(case when nextval('app.tries') = 1 then 3 else 0 end)",
        timeout=0.5, retry={"max_attempts": 2, "initial_interval": 0.01,
                            "jitter": 0})
return {"attempt_ok": True}
$$;

create or replace function app.python_late(input jsonb) returns jsonb
language plpython3u as $$
import time
import durable
def late():
    time.sleep(input["sleep"])
    if input.get("calls_db", True):
        plpy.execute("insert into app.effects values ('%s', 'late')" % wf.run_id)
    return 1
try:
    wf.step("late", late, timeout=input["timeout"], retry={"max_attempts": 1})
except durable.StepFailed as failed:
    if not input.get("go_on"):
        raise
    wf.step("next", "insert into app.effects values ($1, 'next')", [wf.run_id])
    return {"failed": failed.error["sqlstate"]}
return {"ok": True}
$$;

create or replace function app.catches(input jsonb) returns jsonb
language plpython3u as $$
def swallow():
    try:
        plpy.execute("select pg_sleep(3)")
    except plpy.SPIError:
        pass  # the cancel is caught: the step still timed out
    return "done"
wf.step("swallow", swallow, timeout=0.3, retry={"max_attempts": 1})
$$;

create or replace function app.near_deadline(input jsonb) returns jsonb
language plpython3u as $$
import time
import durable
def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    plpy.execute("select 1")
    return "done"
outcomes = {"succeeded": 0, "timed_out": 0}
for i in range(input["steps"]):
    try:
        wf.step("busy", busy, 0.001 * (i % 5) + 0.003, timeout=0.005,
                retry={"max_attempts": 1})
        outcomes["succeeded"] += 1
    except durable.StepFailed as failed:
        assert failed.error["sqlstate"] == "57014", failed.error
        assert "timed out after" in failed.error["message"], failed.error
        outcomes["timed_out"] += 1
wf.step("last", "insert into app.effects values ($1, 'last')", [wf.run_id])
return outcomes
$$;

create or replace function app.no_timer(input jsonb) returns jsonb
language plpython3u as $$
import durable.alarm
durable.alarm._loaded, durable.alarm._timers = True, None  # as without timer_create
wf.step("nap", "select pg_sleep(30)", timeout=0.5, retry={"max_attempts": 1})
$$;
"""

TIMED_OUT = "57014"


@pytest.fixture
def workflows(conn):
    conn.execute(WORKFLOWS)
    conn.execute("select setval('app.tries', 1, false)")
    return conn


def timed_drain(conn) -> float:
    """Drain with one worker on ``conn``; the seconds the CALL took."""
    started = time.monotonic()
    drain(conn)
    return time.monotonic() - started


def attempts(conn, run):
    return conn.execute(
        "select seq, attempt, error->>'sqlstate' from durable._step_attempts"
        " where run_id = %s order by seq, attempt",
        [run],
    ).fetchall()


def effects(conn, run):
    return [
        row[0]
        for row in conn.execute(
            "select step from app.effects where run_id = %s order by step", [run]
        ).fetchall()
    ]


def assert_timed_out(state, step, after):
    assert state["status"] == "failed", state
    assert state["error"]["sqlstate"] == TIMED_OUT, state["error"]
    assert state["error"]["message"] == f'step "{step}" timed out after {after}'


# ------------------------------------------------------------ one worker, SQL


def test_one_worker_cancels_its_own_overdue_sql_step(workflows):
    conn = workflows
    run = start(conn, "app.nap", {"sleep": 3, "timeout": 0.5})
    elapsed = timed_drain(conn)
    assert elapsed < 2.5  # pg_sleep(3) did not run to its end
    assert_timed_out(run_state(conn, run), "nap", "500ms")
    assert attempts(conn, run) == [(1, 1, TIMED_OUT)]
    assert effects(conn, run) == []
    deadline = conn.execute(
        "select step_deadline from durable._workers where pid = pg_backend_pid()"
    ).fetchone()
    assert deadline is None or deadline[0] is None


def test_a_timed_out_attempt_is_retried_and_the_next_one_succeeds(workflows):
    conn = workflows
    run = start(conn, "app.slow_first")
    started = time.monotonic()
    work_until_finished(conn, [run])  # one worker: this connection
    assert time.monotonic() - started < 2.5
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    assert attempts(conn, run) == [(1, 1, TIMED_OUT)]
    assert conn.execute(
        "select status, attempts from durable.steps where run_id = %s", [run]
    ).fetchone() == ("succeeded", 2)


def test_a_fast_step_with_a_timeout_succeeds(workflows):
    conn = workflows
    run = start(conn, "app.nap", {"sleep": 0, "timeout": "2 seconds"})
    drain(conn)
    assert run_state(conn, run)["status"] == "succeeded"
    assert effects(conn, run) == ["after"]


def test_sql_declared_step_timeout_with_one_worker(workflows):
    conn = workflows
    conn.execute(
        "select durable.define_workflow('app.declared_nap', %s)",
        [
            Jsonb(
                {
                    "steps": [
                        {
                            "name": "nap",
                            "sql": "select pg_sleep(3)",
                            "timeout": "0.5 seconds",
                            "retry": {"max_attempts": 1},
                        }
                    ]
                }
            )
        ],
    )
    run = start(conn, "app.declared_nap")
    elapsed = timed_drain(conn)
    assert elapsed < 2.5
    assert_timed_out(run_state(conn, run), "nap", "500ms")


# --------------------------------------------------------- one worker, Python


def test_python_step_is_interrupted_at_its_first_database_call_after_the_deadline(
    workflows,
):
    conn = workflows
    run = start(conn, "app.python_late", {"sleep": 0.8, "timeout": 0.3})
    drain(conn)
    assert_timed_out(run_state(conn, run), "late", "300ms")
    assert effects(conn, run) == []  # the insert after the deadline never ran


def test_python_step_that_returns_after_its_deadline_timed_out(workflows):
    conn = workflows
    run = start(
        conn, "app.python_late", {"sleep": 0.5, "timeout": 0.2, "calls_db": False}
    )
    drain(conn)
    assert_timed_out(run_state(conn, run), "late", "200ms")


def test_a_caught_cancel_still_times_the_step_out(workflows):
    conn = workflows
    run = start(conn, "app.catches")
    elapsed = timed_drain(conn)
    assert elapsed < 2.5
    assert_timed_out(run_state(conn, run), "swallow", "300ms")


# ------------------------------------------------------------- stray cancels


def test_next_step_and_next_run_of_the_worker_are_not_cancelled(workflows):
    """The timer fires while no statement runs (a Python step past its deadline):
    its pending cancel must not reach the next step nor the next run."""
    conn = workflows
    first = start(
        conn,
        "app.python_late",
        {"sleep": 0.4, "timeout": 0.1, "calls_db": False, "go_on": True},
    )
    second = start(conn, "app.nap", {"sleep": 0, "timeout": 5})
    third = start(conn, "app.python_late", {"sleep": 0.4, "timeout": 0.1})
    fourth = start(conn, "app.nap", {"sleep": 0, "timeout": 5})
    drain(conn)  # one CALL runs all four: it must not fail
    state = run_state(conn, first)
    assert state["status"] == "succeeded", state["error"]
    assert state["result"] == {"failed": TIMED_OUT}
    assert effects(conn, first) == ["next"]
    assert run_state(conn, second)["status"] == "succeeded"
    assert_timed_out(run_state(conn, third), "late", "100ms")
    assert run_state(conn, fourth)["status"] == "succeeded"
    assert conn.execute("select 1").fetchone() == (1,)


def test_timer_firing_around_the_end_of_steps_never_leaks(workflows):
    """Hundreds of steps that end just before or just after their timeout."""
    conn = workflows
    run = start(conn, "app.near_deadline", {"steps": 300})
    after = start(conn, "app.nap", {"sleep": 0, "timeout": 5})
    drain(conn)
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    outcomes = state["result"]
    assert outcomes["succeeded"] + outcomes["timed_out"] == 300
    assert outcomes["timed_out"] > 0
    assert effects(conn, run) == ["last"]
    assert run_state(conn, after)["status"] == "succeeded"


# ------------------------------------------------------------------ fallback


def test_without_timers_housekeeping_of_another_worker_still_cancels(
    workflows, connect
):
    conn = workflows
    run = start(conn, "app.no_timer")

    def worker():
        connect().execute("call durable.run_worker(max_runtime => '4 seconds')")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_timed_out(run_state(conn, run), "nap", "500ms")


# ----------------------------------------------- durable.alarm, no server


@pytest.fixture
def usr1():
    """Deliveries of SIGUSR1 to this process (stands in for PostgreSQL's SIGINT)."""
    received: list[float] = []
    previous = signal.signal(
        signal.SIGUSR1, lambda *_: received.append(time.monotonic())
    )
    yield received
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.skipif(not alarm.available(), reason="no POSIX timers")
def test_alarm_fires_once_and_reports_it(usr1):
    armed_at = time.monotonic()
    timer = alarm.arm(0.05, signal.SIGUSR1)
    time.sleep(0.2)
    assert timer.disarm() is True
    assert timer.disarm() is True  # idempotent
    assert len(usr1) == 1
    assert usr1[0] - armed_at >= 0.05


@pytest.mark.skipif(not alarm.available(), reason="no POSIX timers")
def test_alarm_disarmed_in_time_never_fires(usr1):
    timer = alarm.arm(0.2, signal.SIGUSR1)
    time.sleep(0.01)
    assert timer.disarm() is False
    time.sleep(0.3)
    assert usr1 == []


@pytest.mark.skipif(not alarm.available(), reason="no POSIX timers")
def test_alarm_of_zero_seconds_still_arms(usr1):
    timer = alarm.arm(0, signal.SIGUSR1)
    time.sleep(0.05)
    assert timer.disarm() is True
    assert len(usr1) == 1


class FakeTimers:
    """Stands in for the C library's timer functions."""

    def __init__(self, create=0, settime=0, left_ns=0):
        self.results = {"create": create, "settime": settime}
        self.left_ns = left_ns
        self.calls: list[str] = []

    def create(self, clock, event, timer_id):
        self.calls.append("create")
        return self.results["create"]

    def settime(self, timer_id, flags, new, old):
        self.calls.append("settime")
        if old is not None:
            old._obj.it_value.tv_nsec = self.left_ns
        return self.results["settime"]

    def delete(self, timer_id):
        self.calls.append("delete")
        return 0


def test_alarm_falls_back_when_timers_are_missing(monkeypatch):
    monkeypatch.setattr(alarm, "_load", lambda: None)
    assert alarm.arm(1) is None
    assert alarm.available() is False


def test_alarm_falls_back_when_a_timer_cannot_be_made(monkeypatch):
    timers = FakeTimers(create=-1)
    monkeypatch.setattr(alarm, "_load", lambda: timers)
    assert alarm.arm(1) is None
    timers = FakeTimers(settime=-1)
    monkeypatch.setattr(alarm, "_load", lambda: timers)
    assert alarm.arm(1) is None
    assert timers.calls == ["create", "settime", "delete"]


@pytest.mark.parametrize(("left_ns", "fired"), [(0, True), (1, False)])
def test_alarm_fired_means_no_time_was_left(monkeypatch, left_ns, fired):
    timers = FakeTimers(left_ns=left_ns)
    monkeypatch.setattr(alarm, "_load", lambda: timers)
    timer = alarm.arm(1)
    assert timer.disarm() is fired
    assert timers.calls == ["create", "settime", "settime", "delete"]


class Cancelled(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class FakeDb:
    """A database whose next statement may fail with a given SQLSTATE."""

    def __init__(self, fails_with=None):
        self.fails_with = fails_with
        self.statements: list[str] = []

    def execute(self, sql, types=(), args=()):
        self.statements.append(sql)
        if self.fails_with:
            raise Cancelled(self.fails_with)


def test_absorb_cancel_takes_only_a_cancel():
    for pending in (None, "57014"):
        db = FakeDb(pending)
        alarm.absorb_cancel(db)
        assert db.statements == ["select 1"]
    with pytest.raises(Cancelled):
        alarm.absorb_cancel(FakeDb("08006"))


def returns():
    return 42


def fails():
    raise ValueError("no")


def is_cancelled():
    raise Cancelled(TIMED_OUT)


class FakeAlarm:
    def __init__(self, fires):
        self.fires = fires
        self.disarmed = 0

    def disarm(self):
        self.disarmed += 1
        return self.fires


def timed(monkeypatch, fires, action, timeout=1.0):
    """Run ``action`` through WorkflowContext._perform_timed with a fake timer."""
    armed: list[FakeAlarm] = []

    def arm(seconds):
        armed.append(FakeAlarm(fires))
        return armed[-1]

    monkeypatch.setattr(alarm, "arm", arm)
    db = FakeDb()
    wf = context.WorkflowContext.__new__(context.WorkflowContext)
    wf._db = db
    try:
        return wf._perform_timed("s", action, (), {}, timeout)
    finally:
        assert [a.disarmed for a in armed] == ([] if timeout is None else [1])
        assert db.statements == (["select 1"] if fires and armed else [])


def test_step_that_ends_before_its_timer_keeps_its_outcome(monkeypatch):
    assert timed(monkeypatch, False, returns) == 42
    with pytest.raises(ValueError):
        timed(monkeypatch, False, fails)
    assert timed(monkeypatch, True, returns, timeout=None) == 42


@pytest.mark.parametrize("action", [returns, fails, is_cancelled])
def test_step_whose_timer_fired_timed_out_whatever_it_did(monkeypatch, action):
    with pytest.raises(context._StepTimedOut) as raised:
        timed(monkeypatch, True, action)
    assert raised.value.sqlstate == TIMED_OUT


def test_base_exceptions_pass_through_a_fired_timer(monkeypatch):
    def suspend():
        raise context.Suspend("sleeping", None, None)

    with pytest.raises(context.Suspend):
        timed(monkeypatch, True, suspend)
