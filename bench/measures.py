"""The measurements of the benchmark, each against the bench's throwaway cluster.

Each measurement takes a :class:`Bench` (the cluster and an autocommit admin
connection to the database ``bench``) and returns plain data (dicts and lists of
numbers) that ``run.py`` turns into the table and ``results/latest.json``; the helpers
below them read plans and memory contexts from the server log, and the CPU shares of
the machine from /proc.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

DRAIN = "call durable.run_worker(drain => true, max_runtime => '1 hour')"
FLOOR_DRAIN = "call bench.floor_worker(true)"
IDLE_WORKER = "call durable.run_worker(max_runtime => '1 hour')"
IDLE_FLOOR = "call bench.floor_worker(false)"
WARMUP = 20
STEPS = {"bench.one": 1, "bench.ten": 10}

LATENESS = """
select (extract(epoch from a.started_at) - (s.output ->> 'until')::float8) * 1000
from durable._steps as s
inner join durable._steps as a on a.run_id = s.run_id and a.seq = s.seq + 1
where s.kind = 'sleep' and s.run_id = any(%s)
"""

# Finished runs of bench.one, each with the checkpoint of its one step, as a worker
# leaves them; created over the last day, one per millisecond.
FINISHED_RUNS = """
with version as (
    select v.id, v.workflow
    from durable._workflow_versions as v
    where v.workflow = 'bench.one'
    order by v.id desc
    limit 1
),
finished as (
    insert into durable._runs as r (
        workflow, version_id, original_version_id, status, input, result,
        created_at, started_at, finished_at
    )
    select
        version.workflow, version.id, version.id, 'succeeded', '{}', '{}',
        t.at - interval '2 milliseconds', t.at - interval '1 millisecond', t.at
    from version
    cross join lateral (
        select pg_catalog.now() - interval '1 day' + g * interval '1 millisecond' as at
        from pg_catalog.generate_series(1, %s::int) as g
    ) as t
    returning r.id, r.started_at, r.finished_at
)
insert into durable._steps (
    run_id, seq, name, kind, status, attempts, output, started_at, finished_at
)
select id, 1, 's', 'sql', 'succeeded', 1, '[{"?column?": 1}]', started_at, finished_at
from finished
"""

# The statements the engine and the floor run, from pg_stat_statements (the CALLs
# themselves and the bench's own statements left out).
STATEMENTS = """
select
    regexp_replace(query, '\\s+', ' ', 'g') as query,
    calls,
    total_exec_time,
    wal_bytes
from pg_stat_statements
where dbid = (select oid from pg_database where datname = current_database())
    and query !~* '^\\s*(call|select pg_stat_statements_reset|set )'
order by total_exec_time desc
"""


class Bench:
    """The cluster under test, the dsn of its database ``bench``, an admin session."""

    def __init__(self, cluster: Any, dbname: str = "bench"):
        self.cluster = cluster
        self.dsn = cluster.dsn(dbname)
        self.admin = self.connect()

    def connect(self) -> psycopg.Connection:
        """A new autocommit connection to the bench database."""
        return psycopg.connect(self.dsn, autocommit=True)

    def scalar(self, sql: str, params: Sequence | None = None) -> Any:
        """The first column of the first row of ``sql`` on the admin session."""
        return self.admin.execute(sql, params).fetchone()[0]

    def wal_position(self) -> str:
        """The current WAL insert position (an LSN, as text)."""
        return self.scalar("select pg_current_wal_lsn()::text")

    def wal_bytes(self, start: str, end: str) -> int:
        """Bytes of WAL between two positions."""
        return int(self.scalar("select %s::pg_lsn - %s::pg_lsn", [end, start]))

    def wal_records(self, start: str, end: str) -> dict[str, dict[str, int]]:
        """The WAL records written between two positions, by type (pg_waldump):
        how many, and the bytes of full-page images among them."""
        result = subprocess.run(
            [
                str(self.cluster.bindir / "pg_waldump"),
                "--stats=record",
                "-p",
                str(self.cluster.datadir / "pg_wal"),
                "-s",
                start,
                "-e",
                end,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        records = {}
        for line in result.stdout.splitlines():
            match = re.match(
                r"^(\S+/\S+)\s+(\d+)\s+\([^)]*\)\s+\d+\s+\([^)]*\)\s+(\d+)", line
            )
            if match:
                records[match[1]] = {"count": int(match[2]), "fpi_bytes": int(match[3])}
        return records

    def reset_durable(self) -> None:
        """Empty the run and step tables (the workflow versions stay)."""
        self.admin.execute(
            "truncate durable._runs, durable._steps, durable._step_attempts,"
            " durable._signals"
        )

    def close(self) -> None:
        """Close the admin session."""
        self.admin.close()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 (inclusive method: with few samples p99 is close to the max)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "n": len(values)}


def run_together(connections: Sequence[psycopg.Connection], sql: str) -> float:
    """Run ``sql`` on every connection at once (one thread each); seconds until the
    last one returns."""
    barrier = threading.Barrier(len(connections) + 1)
    errors: list[BaseException] = []

    def work(conn: psycopg.Connection) -> None:
        barrier.wait()
        try:
            conn.execute(sql)
        except psycopg.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


Observer = Callable[[Sequence[int]], AbstractContextManager]


def observed(
    connections: Sequence[psycopg.Connection], sql: str, observe: Observer | None
) -> float:
    """:func:`run_together`, inside ``observe(backend pids)`` if given."""
    if observe is None:
        return run_together(connections, sql)
    with observe([conn.info.backend_pid for conn in connections]):
        return run_together(connections, sql)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command: state, ppid, ..., utime
    (index 11), stime, cutime, cstime."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int) -> int:
    """User and system CPU time a process has used, in clock ticks."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12])


class WaitSampler:
    """What some backends do while they drain: their wait events, sampled from
    pg_stat_activity every ``every`` seconds by a session of its own ("CPU" when a
    backend is active without a wait event: running, or ready to run), and the CPU
    time they use, from /proc. Use an instance as ``observe`` of a throughput
    measurement, once."""

    def __init__(self, bench: Bench, every: float = 0.005):
        self.bench, self.every = bench, every
        self.samples: dict[str, int] = {}
        self.cpu_seconds = 0.0

    @contextmanager
    def __call__(self, pids: Sequence[int]) -> Iterator[None]:
        stop = threading.Event()
        session = self.bench.connect()

        def sample() -> None:
            while not stop.wait(self.every):
                for (what,) in session.execute(
                    "select coalesce(wait_event_type || ':' || wait_event, 'CPU')"
                    " from pg_stat_activity where pid = any(%s) and state = 'active'",
                    [list(pids)],
                ):
                    self.samples[what] = self.samples.get(what, 0) + 1

        before = [cpu_ticks(pid) for pid in pids]
        thread = threading.Thread(target=sample)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            session.close()
        used = sum(cpu_ticks(pid) for pid in pids) - sum(before)
        self.cpu_seconds = used / os.sysconf("SC_CLK_TCK")

    def shares(self) -> dict[str, float]:
        """Fraction of the samples in each state, largest first."""
        total = sum(self.samples.values()) or 1
        ranked = sorted(self.samples.items(), key=lambda kv: kv[1], reverse=True)
        return {what: n / total for what, n in ranked}


def wait_profile(bench: Bench, tasks: int, runs: int) -> dict[str, Any]:
    """Where the floor's backends and 1-step workers spend their time, with 1 and 2
    of them: wait-event shares and CPU milliseconds per unit of work (the sampling
    takes some CPU itself, so the rates measured here are not the bench's figures)."""
    profile: dict[str, Any] = {}
    for sessions in (1, 2):
        for key, units in (("floor", tasks), ("one", runs)):
            sampler = WaitSampler(bench)
            if key == "floor":
                floor_throughput(bench, units, sessions, observe=sampler)
            else:
                durable_throughput(bench, "bench.one", units, sessions, observe=sampler)
            profile[f"{key}_{sessions}"] = {
                "units": units,
                "sessions": sessions,
                "cpu_ms_per_unit": sampler.cpu_seconds * 1000 / units,
                "samples": sum(sampler.samples.values()),
                "shares": sampler.shares(),
            }
    return profile


def wait_for(bench: Bench, sql: str, params: Sequence, timeout: float) -> None:
    """Poll ``sql`` (a boolean) every 20 ms until it is true."""
    deadline = time.monotonic() + timeout
    while not bench.scalar(sql, params):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout}s: {sql}")
        time.sleep(0.02)


def floor_throughput(
    bench: Bench, tasks: int, backends: int, observe: Observer | None = None
) -> dict[str, Any]:
    """Tasks/s of the floor procedure draining ``tasks`` on ``backends`` sessions
    (watched by ``observe`` if given, as in :func:`durable_throughput`)."""
    bench.admin.execute("truncate bench.tasks")
    connections = [bench.connect() for _ in range(backends)]
    try:
        for conn in connections:
            bench.admin.execute(
                "insert into bench.tasks (status) select 'pending'"
                " from generate_series(1, %s::int)",
                [WARMUP],
            )
            conn.execute(FLOOR_DRAIN)
        started = time.perf_counter()
        bench.admin.execute(
            "insert into bench.tasks (status) select 'pending'"
            " from generate_series(1, %s::int)",
            [tasks],
        )
        insert_seconds = time.perf_counter() - started
        bench.admin.execute("checkpoint")
        wal_before = bench.wal_position()
        seconds = observed(connections, FLOOR_DRAIN, observe)
        wal_after = bench.wal_position()
    finally:
        for conn in connections:
            conn.close()
    left = bench.scalar("select count(*) from bench.tasks where status <> 'done'")
    if left:
        raise RuntimeError(f"the floor left {left} task(s) pending")
    return {
        "tasks": tasks,
        "backends": backends,
        "seconds": seconds,
        "per_s": tasks / seconds,
        "inserts_per_s": tasks / insert_seconds,
        "wal_bytes_per_task": bench.wal_bytes(wal_before, wal_after) / tasks,
    }


def durable_throughput(
    bench: Bench,
    workflow: str,
    runs: int,
    workers: int,
    empty: bool = True,
    observe: Observer | None = None,
) -> dict[str, Any]:
    """Runs/s and steps/s of ``workers`` draining ``runs`` runs of ``workflow``.

    Each worker connection first executes a few runs (the engine is loaded and the
    workflow compiled once per session, as in a long-lived worker). With ``empty``
    the run tables are emptied first, and a checkpoint precedes the timed part; without
    it they keep their rows and are vacuumed instead (as autovacuum keeps them), and no
    checkpoint is taken (a bulk load just before has written the images of the pages
    it touched, as in a steady state where the next checkpoint is minutes away).
    ``observe`` (given the workers' backend pids) watches the timed part.
    """
    if empty:
        bench.reset_durable()
    else:
        bench.admin.execute("vacuum durable._runs, durable._steps")
    connections = [bench.connect() for _ in range(workers)]
    try:
        for conn in connections:
            bench.admin.execute(
                "select durable.start(%s) from generate_series(1, %s::int)",
                [workflow, WARMUP],
            )
            conn.execute(DRAIN)
        started = time.perf_counter()
        bench.admin.execute(
            "select durable.start(%s) from generate_series(1, %s::int)",
            [workflow, runs],
        )
        start_seconds = time.perf_counter() - started
        if empty:
            bench.admin.execute("checkpoint")
        wal_before = bench.wal_position()
        seconds = observed(connections, DRAIN, observe)
        wal_after = bench.wal_position()
    finally:
        for conn in connections:
            conn.close()
    left = bench.scalar(
        "select count(*) from durable._runs where status <> 'succeeded'"
        " and workflow = %s",
        [workflow],
    )
    if left:
        raise RuntimeError(f"{left} run(s) of {workflow} did not succeed")
    steps = STEPS[workflow]
    return {
        "workflow": workflow,
        "runs": runs,
        "workers": workers,
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        "steps_per_s": runs * steps / seconds,
        "starts_per_s": runs / start_seconds,
        "wal_bytes_per_run": bench.wal_bytes(wal_before, wal_after) / runs,
    }


@contextmanager
def idle_worker(bench: Bench, call: str) -> Iterator[None]:
    """A worker (``call``) running in a thread on its own session for the duration
    of the block; it is warmed up first and cancelled at the end."""
    conn = bench.connect()
    conn.execute(DRAIN if call == IDLE_WORKER else FLOOR_DRAIN)
    pid = conn.info.backend_pid
    stopping = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            conn.execute(call)
        except psycopg.Error as exc:
            if not stopping.is_set():
                errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.5)  # the worker registers and reaches its idle back-off
    try:
        yield
    finally:
        stopping.set()
        bench.admin.execute("select pg_cancel_backend(%s)", [pid])
        thread.join()
        conn.close()
    if errors:
        raise errors[0]


def start_to_finish(
    bench: Bench, start: str, done: str, server: str, samples: int, seed: int
) -> dict[str, Any]:
    """Latency from a committed start (``start`` returns an id) to the moment
    ``done`` (a boolean of that id) holds, polled every millisecond, and the latency
    the server recorded (``server``, milliseconds per id)."""
    rng = random.Random(seed)
    client = bench.connect()
    poller = bench.connect()
    client_ms = []
    ids = []
    try:
        for _ in range(samples):
            time.sleep(rng.uniform(0.03, 0.08))  # the worker is idle, backed off
            item = client.execute(start).fetchone()[0]
            started = time.perf_counter()
            while not poller.execute(done, [item]).fetchone()[0]:
                if time.perf_counter() - started > 10:
                    raise TimeoutError(f"{item} not done after 10s")
                time.sleep(0.001)
            client_ms.append((time.perf_counter() - started) * 1000)
            ids.append(item)
    finally:
        client.close()
        poller.close()
    server_ms = [row[0] for row in bench.admin.execute(server, [ids])]
    return {"client": percentiles(client_ms), "server": percentiles(server_ms)}


def latency(bench: Bench, samples: int) -> dict[str, Any]:
    """Start-to-finished latency with an idle durable worker and an idle floor.

    A diagnostic variant starts the runs with ``start_at`` one second in the past: it
    shows the latency of a claim that would compare ``wake_at`` with the current time
    rather than with ``now()`` (the start of the claim's transaction).
    """
    bench.reset_durable()
    bench.admin.execute("truncate bench.tasks")
    done = "select status = 'succeeded' from durable._runs where id = %s"
    server = (
        "select extract(epoch from finished_at - created_at)::float8 * 1000"
        " from durable._runs where id = any(%s)"
    )
    with idle_worker(bench, IDLE_WORKER):
        durable = start_to_finish(
            bench, "select durable.start('bench.one')", done, server, samples, seed=1
        )
        backdated = start_to_finish(
            bench,
            "select durable.start('bench.one',"
            " start_at => now() - interval '1 second')",
            done,
            server,
            samples,
            seed=1,
        )
    with idle_worker(bench, IDLE_FLOOR):
        floor = start_to_finish(
            bench,
            "insert into bench.tasks default values returning id",
            "select status = 'done' from bench.tasks where id = %s",
            "select extract(epoch from done_at - created_at)::float8 * 1000"
            " from bench.tasks where id = any(%s)",
            samples,
            seed=1,
        )
    return {"durable": durable, "backdated": backdated, "floor": floor}


def timer_lateness(bench: Bench, timers: int) -> dict[str, Any]:
    """How late ``wf.sleep(1)`` wakes with an idle worker, and the floor's lateness
    for tasks due one second after they are inserted."""
    bench.reset_durable()
    bench.admin.execute("truncate bench.tasks")
    rng = random.Random(2)
    timeout = timers * 0.1 + 30
    with idle_worker(bench, IDLE_WORKER):
        ids = []
        for _ in range(timers):
            ids.append(bench.scalar("select durable.start('bench.sleeper')"))
            time.sleep(rng.uniform(0.03, 0.07))
        wait_for(
            bench,
            "select count(*) = 0 from durable._runs where id = any(%s)"
            " and status <> 'succeeded'",
            [ids],
            timeout,
        )
    durable = [row[0] for row in bench.admin.execute(LATENESS, [ids])]
    if len(durable) != timers:
        raise RuntimeError(f"{timers - len(durable)} timer(s) left no 'after' step")
    with idle_worker(bench, IDLE_FLOOR):
        ids = []
        for _ in range(timers):
            ids.append(
                bench.scalar(
                    "insert into bench.tasks (run_at)"
                    " values (now() + interval '1 second') returning id"
                )
            )
            time.sleep(rng.uniform(0.03, 0.07))
        wait_for(
            bench,
            "select count(*) = 0 from bench.tasks where id = any(%s)"
            " and status <> 'done'",
            [ids],
            timeout,
        )
    floor = [
        row[0]
        for row in bench.admin.execute(
            "select extract(epoch from done_at - run_at)::float8 * 1000"
            " from bench.tasks where id = any(%s)",
            [ids],
        )
    ]
    return {"durable": percentiles(durable), "floor": percentiles(floor)}


def many_finished(
    bench: Bench,
    finished: int,
    one_runs: int,
    ten_runs: int,
    repeats: int,
    backlog: int,
) -> dict[str, Any]:
    """Throughput of 1 worker on empty tables, then with ``finished`` finished runs
    (each measured ``repeats`` times, the best kept); then ``backlog`` more 1-step
    runs in four batches with no vacuum in between, and the plan of the claim at the
    end: what the runs executed since the last vacuum cost the claim."""

    def measure(empty: bool) -> dict[str, dict]:
        samples: dict[str, list[dict]] = {"one": [], "ten": []}
        for _ in range(repeats):
            for shape, runs in (("one", one_runs), ("ten", ten_runs)):
                samples[shape].append(
                    durable_throughput(bench, f"bench.{shape}", runs, 1, empty)
                )
        return {
            shape: {**best_by(values, "runs_per_s"), "samples": values}
            for shape, values in samples.items()
        }

    empty = measure(empty=True)
    bench.reset_durable()
    started = time.perf_counter()
    bench.admin.execute(FINISHED_RUNS, [finished])
    bench.admin.execute("vacuum (analyze) durable._runs, durable._steps")
    load_seconds = time.perf_counter() - started
    many = measure(empty=False)
    return {
        "finished_runs": finished,
        "load_seconds": load_seconds,
        "empty": empty,
        "many": many,
        "backlog": unvacuumed(bench, backlog),
        "claim_plan": claim_plan(bench),
    }


def unvacuumed(bench: Bench, runs: int) -> list[dict[str, Any]]:
    """1-step runs/s of one worker in four batches of ``runs / 4`` after a VACUUM,
    with no vacuum in between (autovacuum waits for 20% of a large table to be dead)."""
    batch = runs // 4
    bench.admin.execute("vacuum durable._runs, durable._steps")
    worker = bench.connect()
    batches = []
    try:
        worker.execute(DRAIN)
        for done in range(0, batch * 4, batch):
            bench.admin.execute(
                "select durable.start('bench.one') from generate_series(1, %s::int)",
                [batch],
            )
            started = time.perf_counter()
            worker.execute(DRAIN)
            seconds = time.perf_counter() - started
            batches.append(
                {"after": done, "runs": batch, "runs_per_s": batch / seconds}
            )
    finally:
        worker.close()
    return batches


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of a process, in kB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0])
    return fields


def rss_growth(bench: Bench, first: int, total: int) -> dict[str, Any]:
    """Memory of one worker backend while one CALL executes ``total`` 1-step runs
    (started beforehand from another session), and after the CALL returned.

    A watcher samples the backend's /proc status about every half second; when about
    ``first`` runs, then a quarter, a half and three quarters of ``total`` are done, it
    also has the backend log its memory contexts (pg_log_backend_memory_contexts), of
    which the SPI procedure contexts (those of the worker's CALL) are kept.
    """
    bench.reset_durable()
    for done in range(0, total, 10_000):
        bench.admin.execute(
            "select durable.start('bench.one') from generate_series(1, %s::int)",
            [min(10_000, total - done)],
        )
    worker = bench.connect()
    watcher = bench.connect()
    pid = worker.info.backend_pid
    log_start = len(bench.cluster.log())
    marks = [first, total // 4, total // 2, total * 3 // 4]
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            runs = watcher.execute(
                "select count(*) from durable._runs where status = 'succeeded'"
            ).fetchone()[0]
            logged = bool(marks) and runs >= marks[0]
            while marks and runs >= marks[0]:
                marks.pop(0)
            if logged:
                watcher.execute("select pg_log_backend_memory_contexts(%s)", [pid])
            samples.append({"runs": runs, "logged": logged, **memory_of(pid)})

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        worker.execute(DRAIN)
    finally:
        stop.set()
        thread.join()
        after = {"runs": total, **memory_of(pid)}
        worker.close()
        watcher.close()
    time.sleep(0.5)  # the last context dump reaches the log
    dumps = spi_contexts(bench.cluster.log()[log_start:], pid)
    logged = [sample for sample in samples if sample["logged"]]
    for sample, spi in zip(logged, dumps):
        sample["spi_proc_bytes"] = spi
    during = [sample for sample in samples if sample["runs"] < total]
    return {
        "first": next(s for s in samples if s["runs"] >= first),
        "last": during[-1],
        "after_call": after,
        "samples": samples,
    }


def spi_contexts(log: str, pid: int) -> list[int]:
    """From the server log: for each memory-context dump of backend ``pid``, the
    bytes held by its SPI procedure contexts ("SPI Proc")."""
    dumps = []
    for chunk in re.split(r"logging memory contexts of PID \d+", log)[1:]:
        sizes = [
            int(size)
            for backend, size in re.findall(
                r"\[(\d+)\][^\n]*SPI Proc: (\d+) total", chunk
            )
            if int(backend) == pid
        ]
        if sizes:
            dumps.append(sum(sizes))
    return dumps


def statements_per_unit(
    bench: Bench, setup: str, call: str, units: int
) -> dict[str, Any]:
    """What one session executes per unit of work (pg_stat_statements, with
    track = all for that session only): statements, their time, commits, WAL.

    ``setup`` (with the number of units as its parameter) makes the work ready, and
    ``call`` (a drain) does it; the session runs ``call`` once before, with nothing
    ready, so that the engine is loaded.
    """
    bench.reset_durable()
    bench.admin.execute("truncate bench.tasks")
    conn = bench.connect()
    try:
        conn.execute(call)
        bench.admin.execute(setup, [units])
        conn.execute("set pg_stat_statements.track = 'all'")
        bench.admin.execute("select pg_stat_statements_reset()")
        wal_before = bench.wal_position()
        started = time.perf_counter()
        conn.execute(call)
        seconds = time.perf_counter() - started
        wal_after = bench.wal_position()
        conn.execute("set pg_stat_statements.track = 'none'")
    finally:
        conn.close()
    rows = bench.admin.execute(STATEMENTS).fetchall()
    records = bench.wal_records(wal_before, wal_after)
    statements = [
        {
            "query": query[:110],
            "per_unit": calls / units,
            "ms_per_call": total / calls,
            "wal_bytes_per_call": float(wal) / calls,
        }
        for query, calls, total, wal in rows
        if calls >= units // 2
    ]
    return {
        "units": units,
        "wall_ms_per_unit": seconds * 1000 / units,
        "statements_per_unit": sum(row[1] for row in rows) / units,
        "statement_ms_per_unit": sum(row[2] for row in rows) / units,
        "commits_per_unit": records.get("Transaction/COMMIT", {}).get("count", 0)
        / units,
        "wal_bytes_per_unit": bench.wal_bytes(wal_before, wal_after) / units,
        "wal_records_per_unit": {
            kind: record["count"] / units for kind, record in records.items()
        },
        "fpi_bytes_per_unit": sum(r["fpi_bytes"] for r in records.values()) / units,
        "statements": statements,
    }


def python_profile(bench: Bench, runs: int) -> dict[str, Any]:
    """Where a worker's time goes, by Python function (cProfile inside the worker
    backend, draining ``runs`` 1-step runs)."""
    bench.reset_durable()
    conn = bench.connect()
    try:
        conn.execute(DRAIN)
        bench.admin.execute(
            "select durable.start('bench.one') from generate_series(1, %s::int)",
            [runs],
        )
        functions = conn.execute("call bench.profiled_worker()").fetchone()[0]
    finally:
        conn.close()
    total = sum(f["tottime"] for f in functions)
    commit = sum(f["tottime"] for f in functions if "plpy.commit" in f["function"])
    execute = sum(
        f["tottime"]
        for f in functions
        if "plpy.execute" in f["function"] or "plpy.prepare" in f["function"]
    )
    return {
        "runs": runs,
        "ms_per_run": total * 1000 / runs,
        "commit_ms_per_run": commit * 1000 / runs,
        "execute_ms_per_run": execute * 1000 / runs,
        "python_ms_per_run": (total - commit - execute) * 1000 / runs,
        "top": [
            {
                "function": f["function"],
                "calls_per_run": f["calls"] / runs,
                "ms_per_run": f["tottime"] * 1000 / runs,
            }
            for f in functions[:12]
        ],
    }


def claim_plan(bench: Bench) -> dict[str, Any]:
    """The plan of the engine's claim query as it runs (auto_explain with ANALYZE and
    BUFFERS, in one worker session), taken from the server log."""
    conn = bench.connect()
    try:
        conn.execute(DRAIN)
        for setting in (
            "load 'auto_explain'",
            "set auto_explain.log_min_duration = 0",
            "set auto_explain.log_analyze = on",
            "set auto_explain.log_buffers = on",
            "set auto_explain.log_nested_statements = on",
            "set auto_explain.log_format = 'json'",
        ):
            conn.execute(setting)
        bench.admin.execute(
            "select durable.start('bench.one') from generate_series(1, 3)"
        )
        conn.execute(DRAIN)
    finally:
        conn.close()
    plans = [
        plan
        for plan in logged_plans(bench.cluster.log())
        if re.search(r"skip\s+locked", plan["Query Text"], re.I)
        and "durable._runs" in plan["Query Text"]
        and plan["Plan"].get("Actual Rows", 0) > 0
    ]
    if not plans:
        return {"error": "no plan of the claim query found in the server log"}
    plan = plans[-1]
    return {
        "query": re.sub(r"\s+", " ", plan["Query Text"]).strip(),
        "execution_ms": plan["Plan"].get("Actual Total Time"),
        "plan": render_plan(plan["Plan"]),
    }


def logged_plans(log: str) -> Iterator[dict]:
    """The JSON plans auto_explain wrote to the server log."""
    for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
        head, found, body = entry.partition("plan:\n")
        if not found or "duration:" not in head:
            continue
        text = "\n".join(
            line[1:] if line.startswith("\t") else line for line in body.splitlines()
        )
        try:
            yield json.loads(text)
        except json.JSONDecodeError:
            continue


def render_plan(node: dict, depth: int = 0) -> list[str]:
    """A plan tree as indented lines, like EXPLAIN (ANALYZE, BUFFERS) prints it."""
    label = node["Node Type"]
    if node.get("Index Name"):
        label += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        label += f" on {node['Relation Name']}"
    label += (
        f" (actual time={node.get('Actual Startup Time', 0):.3f}"
        f"..{node.get('Actual Total Time', 0):.3f}"
        f" rows={node.get('Actual Rows', 0):g} loops={node.get('Actual Loops', 0)})"
    )
    hit = node.get("Shared Hit Blocks", 0)
    read = node.get("Shared Read Blocks", 0)
    if hit or read:
        label += f" buffers: hit={hit} read={read}"
    lines = ["  " * depth + ("-> " if depth else "") + label]
    for key in ("Index Cond", "Filter", "Rows Removed by Filter"):
        if key in node:
            lines.append("  " * depth + f"     {key}: {node[key]}")
    for child in node.get("Plans", []):
        lines.extend(render_plan(child, depth + 1))
    return lines


def best_by(samples: Sequence[dict], key: str) -> dict:
    """The sample with the highest ``key``: other work on the machine only ever slows
    a measurement down, so the best of several is the least disturbed."""
    return max(samples, key=lambda sample: sample[key])


class CpuLedger:
    """CPU time of the whole machine during the run, split into the bench's own (this
    process, the cluster and their children) and everything else's.

    Other work on the machine (a test suite, a build) takes CPU from a benchmark on two
    cores; the report shows how much, so that a disturbed run can be told apart.
    """

    def __init__(self, roots: Sequence[int]):
        self.roots = list(roots)
        self.begin = self._read()

    def _read(self) -> tuple[int, int, int, int]:
        """Machine ticks (all CPUs), busy ticks, steal ticks, and the bench's ticks."""
        with open("/proc/stat") as stat:
            cpu = [int(v) for v in stat.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = cpu[:8]
        busy = user + nice + system + irq + softirq
        processes = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = proc_stat(int(entry))
            except OSError:  # the process ended meanwhile
                continue
            # ppid, and the CPU time of the process and its waited-for children.
            processes[int(entry)] = (int(fields[1]), sum(map(int, fields[11:15])))
        ours = 0
        for pid, (_, ticks) in processes.items():
            ancestor = pid
            while ancestor in processes and ancestor not in self.roots:
                ancestor = processes[ancestor][0]
            if ancestor in self.roots:
                ours += ticks
        return busy + idle + iowait + steal, busy, steal, ours

    def shares(self) -> dict[str, float]:
        """Since the ledger began: fractions of the machine's CPU time used by the
        bench, by other processes, and stolen by the hypervisor."""
        total, busy, steal, ours = (
            end - begin for end, begin in zip(self._read(), self.begin)
        )
        return {
            "bench": ours / total,
            "other": max(0, busy - ours) / total,
            "steal": steal / total,
        }
