"""JSON values: step outputs, workflow results, and rows of SQL steps.

Whatever a step returns is stored as jsonb and handed back to the workflow as the
decoded JSON value, both on first execution and on replay, so the workflow sees the
same value either way.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from .errors import NOT_JSON, DurableError, LimitExceeded

__all__ = [
    "JSON_TYPE_OIDS",
    "check_size",
    "decode",
    "encode",
    "json_value",
    "rows_as_json",
]

# PostgreSQL type oids of json and jsonb: PL/Python hands such columns over as text.
JSON_TYPE_OIDS = frozenset({114, 3802})


def encode(value: Any, what: str) -> str:
    """Serialise ``value`` as JSON text; ``what`` names it in the error."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise DurableError(
            f"{what} is not JSON-serialisable: {exc}",
            sqlstate=NOT_JSON,
            hint="Return dicts, lists, str, int, float, bool or None.",
        ) from None


def check_size(text: str, what: str, limit: int) -> str:
    """Refuse JSON text longer than ``limit`` bytes; returns the text."""
    size = len(text.encode())
    if size > limit:
        raise LimitExceeded(
            f"{what} is {size} bytes of JSON, more than {limit}",
            "limits.max_payload_bytes",
        )
    return text


def decode(text: str | None) -> Any:
    """Parse JSON text as stored in a jsonb column (None stays None)."""
    return None if text is None else json.loads(text)


def json_value(value: Any) -> Any:
    """Convert one value as PL/Python returns it into its JSON form."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    return value


def rows_as_json(result: Any) -> list[dict[str, Any]]:
    """Turn a ``plpy`` result into a list of JSON-ready dicts (json columns parsed)."""
    try:
        names = result.colnames()
        types = result.coltypes()
    except Exception:  # plpy.Error: the statement returned no result set
        return []
    json_columns = {name for name, oid in zip(names, types) if oid in JSON_TYPE_OIDS}
    rows = []
    for row in result:
        rows.append(
            {
                name: decode(value) if name in json_columns else json_value(value)
                for name, value in row.items()
            }
        )
    return rows
