"""``durablectl worker``: threads that each loop ``CALL durable.run_worker()``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from durablectl.output import describe_error

CALL = "call durable.run_worker(queue => %s, max_runtime => %s::interval, drain => %s)"
APPLICATION_NAME = "durablectl worker"
FIRST_RETRY = 0.5
"""Seconds before the first retry after an error; doubled each time up to LAST_RETRY."""
LAST_RETRY = 30.0
JOIN_POLL = 0.1
"""Seconds between two looks of the main thread at its workers (signals run then)."""
FORCED_EXIT = 130
"""Exit status after a second SIGINT or SIGTERM (128 + SIGINT, as shells report it)."""

_log_lock = threading.Lock()


def log(message: str) -> None:
    """Write 'durablectl: message' to stderr as one line, even from several threads."""
    with _log_lock:
        sys.stderr.write(f"durablectl: {message}\n")
        sys.stderr.flush()


class UsageError(Exception):
    """A command-line value that the server showed to be unusable."""


def worker_conninfo(dsn: str) -> str:
    """``dsn`` with ``-c statement_timeout=0`` added to its options.

    statement_timeout covers a whole CALL (docs/workers.md), so worker sessions lift
    it; other options given in the DSN or in PGOPTIONS are kept.
    """
    options = conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    return make_conninfo(
        dsn,
        options=f"{options} -c statement_timeout=0".strip(),
        fallback_application_name=APPLICATION_NAME,
    )


class WorkerPool:
    """Threads that each hold a connection and loop ``CALL durable.run_worker()``.

    The first SIGINT or SIGTERM stops the pool gracefully: no thread starts another
    CALL, and each running CALL returns within ``max_runtime``. A second one ends the
    workers' sessions at once (their runs are reclaimed as after a crash).
    """

    def __init__(
        self,
        dsn: str,
        concurrency: int,
        queue: str | None,
        max_runtime: str,
        drain: bool,
    ):
        self.conninfo = worker_conninfo(dsn)
        self.concurrency = concurrency
        self.queue = queue
        self.max_runtime = max_runtime
        self.drain = drain
        self._stopping = threading.Event()
        self._aborted = False
        self._lock = threading.Lock()
        self._backends: dict[int, int] = {}  # thread number -> backend pid

    def check(self) -> None:
        """Fail early when durable is not installed or max_runtime is unusable."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            positive = conn.execute(
                "select %s::interval > interval '0'"
                " from (select 'durable.run_worker(text, interval, boolean)'"
                "::regprocedure) as installed",
                [self.max_runtime],
            ).fetchone()[0]
        if not positive:
            raise UsageError(
                f"--max-runtime must be a positive interval, not {self.max_runtime!r}"
            )

    def run(self) -> int:
        """Run the workers until they stop; returns the exit status (0, or 130)."""
        self.check()
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            threads = [
                threading.Thread(
                    target=self._work, args=(n,), name=f"worker-{n}", daemon=True
                )
                for n in range(1, self.concurrency + 1)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive() and not self._aborted:
                    thread.join(JOIN_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return FORCED_EXIT if self._aborted else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._stopping.is_set():
            self._stopping.set()
            log(
                f"{name}: stopping once the running calls return"
                " (send it again to exit at once)"
            )
            return
        log(f"{name} again: ending the worker sessions and exiting at once")
        self._terminate_backends()
        self._aborted = True

    def _terminate_backends(self) -> None:
        """pg_terminate_backend() the sessions of the threads (best effort)."""
        with self._lock:
            pids = list(self._backends.values())
        if not pids:
            return
        try:
            with psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=3
            ) as conn:
                conn.execute(
                    "select pg_catalog.pg_terminate_backend(pid)"
                    " from unnest(%s::int[]) as pid",
                    [pids],
                )
        except psycopg.Error as exc:
            log(f"could not end the worker sessions: {describe_error(exc)[0]}")

    def _work(self, number: int) -> None:
        name = f"worker {number}/{self.concurrency}"
        log(
            f"{name} started (queue {self.queue or '*'},"
            f" max_runtime {self.max_runtime}{', drain' if self.drain else ''})"
        )
        delay = FIRST_RETRY
        conn: psycopg.Connection | None = None
        while not self._stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                    with self._lock:
                        self._backends[number] = conn.info.backend_pid
                conn.execute(CALL, [self.queue, self.max_runtime, self.drain])
            except psycopg.Error as exc:
                self._disconnect(number, conn)
                conn = None
                if self._stopping.is_set():
                    break
                log(f"{name}: {describe_error(exc)[0]}; retrying in {delay:g}s")
                self._stopping.wait(delay)
                delay = min(delay * 2, LAST_RETRY)
                continue
            delay = FIRST_RETRY
            if self.drain:
                break
        self._disconnect(number, conn)
        log(f"{name} stopped")

    def _disconnect(self, number: int, conn: psycopg.Connection | None) -> None:
        with self._lock:
            self._backends.pop(number, None)
        if conn is not None:
            conn.close()
