-- Starting runs and reading their outcome: start, status, result, wait.
--
-- These functions are plain PL/pgSQL: starting a run is on the application's hot path
-- and needs no Python. Every function pins its search_path, except the thin public
-- wrappers that resolve a workflow name: an unqualified name resolves through the
-- caller's search_path, so they pass pg_catalog.current_schemas(true) down (and hold
-- nothing but schema-qualified calls). The functions that write (_pin_workflow,
-- _start) are SECURITY DEFINER and act for durable._caller(): the source they pin
-- comes from pg_proc (or a validated definition), never from the caller.

create function durable._pin_workflow(
    p_workflow text,
    p_schemas name [],
    p_owner name default null,
    out workflow text,
    out version_id bigint
)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
declare
    v_fn oid;
    v_proc record;
    v_hash text;
    v_sql durable._sql_workflows;
    v_parts text [];
    v_schema text;
    v_owner name := coalesce(p_owner, durable._caller());
begin
    if v_owner <> durable._caller() and not durable._caller_is_admin() then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to pin workflow "%s" for role %s', p_workflow, v_owner
            ),
            hint = 'Only members of durable_admin act for other roles.';
    end if;
    -- Resolve like regproc input: a qualified name in its schema, an unqualified one
    -- through the caller's schemas in order; a SQL workflow shares the namespace.
    begin
        v_parts := parse_ident(p_workflow);
    exception when invalid_parameter_value then
        v_parts := null;
    end;
    if cardinality(v_parts) in (1, 2) then
        foreach v_schema in array case
            when cardinality(v_parts) = 2 then array[v_parts[1]]
            else p_schemas::text []
        end loop
            select p.oid into v_fn
            from pg_proc as p
            inner join pg_namespace as n on p.pronamespace = n.oid
            where n.nspname = v_schema and p.proname = v_parts[cardinality(v_parts)]
            order by p.pronargs = 1 and p.proargtypes[0] = 'jsonb'::regtype desc, p.oid
            limit 1;
            exit when v_fn is not null;
            select w.* into v_sql
            from durable._sql_workflows as w
            where
                w.name = format('%I.%I', v_schema, v_parts[cardinality(v_parts)])
                and (
                    w.owner = v_owner
                    or pg_catalog.pg_has_role(v_owner, 'durable_admin', 'member')
                );
            if found then
                workflow := v_sql.name;
                version_id := v_sql.version_id;
                return;
            end if;
        end loop;
    end if;
    if v_fn is null then
        raise exception using
            errcode = 'undefined_function',
            message = pg_catalog.format('workflow "%s" does not exist', p_workflow),
            hint = 'A workflow is a PL/Python function name(input jsonb) returns jsonb,'
            ' or defined with durable.define_workflow(); give its name as schema.name.';
    end if;

    select
        p.oid,
        p.prosrc,
        p.proargnames,
        p.pronargs,
        p.proargtypes,
        p.prorettype,
        p.prokind,
        l.lanname,
        pg_catalog.format('%I.%I', n.nspname, p.proname) as qualified_name
    into v_proc
    from pg_catalog.pg_proc as p
    inner join pg_catalog.pg_namespace as n on p.pronamespace = n.oid
    inner join pg_catalog.pg_language as l on p.prolang = l.oid
    where p.oid = v_fn;

    if v_proc.lanname <> 'plpython3u' or v_proc.prokind <> 'f' then
        raise exception using
            errcode = 'wrong_object_type',
            message = pg_catalog.format(
                'workflow "%s" is not a PL/Python function (it is a %s %s)',
                v_proc.qualified_name,
                v_proc.lanname,
                case v_proc.prokind when 'p' then 'procedure' else 'function' end
            ),
            hint = 'Write the workflow as LANGUAGE plpython3u.';
    end if;

    if
        v_proc.pronargs <> 1
        or v_proc.proargtypes[0] <> 'jsonb'::pg_catalog.regtype
        or v_proc.prorettype <> 'jsonb'::pg_catalog.regtype
    then
        raise exception using
            errcode = 'invalid_function_definition',
            message = pg_catalog.format(
                'workflow "%s" must take one jsonb argument and return jsonb, not (%s) returns %s',
                v_proc.qualified_name,
                pg_catalog.oidvectortypes(v_proc.proargtypes),
                v_proc.prorettype::pg_catalog.regtype
            ),
            hint = pg_catalog.format(
                'Declare it as %s(input jsonb) returns jsonb.', v_proc.qualified_name
            );
    end if;

    if not pg_catalog.has_function_privilege(v_owner, v_proc.oid, 'execute') then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to start workflow "%s"', v_proc.qualified_name
            ),
            hint = 'Starting a workflow requires EXECUTE on its function.';
    end if;

    workflow := v_proc.qualified_name;
    v_hash := pg_catalog.encode(
        pg_catalog.sha256(pg_catalog.convert_to(v_proc.prosrc, 'UTF8')), 'hex'
    );

    select wv.id into version_id
    from durable._workflow_versions as wv
    where
        wv.owner = v_owner
        and wv.workflow = _pin_workflow.workflow
        and wv.source_hash = v_hash;

    if version_id is null then
        insert into durable._workflow_versions (
            workflow, kind, source_hash, source, argname, owner
        )
        values (
            _pin_workflow.workflow, 'python', v_hash, v_proc.prosrc, v_proc.proargnames[1],
            v_owner
        )
        on conflict on constraint workflow_versions_workflow_hash_key do nothing
        returning id into version_id;

        if version_id is null then
            select wv.id into version_id
            from durable._workflow_versions as wv
            where
                wv.owner = v_owner
                and wv.workflow = _pin_workflow.workflow
                and wv.source_hash = v_hash;
        end if;
    end if;
end
$body$;

comment on function durable._pin_workflow(text, name [], name) is
'Resolves a workflow name, checks that p_owner (default: the caller) may start it, and '
'returns its version pinned for p_owner.';

create function durable._start(
    p_workflow text,
    p_input jsonb,
    p_start_at timestamptz,
    p_idempotency_key text,
    p_queue text,
    p_priority integer,
    p_parent_id uuid,
    p_schemas name []
) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_pinned record;
    v_run uuid;
begin
    if p_parent_id is not null then
        -- A child run: its parent must be a run of the same role that a worker of
        -- this session executes.
        perform durable._running_run(p_parent_id);
        if durable._caller() <> session_user then
            raise exception using
                errcode = 'insufficient_privilege',
                message = pg_catalog.format(
                    'child runs of run %s are started by its own worker', p_parent_id
                ),
                hint = 'Start child runs with wf.start_child() inside the workflow.';
        end if;
    end if;
    if p_workflow is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'workflow must not be null',
            hint = 'Pass the workflow function name, e.g. durable.start(''app.ship_order'').';
    end if;
    if p_queue is null or p_queue = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = 'queue must be a non-empty name',
            hint = 'Leave queue out to use the queue "default".';
    end if;

    v_pinned := durable._pin_workflow(p_workflow, p_schemas);
    perform durable._check_payload(p_input, pg_catalog.format('input of workflow %s', v_pinned.workflow));

    insert into durable._runs as r (
        workflow, version_id, original_version_id, input, queue, priority,
        idempotency_key, wake_at, parent_id, owner
    )
    values (
        v_pinned.workflow,
        v_pinned.version_id,
        v_pinned.version_id,
        coalesce(p_input, '{}'),
        p_queue,
        coalesce(p_priority, 0),
        p_idempotency_key,
        coalesce(p_start_at, pg_catalog.now()),
        p_parent_id,
        durable._caller()
    )
    on conflict (owner, workflow, idempotency_key) where idempotency_key is not null
    do nothing
    returning r.id into v_run;

    if v_run is null then
        select r.id into v_run
        from durable._runs as r
        where
            r.owner = durable._caller()
            and r.workflow = v_pinned.workflow
            and r.idempotency_key = p_idempotency_key;
    end if;
    return v_run;
end
$body$;

comment on function durable._start(
    text, jsonb, timestamptz, text, text, integer, uuid, name []
) is
'Creates a run (the body of durable.start, with the parent run of a child workflow).';

create function durable.start(
    workflow text,
    input jsonb default '{}',
    start_at timestamptz default null,
    idempotency_key text default null,
    queue text default 'default',
    priority integer default 0
) returns uuid
language sql
as $body$
    select durable._start(
        workflow, input, start_at, idempotency_key, queue, priority, null,
        pg_catalog.current_schemas(true)
    );
$body$;

comment on function durable.start(text, jsonb, timestamptz, text, text, integer) is
'Starts a run of a workflow in the current transaction and returns its id; '
'the same idempotency_key for the same workflow returns the existing run.';

create function durable._check_payload(p_value jsonb, p_what text) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_limit bigint := (
        select s.value::bigint from durable._settings as s
        where s.key = 'limits.max_payload_bytes'
    );
    v_depth integer := (
        select s.value::integer from durable._settings as s
        where s.key = 'limits.max_payload_depth'
    );
    v_size bigint := pg_catalog.octet_length(p_value::text);
begin
    if v_size > v_limit then
        raise exception using
            errcode = 'program_limit_exceeded',
            message = pg_catalog.format('%s is %s bytes of JSON, more than %s', p_what, v_size, v_limit),
            hint = 'The limit is the setting limits.max_payload_bytes (durable.set_setting).';
    end if;
    -- An item at level v_depth means v_depth + 1 levels: deeper than the engine reads.
    if pg_catalog.jsonb_path_exists(p_value, pg_catalog.format('$.**{%s}', v_depth)::jsonpath) then
        raise exception using
            errcode = 'program_limit_exceeded',
            message = pg_catalog.format(
                '%s is nested more than %s levels deep', p_what, v_depth
            ),
            hint = 'The limit is the setting limits.max_payload_depth (durable.set_setting).';
    end if;
end
$body$;

comment on function durable._check_payload(jsonb, text) is
'Refuses a JSON value larger than the setting limits.max_payload_bytes or nested deeper '
'than limits.max_payload_depth.';

create function durable._raise(p_error jsonb) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_sqlstate text := coalesce(p_error ->> 'sqlstate', 'DU000');
    v_message text := coalesce(p_error ->> 'message', 'durable: unknown error');
begin
    -- RAISE prints an empty DETAIL or HINT line for '', and refuses NULL: branch instead.
    if p_error ? 'detail' and p_error ? 'hint' then
        raise exception using
            errcode = v_sqlstate,
            message = v_message,
            detail = p_error ->> 'detail',
            hint = p_error ->> 'hint';
    elsif p_error ? 'detail' then
        raise exception using
            errcode = v_sqlstate, message = v_message, detail = p_error ->> 'detail';
    elsif p_error ? 'hint' then
        raise exception using
            errcode = v_sqlstate, message = v_message, hint = p_error ->> 'hint';
    else
        raise exception using errcode = v_sqlstate, message = v_message;
    end if;
end
$body$;

comment on function durable._raise(jsonb) is
'Raises the error described by a JSON document {sqlstate, message, detail, hint}.';

create function durable._run_row(p_run uuid, p_lock boolean default false)
returns durable._runs
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs;
begin
    if p_run is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'run must not be null',
            hint = 'Pass the id returned by durable.start().';
    end if;
    -- Called by SECURITY DEFINER functions too, where row-level security does not
    -- apply: the caller's visibility is checked here.
    if p_lock then
        -- The row lock orders this call against a worker moving the run on.
        select r.* into v_row
        from durable._runs as r
        where r.id = p_run and (r.owner = durable._caller() or durable._caller_is_admin())
        for no key update;
    else
        select r.* into v_row
        from durable._runs as r
        where r.id = p_run and (r.owner = durable._caller() or durable._caller_is_admin());
    end if;
    if not found then
        raise exception using
            errcode = 'DU010',
            message = pg_catalog.format('run %s not found', p_run),
            hint = 'Runs are deleted by durable.purge() once finished and old enough.';
    end if;
    return v_row;
end
$body$;

comment on function durable._run_row(uuid, boolean) is
'The row of one run (locked when p_lock), or error DU010 when it does not exist.';

create function durable.status(run uuid) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $body$
    select (durable._run_row(run)).status;
$body$;

comment on function durable.status(uuid) is
'The status of a run: pending, running, sleeping, waiting, succeeded, failed or cancelled.';

create function durable.result(run uuid) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._run_row(run);
begin
    case v_row.status
        when 'succeeded' then
            return v_row.result;
        when 'failed' then
            perform durable._raise(
                pg_catalog.jsonb_strip_nulls(
                    pg_catalog.jsonb_build_object(
                        'sqlstate', 'DU001',
                        'message', pg_catalog.format(
                            'run %s of workflow %s failed: %s',
                            v_row.id, v_row.workflow, v_row.error ->> 'message'
                        ),
                        'detail', v_row.error ->> 'detail',
                        'hint', 'See durable.runs.error and durable.steps for the failing step.'
                    )
                )
            );
        when 'cancelled' then
            raise exception using
                errcode = 'DU003',
                message = pg_catalog.format(
                    'run %s of workflow %s was cancelled', v_row.id, v_row.workflow
                ),
                hint = 'durable.retry() resumes a cancelled run.';
        else
            raise exception using
                errcode = 'DU002',
                message = pg_catalog.format(
                    'run %s of workflow %s has not finished (status %s)',
                    v_row.id, v_row.workflow, v_row.status
                ),
                hint = 'durable.wait() blocks until the run ends.';
    end case;
end
$body$;

comment on function durable.result(uuid) is
'The return value of a succeeded run; an error if it failed, was cancelled or is unfinished.';

create function durable._created_by_this_transaction(p_run uuid) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $body$
    -- xmin is a 32-bit xid; the current transaction id is a 64-bit xid8.
    select r.xmin::text = (
        pg_catalog.pg_current_xact_id_if_assigned()::text::numeric % 4294967296
    )::text
    from durable._runs as r
    where r.id = p_run;
$body$;

comment on function durable._created_by_this_transaction(uuid) is
'True when the run row was inserted by the current (top-level) transaction.';

create function durable.wait(run uuid, timeout interval default '30 seconds') returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_deadline timestamptz := pg_catalog.clock_timestamp() + coalesce(wait.timeout, '0');
    v_pause double precision := 0.005;
    v_row durable._runs;
begin
    if run is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'run must not be null',
            hint = 'Pass the id returned by durable.start().';
    end if;
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        raise exception using
            errcode = 'invalid_transaction_state',
            message = 'durable.wait() needs a READ COMMITTED transaction',
            hint = 'In REPEATABLE READ or SERIALIZABLE the run''s progress is never visible.';
    end if;
    loop
        v_row := durable._run_row(run);
        if v_row.status in ('succeeded', 'failed', 'cancelled') then
            return durable.result(run);
        end if;
        if durable._created_by_this_transaction(v_row.id) then
            raise exception using
                errcode = 'invalid_transaction_state',
                message = pg_catalog.format(
                    'run %s was started in this transaction and cannot finish before it commits',
                    v_row.id
                ),
                hint = 'Commit the transaction that called durable.start(), then wait.';
        end if;
        exit when pg_catalog.clock_timestamp() >= v_deadline;
        perform pg_catalog.pg_sleep(
            least(v_pause, extract(epoch from v_deadline - pg_catalog.clock_timestamp()))
        );
        v_pause := least(v_pause * 2, 0.1);
    end loop;
    raise exception using
        errcode = 'DU030',
        message = pg_catalog.format(
            'run %s of workflow %s did not finish within %s (status %s)',
            v_row.id, v_row.workflow, wait.timeout, v_row.status
        ),
        hint = 'Is a worker running? CALL durable.run_worker() or durablectl worker.';
end
$body$;

comment on function durable.wait(uuid, interval) is
'Blocks until a run ends and returns its result (errors as durable.result); '
'error DU030 after timeout.';
