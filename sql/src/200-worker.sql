-- The worker procedure. It commits once per step, so it must be called with a top-level
-- CALL on an autocommit connection, and it cannot carry a SET clause (a procedure with
-- one cannot commit): its body and the engine qualify every object instead.
--
-- run_worker is PL/pgSQL so that engine errors reach the client as clean PostgreSQL
-- errors (PL/Python prefixes every message with the Python exception type): the Python
-- procedure _run_worker hands its error back as a JSON document, and _raise raises it.
-- Commits in _run_worker work because every caller in the chain is a CALL.

-- The INOUT parameter of _run_worker carries the slice state; it keeps the name
-- "error" of 0.1.0 so that updates can CREATE OR REPLACE it (see sql/updates).
create procedure durable._run_worker(
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

create procedure durable.run_worker(
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

comment on procedure durable.run_worker (text, interval, boolean) is
'Executes ready runs (of one queue, or of all when queue is null) owned by session_user '
'until max_runtime has passed, or until nothing is ready when drain is true. '
'Call it on an autocommit connection, outside a transaction block.';
