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

# The due schedules of the worker's role (session_user), locked FOR UPDATE SKIP LOCKED
# until this transaction commits. Only the extension owner may write durable's tables,
# so reading-to-update and recording fires go through security definer functions.
DUE = "select * from durable._due_schedules(20)"

FIRED = "select durable._schedule_fired($1, $2, $3, $4) as ok"


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
        fired: list[str] = []
        runs: list[str | None] = []
        for slot in slots:
            run_id = None
            if not (row["overlap"] == "skip" and unfinished):
                run_id = db.one(
                    "select durable._start($1, $2::jsonb, null, $3, 'default', 0, null,"
                    " pg_catalog.current_schemas(true)) as id",
                    ["text", "text", "text"],
                    [row["workflow"], row["input"], slot_key(row["name"], slot)],
                )["id"]
                unfinished = True
            fired.append(slot.isoformat())
            runs.append(run_id)
        # One round trip: record the fires, advance next_fire_at, trim the history.
        db.execute(
            FIRED,
            ["text", "timestamptz[]", "uuid[]", "timestamptz"],
            [row["name"], fired, runs, next_fire.isoformat()],
        )
    db.commit()
    earliest = db.one(
        "select extract(epoch from min(next_fire_at))::float8 as at"
        " from durable._schedules where enabled and owner = session_user"
    )["at"]
    db.commit()
    return earliest
