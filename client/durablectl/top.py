"""``durablectl top``: queues, workers and recent failures, redrawn every second.

Each frame reads the views ``durable.queue_stats``, ``durable.workers`` and
``durable.failures`` in one transaction (so the three agree) and prints them as
tables. The live view clears the terminal with plain ANSI codes before each frame and
cuts lines to the terminal's width; ``--once`` prints a single frame without any
escape codes, for scripts and tests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import psycopg

from durablectl.argtypes import positive_int, seconds
from durablectl.output import render_table

DESCRIPTION = "Show queues, workers and recent failures, refreshed every second."

CLEAR = "\x1b[H\x1b[2J"
"""Cursor to the top left corner, then erase the screen."""

QUEUES = """
select queue, workflow, ready, running, scheduled, sleeping, waiting,
    succeeded_1h as "ok 1h", failed_1h as "failed 1h",
    cancelled_1h as "cancelled 1h", oldest_ready_age as "oldest ready",
    p50_duration as p50, p95_duration as p95
from durable.queue_stats
order by queue, workflow
"""

WORKERS = """
select id, pid, role, coalesce(queue, '*') as queue, alive,
    run_id as run, workflow,
    pg_catalog.now() - heartbeat_at as "heartbeat age",
    pg_catalog.now() - started_at as up
from durable.workers
order by id
"""

FAILURES = """
select kind, workflow, step, sqlstate, count, runs,
    pg_catalog.now() - last_seen as "last seen ago", message
from durable.failures
order by last_seen desc, kind, workflow, step, message
limit %s
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``durablectl top``."""
    parser.add_argument(
        "--once",
        action="store_true",
        help="print one frame, without terminal escape codes, and exit",
    )
    parser.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two frames (default: 1)",
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        metavar="N",
        help="exit after N frames (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--failures",
        type=positive_int,
        default=10,
        metavar="N",
        help="failure groups shown, the most recent first (default: 10)",
    )


def _section(title: str, cur: psycopg.Cursor, empty: str) -> list[str]:
    rows = cur.fetchall()
    headers = [column.name for column in cur.description]
    body = render_table(headers, rows) if rows else empty
    return [title, *body.splitlines(), ""]


def frame(conn: psycopg.Connection, failures: int) -> list[str]:
    """The lines of one frame, read in one transaction."""
    with conn.transaction():
        database, now = conn.execute(
            "select pg_catalog.current_database(),"
            " to_char(pg_catalog.now(), 'YYYY-MM-DD HH24:MI:SS TZ')"
        ).fetchone()
        lines = [f"durable top: database {database} at {now}", ""]
        lines += _section("Queues", conn.execute(QUEUES), "(no runs)")
        lines += _section("Workers", conn.execute(WORKERS), "(no workers)")
        lines += _section(
            "Failures in the last 24 hours",
            conn.execute(FAILURES, [failures]),
            "(none)",
        )
    return lines[:-1]


def _fit(lines: Sequence[str]) -> str:
    """The frame cut to the terminal's size (long lines end with '>')."""
    width, height = shutil.get_terminal_size()
    shown = [
        line if len(line) <= width else line[: max(width - 1, 0)] + ">"
        for line in lines
    ]
    if len(shown) > height - 1:
        shown = [*shown[: max(height - 2, 0)], "..."]
    return "\n".join(shown)


def show(
    conn: psycopg.Connection,
    *,
    once: bool = False,
    interval: float = 1.0,
    count: int | None = None,
    failures: int = 10,
    out: TextIO | None = None,
) -> int:
    """Print frames to ``out`` until ``count`` frames were shown or Ctrl-C."""
    out = out or sys.stdout
    if once:
        out.write("\n".join(frame(conn, failures)) + "\n")
        return 0
    shown = 0
    try:
        while True:
            lines = frame(conn, failures)
            out.write(CLEAR + _fit(lines) + "\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def run(args: argparse.Namespace) -> int:
    """``durablectl top``: connect, then show frames as the options say."""
    with psycopg.connect(
        args.dsn, autocommit=True, fallback_application_name="durablectl top"
    ) as conn:
        return show(
            conn,
            once=args.once,
            interval=args.interval,
            count=args.count,
            failures=args.failures,
        )
