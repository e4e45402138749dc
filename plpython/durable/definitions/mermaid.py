"""The Mermaid graph: draw a workflow definition as a ``flowchart TD``.

Each step is a node shaped by its kind; an if branches into its then and else lists
(edges labelled then / else), a parallel or race fans out into its branches and joins
them again, and a repeat's body loops back to it (a dotted edge labelled with its until
condition).
"""

from __future__ import annotations

from typing import Any, Optional

from ..durations import format_duration, parse_duration
from .schema import Position, kind_of
from .validation import validate

__all__ = ["graph", "mermaid_label"]

_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "|": "#124;",
    "\\": "#92;",
}
_LABEL_CHARS = 48

Exit = tuple[str, Optional[str]]


def mermaid_label(text: str, limit: int = _LABEL_CHARS) -> str:
    """Text for a Mermaid label: one line, shortened, with entity codes."""
    text = " ".join(
        "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text).split()
    )
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return "".join(_ESCAPES.get(char, char) for char in text)


def _node_id(pos: Position) -> str:
    """The node of the step at ``pos``: ``(2, "then", 0)`` -> ``n2_then_0``."""
    return "n" + "_".join(str(part) for part in pos)


def _duration_text(value: Any) -> str:
    """A duration as written (interval text), or seconds as interval text."""
    if isinstance(value, str):
        return value
    return format_duration(parse_duration(value))


class _Graph:
    """Mermaid lines for a canonical definition."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def node(self, node: str, shape: str, text: str) -> None:
        """A node; ``shape`` is its brackets split by ``|``, e.g. ``([|])``."""
        opening, closing = shape.split("|")
        self.lines.append(f'    {node}{opening}"{mermaid_label(text)}"{closing}')

    def edges(self, exits: list[Exit], target: str, arrow: str = "-->") -> None:
        """An edge from each exit (a node and an optional label) to ``target``."""
        for source, label in exits:
            if label is None:
                self.lines.append(f"    {source} {arrow} {target}")
            else:
                text = mermaid_label(label)
                self.lines.append(f'    {source} {arrow}|"{text}"| {target}')

    def enter(self, exits: list[Exit], node: str, shape: str, text: str) -> None:
        """A step's node, and the edges that lead to it."""
        self.node(node, shape, text)
        self.edges(exits, node)

    def sequence(self, items: list, prefix: Position, exits: list[Exit]) -> list[Exit]:
        """Draw a list of steps after ``exits``; the exits of its last step."""
        for i, step in enumerate(items):
            exits = self.step(step, (*prefix, i), exits)
        return exits

    def step(self, step: dict, pos: Position, exits: list[Exit]) -> list[Exit]:
        """Draw one step after ``exits``; the exits that lead on from it."""
        kind = kind_of(step)
        node = _node_id(pos)
        name = step.get("name")
        named = "" if name is None else f"{name}: "
        if kind == "sql":
            self.enter(exits, node, "[|]", name)
            return [(node, None)]
        if kind == "sleep":
            text = f"{named}sleep {_duration_text(step['sleep'])}"
            self.enter(exits, node, "([|])", text)
            return [(node, None)]
        if kind == "wait_for_signal":
            text = f"{named}signal {step['wait_for_signal']}"
            self.enter(exits, node, "[/|/]", text)
            return [(node, None)]
        if kind == "workflow":
            self.enter(exits, node, "[[|]]", f"{named}{step['workflow']}")
            return [(node, None)]
        if kind == "if":
            self.enter(exits, node, "{|}", f"{named}if {step['if']}")
            outs = []
            for key in ("then", "else"):
                outs += self.sequence(step[key], (*pos, key), [(node, key)])
            return outs
        if kind in ("parallel", "race"):
            self.enter(exits, node, "{{|}}", f"{named}{kind}")
            ends = [
                self.sequence(items, (*pos, kind, j), [(node, None)])
                for j, items in enumerate(step[kind])
            ]
            join = f"{node}_join"
            self.node(join, "{{|}}", "join" if kind == "parallel" else "first wins")
            for end in ends:
                self.edges(end, join)
            return [(join, None)]
        # repeat: the body after the step, and dotted edges back to it.
        bound = step["max_iterations"]
        self.enter(exits, node, "([|])", f"{named}repeat, at most {bound} times")
        body = self.sequence(step["repeat"], (*pos, "repeat"), [(node, None)])
        until = " ".join(step["until"].split())
        self.edges([(source, f"until {until}") for source, _ in body], node, "-.->")
        return body


def graph(workflow: str, definition: dict) -> str:
    """A Mermaid ``flowchart TD`` of a definition (validated first)."""
    canonical = validate(workflow, definition)
    drawing = _Graph()
    drawing.node("begin", "([|])", workflow)
    exits = drawing.sequence(canonical["steps"], (), [("begin", None)])
    drawing.node("finish", "([|])", "end")
    drawing.edges(exits, "finish")
    return "\n".join(["flowchart TD", *drawing.lines]) + "\n"
