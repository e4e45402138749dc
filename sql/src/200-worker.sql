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

-- The worker's own writes. The worker runs in its role's session, and so could any
-- other code of that role: each function below is SECURITY DEFINER (the role holds no
-- write privilege on the tables) and acts only on runs owned by the session user, and,
-- where it takes a worker id, only on the worker that this backend registered. Nothing
-- here takes source, a version or an owner from its caller.

create function durable._backend_alive(
    p_pid integer, p_backend_start timestamptz, p_role name
) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $body$
    select exists (
        select
        from pg_catalog.pg_stat_get_activity(p_pid) as a
        inner join pg_catalog.pg_roles as r on a.usesysid = r.oid
        where a.pid = p_pid and a.backend_start = p_backend_start and r.rolname = p_role
    );
$body$;

comment on function durable._backend_alive(integer, timestamptz, name) is
'True while the backend with this pid, start time and login role exists: how a worker '
'is known to be alive (a pid alone may be reused; advisory locks can be taken by anyone).';

create function durable._worker_register(p_queue text, out id integer, out role name)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
declare
    v_start timestamptz;
    v_login name;
begin
    select a.backend_start, r.rolname into v_start, v_login
    from pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) as a
    inner join pg_catalog.pg_roles as r on a.usesysid = r.oid;
    if v_login is distinct from session_user or durable._caller() <> session_user then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'a worker must run as the role its session logged in as (%s), not as %s',
                v_login, durable._caller()
            ),
            hint = 'Connect as the role whose runs the worker executes; do not SET ROLE '
            'or SET SESSION AUTHORIZATION before CALL durable.run_worker().';
    end if;
    insert into durable._workers as w (pid, backend_start, role, queue)
    values (pg_catalog.pg_backend_pid(), v_start, session_user, p_queue)
    returning w.id, w.role into id, role;
end
$body$;

comment on function durable._worker_register(text) is
'Registers the calling backend as a worker of its login role (pid and backend_start '
'taken from the server, not from the caller).';

create function durable._own_worker(p_worker integer) returns name
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_role name;
begin
    select w.role into v_role
    from durable._workers as w
    where w.id = p_worker and w.pid = pg_catalog.pg_backend_pid();
    if not found then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format('worker %s is not registered by this session', p_worker),
            hint = 'Only durable.run_worker() calls the worker functions, for its own worker.';
    end if;
    return v_role;
end
$body$;

comment on function durable._own_worker(integer) is
'The role of worker p_worker if this backend registered it; error 42501 otherwise.';

create function durable._release_worker_runs(p_worker integer, p_interrupted boolean)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_role name := durable._own_worker(p_worker);
    v_count integer;
begin
    update durable._runs as r
    set
        worker_id = null,
        wake_at = pg_catalog.clock_timestamp(),
        status = 'pending',
        interruptions = r.interruptions + p_interrupted::integer
    where r.worker_id = p_worker and r.status = 'running' and r.owner = v_role;
    get diagnostics v_count = row_count;
    return v_count;
end
$body$;

comment on function durable._release_worker_runs(integer, boolean) is
'Puts the runs this session''s worker still holds back in line (counted as an '
'interrupted attempt when p_interrupted); returns how many.';

create function durable._worker_unregister(p_worker integer) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    perform durable._release_worker_runs(p_worker, true);
    delete from durable._workers as w where w.id = p_worker;
end
$body$;

comment on function durable._worker_unregister(integer) is
'Ends this session''s worker: its runs go back in line and its row is deleted.';

create function durable._worker_heartbeat(p_worker integer) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    perform durable._own_worker(p_worker);
    update durable._workers as w
    set heartbeat_at = pg_catalog.clock_timestamp()
    where w.id = p_worker;
end
$body$;

comment on function durable._worker_heartbeat(integer) is
'Records that this session''s worker is idle and well (durable.workers.heartbeat_at).';

create function durable._worker_step(
    p_worker integer, p_run uuid, p_seconds double precision
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    perform durable._own_worker(p_worker);
    update durable._workers as w
    set
        run_id = p_run,
        step_deadline = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_seconds)
    where w.id = p_worker;
end
$body$;

comment on function durable._worker_step(integer, uuid, double precision) is
'Publishes the deadline of the step this session''s worker runs (null: none), for '
'housekeeping to enforce.';

create function durable._reclaim_orphans() returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_count integer;
begin
    -- A worker is alive while its backend (pid, start time, role) exists; a run held
    -- by any other worker goes back in line, and its step counts as interrupted.
    with dead as (
        delete from durable._workers as w
        where not durable._backend_alive(w.pid, w.backend_start, w.role)
        returning w.id
    ),

    reclaimed as (
        update durable._runs as r
        set
            status = 'pending',
            worker_id = null,
            wake_at = pg_catalog.clock_timestamp(),
            interruptions = r.interruptions + 1
        where
            r.status = 'running'
            and (
                r.worker_id in (select dead.id from dead)
                or not exists (select from durable._workers as w where w.id = r.worker_id)
            )
        returning r.id
    )

    select pg_catalog.count(*) into v_count from reclaimed;
    return v_count;
end
$body$;

comment on function durable._reclaim_orphans() is
'Puts running runs whose worker''s backend has ended back in line, deletes the rows of '
'ended workers; returns how many runs.';

create function durable._interrupt_overdue_steps(p_terminate_after double precision)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_worker record;
    v_count integer := 0;
begin
    -- Only a backend that is provably the worker (pid, start time and role alive) is
    -- interrupted; the deadline is written by that worker itself (_worker_step). A
    -- worker interrupts its own step at the deadline (plpython/durable/alarm.py): this
    -- is the fallback, one second later, for a worker that could not.
    for v_worker in
        select w.pid, w.step_deadline
        from durable._workers as w
        where
            w.step_deadline < pg_catalog.clock_timestamp() - interval '1 second'
            and w.pid <> pg_catalog.pg_backend_pid()
            and durable._backend_alive(w.pid, w.backend_start, w.role)
    loop
        if
            v_worker.step_deadline
            < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => p_terminate_after)
        then
            perform pg_catalog.pg_terminate_backend(v_worker.pid);
        else
            perform pg_catalog.pg_cancel_backend(v_worker.pid);
        end if;
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$body$;

comment on function durable._interrupt_overdue_steps(double precision) is
'Cancels the backend of each worker whose step is more than a second past its timeout '
'(terminates it p_terminate_after seconds after the timeout); returns how many.';

create function durable._claim(
    p_worker integer,
    p_now double precision,
    p_queue text,
    p_finished uuid default null,
    p_result jsonb default null,
    p_seq integer default null,
    p_name text default null,
    p_kind text default null,
    p_status text default null,
    p_attempts integer default null,
    p_output jsonb default null,
    p_error jsonb default null,
    p_started_at double precision default null,
    out id uuid,
    out workflow text,
    out version_id bigint,
    out input text,
    out attempt integer,
    out resumed boolean,
    out cancel_requested boolean,
    out interruptions integer,
    out parent_id uuid,
    out queue text,
    out error text,
    out started_at double precision
)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $body$
#variable_conflict use_column
declare
    v_role name;
    v_run uuid;
    v_resumed boolean;
begin
    -- This is the worker's hottest function: its statements are simple enough for
    -- generic plans, which are never planned again (custom plans would be, each call).
    -- One row comes back, all null when nothing was claimed.
    select w.role into v_role
    from durable._workers as w
    where w.id = p_worker and w.pid = pg_catalog.pg_backend_pid();
    if not found then
        perform durable._own_worker(p_worker);  -- raises 42501
    end if;
    -- The run executed before this claim, if it succeeded without a parent: its last
    -- checkpoint and its end commit with this claim.
    if p_finished is not null then
        with finished as (
            update durable._runs as r
            set
                status = 'succeeded',
                result = p_result,
                error = null,
                worker_id = null,
                wake_at = null,
                waiting_for = null,
                finished_at = pg_catalog.clock_timestamp()
            where r.id = p_finished and r.owner = v_role and r.worker_id = p_worker
            returning r.id
        )

        insert into durable._steps (
            run_id, seq, name, kind, status, attempts, output, error, started_at,
            finished_at, owner
        )
        select
            finished.id, p_seq, p_name, p_kind, p_status, p_attempts, p_output, p_error,
            pg_catalog.to_timestamp(p_started_at), pg_catalog.clock_timestamp(), v_role
        from finished
        where p_seq is not null;
    end if;
    -- No claim while a step's SET ROLE or SET SESSION AUTHORIZATION is still in effect:
    -- the worker undoes it first.
    if session_user <> v_role or durable._caller() <> v_role then
        return;
    end if;
    -- Two statements, so that each uses its index (runs_ready_idx with a queue,
    -- runs_ready_any_queue_idx without).
    if p_queue is null then
        select r.id, r.started_at is not null into v_run, v_resumed
        from durable._runs as r
        where
            r.owner = v_role
            and r.status in ('pending', 'sleeping', 'waiting')
            and r.wake_at <= pg_catalog.to_timestamp(p_now)
        order by r.priority desc, r.wake_at
        limit 1
        for update skip locked;
    else
        select r.id, r.started_at is not null into v_run, v_resumed
        from durable._runs as r
        where
            r.owner = v_role
            and r.queue = p_queue
            and r.status in ('pending', 'sleeping', 'waiting')
            and r.wake_at <= pg_catalog.to_timestamp(p_now)
        order by r.priority desc, r.wake_at
        limit 1
        for update skip locked;
    end if;
    if v_run is null then
        return;
    end if;
    resumed := v_resumed;
    update durable._runs as r
    set
        status = 'running',
        worker_id = p_worker,
        waiting_for = null,
        started_at = coalesce(r.started_at, pg_catalog.clock_timestamp())
    where r.id = v_run
    returning
        r.id,
        r.workflow,
        r.version_id,
        r.input::text,
        r.attempt,
        r.cancel_requested,
        r.interruptions,
        r.parent_id,
        r.queue,
        r.error::text,
        extract(epoch from r.started_at)::float8
    into id, workflow, version_id, input, attempt, cancel_requested, interruptions,
    parent_id, queue, error, started_at;
end
$body$;

comment on function durable._claim(
    integer, double precision, text, uuid, jsonb, integer, text, text, text, integer, jsonb,
    jsonb, double precision
) is
'Marks the best ready run of the worker''s role as running on this session''s worker; '
'first finishes the run it executed before (p_finished) with its last checkpoint.';

create function durable._save_step(
    p_run uuid,
    p_seq integer,
    p_name text,
    p_kind text,
    p_status text,
    p_attempts integer,
    p_output jsonb,
    p_error jsonb,
    p_started_at double precision,
    p_new boolean
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $body$
begin
    -- One statement: the checkpoint is written only if the run is the session user's
    -- and running.
    if p_new then
        insert into durable._steps (
            run_id, seq, name, kind, status, attempts, output, error, started_at, finished_at,
            owner
        )
        select
            p_run, p_seq, p_name, p_kind, p_status, p_attempts, p_output, p_error,
            pg_catalog.to_timestamp(p_started_at), pg_catalog.clock_timestamp(), r.owner
        from durable._runs as r
        where r.id = p_run and r.owner = session_user and r.status = 'running';
    else
        insert into durable._steps as s (
            run_id, seq, name, kind, status, attempts, output, error, started_at, finished_at,
            owner
        )
        select
            p_run, p_seq, p_name, p_kind, p_status, p_attempts, p_output, p_error,
            pg_catalog.to_timestamp(p_started_at), pg_catalog.clock_timestamp(), r.owner
        from durable._runs as r
        where r.id = p_run and r.owner = session_user and r.status = 'running'
        on conflict (run_id, seq) do update
            set
                status = excluded.status,
                attempts = excluded.attempts,
                output = excluded.output,
                error = excluded.error,
                finished_at = excluded.finished_at;
    end if;
    if not found then
        raise exception using
            errcode = 'DU010',
            message = pg_catalog.format('run %s not found among the running runs of %s', p_run, session_user),
            hint = 'A worker writes checkpoints only of the runs it executes.';
    end if;
end
$body$;

comment on function durable._save_step(
    uuid, integer, text, text, text, integer, jsonb, jsonb, double precision, boolean
) is
'Writes (or, unless p_new, updates) the checkpoint at one position of a running run of '
'the session user.';

create function durable._running_run(p_run uuid) returns durable._runs
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs;
begin
    select r.* into v_row
    from durable._runs as r
    where r.id = p_run and r.owner = session_user and r.status = 'running';
    if not found then
        raise exception using
            errcode = 'DU010',
            message = pg_catalog.format('run %s not found among the running runs of %s', p_run, session_user),
            hint = 'A worker writes only the runs it executes.';
    end if;
    return v_row;
end
$body$;

comment on function durable._running_run(uuid) is
'The row of a running run of the session user, or error DU010.';

create function durable._record_attempt(
    p_run uuid,
    p_seq integer,
    p_attempt integer,
    p_name text,
    p_error jsonb,
    p_started_at double precision
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._running_run(p_run);
begin
    insert into durable._step_attempts (
        run_id, seq, run_attempt, attempt, name, error, started_at, finished_at, owner
    )
    values (
        p_run, p_seq, v_row.attempt, p_attempt, p_name, p_error,
        pg_catalog.to_timestamp(p_started_at), pg_catalog.clock_timestamp(), v_row.owner
    )
    on conflict do nothing;
end
$body$;

comment on function durable._record_attempt(
    uuid, integer, integer, text, jsonb, double precision
) is
'Keeps the error of one failed attempt of a step of a running run of the session user.';

create function durable._reset_interruptions(p_run uuid) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._running_run(p_run);
begin
    -- The run's row stays locked until its step commits, and the run may finish in
    -- that transaction (_finish locks its parent, then it): lock the parent first, in
    -- the order of _finish and durable.cancel(), or a cancel of the parent between the
    -- two would deadlock with this worker.
    if v_row.parent_id is not null then
        perform from durable._runs as p where p.id = v_row.parent_id for no key update;
    end if;
    update durable._runs as r set interruptions = 0 where r.id = p_run;
end
$body$;

comment on function durable._reset_interruptions(uuid) is
'Forgets the interrupted attempts of a running run once they have been recorded (its '
'parent locked first, as durable.cancel() locks a tree).';

create function durable._suspend(
    p_run uuid, p_status text, p_wake_at double precision, p_waiting_for text
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    if p_status not in ('sleeping', 'waiting') then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format('a run cannot be suspended as %s', p_status),
            hint = 'Suspended runs are sleeping or waiting.';
    end if;
    perform durable._running_run(p_run);
    update durable._runs as r
    set
        status = p_status,
        worker_id = null,
        waiting_for = p_waiting_for,
        interruptions = 0,
        wake_at = pg_catalog.to_timestamp(p_wake_at)
    where r.id = p_run;
end
$body$;

comment on function durable._suspend(uuid, text, double precision, text) is
'Parks a running run of the session user (sleeping or waiting) until p_wake_at (epoch) '
'or a wake-up.';

create function durable._wake_if_ready(p_run uuid, p_waiting_for text) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    -- Runs after the suspension committed, so it sees every signal or child that
    -- committed before; anything committing later wakes the run itself.
    if pg_catalog.starts_with(p_waiting_for, 'signal:') then
        update durable._runs as r
        set wake_at = pg_catalog.clock_timestamp()
        where
            r.id = p_run
            and r.owner = session_user
            and r.status = 'waiting'
            and exists (
                select
                from durable._signals as s
                where
                    s.run_id = r.id
                    and s.name = pg_catalog.substr(r.waiting_for, 8)
                    and s.consumed_seq is null
            );
    else
        update durable._runs as r
        set wake_at = pg_catalog.clock_timestamp()
        where
            r.id = p_run
            and r.owner = session_user
            and r.status = 'waiting'
            and exists (
                select
                from durable._runs as c
                where
                    c.parent_id = r.id
                    and c.status in ('succeeded', 'failed', 'cancelled')
                    and c.id = any(
                        pg_catalog.string_to_array(pg_catalog.substr(r.waiting_for, 10), ',')::uuid []
                    )
            );
    end if;
end
$body$;

comment on function durable._wake_if_ready(uuid, text) is
'Wakes a waiting run of the session user whose signal or children arrived while it was '
'suspending.';

create function durable._finish(
    p_run uuid, p_status text, p_result jsonb, p_error jsonb
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_row durable._runs := durable._running_run(p_run);
begin
    if p_status not in ('succeeded', 'failed', 'cancelled') then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format('a run cannot finish as %s', p_status),
            hint = 'Runs finish as succeeded, failed or cancelled.';
    end if;
    if v_row.parent_id is not null then
        -- Always lock the parent row: a parent moving to "waiting" at this moment then
        -- waits for this commit and sees the child finished when it looks again. The
        -- parent is locked before the child, in the order durable.cancel() locks a
        -- tree, so that the two cannot deadlock.
        update durable._runs as r
        set wake_at = case when r.status = 'waiting' then pg_catalog.clock_timestamp() else r.wake_at end
        where r.id = v_row.parent_id and r.owner = v_row.owner;
    end if;
    update durable._runs as r
    set
        status = p_status,
        result = p_result,
        error = p_error,
        worker_id = null,
        wake_at = null,
        waiting_for = null,
        finished_at = pg_catalog.clock_timestamp()
    where r.id = p_run;
end
$body$;

comment on function durable._finish(uuid, text, jsonb, jsonb) is
'Gives a running run of the session user its final state, and wakes its parent if the '
'parent waits.';

create function durable._schedule_retry(
    p_run uuid, p_wake_at double precision, p_seq integer
) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    perform durable._running_run(p_run);
    delete from durable._steps as s
    where s.run_id = p_run and s.seq = p_seq and s.status = 'failed';
    update durable._runs as r
    set
        status = 'sleeping',
        attempt = r.attempt + 1,
        worker_id = null,
        interruptions = 0,
        wake_at = pg_catalog.to_timestamp(p_wake_at)
    where r.id = p_run;
end
$body$;

comment on function durable._schedule_retry(uuid, double precision, integer) is
'Attempts a failed running run of the session user again at p_wake_at (epoch), '
'forgetting the step that failed it.';

create function durable._consume_signal(
    p_run uuid, p_name text, p_seq integer, out consumed boolean, out payload text
)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
begin
    perform durable._running_run(p_run);
    update durable._signals as g
    set consumed_seq = p_seq
    where g.id = (
        select s.id
        from durable._signals as s
        where s.run_id = p_run and s.name = p_name and s.consumed_seq is null
        order by s.id
        limit 1
    )
    returning g.payload::text into payload;
    consumed := found;
end
$body$;

comment on function durable._consume_signal(uuid, text, integer) is
'Takes the oldest unconsumed signal p_name of a running run of the session user for '
'step p_seq.';

create function durable._run_flags(
    p_run uuid, out cancel_requested boolean, out timed_out boolean
)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
begin
    -- FOR SHARE waits for a durable.cancel() that is still in progress: it interrupts
    -- the worker before it commits, and holds the run's row lock until then.
    select
        r.cancel_requested,
        coalesce(w.step_deadline < pg_catalog.clock_timestamp(), false)
    into cancel_requested, timed_out
    from durable._runs as r
    left join durable._workers as w on r.worker_id = w.id
    where r.id = p_run and r.owner = session_user
    for share of r;
end
$body$;

comment on function durable._run_flags(uuid) is
'The flags another session may have set on a run of the session user (cancel, step '
'deadline passed), after any durable.cancel() in progress has committed.';

create function durable._cancel_arrived(p_worker integer) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_role name := durable._own_worker(p_worker);
    v_cancelled boolean;
begin
    -- FOR SHARE waits for the durable.cancel() in progress to commit.
    select pg_catalog.bool_or(held.cancel_requested) into v_cancelled
    from (
        select r.cancel_requested
        from durable._runs as r
        where r.worker_id = p_worker and r.status = 'running' and r.owner = v_role
        for share
    ) as held;
    if v_cancelled then
        perform durable._release_worker_runs(p_worker, false);
    end if;
    return coalesce(v_cancelled, false);
end
$body$;

comment on function durable._cancel_arrived(integer) is
'True when a run this session''s worker holds was cancelled (the run then goes back in '
'line, to end as cancelled at its next claim).';

create function durable._pin_branch_version(p_child uuid) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    -- A parallel branch of a SQL workflow runs its parent's version of the definition.
    update durable._runs as c
    set version_id = p.version_id, original_version_id = p.version_id
    from durable._runs as p
    where
        c.id = p_child
        and c.parent_id = p.id
        and c.workflow = p.workflow
        and c.owner = session_user
        and p.owner = session_user
        and p.status = 'running';
end
$body$;

comment on function durable._pin_branch_version(uuid) is
'Makes a child run of the same workflow execute its parent''s version (a branch of a '
'SQL workflow).';
