#!/usr/bin/env python3
"""Benchmark durable against a plain PL/Python floor and against DBOS Transact.

Creates a throwaway PostgreSQL 15 cluster tuned for benchmarking (the settings below,
with fsync and synchronous_commit on as users run it), measures, prints a table in
which every figure stands next to a baseline measured in the same invocation, and
writes ``bench/results/latest.json``. ``--quick`` takes under two minutes, the full run
under fifteen on a 2-core machine. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import measures
import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tools"))

from build_sql import stale_scripts  # noqa: E402
from pgcluster import Cluster  # noqa: E402

# Above this share of the machine's CPU time used by other processes, a run is
# flagged as disturbed.
OTHER_LOAD_WARNING = 0.05

# --wait-quiet looks at the machine over windows of this many seconds.
QUIET_WINDOW = 10.0

VENV = BENCH / ".venv"
REQUIREMENTS = BENCH / "requirements.txt"
RESULTS = BENCH / "results" / "latest.json"

# The cluster. Everything not listed is PostgreSQL's default, apart from what
# tools/pgcluster.py sets for every throwaway cluster (max_connections = 100, logging).
CLUSTER_SETTINGS = {
    # Durability exactly as users run it: every commit waits for its WAL to be flushed
    # to disk, and the first change of a page after a checkpoint logs the whole page.
    # (pgcluster's defaults turn fsync and full_page_writes off for the tests.)
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # Room for every table and index of the run (the 1,000,000 finished runs and their
    # steps take about 500 MB), so that no figure depends on reads from disk.
    "shared_buffers": "2GB",
    # WAL volume must not trigger a checkpoint in the middle of a measurement (loading
    # the finished runs writes about 700 MB, the whole run under 2 GB), and no timed
    # checkpoint happens during the run: the bench issues CHECKPOINT itself before each
    # throughput measurement, so that each starts from the same point (full-page
    # images after the checkpoint included).
    "max_wal_size": "16GB",
    "min_wal_size": "2GB",
    "checkpoint_timeout": "1h",
    # The WAL written by one commit is buffered in memory before its flush; 64 MB keeps
    # the bulk load from waiting on WAL buffer writes.
    "wal_buffers": "64MB",
    # VACUUM after the bulk load keeps its dead-tuple list in memory in one pass.
    "maintenance_work_mem": "512MB",
    # pg_stat_statements is loaded for the profile, but tracks nothing unless a session
    # asks (the profile sets track = all in its own session): the timed figures carry
    # no tracking cost. pg_cron (pgcluster's default) is not loaded: nothing uses it.
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "none",
}


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    mode: str
    repeats: int  # throughput measurements are repeated; the best is reported
    floor_tasks: int
    one_runs: int  # runs of the 1-step workflow per throughput measurement
    ten_runs: int  # runs of the 10-step workflow per throughput measurement
    latency_samples: int
    timers: int
    finished_runs: int
    rss_first: int
    rss_total: int
    backlog_runs: int  # 1-step runs executed with no vacuum, in 4 batches
    profile_runs: int
    dbos_seconds: float
    dbos_transaction_seconds: float


QUICK = Plan(
    mode="quick",
    repeats=1,
    floor_tasks=3000,
    one_runs=2000,
    ten_runs=400,
    latency_samples=60,
    timers=40,
    finished_runs=100_000,
    rss_first=1000,
    rss_total=10_000,
    backlog_runs=6000,
    profile_runs=500,
    dbos_seconds=2.0,
    dbos_transaction_seconds=1.5,
)

FULL = Plan(
    mode="full",
    repeats=3,
    floor_tasks=20_000,
    one_runs=10_000,
    ten_runs=2000,
    latency_samples=200,
    timers=200,
    finished_runs=1_000_000,
    rss_first=1000,
    rss_total=100_000,
    backlog_runs=40_000,
    profile_runs=2000,
    dbos_seconds=3.0,
    dbos_transaction_seconds=2.0,
)


def log(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_quiet(limit: float) -> None:
    """Wait until other processes leave the CPUs alone for a window (at most
    ``limit`` seconds; then go on anyway)."""
    deadline = time.monotonic() + limit
    while True:
        ledger = measures.CpuLedger([os.getpid()])
        time.sleep(QUIET_WINDOW)
        other = ledger.shares()["other"]
        if other <= OTHER_LOAD_WARNING:
            return
        if time.monotonic() > deadline:
            log(f"the machine is still busy (other processes {other:.0%}); going on")
            return
        log(f"waiting for a quiet machine (other processes {other:.0%})")


def check_installed() -> None:
    """Stop unless the installed extension scripts are the ones the sources build."""
    stale = stale_scripts()
    if stale:
        raise SystemExit(f"{stale[0]} is missing or stale: run make install")


def peer_python() -> Path:
    """The interpreter of bench/.venv, created and given requirements.txt if needed.

    DBOS and its dependencies live in their own virtual environment so that they
    cannot change the packages the repository pins for its own tools.
    """
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.installed"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log("installing the peer (bench/requirements.txt) into bench/.venv")
    install = ["install", "--quiet", "-r", str(REQUIREMENTS)]
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)])
    if made.returncode == 0:
        subprocess.run([str(python), "-m", "pip", *install], check=True)
    else:
        # Debian's python3 makes no venv with pip unless python3-venv is installed:
        # make one without pip and install into it with this interpreter's pip.
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", "--without-pip", str(VENV)],
            check=True,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), *install],
            check=True,
        )
    stamp.write_text(wanted)
    return python


def peer(cluster: Cluster, plan: Plan) -> dict[str, Any]:
    """DBOS workflows/s of each shape on 1 and 8 threads, against the cluster (each
    measured ``plan.repeats`` times, interleaved, the best kept)."""
    python = peer_python()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("create database dbos_bench")
    url = (
        f"postgresql+psycopg://{cluster.user}@/dbos_bench"
        f"?host={cluster.base}&port={cluster.port}"
    )
    runs = [
        f"step:{steps}:{threads}:{plan.dbos_seconds}"
        for steps in (1, 10)
        for threads in (1, 8)
    ] + [f"transaction:{steps}:1:{plan.dbos_transaction_seconds}" for steps in (1, 10)]
    command = [str(python), str(BENCH / "dbos_peer.py"), "--url", url]
    for run in runs * plan.repeats:
        command += ["--run", run]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the DBOS peer failed:\n{result.stderr[-4000:]}")
    samples: dict[str, list[dict]] = {}
    for item in json.loads(result.stdout.strip().splitlines()[-1])["dbos"]:
        key = f"{item['kind']}_{item['steps']}_{item['threads']}"
        rate = item["workflows"] / item["seconds"]
        samples.setdefault(key, []).append(
            {**item, "per_s": rate, "steps_per_s": rate * item["steps"]}
        )
    figures = {
        key: {**measures.best_by(values, "per_s"), "samples": values}
        for key, values in samples.items()
    }
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"version": version, "figures": figures}


def throughput(bench: measures.Bench, plan: Plan) -> dict[str, Any]:
    """Floor and durable throughput, interleaved, ``plan.repeats`` times."""
    log("warming up (cache, WAL, the first checkpoints)")
    measures.floor_throughput(bench, plan.floor_tasks // 4, 1)
    measures.durable_throughput(bench, "bench.one", plan.one_runs // 4, 1)
    samples: dict[str, list[dict]] = {}
    for repeat in range(plan.repeats):
        log(f"throughput, round {repeat + 1} of {plan.repeats}")
        for backends in (1, 2):
            samples.setdefault(f"floor_{backends}", []).append(
                measures.floor_throughput(bench, plan.floor_tasks, backends)
            )
        for workflow, runs in (
            ("bench.one", plan.one_runs),
            ("bench.ten", plan.ten_runs),
        ):
            for workers in (1, 2):
                key = f"{workflow.split('.')[1]}_{workers}"
                samples.setdefault(key, []).append(
                    measures.durable_throughput(bench, workflow, runs, workers)
                )
    rate = {"floor": "per_s"}
    return {
        key: {
            **measures.best_by(values, rate.get(key.split("_")[0], "runs_per_s")),
            "samples": values,
        }
        for key, values in samples.items()
    }


def profile(bench: measures.Bench, plan: Plan) -> dict[str, Any]:
    """Statements, commits and WAL per unit of work; the worker's Python profile."""
    start = "select durable.start(%s) from generate_series(1, %%s::int)"
    return {
        "floor": measures.statements_per_unit(
            bench,
            "insert into bench.tasks (status) select 'pending'"
            " from generate_series(1, %s::int)",
            measures.FLOOR_DRAIN,
            plan.profile_runs,
        ),
        "one": measures.statements_per_unit(
            bench, start % "'bench.one'", measures.DRAIN, plan.profile_runs
        ),
        "ten": measures.statements_per_unit(
            bench, start % "'bench.ten'", measures.DRAIN, plan.profile_runs // 5
        ),
        "python": measures.python_profile(bench, plan.profile_runs),
        "waits": measures.wait_profile(
            bench, plan.profile_runs * 10, plan.profile_runs * 4
        ),
    }


def measure(cluster: Cluster, plan: Plan, with_peer: bool) -> dict[str, Any]:
    """Every measurement, in the order that keeps each one's tables as it needs, with
    the share of the CPUs other processes took during each (under "cpu_shares")."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("create database bench")
    roots = [os.getpid(), cluster.postmaster_pid()]
    results: dict[str, Any] = {"cpu_shares": {}}

    def section(key: str, title: str, work: Callable[..., Any], *args: Any) -> None:
        log(title)
        ledger = measures.CpuLedger(roots)
        results[key] = work(*args)
        shares = results["cpu_shares"][key] = ledger.shares()
        if shares["other"] > OTHER_LOAD_WARNING:
            log(f"other processes took {shares['other']:.0%} of the CPUs meanwhile")

    bench = measures.Bench(cluster)
    try:
        bench.admin.execute("create extension durable cascade")
        bench.admin.execute("create extension pg_stat_statements")
        bench.admin.execute((BENCH / "schema.sql").read_text())
        section("throughput", "throughput", throughput, bench, plan)
        section(
            "latency",
            "latency with an idle worker",
            measures.latency,
            bench,
            plan.latency_samples,
        )
        section("timers", "timer lateness", measures.timer_lateness, bench, plan.timers)
        section(
            "rss",
            "memory of one worker backend",
            measures.rss_growth,
            bench,
            plan.rss_first,
            plan.rss_total,
        )
        section("profile", "profile", profile, bench, plan)
        section(
            "scale",
            f"throughput with {plan.finished_runs:,} finished runs",
            measures.many_finished,
            bench,
            plan.finished_runs,
            plan.one_runs // plan.repeats,
            plan.ten_runs // plan.repeats,
            plan.repeats,
            plan.backlog_runs,
        )
    finally:
        bench.close()
    if with_peer:
        section("peer", "peer: DBOS Transact", peer, cluster, plan)
    return results


def row(
    label: str,
    value: float | None,
    unit: str,
    baseline: str = "",
    base: float | None = None,
    target: tuple[str, float] | None = None,
    on: str = "ratio",
) -> dict[str, Any]:
    """One line of the table; ``target`` is (">=" or "<=", threshold) applied to the
    ratio or (``on="value"``) to the value itself."""
    ratio = value / base if value is not None and base else None
    verdict = ""
    if target is not None:
        judged = ratio if on == "ratio" else value
        if judged is None:
            verdict = "not measured"
        else:
            op, threshold = target
            ok = judged >= threshold if op == ">=" else judged <= threshold
            verdict = "met" if ok else "MISSED"
    return {
        "figure": label,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": base,
        "ratio": ratio,
        "target": None if target is None else f"{on} {target[0]} {target[1]:g}",
        "verdict": verdict,
    }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table: every figure with its baseline, the ratio, the target if any."""
    t = results["throughput"]
    floor = t["floor_1"]["per_s"]
    out = [
        row("floor, 1 backend", floor, "tasks/s", "(the baseline)"),
        row("floor, 2 backends", t["floor_2"]["per_s"], "tasks/s", "floor, 1 backend",
            floor),
        row("durable.start() in bulk", t["one_1"]["starts_per_s"], "starts/s",
            "plain INSERT of tasks", t["floor_1"]["inserts_per_s"]),
        row("1-step, 1 worker", t["one_1"]["runs_per_s"], "runs/s",
            "floor, 1 backend", floor, (">=", 0.5)),
        row("1-step, 2 workers", t["one_2"]["runs_per_s"], "runs/s",
            "1-step, 1 worker", t["one_1"]["runs_per_s"], (">=", 1.5)),
        row("10-step, 1 worker", t["ten_1"]["steps_per_s"], "steps/s",
            "floor, 1 backend", floor, (">=", 0.6)),
        row("10-step, 2 workers", t["ten_2"]["steps_per_s"], "steps/s",
            "10-step, 1 worker", t["ten_1"]["steps_per_s"], (">=", 1.5)),
    ]  # fmt: skip
    peer_figures = results.get("peer", {}).get("figures")
    if peer_figures:
        out += peer_rows(t, peer_figures)
    else:
        out += [
            row(f"{shape} best vs DBOS best", None, "runs/s", "DBOS not run",
                target=(">=", 10))
            for shape in ("1-step", "10-step")
        ]  # fmt: skip
    latency = results["latency"]
    for side in ("client", "server"):
        for p in ("p50", "p95", "p99"):
            target = ("<=", 20.0) if side == "client" and p == "p50" else None
            out.append(
                row(f"start->finished {p} ({side})", latency["durable"][side][p], "ms",
                    "floor poller", latency["floor"][side][p], target, on="value")
            )  # fmt: skip
    out.append(
        row("start->finished p50 (client), wake_at 1 s earlier",
            latency["backdated"]["client"]["p50"], "ms", "floor poller",
            latency["floor"]["client"]["p50"])
    )  # fmt: skip
    timers = results["timers"]
    for p in ("p50", "p99"):
        target = ("<=", 200.0) if p == "p99" else None
        out.append(
            row(f"wf.sleep(1) lateness {p}", timers["durable"][p], "ms",
                "floor, task due in 1 s", timers["floor"][p], target, on="value")
        )  # fmt: skip
    scale = results["scale"]
    for shape, label, rate in (
        ("one", "1-step", "runs_per_s"),
        ("ten", "10-step", "steps_per_s"),
    ):
        out.append(
            row(f"{label}, 1 worker, {scale['finished_runs']:,} finished runs",
                scale["many"][shape][rate], rate.split("_")[0] + "/s",
                "same, empty tables", scale["empty"][shape][rate], (">=", 0.9))
        )  # fmt: skip
    backlog = scale["backlog"]
    out.append(
        row(f"1-step, 1 worker, {scale['finished_runs']:,} finished runs,"
            f" {backlog[-1]['after']:,} runs since VACUUM", backlog[-1]["runs_per_s"],
            "runs/s", "same, just after VACUUM", backlog[0]["runs_per_s"])
    )  # fmt: skip
    rss = results["rss"]
    first, last, after = rss["first"], rss["last"], rss["after_call"]
    out += [
        row(f"worker RssAnon after {last['runs']:,} runs, in one CALL",
            last["RssAnon"] / 1024, "MB", f"after {first['runs']:,} runs",
            first["RssAnon"] / 1024, ("<=", 1.10)),
        row("worker RssAnon once the CALL returned", after["RssAnon"] / 1024, "MB",
            f"after {first['runs']:,} runs", first["RssAnon"] / 1024),
        row(f"worker VmRSS after {last['runs']:,} runs, in one CALL",
            last["VmRSS"] / 1024, "MB", f"after {first['runs']:,} runs",
            first["VmRSS"] / 1024),
    ]  # fmt: skip
    return out


def peer_rows(t: dict[str, Any], dbos: dict[str, Any]) -> list[dict[str, Any]]:
    """durable against DBOS: durable's figure, DBOS's as the baseline."""
    out = []
    for shape, label in (("one", "1-step"), ("ten", "10-step")):
        steps = 1 if shape == "one" else 10
        for workers, threads in ((1, 1), (2, 8)):
            d = dbos[f"step_{steps}_{threads}"]
            out.append(
                row(f"{label}, {workers} worker{'s' * (workers > 1)} vs DBOS",
                    t[f"{shape}_{workers}"]["runs_per_s"], "runs/s",
                    f"DBOS {label}, {threads} thread{'s' * (threads > 1)}",
                    d["per_s"])
            )  # fmt: skip
        d = dbos[f"transaction_{steps}_1"]
        out.append(
            row(f"{label}, 1 worker vs DBOS transactions",
                t[f"{shape}_1"]["runs_per_s"], "runs/s",
                f"DBOS {label} SELECT 1 tx, 1 thread", d["per_s"])
        )  # fmt: skip
        best = max(t[f"{shape}_1"]["runs_per_s"], t[f"{shape}_2"]["runs_per_s"])
        best_dbos = max(
            dbos[f"step_{steps}_1"]["per_s"], dbos[f"step_{steps}_8"]["per_s"]
        )
        out.append(
            row(f"{label} best vs DBOS best", best, "runs/s", "DBOS best", best_dbos,
                (">=", 10))
        )  # fmt: skip
    return out


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(lines: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = ["figure", "value", "unit", "baseline", "base value", "ratio", "target",
              "verdict"]  # fmt: skip
    cells = [header] + [
        [
            line["figure"],
            number(line["value"]),
            line["unit"],
            line["baseline"],
            number(line["baseline_value"]),
            "-" if line["ratio"] is None else f"{line['ratio']:.2f}x",
            line["target"] or "",
            line["verdict"],
        ]
        for line in lines
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    numeric = {1, 4, 5}
    return "\n".join(
        "  ".join(
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i])
            for i, c in enumerate(cells_row)
        ).rstrip()
        for cells_row in cells
    )


def profile_summary(results: dict[str, Any]) -> str:
    """A few lines on where the time goes, from the profile."""
    p = results["profile"]
    lines = [
        "Per unit of work (pg_stat_statements for one session, WAL by pg_waldump):"
    ]
    for key, label in (("floor", "floor task"), ("one", "1-step run"),
                       ("ten", "10-step run")):  # fmt: skip
        unit = p[key]
        records = sorted(
            unit["wal_records_per_unit"].items(), key=lambda kv: kv[1], reverse=True
        )
        lines.append(
            f"  {label}: {unit['wall_ms_per_unit']:.3f} ms,"
            f" {unit['statements_per_unit']:.1f} statements"
            f" ({unit['statement_ms_per_unit']:.3f} ms in them),"
            f" {unit['commits_per_unit']:.2f} commits,"
            f" {unit['wal_bytes_per_unit']:,.0f} WAL bytes; WAL records: "
            + ", ".join(f"{kind} {n:.2f}" for kind, n in records[:6])
        )
    py = p["python"]
    lines.append(
        f"Worker time per 1-step run (cProfile in the backend, {py['ms_per_run']:.3f}"
        f" ms): plpy.commit {py['commit_ms_per_run']:.3f} ms, plpy.execute"
        f" {py['execute_ms_per_run']:.3f} ms, Python {py['python_ms_per_run']:.3f} ms"
    )
    lines.append(
        "Where the backends spend their time (pg_stat_activity every 5 ms, CPU"
        " from /proc):"
    )
    for key, label, session, unit in (("floor", "floor", "backend", "task"),
                                      ("one", "1-step", "worker", "run")):  # fmt: skip
        for sessions in (1, 2):
            waits = p["waits"][f"{key}_{sessions}"]
            shares = [
                f"{what} {share:.0%}"
                for what, share in waits["shares"].items()
                if share >= 0.01
            ]
            plural = "s" if sessions > 1 else ""
            lines.append(
                f"  {label}, {sessions} {session}{plural}:"
                f" {waits['cpu_ms_per_unit']:.3f} ms CPU per {unit}; "
                + ", ".join(shares)
            )
    spi = [s for s in results["rss"]["samples"] if "spi_proc_bytes" in s]
    if len(spi) >= 2:
        a, b = spi[0], spi[-1]
        per_run = (b["spi_proc_bytes"] - a["spi_proc_bytes"]) / (b["runs"] - a["runs"])
        lines.append(
            f"Worker's SPI procedure memory contexts in one CALL:"
            f" {a['spi_proc_bytes'] / 1024:,.0f} kB after {a['runs']:,} runs,"
            f" {b['spi_proc_bytes'] / 1024:,.0f} kB after {b['runs']:,}"
            f" ({per_run:.0f} bytes per run, held until the CALL returns)"
        )
    plan = results["scale"]["claim_plan"]
    if "plan" in plan:
        scale = results["scale"]
        lines.append(
            f"Claim plan with {scale['finished_runs']:,} finished runs, after"
            f" {sum(b['runs'] for b in scale['backlog']):,} runs since VACUUM:"
        )
        lines += ["  " + line for line in plan["plan"]]
    else:
        lines.append(f"Claim plan: {plan['error']}")
    return "\n".join(lines)


def machine(cluster: Cluster) -> dict[str, Any]:
    """What the figures were measured on."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        version = conn.execute("select version()").fetchone()[0]
    cpu = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "free_h": subprocess.run(
            ["free", "-h"], capture_output=True, text=True
        ).stdout.strip(),
        "kernel": platform.release(),
        "postgresql": version,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: under two minutes"
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="leave out the DBOS measurements"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait, at most SECONDS, until other processes use under"
        f" {OTHER_LOAD_WARNING * 100:g}%% of the CPUs for {QUIET_WINDOW:g} s",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    check_installed()
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    began = time.monotonic()
    started_at = datetime.now(timezone.utc)
    log(f"{plan.mode} run: starting a throwaway cluster")
    cluster = Cluster(settings=CLUSTER_SETTINGS, name="durable-bench").start()
    try:
        about = machine(cluster)
        ledger = measures.CpuLedger([os.getpid(), cluster.postmaster_pid()])
        results = measure(cluster, plan, with_peer=not args.no_peer)
        about["cpu_shares"] = ledger.shares()
    finally:
        cluster.destroy()
    lines = rows(results)
    report = {
        "mode": plan.mode,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": time.monotonic() - began,
        "machine": about,
        "cluster_settings": CLUSTER_SETTINGS,
        "plan": asdict(plan),
        "rows": lines,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"durable bench ({plan.mode}), {started_at:%Y-%m-%d %H:%M} UTC,"
        f" {about['nproc']} CPUs, {about['postgresql'].split(' on ')[0]}"
    )
    print(table(lines))
    print()
    print(profile_summary(results))
    shares = about["cpu_shares"]
    print(
        f"\nCPU time of the machine during the run: bench {shares['bench']:.0%},"
        f" other processes {shares['other']:.0%}, stolen {shares['steal']:.0%}."
    )
    disturbed = [
        f"{key} ({share['other']:.0%})"
        for key, share in results["cpu_shares"].items()
        if share["other"] > OTHER_LOAD_WARNING
    ]
    if disturbed:
        print(
            "WARNING: other processes competed for the CPUs during: "
            + ", ".join(disturbed)
            + ". Those figures are not reliable; run again on a quiet machine."
        )
    targets = [line for line in lines if line["verdict"]]
    met = sum(line["verdict"] == "met" for line in targets)
    print(f"\nTargets met: {met} of {len(targets)}. Results: {args.out}")
    log(f"done in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
