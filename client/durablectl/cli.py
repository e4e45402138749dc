"""The ``durablectl`` command line: start, inspect and steer runs, run workers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Callable

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from durablectl import top
from durablectl.argtypes import positive_int, seconds
from durablectl.output import describe_error, render_fields, render_table
from durablectl.worker import UsageError, WorkerPool

STATUSES = (
    "pending",
    "running",
    "sleeping",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
)
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def json_value(text: str) -> Jsonb:
    """argparse type: a JSON document, ready to be passed as a jsonb parameter."""
    try:
        return Jsonb(json.loads(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON ({exc})") from None


def run_id(text: str) -> uuid.UUID:
    """argparse type: the id of a run, a UUID."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a run id (a UUID): {text!r}") from None


def connect(args: argparse.Namespace) -> psycopg.Connection:
    """An autocommit connection to the database of ``--dsn``."""
    return psycopg.connect(
        args.dsn, autocommit=True, fallback_application_name="durablectl"
    )


def start(args: argparse.Namespace) -> int:
    """Start a run of a workflow and print its id."""
    options = {
        "input": args.input,
        "start_at": args.start_at,
        "idempotency_key": args.idempotency_key,
        "queue": args.queue,
        "priority": args.priority,
    }
    given = {name: value for name, value in options.items() if value is not None}
    named = "".join(f", {name} => %s" for name in given)
    with connect(args) as conn:
        run = conn.execute(
            f"select durable.start(%s{named})", [args.workflow, *given.values()]
        ).fetchone()[0]
    print(run)
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the status of a run."""
    with connect(args) as conn:
        print(conn.execute("select durable.status(%s)", [args.run]).fetchone()[0])
    return 0


def result(args: argparse.Namespace) -> int:
    """Print the result of a run as JSON, waiting for it to end with ``--wait``."""
    with connect(args) as conn:
        if args.wait is None:
            cur = conn.execute("select durable.result(%s)::text", [args.run])
        else:
            cur = conn.execute(
                "select durable.wait(%s, make_interval(secs => %s))::text",
                [args.run, args.wait],
            )
        value = cur.fetchone()[0]
    print("null" if value is None else value)
    return 0


def send_signal(args: argparse.Namespace) -> int:
    """Send a signal to a run; prints true (a finished run is an error)."""
    with connect(args) as conn:
        sent = conn.execute(
            "select durable.signal(%s, %s, %s)", [args.run, args.name, args.payload]
        ).fetchone()[0]
    print(json.dumps(sent))
    return 0


def cancel(args: argparse.Namespace) -> int:
    """Cancel a run and its children; prints true, or false if it had finished."""
    with connect(args) as conn:
        cancelled = conn.execute(
            "select durable.cancel(%s, %s)", [args.run, args.reason]
        ).fetchone()[0]
    print(json.dumps(cancelled))
    return 0


def list_runs(args: argparse.Namespace) -> int:
    """Print the newest runs as a table, optionally of one status or workflow."""
    with connect(args) as conn:
        cur = conn.execute(
            "select id, workflow, status, attempt, created_at, duration,"
            " error ->> 'message' as error"
            " from durable.runs"
            " where (%(status)s::text is null or status = %(status)s)"
            " and (%(workflow)s::text is null or workflow = %(workflow)s)"
            " order by created_at desc, id desc limit %(limit)s",
            {"status": args.status, "workflow": args.workflow, "limit": args.limit},
        )
        print(render_table([column.name for column in cur.description], cur))
    return 0


def show(args: argparse.Namespace) -> int:
    """Print the fields of a run, its steps as a table, and its Mermaid diagram."""
    with connect(args) as conn:
        conn.execute("select durable.status(%s)", [args.run])  # DU010 when unknown
        run = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "select id, workflow, status, attempt, queue, priority, owner,"
                " parent_id, idempotency_key, created_at, started_at, finished_at,"
                " wake_at, duration, worker_id, steps, input::text as input,"
                " result::text as result, error from durable.runs where id = %s",
                [args.run],
            )
            .fetchone()
        )
        steps = conn.execute(
            "select seq, name, kind, status, attempts, duration,"
            " error ->> 'message' as error"
            " from durable.steps where run_id = %s order by seq",
            [args.run],
        )
        headers = [column.name for column in steps.description]
        step_rows = steps.fetchall()
        diagram = conn.execute("select durable.explain(%s)", [args.run]).fetchone()[0]
    error = run.pop("error")
    print(render_fields([*run.items(), *error_fields(error)]))
    print()
    print(render_table(headers, step_rows) if step_rows else "(no steps)")
    print()
    print(diagram, end="")
    return 0


def error_fields(error: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The fields shown for the error document of a run (none when it has none)."""
    if error is None:
        return [("error", None)]
    fields = [("error", f"{error.get('sqlstate', '')}: {error.get('message', '')}")]
    fields.extend(
        (f"error {key}", error[key])
        for key in ("step", "type", "detail", "hint", "traceback")
        if error.get(key) is not None
    )
    return fields


def worker(args: argparse.Namespace) -> int:
    """Run worker threads until stopped (or, with ``--drain``, until idle)."""
    pool = WorkerPool(
        args.dsn, args.concurrency, args.queue, args.max_runtime, args.drain
    )
    return pool.run()


def add_dsn_option(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--dsn`` to a parser (each parser needs an action of its own)."""
    parser.add_argument(
        "--dsn",
        default=default,
        help="libpq connection string or URI (default: $DURABLE_DSN, else the"
        " libpq defaults and PG* environment variables)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``durablectl`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="durablectl",
        description="Start, inspect and steer durable workflow runs, and run workers.",
    )
    add_dsn_option(parser, os.environ.get("DURABLE_DSN", ""))
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        add_dsn_option(sub, argparse.SUPPRESS)  # given after the command
        return sub

    sub = command("worker", worker, "Execute runs with CALL durable.run_worker().")
    sub.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker threads, each with its own connection (default: 1)",
    )
    sub.add_argument(
        "--queue", metavar="Q", help="execute runs of this queue only (default: all)"
    )
    sub.add_argument(
        "--max-runtime",
        default="10 seconds",
        metavar="INTERVAL",
        help="length of one CALL, and so the longest wait when stopping"
        " (default: '10 seconds')",
    )
    sub.add_argument(
        "--drain",
        action="store_true",
        help="each thread calls once, returning when nothing is ready; then exit",
    )

    sub = command("start", start, "Start a run of a workflow and print its id.")
    sub.add_argument("workflow", help="the workflow function, schema.function")
    sub.add_argument("--input", type=json_value, metavar="JSON", help="its input")
    sub.add_argument("--queue", metavar="Q", help="queue (default: 'default')")
    sub.add_argument(
        "--priority", type=int, metavar="N", help="higher runs first (default: 0)"
    )
    sub.add_argument(
        "--idempotency-key",
        metavar="K",
        help="return the existing run of this workflow with this key, if any",
    )
    sub.add_argument(
        "--start-at", metavar="TS", help="do not run before this timestamptz"
    )

    sub = command("status", status, "Print the status of a run.")
    sub.add_argument("run", type=run_id)

    sub = command("result", result, "Print the result of a run as JSON.")
    sub.add_argument("run", type=run_id)
    sub.add_argument(
        "--wait",
        type=seconds,
        metavar="SECONDS",
        help="wait this long for the run to end (durable.wait)",
    )

    sub = command("signal", send_signal, "Send a signal to a run.")
    sub.add_argument("run", type=run_id)
    sub.add_argument("name", help="the name the workflow waits for")
    sub.add_argument("--payload", type=json_value, metavar="JSON")

    sub = command("cancel", cancel, "Cancel a run and its descendants.")
    sub.add_argument("run", type=run_id)
    sub.add_argument("--reason", metavar="TEXT")

    sub = command("runs", list_runs, "List the newest runs.")
    sub.add_argument(
        "--status", choices=STATUSES, metavar="S", help=", ".join(STATUSES)
    )
    sub.add_argument("--workflow", metavar="W", help="schema.function")
    sub.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="(default: 20)"
    )

    sub = command("show", show, "Show a run and its steps.")
    sub.add_argument("run", type=run_id)

    top.add_arguments(command("top", top.run, top.DESCRIPTION))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``durablectl`` with ``argv`` (default: the process's arguments).

    Returns the exit status: 0, 1 after an error from PostgreSQL, 2 for bad usage,
    130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except psycopg.Error as exc:
        first, *rest = describe_error(exc)
        print(f"durablectl: {first}", *rest, sep="\n", file=sys.stderr)
        return EXIT_ERROR
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"durablectl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
