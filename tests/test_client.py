"""durablectl: the commands in-process against the cluster, the worker as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import drain, run_state, start, wait_until, work_until_finished
from durablectl.cli import main
from durablectl.output import format_duration

CLIENT = Path(__file__).resolve().parent.parent / "client"
NOWHERE = "host=/nonexistent port=1"

WORKFLOWS = """
create schema if not exists cli;

create or replace function cli.add(input jsonb) returns jsonb
language plpython3u as $$
total = wf.step("add", lambda a, b: a + b, input["a"], input["b"])
wf.step("record", "select $1::int as total", [total])
return {"total": total}
$$;

create or replace function cli.divide(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("divide", "select 1 / $1::int as q", [input["by"]],
               retry={"max_attempts": 1})
return rows[0]
$$;

create or replace function cli.approval(input jsonb) returns jsonb
language plpython3u as $$
decision = wf.wait_for_signal("decision", timeout="1 hour")
return {"approved": bool(decision and decision.get("ok"))}
$$;

create or replace function cli.slow(input jsonb) returns jsonb
language plpython3u as $$
wf.step("sleep", "select pg_sleep($1)", [input["seconds"]])
return {"slept": input["seconds"]}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


@pytest.fixture
def dsn(cluster, dbname, monkeypatch):
    """The module database's DSN, also set as $DURABLE_DSN."""
    value = cluster.dsn(dbname)
    monkeypatch.setenv("DURABLE_DSN", value)
    return value


@pytest.fixture
def cli(dsn, capsys):
    """Run durablectl in-process; returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def spawn(dsn):
    """Start `durablectl worker` processes; any still running are killed after."""
    processes: list[subprocess.Popen] = []

    def spawn_worker(*args: str) -> subprocess.Popen:
        path = [str(CLIENT), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "DURABLE_DSN": dsn,
            "PYTHONPATH": os.pathsep.join(filter(None, path)),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "durablectl", "worker", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    yield spawn_worker
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def status_of(conn, run):
    return conn.execute("select durable.status(%s)", [run]).fetchone()[0]


def count(conn, sql):
    return conn.execute(sql).fetchone()[0]


def show_fields(out):
    """The 'name: value' lines printed by `durablectl show`, as a dict."""
    lines = out.split("\n\n")[0].splitlines()
    pairs = (line.split(":", 1) for line in lines if not line.startswith(" "))
    return {name: value.strip() for name, value in pairs}


def worker_sessions(conn):
    return count(
        conn,
        "select count(*) from pg_stat_activity"
        " where application_name = 'durablectl worker'",
    )


# Starting runs and reading them


def test_start_status_result(cli, conn):
    code, out, err = cli("start", "cli.add", "--input", '{"a": 2, "b": 3}')
    assert (code, err) == (0, "")
    run = out.strip()
    assert str(uuid.UUID(run)) == run
    assert cli("status", run) == (0, "pending\n", "")
    code, out, err = cli("result", run)
    assert (code, out) == (1, "")
    assert err.startswith(f"durablectl: ERROR DU002: run {run} of workflow cli.add")
    assert "HINT: durable.wait() blocks until the run ends.\n" in err
    drain(conn)
    assert cli("status", run) == (0, "succeeded\n", "")
    assert cli("result", run) == (0, '{"total": 5}\n', "")


def test_start_with_options(cli, conn):
    options = [
        "--input",
        '{"a": 1, "b": 1}',
        "--queue",
        "cli-options",
        "--priority",
        "7",
        "--idempotency-key",
        "order-7",
        "--start-at",
        "2999-01-01 00:00:00+00",
    ]
    code, out, _ = cli("start", "cli.add", *options)
    assert code == 0
    run = out.strip()
    assert cli("start", "cli.add", *options) == (0, out, "")
    state = run_state(conn, run)
    assert state["status"] == "pending"
    assert (state["queue"], state["priority"]) == ("cli-options", 7)
    assert state["idempotency_key"] == "order-7"
    assert state["input"] == {"a": 1, "b": 1}
    assert state["wake_at"].year == 2999


def test_dsn_option_before_or_after_the_command(cli, conn, dsn, monkeypatch):
    run = start(conn, "cli.add", {"a": 1, "b": 2})
    monkeypatch.setenv("DURABLE_DSN", NOWHERE)
    assert cli("--dsn", dsn, "status", run) == (0, "pending\n", "")
    assert cli("status", run, "--dsn", dsn) == (0, "pending\n", "")
    code, out, err = cli("status", run)
    assert (code, out) == (1, "")
    assert err.startswith("durablectl: ERROR: connection")
    assert "/nonexistent" in err


def test_result_waits_for_the_run(cli, conn, connect):
    run = start(conn, "cli.add", {"a": 1, "b": 2})
    worker = threading.Timer(0.3, drain, [connect()])
    worker.start()
    try:
        assert cli("result", run, "--wait", "10") == (0, '{"total": 3}\n', "")
    finally:
        worker.join()
    waiting = start(conn, "cli.approval")
    drain(conn)
    code, _, err = cli("result", waiting, "--wait", "0.2")
    assert code == 1
    assert err.startswith("durablectl: ERROR DU030: ")


def test_signal_a_waiting_run(cli, conn):
    run = start(conn, "cli.approval")
    drain(conn)
    assert cli("status", run) == (0, "waiting\n", "")
    code, out, err = cli("signal", run, "decision", "--payload", '{"ok": true}')
    assert (code, out, err) == (0, "true\n", "")
    work_until_finished(conn, [run])
    assert cli("result", run) == (0, '{"approved": true}\n', "")
    code, out, err = cli("signal", run, "decision")
    assert (code, out) == (1, "")
    assert err.startswith(f"durablectl: ERROR DU011: run {run} of workflow")
    assert "\nHINT: Signals can only be sent to runs that have not finished.\n" in err


def test_cancel_a_run(cli, conn):
    run = start(conn, "cli.approval")
    drain(conn)
    assert cli("cancel", run, "--reason", "not needed") == (0, "true\n", "")
    drain(conn)
    assert status_of(conn, run) == "cancelled"
    assert cli("cancel", run) == (0, "false\n", "")
    code, _, err = cli("result", run)
    assert code == 1
    assert err.startswith(f"durablectl: ERROR DU003: run {run} of workflow cli.")
    code, out, _ = cli("show", run)
    assert code == 0
    assert show_fields(out)["error"] == "DU003: cancelled: not needed"


def test_runs_lists_the_newest_first(cli, conn):
    runs = [start(conn, "cli.divide", {"by": by}) for by in (1, 0, 1)]
    drain(conn)
    code, out, err = cli("runs", "--workflow", "cli.divide")
    assert (code, err) == (0, "")
    header, rule, *rows = out.splitlines()
    assert header.split() == [
        "id",
        "workflow",
        "status",
        "attempt",
        "created_at",
        "duration",
        "error",
    ]
    assert set(rule) == {"-", " "}
    assert [row.split()[0] for row in rows] == runs[::-1]
    assert [row.split()[2] for row in rows] == ["succeeded", "failed", "succeeded"]
    assert rows[1].endswith("  division by zero")
    for line in [rule, *rows]:
        assert line[header.index("status") - 2 : header.index("status")] == "  "
    code, out, _ = cli("runs", "--workflow", "cli.divide", "--status", "failed")
    assert [row.split()[0] for row in out.splitlines()[2:]] == [runs[1]]
    code, out, _ = cli("runs", "--limit", "1", "--workflow", "cli.divide")
    assert [row.split()[0] for row in out.splitlines()[2:]] == [runs[2]]
    code, out, _ = cli("runs", "--workflow", "cli.nothing")
    assert (code, len(out.splitlines())) == (0, 2)


def test_show_a_run_and_its_steps(cli, conn):
    run = start(conn, "cli.add", {"a": 20, "b": 22})
    code, out, _ = cli("show", run)
    assert code == 0
    assert "\n\n(no steps)\n\nflowchart TD\n" in out
    drain(conn)
    code, out, err = cli("show", run)
    assert (code, err) == (0, "")
    fields = show_fields(out)
    assert (fields["id"], fields["workflow"]) == (run, "cli.add")
    assert (fields["status"], fields["attempt"], fields["steps"]) == (
        "succeeded",
        "1",
        "2",
    )
    assert (fields["input"], fields["result"]) == (
        '{"a": 20, "b": 22}',
        '{"total": 42}',
    )
    assert (fields["error"], fields["parent_id"]) == ("", "")
    header, _, *rows = out.split("\n\n")[1].splitlines()
    assert header.split() == [
        "seq",
        "name",
        "kind",
        "status",
        "attempts",
        "duration",
        "error",
    ]
    assert [row.split()[:5] for row in rows] == [
        ["1", "add", "python", "succeeded", "1"],
        ["2", "record", "sql", "succeeded", "1"],
    ]
    diagram = out.split("\n\n")[2]
    assert diagram.startswith("flowchart TD\n")
    assert "s1 --> s2" in diagram
    assert 'finish(["succeeded"])' in diagram


def test_show_a_failed_run(cli, conn):
    run = start(conn, "cli.divide", {"by": 0})
    drain(conn)
    code, out, _ = cli("show", run)
    assert code == 0
    fields = show_fields(out)
    assert fields["status"] == "failed"
    assert fields["error"] == "22012: division by zero"
    assert (fields["error step"], fields["error type"]) == ("divide", "DivisionByZero")
    assert "spiexceptions.DivisionByZero: division by zero" in out
    (row,) = out.split("\n\n")[1].splitlines()[2:]
    assert row.split()[:5] == ["1", "divide", "sql", "failed", "1"]
    assert row.endswith("  division by zero")


# Errors


def test_unknown_workflow(cli):
    code, out, err = cli("start", "cli.no_such_workflow")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == (
        'durablectl: ERROR 42883: workflow "cli.no_such_workflow" does not exist'
    )
    assert lines[-1].startswith("HINT: A workflow is a PL/Python function")


@pytest.mark.parametrize(
    "command",
    [
        ["status", "{run}"],
        ["result", "{run}"],
        ["result", "{run}", "--wait", "1"],
        ["show", "{run}"],
        ["cancel", "{run}"],
        ["signal", "{run}", "decision"],
    ],
)
def test_unknown_run(cli, command):
    run = str(uuid.uuid4())
    args = [arg.format(run=run) for arg in command]
    code, out, err = cli(*args)
    assert (code, out) == (1, "")
    assert err == (
        f"durablectl: ERROR DU010: run {run} not found\n"
        "HINT: Runs are deleted by durable.purge() once finished and old enough.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["start"], "the following arguments are required: workflow"),
        (["start", "cli.add", "--input", "{oops"], "argument --input: invalid JSON"),
        (["status", "run-1"], "not a run id (a UUID): 'run-1'"),
        (["runs", "--status", "done"], "invalid choice: 'done'"),
        (["runs", "--limit", "0"], "not a positive integer: '0'"),
        (["result", str(uuid.uuid4()), "--wait", "-1"], "not a number of seconds"),
        (["worker", "--concurrency", "none"], "not a positive integer: 'none'"),
    ],
)
def test_bad_usage_exits_2(cli, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_worker_rejects_a_bad_max_runtime(cli):
    code, _, err = cli("worker", "--max-runtime", "soon")
    assert code == 1
    assert err.startswith("durablectl: ERROR 22007: invalid input syntax")
    code, _, err = cli("worker", "--max-runtime", "0 seconds")
    assert code == 2
    assert "durablectl: error: --max-runtime must be a positive interval" in err


def test_format_duration():
    assert format_duration(timedelta(milliseconds=42)) == "0.042s"
    assert format_duration(timedelta(minutes=3, seconds=7.4)) == "3m07s"
    assert format_duration(timedelta(days=1, hours=2, seconds=7)) == "26h00m07s"


# Workers


def test_worker_drain_executes_ready_runs_and_exits(cli, conn):
    runs = [start(conn, "cli.add", {"a": n, "b": n}) for n in range(4)]
    code, out, err = cli("worker", "--drain", "--concurrency", "2")
    assert (code, out) == (0, "")
    assert [status_of(conn, run) for run in runs] == ["succeeded"] * 4
    lines = err.splitlines()
    assert sorted(lines) == [
        "durablectl: worker 1/2 started (queue *, max_runtime 10 seconds, drain)",
        "durablectl: worker 1/2 stopped",
        "durablectl: worker 2/2 started (queue *, max_runtime 10 seconds, drain)",
        "durablectl: worker 2/2 stopped",
    ]
    assert count(conn, "select count(*) from durable._workers") == 0


def test_worker_stops_gracefully_on_sigterm(conn, spawn):
    worker = spawn("--concurrency", "2", "--max-runtime", "1 second")
    runs = [start(conn, "cli.add", {"a": n, "b": 1}) for n in range(6)]
    wait_until(lambda: {status_of(conn, run) for run in runs} == {"succeeded"})
    wait_until(lambda: count(conn, "select count(*) from durable._workers") == 2)
    # A run in progress when the signal comes is finished, not abandoned.
    slow = start(conn, "cli.slow", {"seconds": 1})
    wait_until(lambda: status_of(conn, slow) == "running")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=5)
    assert worker.returncode == 0, err
    assert status_of(conn, slow) == "succeeded"
    assert count(conn, "select count(*) from durable._workers") == 0
    assert worker_sessions(conn) == 0
    assert sorted(err.splitlines()) == [
        "durablectl: SIGTERM: stopping once the running calls return"
        " (send it again to exit at once)",
        "durablectl: worker 1/2 started (queue *, max_runtime 1 second)",
        "durablectl: worker 1/2 stopped",
        "durablectl: worker 2/2 started (queue *, max_runtime 1 second)",
        "durablectl: worker 2/2 stopped",
    ]


def test_second_sigint_exits_at_once(conn, spawn):
    worker = spawn("--queue", "cli-slow", "--max-runtime", "1 minute")
    run = start(conn, "cli.slow", {"seconds": 60}, queue="cli-slow")
    wait_until(lambda: status_of(conn, run) == "running")
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert worker.poll() is None  # waiting for the running CALL
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=5)
    assert worker.returncode == 130, err
    assert "SIGINT again: ending the worker sessions and exiting at once" in err
    wait_until(lambda: worker_sessions(conn) == 0, timeout=5)
    # The next worker's housekeeping puts the run back in line, as after a crash.
    drain(conn, queue="cli-none")
    assert status_of(conn, run) == "pending"
    assert count(conn, "select count(*) from durable._workers") == 0
    conn.execute("select durable.cancel(%s)", [run])
    drain(conn, queue="cli-slow")
    assert status_of(conn, run) == "cancelled"


def test_worker_reconnects_when_its_session_ends(conn, spawn):
    worker = spawn("--max-runtime", "1 second")
    first = start(conn, "cli.add", {"a": 1, "b": 1})
    wait_until(lambda: status_of(conn, first) == "succeeded")
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name = 'durablectl worker'"
    )
    second = start(conn, "cli.add", {"a": 2, "b": 2})
    wait_until(lambda: status_of(conn, second) == "succeeded")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=5)
    assert worker.returncode == 0, err
    assert "durablectl: worker 1/1: ERROR" in err
    assert "; retrying in 0.5s\n" in err
