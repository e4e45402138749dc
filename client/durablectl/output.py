"""Plain-text rendering: table cells, aligned tables and field lists, errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

CELL_WIDTH = 60
"""Longest text a table cell shows; longer text is cut and ends with '...'."""


def format_duration(value: timedelta) -> str:
    """A duration as '0.042s', '12.500s', '3m07s' or '26h03m07s'."""
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, whole = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{whole:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{whole:02d}s"


def format_value(value: Any) -> str:
    """The text shown for one value read from PostgreSQL ('' for NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _cell(value: Any) -> str:
    text = " ".join(format_value(value).split())
    if len(text) > CELL_WIDTH:
        return text[: CELL_WIDTH - 3] + "..."
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as columns aligned with spaces under a header and a rule of dashes.

    Numeric columns are right-aligned; each cell is one line of at most
    ``CELL_WIDTH`` characters.
    """
    rows = list(rows)
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([len(header)] + [len(line[i]) for line in cells])
        for i, header in enumerate(headers)
    ]
    right = [
        bool(rows) and all(_is_number(row[i]) for row in rows if row[i] is not None)
        for i in range(len(headers))
    ]

    def line(texts: Sequence[str]) -> str:
        padded = (
            text.rjust(width) if align else text.ljust(width)
            for text, width, align in zip(texts, widths, right)
        )
        return "  ".join(padded).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join([line(headers), line(rule), *(line(texts) for texts in cells)])


def render_fields(fields: Sequence[tuple[str, Any]]) -> str:
    """'name: value' lines with the values aligned; multi-line values are indented."""
    width = max(len(name) for name, _ in fields) + 2
    lines = []
    for name, value in fields:
        first, *rest = format_value(value).splitlines() or [""]
        lines.append(f"{name + ':':<{width}}{first}".rstrip())
        lines.extend((" " * width + more).rstrip() for more in rest)
    return "\n".join(lines)


def describe_error(exc: psycopg.Error) -> list[str]:
    """An error as 'ERROR <sqlstate>: <message>', then its DETAIL and HINT lines.

    Errors without a SQLSTATE (a connection that failed or broke) show psycopg's
    message instead.
    """
    diag = exc.diag
    if diag.sqlstate is None:
        first, *rest = str(exc).strip().splitlines() or [type(exc).__name__]
        return [f"ERROR: {first}", *(line.strip() for line in rest)]
    lines = [f"ERROR {diag.sqlstate}: {diag.message_primary}"]
    if diag.message_detail:
        lines.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        lines.append(f"HINT: {diag.message_hint}")
    return lines
