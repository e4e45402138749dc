"""Load: 50 concurrent clients start, signal, cancel and read runs while workers
execute them and purge them after a short retention.

The short variant (12 s of load) runs under ``make test``; the long one (60 s) is
marked ``slow`` and runs only with ``DURABLE_CHAOS=1``, as the chaos tests do. The test
works in a throwaway cluster of its own: it changes server settings and puts
observation triggers on ``durable._runs``. Nothing is mocked: the clients are real
connections in threads, the workers real ``CALL durable.run_worker()`` sessions.

What is observed, and how:

- Every client records what it did and what the server answered: the runs it started,
  the signals accepted (``durable.signal`` returned true), the cancels accepted
  (``durable.cancel`` returned true), and every error, by operation and SQLSTATE. Only
  the errors of ``EXPECTED`` may happen.
- Runs are purged seconds after they finish, so their final state is read as it is
  written: an AFTER UPDATE trigger on ``durable._runs`` copies each run's final status
  and result to ``app.final`` in the transaction that finishes the run, and an AFTER
  DELETE trigger copies every purged run, with the time of the purge (``now()`` of the
  purging transaction, the time the retention cutoff is computed from), to
  ``app.purged``; a third one copies every failed step attempt (none is expected) to
  ``app.attempts``. The triggers only insert into tables of their own and take no lock
  on a durable table, so the engine's locking is unchanged.
- A sampler reads the sizes (``pg_total_relation_size``: heap, indexes and TOAST) and
  the live rows of the durable tables twice a second, and counts the finished runs
  that are overdue for purging; another thread runs VACUUM on them every second (see
  check_bounded).
- The server log is read at the end (its lines carry the SQLSTATE, ``%e``).

Every check runs; the test fails at the end with the list of all problems found.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import psycopg
import pytest
from conftest import wait_until
from faults import Workers, private_cluster, query
from pgcluster import Cluster
from psycopg.types.json import Jsonb

SLOW = pytest.mark.skipif(
    os.environ.get("DURABLE_CHAOS") != "1", reason="set DURABLE_CHAOS=1 to run"
)

CLIENTS = 50
WORKERS = 3
# Mean pause of a client between two operations (uniform from 0 to twice this): the
# 50 clients make about 50 / 0.2 = 250 operations a second, 125 of them starts (and
# 20 child runs), which 3 workers on 2 cores keep up with: unfinished runs stay under
# 200, most of them waiting for a signal (see the figures in docs/reliability.md).
THINK = 0.2
RETENTION = 2.0  # seconds; the setting "retention"
HOUSEKEEPING = 1.0  # seconds; the setting "worker.housekeeping_interval" (its default)
# A finished run is purged by the first housekeeping pass after it is RETENTION old:
# within HOUSEKEEPING when a worker is idle, later when every worker is in a run or the
# machine is saturated (2 cores, 50 clients). SLACK bounds that lateness; a child run
# is purged only after its parent, so its lateness counts from the later of the two.
SLACK = HOUSEKEEPING + 3.0
TABLES = ("_runs", "_steps", "_step_attempts", "_signals")
# The tables may not be larger at any time after the first third of the load than
# GROWTH times their size at that third; see check_bounded.
GROWTH = 2.0

# Operations of a client, with their weights.
OPERATIONS = {
    "start": 45,  # durable.start of one of WORKFLOW_WEIGHTS
    "signal": 20,  # first signal to an approval run of its own, neither signalled
    #                nor cancelled: the run is waiting for it, so it cannot fail
    "resignal": 4,  # another signal to an approval run already signalled or cancelled
    "cancel": 8,  # durable.cancel of one of its 5 latest runs
    "status": 23,  # durable.status of any run it started
}
WORKFLOW_WEIGHTS = {
    "app.chain": 35,
    "app.approval": 30,
    "app.nap": 20,
    "app.parent": 15,
}

# The only (operation, SQLSTATE) errors allowed, and why they happen.
EXPECTED = {
    ("resignal", "DU011"): "the run has finished (its first signal was consumed, or it "
    "was cancelled) and takes no more signals",
    ("resignal", "DU010"): "the run finished more than the retention ago: purged",
    ("cancel", "DU010"): "the run finished more than the retention ago: purged",
    ("status", "DU010"): "the run finished more than the retention ago: purged",
    ("final-signal", "DU011"): "the run finished between the query and the signal",
}

WORKFLOWS = """
create schema app;
-- Effects of app.chain; no unique constraint, so a step committed twice would show.
create table app.effects (run_id uuid not null, step integer not null);

create function app.chain(input jsonb) returns jsonb
language plpython3u as $$
for n in (1, 2, 3):
    wf.step(f"insert{n}", "insert into app.effects values ($1, $2)", [wf.run_id, n])
rows = wf.step(
    "count", "select count(*)::int as n from app.effects where run_id = $1", [wf.run_id]
)
return {"effects": rows[0]["n"]}
$$;

create function app.approval(input jsonb) returns jsonb
language plpython3u as $$
return {"got": wf.wait_for_signal("go")}
$$;

create function app.nap(input jsonb) returns jsonb
language plpython3u as $$
wf.sleep(input["seconds"])
rows = wf.step("after", "select $1::float8 as seconds", [input["seconds"]])
return {"slept": rows[0]["seconds"]}
$$;

create function app.leaf(input jsonb) returns jsonb
language plpython3u as $$
return {"square": wf.step("square", lambda n: n * n, input["n"])}
$$;

create function app.parent(input jsonb) returns jsonb
language plpython3u as $$
child = wf.start_child("app.leaf", {"n": input["n"]})
return {"child": child, "square": wf.wait(child)["square"]}
$$;

-- Observation (see the module docstring).
create table app.final (
    run_id uuid, workflow text, parent_id uuid, status text, result jsonb,
    error jsonb, interruptions integer, finished_at timestamptz
);
create table app.purged (
    run_id uuid, status text, finished_at timestamptz, purged_at timestamptz
);
create function app.record_final() returns trigger language plpgsql as $$
begin
    insert into app.final
    values (
        new.id, new.workflow, new.parent_id, new.status, new.result, new.error,
        new.interruptions, new.finished_at
    );
    return null;
end $$;
create function app.record_purge() returns trigger language plpgsql as $$
begin
    insert into app.purged values (old.id, old.status, old.finished_at, now());
    return null;
end $$;
create table app.attempts (run_id uuid, seq integer, attempt integer, error jsonb);
create function app.record_attempt() returns trigger language plpgsql as $$
begin
    insert into app.attempts values (new.run_id, new.seq, new.attempt, new.error);
    return null;
end $$;
create trigger load_attempt after insert on durable._step_attempts for each row
execute function app.record_attempt();
create trigger load_final after update of status on durable._runs for each row
when (
    new.status in ('succeeded', 'failed', 'cancelled')
    and old.status not in ('succeeded', 'failed', 'cancelled')
)
execute function app.record_final();
create trigger load_purge after delete on durable._runs for each row
execute function app.record_purge();
"""

# Finished runs overdue for purging: finished more than RETENTION + SLACK ago, and,
# for a child, its parent gone or finished that long ago too.
OVERDUE = """
select count(*) from durable._runs as r
where r.finished_at < now() - make_interval(secs => %(late)s)
and not exists (
    select from durable._runs as p where p.id = r.parent_id
    and (
        p.finished_at is null
        or p.finished_at >= now() - make_interval(secs => %(late)s)
    )
)
"""
LATE = {"late": RETENTION + SLACK}

UNFINISHED = (
    "select count(*) from durable._runs"
    " where status not in ('succeeded', 'failed', 'cancelled')"
)


def prepare(server: Cluster) -> None:
    """Server settings, durable settings, the workflows and the observers."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # %e: every log line carries its SQLSTATE.
        conn.execute("alter system set log_line_prefix = '%m [%p] %e %q%u@%d '")
        # Lock waits longer than deadlock_timeout (1 s) are logged: counted in the
        # summary, and context for a deadlock.
        conn.execute("alter system set log_lock_waits = on")
        conn.execute("select pg_reload_conf()")
        conn.execute("select durable.set_setting('retention', %s)", [f"{RETENTION}s"])
        conn.execute(
            "select durable.set_setting('worker.housekeeping_interval', %s)",
            [str(HOUSEKEEPING)],
        )
        conn.execute(WORKFLOWS)
    wait_until(lambda: query(server, "show log_lock_waits")[0][0] == "on", timeout=10)


@dataclass
class Client:
    """One client: its thread runs :meth:`run`; the rest is what it did."""

    index: int
    seed: int
    started: dict[str, tuple[str, dict]] = field(default_factory=dict)
    signals: dict[str, list[dict]] = field(default_factory=dict)  # accepted, in order
    cancelled: set[str] = field(default_factory=set)  # durable.cancel returned true
    cancel_false: int = 0  # durable.cancel returned false: the run had finished
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # (operation, SQLSTATE)
    failed_on: dict[str, set[str]] = field(default_factory=dict)  # SQLSTATE: runs
    messages: list[str] = field(default_factory=list)  # of unexpected errors
    crash: BaseException | None = None

    def run(self, dsn: str, stop: threading.Event) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                self._loop(conn, stop)
        except BaseException as exc:  # reported by the test
            self.crash = exc

    def _loop(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        runs: list[str] = []
        recent: deque[str] = deque(maxlen=5)
        unsignalled: list[str] = []  # approval runs neither signalled nor cancelled
        approvals: list[str] = []
        operations, weights = zip(*OPERATIONS.items())
        workflows, workflow_weights = zip(*WORKFLOW_WEIGHTS.items())
        sent = 0
        while not stop.is_set():
            operation = rng.choices(operations, weights)[0]
            if operation == "signal" and not unsignalled:
                operation = "start"
            if operation != "signal" and not runs:
                operation = "start"
            if operation == "resignal":
                again = [
                    r for r in approvals if r in self.signals or r in self.cancelled
                ]
                if not again:
                    operation = "status"
            self.ops[operation] += 1
            run = None
            try:
                if operation == "start":
                    workflow = rng.choices(workflows, workflow_weights)[0]
                    value = {
                        "app.chain": {},
                        "app.approval": {},
                        "app.nap": {"seconds": round(rng.uniform(0.05, 0.5), 3)},
                        "app.parent": {"n": rng.randrange(1000)},
                    }[workflow]
                    run = conn.execute(
                        "select durable.start(%s, %s)::text", [workflow, Jsonb(value)]
                    ).fetchone()[0]
                    self.started[run] = (workflow, value)
                    runs.append(run)
                    recent.append(run)
                    if workflow == "app.approval":
                        unsignalled.append(run)
                        approvals.append(run)
                elif operation in ("signal", "resignal"):
                    if operation == "signal":
                        run = unsignalled.pop(rng.randrange(len(unsignalled)))
                    else:
                        run = rng.choice(again)
                    sent += 1
                    payload = {"client": self.index, "n": sent}
                    conn.execute(
                        "select durable.signal(%s, 'go', %s)", [run, Jsonb(payload)]
                    )
                    self.signals.setdefault(run, []).append(payload)
                elif operation == "cancel":
                    run = rng.choice(recent)
                    if conn.execute("select durable.cancel(%s)", [run]).fetchone()[0]:
                        self.cancelled.add(run)
                        if run in unsignalled:
                            unsignalled.remove(run)
                    else:
                        self.cancel_false += 1
                else:
                    run = rng.choice(runs)
                    conn.execute("select durable.status(%s)", [run])
            except psycopg.Error as exc:
                self.errors[operation, exc.sqlstate] += 1
                self.failed_on.setdefault(exc.sqlstate, set()).add(run)
                if (operation, exc.sqlstate) not in EXPECTED:
                    self.messages.append(f"{operation} {run}: {exc}")
            stop.wait(rng.uniform(0, 2 * THINK))


class Every:
    """Calls ``action(conn)`` every ``interval`` seconds, on a connection of its own,
    in a thread, until the block ends; keeps what it returns."""

    def __init__(self, server: Cluster, interval: float, action):
        self.server = server
        self.interval = interval
        self.action = action
        self.stop = threading.Event()
        self.results: list = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.crash: BaseException | None = None

    def __enter__(self) -> Every:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(30)

    def _loop(self) -> None:
        try:
            with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
                while not self.stop.is_set():
                    self.results.append(self.action(conn))
                    self.stop.wait(self.interval)
        except BaseException as exc:  # reported by the test
            self.crash = exc


def sampler(began: float):
    """A sample of sizes, live rows and overdue runs (``t``: seconds since began)."""

    def sample(conn: psycopg.Connection) -> dict:
        sizes = dict(
            conn.execute(
                "select c.relname::text, pg_total_relation_size(c.oid)"
                " from pg_class as c where c.relnamespace = 'durable'::regnamespace"
                " and c.relname = any(%s)",
                [list(TABLES)],
            ).fetchall()
        )
        runs, unfinished, steps, attempts, signals = conn.execute(
            "select (select count(*) from durable._runs),"
            f" ({UNFINISHED}),"
            " (select count(*) from durable._steps),"
            " (select count(*) from durable._step_attempts),"
            " (select count(*) from durable._signals)"
        ).fetchone()
        return {
            "t": time.monotonic() - began,
            "sizes": sizes,
            "total": sum(sizes.values()),
            "runs": runs,
            "unfinished": unfinished,
            "rows": runs + steps + attempts + signals,
            "overdue": conn.execute(OVERDUE, LATE).fetchone()[0],
        }

    return sample


def vacuum(conn: psycopg.Connection) -> float:
    """VACUUM the durable tables (see check_bounded); returns the seconds it took."""
    began = time.monotonic()
    conn.execute("vacuum " + ", ".join(f"durable.{table}" for table in TABLES))
    return time.monotonic() - began


def signal_the_rest(server: Cluster, clients: list[Client]) -> Counter:
    """After the load: signal every unfinished approval run that was never signalled
    (it would wait forever); returns the errors by (operation, SQLSTATE)."""
    errors: Counter = Counter()
    owner = {run: c for c in clients for run in c.started}
    waiting = query(
        server,
        "select id::text from durable._runs where workflow = 'app.approval'"
        " and status not in ('succeeded', 'failed', 'cancelled')",
    )
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for (run,) in waiting:
            if run in owner[run].signals:
                continue
            payload = {"final": True}
            try:
                conn.execute(
                    "select durable.signal(%s, 'go', %s)", [run, Jsonb(payload)]
                )
                owner[run].signals[run] = [payload]
            except psycopg.Error as exc:
                errors["final-signal", exc.sqlstate] += 1
    return errors


LOG_LINE = re.compile(r"^\S+ \S+ \S+ \[\d+\] (\w{5}) .*?\b(ERROR|FATAL|PANIC):  (.*)$")


def log_problems(log: str) -> tuple[Counter, list[str]]:
    """ERROR lines of the server log by SQLSTATE, and the FATAL and PANIC lines.

    An autovacuum cancelled by a lock conflict logs an ERROR of its own; it is not
    an error of durable and is left out.
    """
    errors: Counter = Counter()
    fatal = []
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if not match or match.group(3).startswith("canceling autovacuum task"):
            continue
        if match.group(2) == "ERROR":
            errors[match.group(1)] += 1
        else:
            fatal.append(line)
    return errors, fatal


def log_excerpt(log: str, words: tuple[str, ...], limit: int = 60) -> str:
    """The log lines that contain one of ``words``, each with the lines after it of
    the same process (DETAIL, CONTEXT, STATEMENT)."""
    lines = log.splitlines()
    shown: list[str] = []
    for i, line in enumerate(lines):
        if not any(word in line for word in words):
            continue
        pid = re.search(r"\[\d+\]", line)
        shown.append(line)
        for after in lines[i + 1 : i + 12]:
            if not (after.startswith("\t") or (pid and pid.group() in after)):
                break
            shown.append(after)
        if len(shown) > limit:
            break
    return "\n".join(shown)


def by_sqlstate(errors: Counter) -> Counter:
    total: Counter = Counter()
    for (_, sqlstate), count in errors.items():
        total[sqlstate] += count
    return total


def check_errors(
    problems: list[str],
    clients: list[Client],
    workers: Workers,
    final_errors: Counter,
    log: str,
) -> Counter:
    """Only the expected errors, and the server logged exactly those; returns the
    errors by (operation, SQLSTATE)."""
    errors = sum((c.errors for c in clients), Counter()) + final_errors
    unexpected = {k: v for k, v in errors.items() if k not in EXPECTED}
    if unexpected:
        messages = [m for c in clients for m in c.messages][:5]
        problems.append(f"unexpected client errors {unexpected}: {messages}")
    if workers.by_sqlstate:
        problems.append(
            f"worker errors {dict(workers.by_sqlstate)}: {workers.messages[:5]}\n"
            + log_excerpt(log, ("durable worker:",))
        )
    if "deadlock detected" in log:
        problems.append(
            "deadlock in the server log:\n"
            + log_excerpt(log, ("deadlock", "still waiting"))
        )
    logged, fatal = log_problems(log)
    expected = by_sqlstate(errors) + workers.by_sqlstate
    if logged != expected:
        extra = tuple(f" {s} " for s in set(logged) - set(expected))
        problems.append(
            f"server log errors {dict(logged)}, seen by the clients and workers"
            f" {dict(expected)}\n" + log_excerpt(log, extra)
        )
    if fatal:
        problems.append("FATAL or PANIC in the server log:\n" + "\n".join(fatal[:10]))
    return errors


def check_final_states(
    problems: list[str], server: Cluster, clients: list[Client]
) -> Counter:
    """Every run ended as its client made it end; returns the runs by status."""
    started = {run: spec for c in clients for run, spec in c.started.items()}
    cancelled = set().union(*(c.cancelled for c in clients))
    signals = {run: sent for c in clients for run, sent in c.signals.items()}
    rows = query(
        server,
        "select run_id::text, workflow, parent_id::text, status, result,"
        " interruptions, error from app.final",
    )
    final = {row[0]: row[1:] for row in rows}
    if len(final) != len(rows):
        problems.append(f"{len(rows) - len(final)} run(s) finished twice")
    children = {run: state for run, state in final.items() if state[1] is not None}
    child_of = {state[1]: run for run, state in children.items()}
    parents = {r for r, (w, _) in started.items() if w == "app.parent"}
    if set(final) != set(started) | set(children):
        problems.append(
            f"{len(set(started) - set(final))} run(s) never finished,"
            f" {len(set(final) - set(started) - set(children))} unknown run(s)"
        )
    if (
        {state[0] for state in children.values()} - {"app.leaf"}
        or len(child_of) != len(children)
        or set(child_of) - parents
    ):
        problems.append("children other than one app.leaf per app.parent")

    wrong = []
    for run, (workflow, value) in started.items():
        if run not in final:
            continue
        _, _, status, result, interruptions, error = final[run]
        if status != ("cancelled" if run in cancelled else "succeeded"):
            wrong.append((run, workflow, status, result, error, run in cancelled))
            continue
        expected = {
            "app.chain": {"effects": 3},
            "app.approval": {"got": signals.get(run, [None])[0]},
            "app.nap": {"slept": value.get("seconds")},
            "app.parent": {
                "child": child_of.get(run),
                "square": value.get("n", 0) ** 2,
            },
        }[workflow]
        if status == "succeeded" and result != expected:
            wrong.append((run, workflow, result, expected))
    for child, (_, parent, status, result, _, error) in children.items():
        if status == "cancelled" and parent in cancelled:
            continue  # cancelled with its parent (or it finished first)
        square = started.get(parent, ("", {"n": 0}))[1]["n"] ** 2
        if (status, result) != ("succeeded", {"square": square}):
            wrong.append((child, "app.leaf", status, result, error, parent))
    if wrong:
        problems.append(f"{len(wrong)} run(s) ended wrongly: {wrong[:10]}")
    interrupted = [(run, *state) for run, state in final.items() if state[4]]
    if interrupted:
        problems.append(f"runs put back by a failing worker: {interrupted[:10]}")
    attempts = query(
        server, "select run_id::text, seq, attempt, error from app.attempts"
    )
    if attempts:
        problems.append(f"{len(attempts)} failed step attempt(s): {attempts[:5]}")

    # SQL steps: every effect once; all three for a chain that succeeded.
    effects: dict[str, Counter] = {}
    for run, step, count in query(
        server, "select run_id::text, step, count(*) from app.effects group by 1, 2"
    ):
        effects.setdefault(run, Counter())[step] = count
    chains = {r for r, (w, _) in started.items() if w == "app.chain"}
    succeeded = {r for r in chains if final.get(r, ("",) * 3)[2] == "succeeded"}
    if (
        set(effects) - chains
        or any(max(steps.values()) > 1 for steps in effects.values())
        or any(set(effects.get(run, ())) != {1, 2, 3} for run in succeeded)
    ):
        problems.append("SQL step effects missing or repeated")
    # The expected errors were about runs that were purged or had finished.
    purged = {run for (run,) in query(server, "select run_id::text from app.purged")}
    for client in clients:
        if client.failed_on.get("DU010", set()) - purged:
            problems.append(f"DU010 for runs not purged (client {client.index})")
        if client.failed_on.get("DU011", set()) - set(final):
            problems.append(f"DU011 for unfinished runs (client {client.index})")
    return Counter(state[2] for state in final.values())


def check_purged_in_time(
    problems: list[str], server: Cluster, statuses: Counter
) -> tuple[float, float]:
    """Every finished run was purged once, after the retention and within the
    slack, with all its rows; returns the least and the most age at purge (s)."""
    purged, distinct, unknown = query(
        server,
        "select count(*), count(distinct run_id), count(*) filter (where run_id"
        " not in (select run_id from app.final)) from app.purged",
    )[0]
    if (purged, distinct, unknown) != (sum(statuses.values()), purged, 0):
        problems.append(
            f"{purged} purges of {distinct} runs ({unknown} unfinished),"
            f" {sum(statuses.values())} runs finished"
        )
    for table in TABLES:  # every run is gone, and every row of it
        left = query(server, f"select count(*) from durable.{table}")[0][0]
        if left:
            problems.append(f"{left} row(s) left in durable.{table}")
    # Age at purge; its lateness counts from the parent's finish for a child.
    youngest, oldest, latest = query(
        server,
        "select min(extract(epoch from p.purged_at - p.finished_at)),"
        " max(extract(epoch from p.purged_at - p.finished_at)),"
        " max(extract(epoch from p.purged_at"
        "   - greatest(p.finished_at, parent.finished_at)))"
        " from app.purged as p join app.final as f using (run_id)"
        " left join app.final as parent on parent.run_id = f.parent_id",
    )[0]
    if youngest is None:
        problems.append("no run was purged")
        return 0.0, 0.0
    if youngest <= RETENTION:
        problems.append(f"a run was purged {youngest:.2f}s after it finished")
    if latest > RETENTION + SLACK:
        problems.append(
            f"a run was purged {latest:.1f}s after it (or its parent) ended"
        )
    return float(youngest), float(oldest)


def check_bounded(
    problems: list[str], samples: list[dict], third: float, load_end: float
) -> tuple[dict, dict]:
    """The tables stop growing once the purge and vacuum keep pace.

    A run's rows live until RETENTION (+ the purge's lateness) after it finishes; then
    they are deleted, and their space can be reused once VACUUM has removed the dead
    tuples, which it can do only when no transaction older than them is still open
    (the workers keep none open between steps, and their CALL holds no snapshot). When
    VACUUM runs is PostgreSQL's business: autovacuum looks at a database once a minute
    by default, and vacuums durable._runs after 20,000 dead rows (the extension's
    setting) or PostgreSQL's 1,000 + 20% inserts, every few seconds to minutes
    depending on the rate. Over a 12-second load that would decide the outcome, so the
    test runs VACUUM itself every second: the live rows, the dead rows waiting for
    VACUUM and the free space then reach a steady level a few seconds after RETENTION
    + SLACK, before a third of the load. From then on the tables may grow a little by
    index page splits and by fluctuations of the rate, not with the number of runs:
    the largest size seen after the first third is at most GROWTH (2) times the size
    at that third. Were space not reused (no purge, or VACUUM held back by an open
    transaction), the size would grow with the runs started: nearly 3 times from the
    first third to the end of the load.
    """
    at_third = next(s for s in samples if s["t"] >= third)
    later = [s for s in samples if at_third["t"] <= s["t"] <= load_end]
    peak = max(later, key=lambda s: s["total"])
    if peak["total"] > GROWTH * at_third["total"]:
        problems.append(
            f"durable tables grew from {at_third['total'] // 1024} kB at"
            f" {at_third['t']:.1f}s to {peak['total'] // 1024} kB at {peak['t']:.1f}s"
        )
    # No finished run outlived the retention (+ slack) at any sample: the live rows of
    # finished runs are bounded by the rate times RETENTION + SLACK.
    overdue = [(round(s["t"], 1), s["overdue"]) for s in samples if s["overdue"]]
    if overdue:
        problems.append(f"finished runs overdue for purging (time, runs): {overdue}")
    return at_third, peak


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(12, id="12s"),
        pytest.param(60, id="60s", marks=[pytest.mark.slow, SLOW]),
    ],
)
def test_load_clients_workers_retention(seconds: int):
    """50 clients start, signal, cancel and read runs while 3 workers execute and
    purge them: only the expected errors, no deadlock, every run ends as its client
    made it end, runs are purged after the retention and not much later, and the
    tables stay bounded. All checks run; the test fails at the end with every problem
    found."""
    began = time.monotonic()
    seed = random.randrange(1 << 30)
    problems: list[str] = []
    with private_cluster("load") as server:
        prepare(server)
        clients = [Client(i, seed + i) for i in range(CLIENTS)]
        stop = threading.Event()
        threads = [
            threading.Thread(target=c.run, args=(server.dsn(), stop), daemon=True)
            for c in clients
        ]
        sampling = Every(server, 0.5, sampler(began))
        vacuuming = Every(server, 1.0, vacuum)
        with (
            Workers(server, WORKERS, max_runtime="2 seconds") as workers,
            sampling,
            vacuuming,
        ):
            load_began = time.monotonic() - began
            for thread in threads:
                thread.start()
            stop.wait(seconds)
            stop.set()
            for thread in threads:
                thread.join(30)
            load_end = time.monotonic() - began
            assert not any(thread.is_alive() for thread in threads)
            final_errors = signal_the_rest(server, clients)
            wait_until(lambda: query(server, UNFINISHED)[0][0] == 0, timeout=60)
            # While the workers go on, nothing finished outlives the retention (+
            # slack), and once all runs have finished they all go.
            if query(server, OVERDUE, LATE)[0][0]:
                problems.append("finished runs overdue for purging after the load")
            wait_until(
                lambda: query(server, "select count(*) from durable._runs")[0][0] == 0,
                timeout=RETENTION + SLACK + 10,
            )
        samples = sampling.results
        assert (sampling.crash, vacuuming.crash) == (None, None)
        assert [c.crash for c in clients if c.crash] == []
        log = server.log()
        errors = check_errors(problems, clients, workers, final_errors, log)
        statuses = check_final_states(problems, server, clients)
        youngest, oldest = check_purged_in_time(problems, server, statuses)
        third = load_began + (load_end - load_began) / 3
        at_third, peak = check_bounded(problems, samples, third, load_end)

    ops = sum((c.ops for c in clients), Counter())
    children = sum(statuses.values()) - ops["start"]
    signals = sum(len(sent) for c in clients for sent in c.signals.values())
    peaks = {t: max(s["sizes"][t] for s in samples) // 1024 for t in TABLES}
    print(
        f"\nload {seconds}s: {CLIENTS} clients, {WORKERS} workers, seed {seed};"
        f" {ops['start']} runs started (+{children} children),"
        f" finished {dict(statuses)};"
        f" {signals} signals accepted, {sum(len(c.cancelled) for c in clients)}"
        f" cancels accepted (+{sum(c.cancel_false for c in clients)} of finished"
        f" runs); operations {dict(ops)};"
        f" errors by SQLSTATE {dict(by_sqlstate(errors))}"
        f" ({', '.join(f'{op} {st}: {n}' for (op, st), n in sorted(errors.items()))});"
        f" worker errors {dict(workers.by_sqlstate)};"
        f" lock waits over 1s {log.count('still waiting for')};"
        f" purged {youngest:.2f}-{oldest:.2f}s after finishing"
        f" (retention {RETENTION:g}s);"
        f" peak live rows {max(s['rows'] for s in samples)}"
        f" ({max(s['runs'] for s in samples)} runs,"
        f" {max(s['unfinished'] for s in samples)} unfinished);"
        f" peak sizes kB {peaks}; total {at_third['total'] // 1024} kB at a third,"
        f" {peak['total'] // 1024} kB at most after;"
        f" wall {time.monotonic() - began:.1f}s"
    )
    assert problems == [], "\n".join(problems)
