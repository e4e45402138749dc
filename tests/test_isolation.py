"""Races of durable's SQL as PostgreSQL isolation tests (tests/isolation/*.spec).

Each spec names sessions (a worker modelled step by step with its own SECURITY DEFINER
functions, a session calling durable.cancel(), a gate holding advisory locks, ...) and
the exact orders in which their steps run; PostgreSQL's ``isolationtester`` runs every
permutation and prints each step's results, errors and waits. The output must equal
``tests/isolation/expected/<spec>.out``. A spec runs in a database of its own, cloned
from the session's template (``durable`` installed), on the session's cluster.

``isolationtester`` ships with PGXS, in ``test/isolation/`` beside the ``makefiles/``
directory of ``pg_config --pgxs``; the ``pg_config`` is the one of the server that the
cluster runs (``$PG_CONFIG``, see ``tools/pgcluster.py``). Without it the tests are
skipped, saying where it was looked for.

After an intended change of behaviour, ``DURABLE_ISOLATION_ACCEPT=1 python3 -m pytest
tests/test_isolation.py`` writes the actual outputs as the expected files: review the
diff before keeping it.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import TEMPLATE
from pgcluster import pg_bindir, pg_config, server_major

SPECS = Path(__file__).parent / "isolation"
EXPECTED = SPECS / "expected"

# isolationtester waits at most twice this for a step (then cancels it and fails).
STEP_TIMEOUT_SECONDS = 30


def _config_of_server() -> str | None:
    """The pg_config of the installation whose server the cluster runs."""
    bindir = pg_bindir()
    beside = bindir / "pg_config"
    if beside.exists():
        return str(beside)
    config = pg_config()
    if config is None:
        return None
    found = subprocess.run(
        [config, "--bindir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return config if found and Path(found) == bindir else None


@functools.cache
def isolationtester() -> tuple[Path | None, str]:
    """The isolationtester of the selected server, or None and why not."""
    config = _config_of_server()
    version = f"{server_major()} ({pg_bindir()})"
    if config is None:
        return None, (f"isolationtester: no pg_config found for PostgreSQL {version}")
    pgxs = subprocess.run(
        [config, "--pgxs"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not pgxs:
        return None, f"isolationtester: {config} --pgxs gives nothing"
    tester = Path(pgxs).parent.parent / "test" / "isolation" / "isolationtester"
    if not os.access(tester, os.X_OK):
        return None, (
            f"isolationtester not found for PostgreSQL {version}: {tester} is missing"
            " (it ships with the server's PGXS: postgresql-server-dev-15 for 15,"
            " the cached build of `make bootstrap PG=N` for 16 to 18)"
        )
    return tester, ""


def spec_names() -> list[str]:
    return sorted(path.stem for path in SPECS.glob("*.spec"))


def fresh_database(cluster, name: str) -> str:
    """A new database for one spec, cloned from the session's template."""
    dbname = "iso_" + re.sub(r"\W", "_", name)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"drop database if exists {dbname}")
        conn.execute(f"create database {dbname} template {TEMPLATE}")
    return dbname


@pytest.mark.parametrize("name", spec_names())
def test_isolation_spec(cluster, name, tmp_path):
    tester, missing = isolationtester()
    if tester is None:
        pytest.skip(missing)
    dbname = fresh_database(cluster, name)
    env = {**os.environ, "PG_TEST_TIMEOUT_DEFAULT": str(STEP_TIMEOUT_SECONDS)}
    with open(SPECS / f"{name}.spec") as spec:
        result = subprocess.run(
            [str(tester), cluster.dsn(dbname)],
            stdin=spec,
            capture_output=True,
            text=True,
            env=env,
            timeout=8 * STEP_TIMEOUT_SECONDS,
            check=False,
        )
    assert result.returncode == 0, (
        f"isolationtester exited with {result.returncode}:\n{result.stderr}"
        f"\n{result.stdout[-3000:]}"
    )
    expected_file = EXPECTED / f"{name}.out"
    if os.environ.get("DURABLE_ISOLATION_ACCEPT"):
        EXPECTED.mkdir(exist_ok=True)
        expected_file.write_text(result.stdout)
    expected = expected_file.read_text() if expected_file.exists() else ""
    if result.stdout != expected:
        actual_file = tmp_path / f"{name}.out"
        actual_file.write_text(result.stdout)
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                result.stdout.splitlines(keepends=True),
                fromfile=str(expected_file.relative_to(SPECS.parent.parent)),
                tofile=str(actual_file),
            )
        )
        print(diff)
        if result.stderr:
            print(f"isolationtester stderr:\n{result.stderr}")
        pytest.fail(
            f"output of {name}.spec differs from the expected output"
            f" (actual output: {actual_file}):\n{diff}",
            pytrace=False,
        )
