"""The path language: how step parameters and child inputs read earlier outputs.

Paths read the context document ``{"input": <run input>, "steps": {name: output}}``::

    path     := ("input" | "steps." NAME) accessor*
    accessor := "." FIELD | "[" INDEX "]" | "[*]" | '["' FIELD '"]'

``[INDEX]`` counts from 0 (negative from the end); ``[*]`` maps the rest of the path
over a list; ``.length`` is the length of a list or the number of keys of an object
(write ``["length"]`` for a field named length). A missing field or index, or
``[*]`` over something that is not a list, gives null. A path may name only a step
that runs before the step using it: an earlier step of the same list, or one inside
an earlier parallel, race, if or repeat (a step of the branch of an ``if`` that did
not run reads as null), never the step itself, a later one, or one of a sibling
branch (checked by :mod:`.validation`).

Parameters (``params``) are paths or literals: a path is text, a literal is written
``{"value": <any JSON>}``; a bare number, boolean or null is a literal too (the
canonical form wraps it). Other text must be a path. In a child's ``input``, text
that starts like a path (``input``, ``input.``, ``input[`` or ``steps.``) is a path
and resolved when the child starts, ``{"value": ...}`` is taken literally (and
unwrapped), and everything else is kept as it is.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from ..durations import _show
from ..errors import DurableError
from .schema import INVALID

__all__ = [
    "PATH_HINT",
    "PathError",
    "is_literal",
    "looks_like_path",
    "parse_path",
    "resolve",
]

PATH_HINT = (
    "Paths look like input, input.a.b, input.items[0], steps.<name>,"
    " steps.<name>.field, steps.<name>[0].id, steps.<name>[*].id or"
    ' steps.<name>.length; wrap literal values as {"value": ...}.'
)

Accessor = tuple[Any, ...]

_INDEX = re.compile(r"\[(\*|0|-?[1-9][0-9]*)\]")
_DECODER = json.JSONDecoder()
_ALL: Accessor = ("all",)
_LENGTH: Accessor = ("length",)


class PathError(Exception):
    """Why a text is not a path."""


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | None, tuple[Accessor, ...]]:
    """Split a path into its step name (None for ``input``) and its accessors."""
    if path == "input" or path.startswith(("input.", "input[")):
        name, i = None, len("input")
    elif path.startswith("steps."):
        start = i = len("steps.")
        while i < len(path) and path[i] not in ".[]":
            i += 1
        name = path[start:i]
        if not name:
            raise PathError("a step name must follow steps.")
    else:
        raise PathError("a path starts with input or steps.<name>")
    accessors: list[Accessor] = []
    while i < len(path):
        if path[i] == ".":
            start = i = i + 1
            while i < len(path) and path[i] not in ".[]":
                i += 1
            field = path[start:i]
            if not field:
                raise PathError(f"a field name must follow the dot at character {i}")
            accessors.append(_LENGTH if field == "length" else ("key", field))
        elif path[i] == "[":
            match = _INDEX.match(path, i)
            if match:
                text = match.group(1)
                accessors.append(_ALL if text == "*" else ("index", int(text)))
                i = match.end()
            elif path.startswith('["', i):
                try:
                    field, end = _DECODER.raw_decode(path, i + 1)
                except ValueError:
                    raise PathError(
                        f"bad quoted field name at character {i + 2}"
                    ) from None
                if not path.startswith("]", end):
                    raise PathError(f'expected "]" at character {end + 1}')
                accessors.append(("key", field))
                i = end + 1
            else:
                raise PathError(
                    f'expected [<index>], [*] or ["<field>"] at character {i + 1}'
                )
        else:
            raise PathError(f"unexpected {path[i]!r} at character {i + 1}")
    return name, tuple(accessors)


def _walk(value: Any, accessors: tuple[Accessor, ...], start: int = 0) -> Any:
    """Apply the accessors from ``start`` on to a value; missing is None."""
    for i in range(start, len(accessors)):
        accessor = accessors[i]
        if accessor == _ALL:
            if not isinstance(value, list):
                return None
            return [_walk(item, accessors, i + 1) for item in value]
        if accessor == _LENGTH:
            value = len(value) if isinstance(value, (list, dict)) else None
        elif accessor[0] == "key":
            value = value.get(accessor[1]) if isinstance(value, dict) else None
        else:
            index = accessor[1]
            if isinstance(value, list) and -len(value) <= index < len(value):
                value = value[index]
            else:
                value = None
    return value


def resolve(path: str, context: dict) -> Any:
    """Evaluate a path against ``{"input": ..., "steps": {...}}``; missing is None."""
    if not isinstance(path, str):
        raise DurableError(
            f"invalid path {_show(path)}: expected text, not {type(path).__name__}",
            sqlstate=INVALID,
            hint=PATH_HINT,
        )
    try:
        name, accessors = parse_path(path)
    except PathError as problem:
        raise DurableError(
            f"invalid path {_show(path)}: {problem}", sqlstate=INVALID, hint=PATH_HINT
        ) from None
    if not isinstance(context, dict):
        return None
    if name is None:
        root = context.get("input")
    else:
        steps = context.get("steps")
        root = steps.get(name) if isinstance(steps, dict) else None
    return _walk(root, accessors)


def looks_like_path(text: str) -> bool:
    """Whether text in a child's input is a path (resolved) rather than text."""
    return text == "input" or text.startswith(("input.", "input[", "steps."))


def is_literal(value: Any) -> bool:
    """Whether a value is a wrapped literal, ``{"value": ...}``."""
    return isinstance(value, dict) and len(value) == 1 and "value" in value
