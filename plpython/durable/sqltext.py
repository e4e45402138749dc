"""Lexing SQL text just enough to count its statements.

SPI (and so ``plpy.prepare``) accepts a string with several statements and runs them
all. A step runs exactly one statement, so the text is scanned the way psql scans it:
semicolons inside string constants (``'...'``, ``E'...'``), quoted identifiers,
dollar-quoted strings and comments do not end a statement.
"""

from __future__ import annotations

import re

__all__ = ["split_statements"]

DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$")


def _skip_quoted(sql: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """Index just after the closing quote of a string starting at ``start``."""
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if backslash_escapes and char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:  # doubled quote
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _skip_block_comment(sql: str, start: int) -> int:
    """Index just after a (possibly nested) ``/* */`` comment starting at ``start``."""
    depth = 0
    i = start
    while i < len(sql):
        pair = sql[i : i + 2]
        if pair == "/*":
            depth += 1
            i += 2
        elif pair == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def split_statements(sql: str) -> list[str]:
    """Split SQL text at top-level semicolons; empty statements are dropped."""
    statements = []
    begin = 0
    i = 0
    while i < len(sql):
        char = sql[i]
        if char == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and not _is_word(sql, i - 2)
            i = _skip_quoted(sql, i, "'", escapes)
        elif char == '"':
            i = _skip_quoted(sql, i, '"', False)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = len(sql) if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif char == "$" and not _is_word(sql, i - 1):
            tag = DOLLAR_TAG.match(sql, i)
            if tag:
                end = sql.find(tag.group(0), tag.end())
                i = len(sql) if end < 0 else end + len(tag.group(0))
            else:
                i += 1
        elif char == ";":
            statements.append(sql[begin:i])
            i += 1
            begin = i
        else:
            i += 1
    statements.append(sql[begin:])
    return [s for s in statements if not _is_blank(s)]


def _is_word(sql: str, index: int) -> bool:
    """True when the character at ``index`` continues an identifier or number."""
    return index >= 0 and (sql[index].isalnum() or sql[index] in "_$")


def _is_blank(statement: str) -> bool:
    """True when a statement holds nothing but white space and comments."""
    stripped = statement.strip()
    while stripped:
        if stripped.startswith("--"):
            newline = stripped.find("\n")
            stripped = "" if newline < 0 else stripped[newline + 1 :].strip()
        elif stripped.startswith("/*"):
            stripped = stripped[_skip_block_comment(stripped, 0) :].strip()
        else:
            return False
    return True
