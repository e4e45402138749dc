-- The worker procedure. It commits once per step, so it must be called with a top-level
-- CALL on an autocommit connection, and it cannot carry a SET clause (a procedure with
-- one cannot commit): its body and the engine qualify every object instead.

create procedure durable.run_worker(
    queue text default null,
    max_runtime interval default '1 minute',
    drain boolean default false
)
language plpython3u
as $body$
key = plpy.execute("select durable._load() as key")[0]["key"]
GD[key].workers.run_worker(plpy, GD, key, queue, max_runtime, drain)
$body$;

comment on procedure durable.run_worker (text, interval, boolean) is
'Executes ready runs (of one queue, or of all when queue is null) owned by session_user '
'until max_runtime has passed, or until nothing is ready when drain is true. '
'Call it on an autocommit connection, outside a transaction block.';
