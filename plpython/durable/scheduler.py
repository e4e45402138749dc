"""Firing schedules from the worker loop, exactly once per slot.

A worker locks the due schedules it can (``FOR UPDATE SKIP LOCKED``), starts the runs of
their due slots with the idempotency key ``schedule:<name>:<slot>``, and advances
``next_fire_at`` in the same transaction; so however many workers look, each slot starts
at most one run, and none is lost.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from . import cron
from .db import Database

__all__ = ["fire_due", "next_fire_json", "slot_key"]

INVALID_PARAMETER = "22023"
UNFINISHED = ("pending", "running", "sleeping", "waiting")

DUE = """
select s.name, s.cron, s.workflow, s.input::text as input, s.timezone, s.overlap,
    s.catch_up, extract(epoch from s.next_fire_at)::float8 as next_fire_at,
    extract(epoch from pg_catalog.clock_timestamp())::float8 as now,
    r.status as last_status
from durable._schedules as s
left join durable._runs as r on r.id = s.last_run
where s.enabled and s.owner = session_user
    and s.next_fire_at <= pg_catalog.clock_timestamp()
order by s.next_fire_at
limit 20
for update of s skip locked
"""


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def slot_key(name: str, slot: datetime) -> str:
    """The idempotency key of the run of one slot of a schedule."""
    return f"schedule:{name}:{slot.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def next_fire_json(expression: str | None, tz: str, after: float) -> str:
    """``{"next": ...}`` for durable.schedule(), or ``{"error": ...}`` for bad input."""
    try:
        if not expression:
            raise cron.CronError("the cron expression must be a non-empty string")
        cron.check_timezone(tz)
        fire = cron.parse(expression).next_after(_utc(after), tz)
    except cron.CronError as exc:
        return json.dumps(
            {
                "error": {
                    "sqlstate": INVALID_PARAMETER,
                    "message": str(exc),
                    "hint": "Cron takes 5 fields (minute hour day month weekday),"
                    " 6 with"
                    " leading seconds, @hourly/@daily/..., or 'N seconds' (1-59);"
                    " time zones are IANA names such as Europe/Berlin.",
                }
            }
        )
    return json.dumps({"next": fire.isoformat()})


def _parsed(cache: dict, expression: str) -> cron.Schedule:
    key = ("cron", expression)
    if key not in cache:
        cache[key] = cron.parse(expression)
    return cache[key]


def _slots_to_fire(
    row: dict[str, Any], spec: cron.Schedule, settings: dict[str, str]
) -> tuple[list[datetime], datetime]:
    """The slots to start runs for now, and the next_fire_at that follows them."""
    now = _utc(row["now"])
    first = _utc(row["next_fire_at"])
    limit = int(settings["schedule.max_catch_up"])
    due = [first, *spec.fires_between(first, now, row["timezone"], limit=limit)]
    if row["catch_up"] == "all":
        chosen = due[-limit:]
    elif row["catch_up"] == "latest":
        chosen = due[-1:]
    else:
        grace = float(settings["schedule.misfire_grace"])
        chosen = [due[-1]] if (now - due[-1]).total_seconds() <= grace else []
    if row["overlap"] == "queue" and chosen:
        # One run at a time: the later slots stay due until this run has finished.
        return chosen[:1], spec.next_after(chosen[0], row["timezone"])
    return chosen, spec.next_after(now, row["timezone"])


def fire_due(db: Database, cache: dict, settings: dict[str, str]) -> float | None:
    """Start the runs of due slots of this role's schedules; commits.

    Returns the epoch of the earliest next fire among enabled schedules (or None),
    so that the worker knows when to look again.
    """
    for row in db.execute(DUE):
        unfinished = row["last_status"] in UNFINISHED
        if row["overlap"] == "queue" and unfinished:
            continue
        spec = _parsed(cache, row["cron"])
        slots, next_fire = _slots_to_fire(row, spec, settings)
        last_run = None
        for slot in slots:
            outcome, run_id = "skipped", None
            if not (row["overlap"] == "skip" and unfinished):
                run_id = db.one(
                    "select durable._start($1, $2::jsonb, null, $3, 'default', 0, null,"
                    " pg_catalog.current_schemas(true)) as id",
                    ["text", "text", "text"],
                    [row["workflow"], row["input"], slot_key(row["name"], slot)],
                )["id"]
                outcome, last_run, unfinished = "started", run_id, True
            db.execute(
                "insert into durable._schedule_fires (schedule, slot, outcome, run_id)"
                " values ($1, $2, $3, $4) on conflict do nothing",
                ["text", "timestamptz", "text", "uuid"],
                [row["name"], slot.isoformat(), outcome, run_id],
            )
        db.execute(
            "update durable._schedules set next_fire_at = $2,"
            " last_fire_at = coalesce($3, last_fire_at),"
            " last_run = coalesce($4, last_run)"
            " where name = $1 and owner = session_user",
            ["text", "timestamptz", "timestamptz", "uuid"],
            [
                row["name"],
                next_fire.isoformat(),
                slots[-1].isoformat() if slots else None,
                last_run,
            ],
        )
        db.execute(
            "delete from durable._schedule_fires where owner = session_user"
            " and schedule = $1 and slot < (select slot from durable._schedule_fires"
            " where owner = session_user and schedule = $1"
            " order by slot desc offset $2 limit 1)",
            ["text", "integer"],
            [row["name"], int(settings["schedule.keep_fires"])],
        )
    db.commit()
    earliest = db.one(
        "select extract(epoch from min(next_fire_at))::float8 as at"
        " from durable._schedules where enabled and owner = session_user"
    )["at"]
    db.commit()
    return earliest
