-- Objects of the benchmark (bench/run.py loads this file into its throwaway database,
-- after CREATE EXTENSION durable). Nothing here is part of the extension.

create schema bench;

-- The floor: a plain task queue with no engine. A task is claimed the way a durable
-- worker claims a run (the oldest ready row of a partial index of pending rows,
-- FOR UPDATE SKIP LOCKED), marked done, and committed: one commit per unit of work.
create table bench.tasks (
    id bigint generated always as identity,
    status text not null default 'pending',
    run_at timestamptz not null default pg_catalog.now(),
    created_at timestamptz not null default pg_catalog.now(),
    done_at timestamptz,
    constraint tasks_pkey primary key (id)
);

create index tasks_pending_idx on bench.tasks (run_at, id)
where status = 'pending';

-- The floor's worker. It loops like durable.run_worker: claim one ready task, mark it
-- done, commit; when nothing is ready it returns (drain) or sleeps with the engine's
-- back-off (2 ms doubling up to the setting worker.poll_interval), so that its latency
-- is the baseline of the engine's latency. A task is ready when its run_at has passed
-- at the moment of the claim (the clock is read for each claim: now() would be the
-- start of the claim's transaction, which in a procedure is the previous commit).
create procedure bench.floor_worker(drain boolean, max_runtime float8 default 3600)
language plpython3u
as $body$
import time

claim = plpy.prepare(
    "select id from bench.tasks where status = 'pending'"
    " and run_at <= pg_catalog.to_timestamp($1)"
    " order by run_at, id limit 1 for update skip locked",
    ["double precision"],
)
done = plpy.prepare(
    "update bench.tasks set status = 'done', done_at = clock_timestamp() where id = $1",
    ["bigint"],
)
poll_interval = float(
    plpy.execute(
        "select value from durable._settings where key = 'worker.poll_interval'"
    )[0]["value"]
)
deadline = time.monotonic() + max_runtime
pause = 0.002
while time.monotonic() < deadline:
    rows = plpy.execute(claim, [time.time()])
    if rows.nrows():
        plpy.execute(done, [rows[0]["id"]])
    plpy.commit()
    if rows.nrows():
        pause = 0.002
        continue
    if drain:
        break
    time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    pause = min(pause * 2, poll_interval)
$body$;

-- The workflows: steps that do nothing but SELECT 1, so that what is measured is the
-- engine (claim, checkpoint, commit), not the work.
create function bench.one(input jsonb) returns jsonb
language plpython3u
as $body$
wf.step("s", "SELECT 1")
return {}
$body$;

create function bench.ten(input jsonb) returns jsonb
language plpython3u
as $body$
for i in range(10):
    wf.step(f"s{i}", "SELECT 1")
return {}
$body$;

-- A durable timer followed by a step: the step's started_at minus the timer's recorded
-- "until" is how late the timer fired.
create function bench.sleeper(input jsonb) returns jsonb
language plpython3u
as $body$
wf.sleep(1)
wf.step("after", "SELECT 1")
return {}
$body$;

-- The profiler: runs the engine's worker loop (drain) under cProfile and returns the
-- time spent per function as JSON. It calls the engine's Python entry point, the same
-- one durable._run_worker calls.
create procedure bench.profiled_worker(inout profile jsonb default null)
language plpython3u
as $body$
import cProfile
import json
import pstats

key = plpy.execute("select durable._load() as key")[0]["key"]
profiler = cProfile.Profile()
profiler.enable()
state = None
while True:  # the slices of one durable.run_worker(drain => true), in one call
    state = GD[key].workers.run_worker(plpy, GD, key, None, "1 hour", True, state)
    if state is None or "error" in json.loads(state):
        break
profiler.disable()
if state is not None:
    plpy.error(f"profiled worker failed: {state}")
functions = [
    {
        "function": f"{path.rsplit('/', 1)[-1]}:{line}({name})"
        if path != "~" else name,
        "calls": calls,
        "tottime": tottime,
        "cumtime": cumtime,
    }
    for (path, line, name), (_, calls, tottime, cumtime, _) in pstats.Stats(
        profiler
    ).stats.items()
]
functions.sort(key=lambda f: f["tottime"], reverse=True)
return [json.dumps(functions)]
$body$;
