"""The psql examples in README.md and docs/*.md are executed, and their output checked.

In a page, a ```sql block runs in the server's own psql (one session per page, blocks in
order, from the repository root so ``\\i examples/...`` works). When a ```text block
follows it, that is the expected output (trailing blanks ignored); otherwise the block
must not print an ERROR. A block preceded by ``<!-- not run -->`` is skipped.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- not run -->\s*)?```(\w*)\n(.*?)```", re.S)
MARKER = "----8<----"


def examples(page: Path) -> list[tuple[str, str | None]]:
    """(sql, expected output or None) for every runnable block of a page."""
    blocks = []
    matches = list(FENCE.finditer(page.read_text()))
    for index, match in enumerate(matches):
        skipped, language, body = match.groups()
        if language != "sql" or skipped:
            continue
        expected = None
        following = matches[index + 1] if index + 1 < len(matches) else None
        between = page.read_text()[match.end() : following.start()] if following else ""
        if following and following.group(2) == "text" and not between.strip():
            expected = following.group(3)
        blocks.append((body, expected))
    return blocks


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples(cluster, page):
    blocks = examples(page)
    if not blocks:
        pytest.skip(f"{page.name} has no psql examples")
    dbname = "docs_" + re.sub(r"\W", "_", page.stem.lower())
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {dbname}")
        admin.execute(f"create database {dbname} template {TEMPLATE}")
    script = "\\set VERBOSITY default\n\\set SHOW_CONTEXT never\n"
    script += "".join(f"{sql}\n\\echo {MARKER}\n" for sql, _ in blocks)
    result = subprocess.run(
        [cluster.bindir / "psql", "-X", "-q", "-P", "pager=off", cluster.dsn(dbname)],
        input=script,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    outputs = result.stdout.split(MARKER + "\n")
    assert len(outputs) == len(blocks) + 1, result.stdout
    for (sql, expected), output in zip(blocks, outputs):
        if expected is None:
            assert "ERROR:" not in output, f"{page.name}: {sql}\n{output}"
        else:
            assert normalise(output) == normalise(
                expected
            ), f"{page.name}: {sql}\n--- psql printed ---\n{output}"


def test_security_statements_name_tests_that_exist():
    """Every test that docs/security.md names as the proof of a statement exists."""
    named = set(
        re.findall(r"`(test_\w+)`", (ROOT / "docs" / "security.md").read_text())
    )
    defined = {
        name
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert named, "docs/security.md names no test"
    assert sorted(named - defined) == []
