"""Throwaway PostgreSQL clusters for the tests, the demo and the benchmarks.

A cluster lives in a temporary directory owned by the ``postgres`` OS user (``initdb``
refuses to run as root), listens on a free port on 127.0.0.1 and on a Unix socket in
that directory, preloads pg_cron where the server has it, and is removed by
:meth:`Cluster.stop`.

The server is the one of ``$PG_CONFIG`` when it is set (the Makefile exports it:
``make test PG=17`` selects PostgreSQL 17), else of the ``pg_config`` on ``PATH``, else
the newest in ``/usr/lib/postgresql``.

:meth:`Cluster.standby` clones a running cluster with ``pg_basebackup -R`` into a
streaming-replication standby (its own directory, port and socket), which
:meth:`Cluster.promote` turns into a primary; :meth:`Cluster.crash` kills every process
of a cluster at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "Cluster",
    "pg_bindir",
    "pg_config",
    "pg_cron_missing",
    "server_major",
    "server_version",
]

# Preloaded only where the server has pg_cron (pg_cron_missing()).
PG_CRON_SETTINGS = {
    "shared_preload_libraries": "pg_cron",
    "cron.database_name": "postgres",
}

DEFAULT_SETTINGS = {
    "max_connections": "100",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


def pg_config() -> str | None:
    """The pg_config of the selected server: ``$PG_CONFIG`` (a path, or a command on
    ``PATH``) when set, else ``pg_config`` on ``PATH``; None when there is none."""
    configured = os.environ.get("PG_CONFIG") or "pg_config"
    found = shutil.which(configured)
    if os.environ.get("PG_CONFIG") and not found:
        raise RuntimeError(f"PG_CONFIG={configured} is not an executable")
    return found


@functools.cache
def _pg_config_value(option: str) -> str | None:
    config = pg_config()
    if not config:
        return None
    return subprocess.run(
        [config, option], capture_output=True, text=True, check=True
    ).stdout.strip()


def pg_bindir() -> Path:
    """Directory of the server binaries (initdb, pg_ctl, postgres)."""
    bindir = _pg_config_value("--bindir")
    if bindir and (Path(bindir) / "initdb").exists():
        return Path(bindir)
    if os.environ.get("PG_CONFIG"):
        config = os.environ["PG_CONFIG"]
        raise RuntimeError(f"no initdb in {bindir} (PG_CONFIG={config})")
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name),
    )
    if not candidates:
        raise RuntimeError("no PostgreSQL server found: run `make bootstrap`")
    return candidates[-1].parent


def _pkglibdir() -> Path:
    """Directory of the server's loadable modules (``pg_config --pkglibdir``)."""
    bindir = pg_bindir()
    if _pg_config_value("--bindir") == str(bindir):
        return Path(_pg_config_value("--pkglibdir"))
    return bindir.parent / "lib"  # /usr/lib/postgresql/<major>/lib


@functools.cache
def server_version() -> str:
    """The selected server's version, e.g. ``17.11``."""
    output = subprocess.run(
        [str(pg_bindir() / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return output.split()[2]  # postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)


def server_major() -> int:
    """The selected server's major version, e.g. 17."""
    return int(server_version().split(".")[0])


def pg_cron_missing() -> str | None:
    """Why the selected server cannot load pg_cron, or None when it can: it comes
    from Debian's ``postgresql-<major>-cron`` package, which bookworm has for its
    own major only (15)."""
    if (_pkglibdir() / "pg_cron.so").exists():
        return None
    major = server_major()
    if (Path("/usr/lib/postgresql") / str(major) / "bin" / "postgres") == (
        pg_bindir() / "postgres"
    ):
        return f"pg_cron: postgresql-{major}-cron is not installed (make bootstrap)"
    return f"pg_cron: no postgresql-{major}-cron package"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Cluster:
    """One throwaway cluster: start() it, connect with dsn(), destroy() it."""

    def __init__(
        self,
        settings: dict[str, str] | None = None,
        name: str = "durable",
        bindir: Path | None = None,
        initdb_options: Sequence[str] = (),
    ):
        """``bindir``: another server's binaries than the selected one (pg_upgrade);
        ``initdb_options``: more options for initdb."""
        preload = {} if bindir or pg_cron_missing() else PG_CRON_SETTINGS
        self.settings = {**preload, **DEFAULT_SETTINGS, **(settings or {})}
        self.bindir = bindir or pg_bindir()
        self.initdb_options = list(initdb_options)
        self.base = Path(tempfile.mkdtemp(prefix=f"{name}-pg-"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        self.user = "postgres"
        self.application_name: str | None = None  # set by standby()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=check, cwd=self.base
        )

    def init(self) -> Cluster:
        """initdb and the throwaway settings, unless the data directory exists."""
        if not self.datadir.exists():
            self._run(
                self.bindir / "initdb",
                "-D",
                self.datadir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                *self.initdb_options,
            )
            with open(self.datadir / "postgresql.conf", "a") as conf:
                conf.write("\n# throwaway cluster settings (tools/pgcluster.py)\n")
                for key, value in self.settings.items():
                    conf.write(f"{key} = '{value}'\n")
                conf.write(f"port = {self.port}\n")
                conf.write("listen_addresses = '127.0.0.1'\n")
                conf.write(f"unix_socket_directories = '{self.base}'\n")
        return self

    def start(self) -> Cluster:
        """initdb (first time only) and start the server; returns self."""
        self.init()
        result = self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.datadir,
            "-l",
            self.logfile,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{result.stderr}\n{self.log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode`` as in ``pg_ctl stop -m``)."""
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.datadir,
            "-m",
            mode,
            "-w",
            "stop",
            check=False,
        )

    def destroy(self) -> None:
        """Stop the server and remove every file of the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def standby(
        self, name: str = "durable_standby", settings: dict[str, str] | None = None
    ) -> Cluster:
        """A new cluster cloned from this running one with ``pg_basebackup -R``: a
        streaming-replication standby, not started yet (start() it).

        ``name`` is also its ``application_name`` on the primary (the name to give in
        ``synchronous_standby_names``). The copied configuration is overridden in
        ``postgresql.auto.conf``: its own port and socket directory, a
        ``primary_conninfo`` through this cluster's socket, no
        ``synchronous_standby_names`` of its own (once promoted it would wait for a
        standby of itself), then ``settings``.
        """
        replica = Cluster(name=name)
        replica.settings = {**self.settings, **(settings or {})}
        replica.application_name = name
        replica._run(
            self.bindir / "pg_basebackup",
            "-h",
            self.base,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-D",
            replica.datadir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        conninfo = (
            f"host={self.base} port={self.port} user={self.user}"
            f" application_name={name}"
        )
        overrides = {
            "port": str(replica.port),
            "unix_socket_directories": str(replica.base),
            "primary_conninfo": conninfo,
            "synchronous_standby_names": "",
            **(settings or {}),
        }
        with open(replica.datadir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"\n# standby of {self.base} (tools/pgcluster.py)\n")
            for key, value in overrides.items():
                conf.write(f"{key} = '{value}'\n")
        return replica

    def promote(self, timeout: int = 60) -> None:
        """Promote this standby (``pg_ctl promote -w``): returns once it accepts
        writes."""
        result = self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.datadir,
            "-w",
            "-t",
            str(timeout),
            "promote",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed:\n{result.stderr}\n{self.log()}")

    def postmaster_pid(self) -> int:
        """Process id of the running postmaster."""
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the postmaster (SIGKILL simulates a server crash)."""
        os.kill(self.postmaster_pid(), sig)

    def processes(self) -> list[int]:
        """Process ids of the postmaster and of its children right now."""
        postmaster = self.postmaster_pid()
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def crash(self, timeout: float = 10.0) -> None:
        """Kill the whole server as a machine crash would: freeze the postmaster and
        every child with SIGSTOP (none can react to the others' deaths), SIGKILL them
        all, and wait until they are gone. The files stay as they were."""
        postmaster = self.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)  # forks no new backend from now on
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of {self.base} still alive")
            time.sleep(0.01)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """libpq connection string over the Unix socket."""
        return (
            f"host={self.base} port={self.port} dbname={dbname}"
            f" user={user or self.user}"
        )

    def log(self) -> str:
        """The server log so far."""
        try:
            return self.logfile.read_text()
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll pg_isready until the server accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self._run(
                self.bindir / "pg_isready",
                "-h",
                self.base,
                "-p",
                str(self.port),
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s\n{self.log()}")
