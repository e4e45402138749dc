#!/usr/bin/env python3
"""Assemble the extension's install and update scripts.

The install script is the SQL sources in ``sql/src`` (in file-name order) followed by
the loader function ``durable._load()``, which carries every module of the Python
package ``plpython/durable`` and installs them into ``sys.modules`` on first use in a
session. The version comes from ``default_version`` in ``durable.control`` (the only
place it is written down). Released scripts are frozen copies in ``sql/``; this tool
only builds those of the version in development.

An update script ``durable--<old>--<new>.sql`` has four parts, in this order:

1. the incremental part, hand-written: ``sql/updates/<old>--<new>.sql`` (new and
   changed tables, columns, indexes, settings rows; DROP of the routines and views
   that CREATE OR REPLACE cannot change or that no longer exist);
2. the idempotent part, generated from ``sql/src/*.sql`` in file order: every
   ``create function`` / ``create procedure`` as ``create or replace``, every
   ``create view`` as ``create or replace view``, and every ``comment on function``,
   ``procedure`` or ``view``; nothing else of the sources is repeated;
3. the loader (``create or replace``), so every update also replaces the engine;
4. the trailing part, hand-written and optional: ``sql/updates/<old>--<new>.post.sql``,
   for what needs the new routines (column defaults and policies calling them,
   privileges: re-granting what the new ``durable.grant_usage()`` grants).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOADER = """
create {or_replace}function durable._load() returns text
language plpython3u
set search_path = pg_catalog, pg_temp
as $durable_loader$
# Installs the durable engine (version {version}) into sys.modules once per session
# and caches the package in GD under a key that carries the version, so that after
# ALTER EXTENSION durable UPDATE the next call of the new loader loads the new engine.
key = "durable-{version}"
if key not in GD:
    import importlib
    import importlib.abc
    import importlib.util
    import linecache
    import sys

    sources = {sources}

    class DurableEngineFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        durable_version = "{version}"

        def find_spec(self, fullname, path=None, target=None):
            if fullname not in sources:
                return None
            is_package = sources[fullname][0].endswith("__init__.py")
            return importlib.util.spec_from_loader(
                fullname, self, is_package=is_package
            )

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            filename, text = sources[module.__name__]
            lines = text.splitlines(True)
            linecache.cache[filename] = (len(text), None, lines, filename)
            module.__file__ = filename
            exec(compile(text, filename, "exec"), module.__dict__)

    for name in [n for n in sys.modules if n == "durable" or n.startswith("durable.")]:
        del sys.modules[name]
    sys.meta_path[:] = [
        f for f in sys.meta_path if not hasattr(f, "durable_version")
    ]
    sys.meta_path.insert(0, DurableEngineFinder())
    package = importlib.import_module("durable")
    for name in sorted(sources):
        importlib.import_module(name)
    GD[key] = package
return key
$durable_loader$;

comment on function durable._load() is
'Loads the durable Python engine into this session and returns its GD key.';

revoke all on function durable._load() from public;
grant execute on function durable._load() to durable_admin;
"""


# ------------------------------------------------------------- statement splitting

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z_0-9$\x80-\uffff]")


def split_statements(text: str) -> list[str]:
    """Split SQL text into statements, each with the comments and blank lines that
    precede it and ending with its ``;``. Semicolons inside ``--`` and ``/* */``
    comments (nested), quoted strings (``'...'``, ``E'...'``), quoted identifiers and
    dollar-quoted bodies do not end a statement. Text after the last ``;`` (comments
    only, or a statement without its ``;``) is an error unless it is blank or comments.
    """
    statements = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise ValueError("unterminated /* comment")
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "'":
            # E'...' strings take backslash escapes; standard strings do not.
            escapes = (
                i > 0
                and text[i - 1] in "eE"
                and (i < 2 or not _IDENTIFIER_CHAR.match(text[i - 2]))
            )
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                if escapes and text[i] == "\\":
                    i += 2
                elif text[i] == "'":
                    if text.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            while end >= 0 and text.startswith('""', end):
                end = text.find('"', end + 2)
            if end < 0:
                raise ValueError("unterminated quoted identifier")
            i = end + 1
        elif c == "$" and not (i > 0 and _IDENTIFIER_CHAR.match(text[i - 1])):
            match = _DOLLAR_TAG.match(text, i)
            if match:
                end = text.find(match.group(0), match.end())
                if end < 0:
                    raise ValueError(f"unterminated dollar quote {match.group(0)}")
                i = end + len(match.group(0))
            else:
                i += 1  # a parameter such as $1
        elif c == ";":
            statements.append(text[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    rest = text[start:]
    if strip_comments(rest).strip():
        raise ValueError(f"statement without a final ';': {rest.strip()[:60]!r}")
    return statements


def strip_comments(statement: str) -> str:
    """The statement without its leading comments and blank lines."""
    text = statement
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            end = text.find("\n")
            text = "" if end < 0 else text[end + 1 :]
        elif text.startswith("/*"):
            depth, i = 1, 2
            while depth and i < len(text):
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            text = text[i:]
        else:
            return text


# What the idempotent part of an update script repeats from sql/src, and how: a pattern
# of the statement's first words, and what replaces them (None: kept as they are).
_REPEATED = [
    (
        re.compile(r"create\s+(or\s+replace\s+)?function\b", re.I),
        "create or replace function",
    ),
    (
        re.compile(r"create\s+(or\s+replace\s+)?procedure\b", re.I),
        "create or replace procedure",
    ),
    (re.compile(r"create\s+(or\s+replace\s+)?view\b", re.I), "create or replace view"),
    (re.compile(r"comment\s+on\s+(function|procedure|routine|view)\b", re.I), None),
]


def idempotent_statement(statement: str) -> str | None:
    """The statement as the idempotent part of an update script repeats it, or None
    when that part leaves it out (it belongs to the hand-written incremental part)."""
    body = strip_comments(statement)
    for pattern, replacement in _REPEATED:
        match = pattern.match(body)
        if match:
            if "$" not in body and re.search(r"\bbegin\s+atomic\b", body, re.I):
                # Its body holds semicolons outside quotes: write it dollar-quoted.
                raise ValueError("a BEGIN ATOMIC body is not supported")
            if replacement is None:
                return body
            return replacement + body[match.end() :]
    return None


def idempotent_part() -> str:
    """Every routine, view and their comments of ``sql/src/*.sql``, in file order, in
    the form that replaces what an older version has (create or replace)."""
    parts = ["-- idempotent part (generated from sql/src/*.sql)"]
    for path in sorted((ROOT / "sql" / "src").glob("*.sql")):
        try:
            statements = split_statements(path.read_text())
            repeated = [s for s in map(idempotent_statement, statements) if s]
        except ValueError as exc:
            raise SystemExit(f"{path.relative_to(ROOT)}: {exc}") from exc
        if repeated:
            parts.append(f"-- {path.relative_to(ROOT).as_posix()}")
            parts += [s + "\n" for s in repeated]
    return "\n".join(parts)


def extension_version() -> str:
    """Return ``default_version`` from durable.control."""
    control = (ROOT / "durable.control").read_text()
    match = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M)
    if not match:
        raise SystemExit("durable.control has no default_version")
    return match.group(1)


def engine_sources() -> dict[str, tuple[str, str]]:
    """Map each module name of the engine package to (file name, source text)."""
    package_root = ROOT / "plpython"
    sources = {}
    for path in sorted((package_root / "durable").rglob("*.py")):
        relative = path.relative_to(package_root)
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = (
            f"<durable>/{relative.as_posix()}",
            path.read_text(),
        )
    return sources


def header(title: str, sources: str, command: str) -> list[str]:
    """The first lines of a generated script: provenance, psql guard, search_path."""
    return [
        f"-- {title}, generated by tools/build_sql.py from",
        f"-- {sources} and plpython/durable/*.py: edit those, not this file.",
        "",
        f'\\echo Use "{command}" to load this file. \\quit',
        "",
        "-- Everything below resolves names in pg_catalog first and never in a schema",
        "-- that other roles can create objects in.",
        "set local search_path = pg_catalog, pg_temp;",
        "",
    ]


def loader(version: str, replace: bool) -> str:
    """The loader function carrying the engine of ``version``."""
    text = LOADER.replace("{version}", version)
    text = text.replace("{or_replace}", "or replace " if replace else "")
    text = text.replace("{sources}", repr(engine_sources()))
    body = text.split("as $durable_loader$", 1)[1].rsplit("$durable_loader$;", 1)[0]
    if "$durable_loader$" in body:
        raise SystemExit("an engine source contains the quote tag $durable_loader$")
    return "-- loader (generated)\n" + text


def build() -> str:
    """Return the text of the install script."""
    version = extension_version()
    parts = header(
        f"durable {version} install script",
        "sql/src/*.sql",
        "CREATE EXTENSION durable CASCADE",
    )
    for path in sorted((ROOT / "sql" / "src").glob("*.sql")):
        parts.append(f"-- {path.relative_to(ROOT).as_posix()}")
        parts.append(path.read_text())
    parts.append(loader(version, replace=False))
    return "\n".join(parts)


def build_update(old: str) -> str:
    """Return the text of the update script from version ``old`` to this version:
    the incremental part, the idempotent part, the loader and the trailing part."""
    version = extension_version()
    change = ROOT / "sql" / "updates" / f"{old}--{version}.sql"
    post = change.with_name(f"{old}--{version}.post.sql")
    written = [change] + ([post] if post.exists() else [])
    parts = header(
        f"durable {old} to {version} update script",
        ", ".join(path.relative_to(ROOT).as_posix() for path in written)
        + ",\n-- sql/src/*.sql",
        f"ALTER EXTENSION durable UPDATE TO '{version}'",
    )
    parts.append(f"-- incremental part ({change.relative_to(ROOT).as_posix()})")
    parts.append(change.read_text())
    parts.append(idempotent_part())
    parts.append(loader(version, replace=True))
    if post.exists():
        parts.append(f"-- trailing part ({post.relative_to(ROOT).as_posix()})")
        parts.append(post.read_text())
    return "\n".join(parts)


def development_scripts() -> dict[str, str]:
    """The file name and text of every script of the version in development."""
    version = extension_version()
    scripts = {f"durable--{version}.sql": build()}
    for change in sorted((ROOT / "sql" / "updates").glob(f"*--{version}.sql")):
        old = change.name.split("--")[0]
        scripts[f"durable--{old}--{version}.sql"] = build_update(old)
    return scripts


def installed_extension_dir() -> Path:
    """The server's directory of extension control and script files: that of
    ``$PG_CONFIG`` (the Makefile exports it; ``make test PG=17``), else of the
    ``pg_config`` on PATH."""
    sharedir = subprocess.run(
        [os.environ.get("PG_CONFIG") or "pg_config", "--sharedir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(sharedir) / "extension"


def stale_scripts() -> list[Path]:
    """The scripts of the version in development that are missing from the server's
    extension directory or differ from what the sources build."""
    extension_dir = installed_extension_dir()
    return [
        extension_dir / name
        for name, text in development_scripts().items()
        if not (extension_dir / name).exists()
        or (extension_dir / name).read_text() != text
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="path of the script to write")
    parser.add_argument(
        "--update-from", metavar="VERSION", help="build the update script from VERSION"
    )
    args = parser.parse_args()
    text = build_update(args.update_from) if args.update_from else build()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
