-- Changes of the SQL objects from 0.1.0 to 0.2.0. The update script built from this
-- file also replaces durable._load(), so the engine is always the new version's.

-- _run_worker executes one slice of the worker loop and hands its state to the next.
-- Its INOUT parameter keeps the name "error" of 0.1.0: renaming it would need DROP
-- PROCEDURE, and a worker executing the procedure during the update would then fail
-- when it returns (PL/Python looks the procedure up again to build its INOUT result).
create or replace procedure durable._run_worker(
    queue text,
    max_runtime interval,
    drain boolean,
    inout error jsonb default null
)
language plpython3u
as $body$
key = plpy.execute("select durable._load() as key")[0]["key"]
worker = GD[key].workers
return [worker.run_worker(plpy, GD, key, queue, max_runtime, drain, error)]
$body$;

comment on procedure durable._run_worker (text, interval, boolean, jsonb) is
'One slice (a few seconds) of the worker loop (PL/Python). Its INOUT parameter carries '
'the slice state: null on the first slice, then what the previous one returned; it '
'comes back null when the worker is done, or as {"error": ...} instead of raising.';

create or replace procedure durable.run_worker(
    queue text default null,
    max_runtime interval default '1 minute',
    drain boolean default false
)
language plpgsql
as $body$
declare
    v_state jsonb;
begin
    -- Each slice is a CALL of its own: the memory PL/Python holds for a call is
    -- freed between slices, and each slice runs the engine of the installed version.
    loop
        call durable._run_worker(queue, max_runtime, drain, v_state);
        exit when v_state is null;
        if pg_catalog.jsonb_exists(v_state, 'error') then
            perform durable._raise(pg_catalog.jsonb_extract_path(v_state, 'error'));
        end if;
    end loop;
end
$body$;

alter table durable._runs set (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000
);

-- durable.cancel locks a run tree parents first, in the order a worker finishing a
-- child locks its parent and then the child (the two deadlocked before).
create or replace function durable.cancel(run uuid, reason text default null) returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._run_row(run, true);
    v_error jsonb;
    v_tree uuid [];
begin
    if v_row.status in ('succeeded', 'failed', 'cancelled') then
        return false;
    end if;
    v_error := pg_catalog.jsonb_build_object(
        'sqlstate', 'DU003',
        'message', coalesce('cancelled: ' || cancel.reason, 'cancelled')
    );
    with recursive tree as (
        select
            v_row.id as id,
            0 as depth
        union all
        select
            child.id,
            tree.depth + 1
        from durable._runs as child
        inner join tree on child.parent_id = tree.id
    )

    select pg_catalog.array_agg(tree.id order by tree.depth) into v_tree from tree;

    -- Lock the tree parents first: a worker finishing a child locks its parent, then
    -- the child, and the same order on both sides cannot deadlock.
    perform
    from durable._runs as r
    inner join pg_catalog.unnest(v_tree) with ordinality as t (id, n) on r.id = t.id
    order by t.n
    for update of r;

    update durable._runs as r
    set
        cancel_requested = true,
        error = v_error,
        wake_at = case when r.status = 'running' then r.wake_at else pg_catalog.now() end
    where r.id = any(v_tree) and r.status not in ('succeeded', 'failed', 'cancelled');

    -- A running run stops at its next statement: interrupt the worker running it.
    -- The run rows stay locked until commit, so that worker cannot have moved on.
    perform pg_catalog.pg_cancel_backend(w.pid)
    from durable._runs as r
    inner join durable._workers as w on r.worker_id = w.id
    where
        r.id = any(v_tree)
        and r.status = 'running'
        and w.pid <> pg_catalog.pg_backend_pid();
    return true;
end
$body$;
