#!/usr/bin/env python3
"""Measure the session memory PL/Python keeps per ``plpy.subtransaction()``.

Runs three procedures in one backend of a throwaway cluster, each for ``--iterations``
iterations of ``plpy.execute`` (an UPDATE) plus ``plpy.commit()``: a plain loop, the
same loop called in slices from PL/pgSQL (as ``durable.run_worker`` does), and the
plain loop with a ``plpy.subtransaction()`` entered and exited in every iteration.
Each runs twice (the first call warms the session up); the figure is the growth of the
backend's RssAnon per iteration during the second call. On PostgreSQL 15 the last one
grows by about 32 bytes per iteration for the life of the session, which is why the
engine gives the code after a step no subtransaction. See bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from pgcluster import Cluster

PROCEDURES = """
create table t (id int primary key, n int);
insert into t values (1, 0);

create procedure plain_loop(k int) language plpython3u as $$
plan = plpy.prepare("update t set n = n + 1 where id = $1", ["int"])
for _ in range(k):
    plpy.execute(plan, [1])
    plpy.commit()
$$;

create procedure sliced_loop(k int) language plpgsql as $$
begin
    for i in 1..k / 2000 loop
        call plain_loop(2000);
    end loop;
end
$$;

create procedure subtransaction_loop(k int) language plpython3u as $$
plan = plpy.prepare("update t set n = n + 1 where id = $1", ["int"])
for _ in range(k):
    subtransaction = plpy.subtransaction()
    subtransaction.__enter__()
    subtransaction.__exit__(None, None, None)
    plpy.execute(plan, [1])
    plpy.commit()
$$;
"""


def rss_anon_kb(pid: int) -> int:
    """RssAnon of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError(f"no RssAnon for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40000)
    args = parser.parse_args()
    server = Cluster(name="subxact-leak").start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("create extension plpython3u")
            conn.execute(PROCEDURES)
            pid = conn.info.backend_pid
            print(f"{'procedure':<22}{'bytes per iteration':>20}")
            for procedure in ("plain_loop", "sliced_loop", "subtransaction_loop"):
                conn.execute(f"call {procedure}(%s)", [args.iterations])
                before = rss_anon_kb(pid)
                conn.execute(f"call {procedure}(%s)", [args.iterations])
                growth = (rss_anon_kb(pid) - before) * 1024 / args.iterations
                print(f"{procedure:<22}{growth:>20.1f}")
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
