-- Steering runs: signal, cancel, retry, migrate_run, and per-workflow options.
--
-- Each of these writes durable's tables, so each is SECURITY DEFINER: _run_row checks
-- that the caller (durable._caller()) owns the run or is a durable_admin member.

create function durable.signal(run uuid, name text, payload jsonb default null)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._run_row(run, true);
begin
    if signal.name is null or signal.name = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = 'signal name must be a non-empty string',
            hint = 'Use the name the workflow waits for with wf.wait_for_signal(name).';
    end if;
    if v_row.status in ('succeeded', 'failed', 'cancelled') then
        raise exception using
            errcode = 'DU011',
            message = pg_catalog.format(
                'run %s of workflow %s has finished (%s) and takes no signals',
                v_row.id, v_row.workflow, v_row.status
            ),
            hint = 'Signals can only be sent to runs that have not finished.';
    end if;
    perform durable._check_payload(
        signal.payload, pg_catalog.format('payload of signal "%s"', signal.name)
    );
    -- The signal belongs to the run's owner, whose worker consumes it.
    insert into durable._signals (run_id, name, payload, owner)
    values (v_row.id, signal.name, signal.payload, v_row.owner);
    update durable._runs as r
    set wake_at = pg_catalog.now()
    where
        r.id = v_row.id
        and r.status = 'waiting'
        and r.waiting_for = 'signal:' || signal.name;
    return true;
end
$body$;

comment on function durable.signal(uuid, text, jsonb) is
'Sends a signal to a run: delivered exactly once to wf.wait_for_signal(name), '
'buffered until the run waits for it.';

create function durable.cancel(run uuid, reason text default null) returns boolean
language plpgsql security definer
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
    -- Only a backend that is provably that worker (pid, start time, role) is signalled.
    perform pg_catalog.pg_cancel_backend(w.pid)
    from durable._runs as r
    inner join durable._workers as w on r.worker_id = w.id
    where
        r.id = any(v_tree)
        and r.status = 'running'
        and w.pid <> pg_catalog.pg_backend_pid()
        and durable._backend_alive(w.pid, w.backend_start, w.role);
    return true;
end
$body$;

comment on function durable.cancel(uuid, text) is
'Cancels a run and its descendants: each stops at its next step boundary and runs its '
'compensations. False when the run had already finished.';

create function durable.retry(run uuid) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._run_row(run, true);
begin
    if v_row.status not in ('failed', 'cancelled') then
        return false;
    end if;
    -- Forget what ended the run: compensations that ran (negative seq), and the failed
    -- checkpoint of the step that failed the run; every other checkpoint is replayed.
    delete from durable._steps as s
    where
        s.run_id = v_row.id
        and (
            s.seq < 0
            or (s.status = 'failed' and s.seq = (v_row.error ->> 'seq')::integer)
            or s.status in ('waiting', 'retrying')
        );
    update durable._runs as r
    set
        status = 'pending',
        attempt = r.attempt + 1,
        error = null,
        result = null,
        finished_at = null,
        cancel_requested = false,
        interruptions = 0,
        waiting_for = null,
        wake_at = pg_catalog.now()
    where r.id = v_row.id;
    return true;
end
$body$;

comment on function durable.retry(uuid) is
'Resumes a failed or cancelled run from its last checkpoint; false for other runs.';

create function durable.migrate_run(run uuid, to_latest boolean default true)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._run_row(run, true);
    v_version bigint;
begin
    if v_row.status = 'running' then
        raise exception using
            errcode = 'object_in_use',
            message = pg_catalog.format('run %s is running and cannot be migrated now', v_row.id),
            hint = 'Migrate it while it sleeps or waits, or after it failed.';
    end if;
    if coalesce(to_latest, true) then
        v_version := (durable._pin_workflow(v_row.workflow, '{}', v_row.owner)).version_id;
    else
        v_version := v_row.original_version_id;
    end if;
    if v_version = v_row.version_id then
        return false;
    end if;
    update durable._runs as r set version_id = v_version where r.id = v_row.id;
    return true;
end
$body$;

comment on function durable.migrate_run(uuid, boolean) is
'Re-pins a run to its workflow''s current source (to_latest) or back to the source it '
'started with; its checkpoints are replayed against that code when it resumes.';

create function durable._register_workflow(
    workflow text,
    retry jsonb,
    max_attempts integer,
    timeout interval,
    p_schemas name []
) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_name text := (durable._pin_workflow(workflow, p_schemas)).workflow;
    v_error jsonb;
begin
    if retry is not null then
        v_error := durable._check_retry(retry);
        if v_error is not null then
            perform durable._raise(v_error);
        end if;
    end if;
    if max_attempts is not null and max_attempts < 1 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'max_attempts of workflow %s must be at least 1, not %s', v_name, max_attempts
            ),
            hint = 'max_attempts counts the first attempt too.';
    end if;
    if timeout is not null and timeout <= interval '0' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'timeout of workflow %s must be positive, not %s', v_name, timeout
            ),
            hint = 'Leave timeout null for no limit.';
    end if;
    insert into durable._workflow_options as o (workflow, retry, max_attempts, timeout, owner)
    values (
        v_name, _register_workflow.retry, _register_workflow.max_attempts,
        _register_workflow.timeout, durable._caller()
    )
    on conflict on constraint workflow_options_pkey do update
        set
            retry = excluded.retry,
            max_attempts = excluded.max_attempts,
            timeout = excluded.timeout;
    return v_name;
end
$body$;

comment on function durable._register_workflow(text, jsonb, integer, interval, name []) is
'The body of durable.register_workflow, with the caller''s schemas.';

create function durable.register_workflow(
    workflow text,
    retry jsonb default null,
    max_attempts integer default null,
    timeout interval default null
) returns text
language sql
as $body$
    select durable._register_workflow(
        workflow, retry, max_attempts, timeout, pg_catalog.current_schemas(true)
    );
$body$;

comment on function durable.register_workflow(text, jsonb, integer, interval) is
'Sets a workflow''s defaults: the retry policy of its steps, how many times the whole '
'run is attempted, and the run''s timeout.';

create function durable._check_retry(p_retry jsonb) returns jsonb
language plpython3u
set search_path = pg_catalog, pg_temp
as $body$
import json
engine = GD[plpy.execute("select durable._load() as key")[0]["key"]]
options = json.loads(p_retry)
try:
    if not isinstance(options, dict):
        raise engine.DurableError(
            "a retry policy must be a JSON object, not %s" % p_retry,
            sqlstate="22023", hint='Example: {"max_attempts": 5, "initial_interval": "2 seconds"}',
        )
    engine.retry.RetryPolicy.from_options(options)
except engine.DurableError as exc:
    return json.dumps({"sqlstate": exc.sqlstate, "message": str(exc), "hint": exc.hint})
return None
$body$;

comment on function durable._check_retry(jsonb) is
'Validates a retry policy; returns null, or the error document to raise.';
