-- Schedules: cron expressions that start runs, fired by the worker loop exactly once per
-- slot (idempotency key schedule:<name>:<slot>, in the transaction that advances
-- next_fire_at), and the pg_cron jobs that launch workers inside the server.

create table durable._schedules (
    name text not null,
    owner name not null default durable._caller(),
    cron text not null,
    workflow text not null,
    input jsonb not null default '{}',
    timezone text not null default 'UTC',
    overlap text not null default 'skip',
    catch_up text not null default 'latest',
    enabled boolean not null default true,
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    last_run uuid,
    created_at timestamptz not null default pg_catalog.now(),
    updated_at timestamptz not null default pg_catalog.now(),
    constraint schedules_pkey primary key (owner, name),
    constraint schedules_overlap_check check (overlap in ('skip', 'allow', 'queue')),
    constraint schedules_catch_up_check check (catch_up in ('none', 'latest', 'all'))
);

create index schedules_due_idx on durable._schedules (next_fire_at) where enabled;

comment on table durable._schedules is 'Cron schedules; read them through durable.schedules.';

create table durable._schedule_fires (
    schedule text not null,
    slot timestamptz not null,
    fired_at timestamptz not null default pg_catalog.now(),
    outcome text not null,
    run_id uuid,
    owner name not null default durable._caller(),
    constraint schedule_fires_pkey primary key (owner, schedule, slot),
    constraint schedule_fires_outcome_check check (outcome in ('started', 'skipped'))
);

comment on table durable._schedule_fires is
'Recent fires of each schedule: the run started for a slot, or why none was.';

select pg_catalog.pg_extension_config_dump('durable._schedules', '');
select pg_catalog.pg_extension_config_dump('durable._schedule_fires', '');

insert into durable._settings (key, value, description) values
(
    'schedule.misfire_grace', '60',
    'seconds a slot may be late and still fire when catch_up is none'
),
('schedule.max_catch_up', '100', 'most missed slots fired at once when catch_up is all'),
('schedule.keep_fires', '100', 'fires kept per schedule in durable.schedule_fires');

create function durable._cron_next(p_cron text, p_timezone text, p_after double precision)
returns jsonb
language plpython3u
set search_path = pg_catalog, pg_temp
as $body$
engine = GD[plpy.execute("select durable._load() as key")[0]["key"]]
return engine.scheduler.next_fire_json(p_cron, p_timezone, p_after)
$body$;

comment on function durable._cron_next(text, text, double precision) is
'{"next": timestamp} of the first fire after p_after (epoch), or {"error": {...}}.';

create function durable._schedule(
    name text,
    cron text,
    workflow text,
    input jsonb,
    timezone text,
    overlap text,
    catch_up text,
    enabled boolean,
    p_schemas name []
) returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
declare
    v_workflow text;
    v_next jsonb;
    v_existing durable._schedules;
    v_owner name := durable._caller();
begin
    if _schedule.name is null or _schedule.name = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = 'schedule name must be a non-empty string',
            hint = 'Name the schedule, e.g. durable.schedule(''nightly-rollup'', ...).';
    end if;
    if _schedule.overlap is null or _schedule.overlap not in ('skip', 'allow', 'queue') then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'overlap of schedule "%s" must be skip, allow or queue, not %s',
                _schedule.name, coalesce(_schedule.overlap, 'null')
            ),
            hint = 'skip: no new run while the previous is unfinished; allow: always; '
            'queue: the next run starts when the previous has finished.';
    end if;
    if _schedule.catch_up is null or _schedule.catch_up not in ('none', 'latest', 'all') then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'catch_up of schedule "%s" must be none, latest or all, not %s',
                _schedule.name, coalesce(_schedule.catch_up, 'null')
            ),
            hint = 'After downtime: none skips missed slots, latest runs once for them, '
            'all runs each (bounded by the setting schedule.max_catch_up).';
    end if;
    v_workflow := (durable._pin_workflow(_schedule.workflow, p_schemas)).workflow;
    v_next := durable._cron_next(
        _schedule.cron,
        coalesce(_schedule.timezone, 'UTC'),
        extract(epoch from pg_catalog.now())::double precision
    );
    if v_next ? 'error' then
        perform durable._raise(
            v_next -> 'error' || pg_catalog.jsonb_build_object(
                'message',
                pg_catalog.format('schedule "%s": %s', _schedule.name, v_next #>> '{error,message}')
            )
        );
    end if;

    select s.* into v_existing
    from durable._schedules as s
    where s.name = _schedule.name and s.owner = v_owner
    for update;
    if found and v_existing.workflow <> v_workflow then
        raise exception using
            errcode = 'duplicate_object',
            message = pg_catalog.format(
                'schedule "%s" already exists for workflow %s', _schedule.name, v_existing.workflow
            ),
            hint = 'Call durable.unschedule() first, or choose another name.';
    end if;

    insert into durable._schedules as s (
        name, owner, cron, workflow, input, timezone, overlap, catch_up, enabled, next_fire_at
    )
    values (
        _schedule.name,
        v_owner,
        _schedule.cron,
        v_workflow,
        coalesce(_schedule.input, '{}'),
        coalesce(_schedule.timezone, 'UTC'),
        _schedule.overlap,
        _schedule.catch_up,
        coalesce(_schedule.enabled, true),
        (v_next ->> 'next')::timestamptz
    )
    on conflict on constraint schedules_pkey do update
        set
            cron = excluded.cron,
            input = excluded.input,
            timezone = excluded.timezone,
            overlap = excluded.overlap,
            catch_up = excluded.catch_up,
            enabled = excluded.enabled,
            next_fire_at = case
                when
                    s.cron = excluded.cron
                    and s.timezone = excluded.timezone
                    and s.enabled
                    then s.next_fire_at
                else excluded.next_fire_at
            end,
            updated_at = pg_catalog.now();
    return _schedule.name;
end
$body$;

comment on function durable._schedule(
    text, text, text, jsonb, text, text, text, boolean, name []
) is
'The body of durable.schedule, with the caller''s schemas (security definer: writes only '
'the calling role''s schedule).';

create function durable.schedule(
    name text,
    cron text,
    workflow text,
    input jsonb default '{}',
    timezone text default 'UTC',
    overlap text default 'skip',
    catch_up text default 'latest',
    enabled boolean default true
) returns text
language sql
as $body$
    select durable._schedule(
        name, cron, workflow, input, timezone, overlap, catch_up, enabled,
        pg_catalog.current_schemas(true)
    );
$body$;

comment on function durable.schedule(text, text, text, jsonb, text, text, text, boolean) is
'Creates or updates (by name) a schedule that starts a run of workflow at every slot of '
'a cron expression, on the wall clock of timezone.';

create function durable.unschedule(name text) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_owner name := durable._caller();
begin
    if unschedule.name is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'schedule name must not be null',
            hint = 'Pass the name given to durable.schedule().';
    end if;
    delete from durable._schedules as s
    where s.name = unschedule.name and s.owner = v_owner;
    if not found then
        return false;
    end if;
    delete from durable._schedule_fires as f
    where f.schedule = unschedule.name and f.owner = v_owner;
    return true;
end
$body$;

comment on function durable.unschedule(text) is
'Removes the calling role''s schedule of that name (runs it started are kept); false when '
'there was none.';

create view durable.schedules with (security_invoker = true) as
select
    s.name,
    s.cron,
    s.workflow,
    s.input,
    s.timezone,
    s.overlap,
    s.catch_up,
    s.enabled,
    s.owner,
    s.next_fire_at,
    s.last_fire_at,
    s.last_run,
    r.status as last_run_status,
    s.created_at,
    s.updated_at
from durable._schedules as s
left join durable._runs as r on s.last_run = r.id;

comment on view durable.schedules is
'Schedules with their next and last fire times and the status of the last run.';

create view durable.schedule_fires with (security_invoker = true) as
select
    f.schedule,
    f.slot,
    f.fired_at,
    f.outcome,
    f.run_id,
    r.status as run_status,
    f.fired_at - f.slot as lateness
from durable._schedule_fires as f
left join durable._runs as r on f.run_id = r.id;

comment on view durable.schedule_fires is
'Recent fires of schedules: each slot, when it fired, and the run it started (or skipped).';

-- Firing, from the worker loop (scheduler.py). A worker acts for its session_user: it
-- locks and advances only that role's schedules. No role but the extension owner may
-- write the tables, so these two functions are security definer.

create function durable._due_schedules(p_limit integer)
returns table (
    name text,
    cron text,
    workflow text,
    input text,
    timezone text,
    overlap text,
    catch_up text,
    next_fire_at double precision,
    now double precision,
    last_status text
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    -- The rows stay locked until the worker's transaction ends (it commits after
    -- firing them), so each slot is fired by one worker only.
    return query
    select
        s.name,
        s.cron,
        s.workflow,
        s.input::text,
        s.timezone,
        s.overlap,
        s.catch_up,
        extract(epoch from s.next_fire_at)::double precision,
        extract(epoch from pg_catalog.clock_timestamp())::double precision,
        r.status
    from durable._schedules as s
    left join durable._runs as r on s.last_run = r.id and r.owner = s.owner
    where
        s.enabled
        and s.owner = session_user
        and s.next_fire_at <= pg_catalog.clock_timestamp()
    order by s.next_fire_at
    limit p_limit
    for update of s skip locked;
end
$body$;

comment on function durable._due_schedules(integer) is
'Locks and returns the due schedules of the session user (a worker''s role), oldest first, '
'skipping those another worker holds.';

create function durable._schedule_fired(
    p_name text,
    p_slots timestamptz [],
    p_runs uuid [],
    p_next_fire_at timestamptz
) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_keep integer;
    v_last_run uuid;
begin
    if pg_catalog.cardinality(p_slots) <> pg_catalog.cardinality(p_runs) then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'schedule "%s": %s slots but %s runs',
                p_name, pg_catalog.cardinality(p_slots), pg_catalog.cardinality(p_runs)
            ),
            hint = 'Pass one run id (or null for a skipped slot) per slot.';
    end if;
    if exists (
        select from pg_catalog.unnest(p_runs) as u (id)
        where
            u.id is not null
            and not exists (
                select from durable._runs as r where r.id = u.id and r.owner = session_user
            )
    ) then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'schedule "%s": a run fired for it is not a run of role %s', p_name, session_user
            ),
            hint = 'A schedule records only runs that its own role''s worker started.';
    end if;
    select u.id into v_last_run
    from pg_catalog.unnest(p_runs) with ordinality as u (id, n)
    where u.id is not null
    order by u.n desc
    limit 1;
    update durable._schedules as s
    set
        next_fire_at = p_next_fire_at,
        last_fire_at = coalesce(p_slots[pg_catalog.cardinality(p_slots)], s.last_fire_at),
        last_run = coalesce(v_last_run, s.last_run)
    where s.name = p_name and s.owner = session_user;
    if not found then
        return false;
    end if;
    insert into durable._schedule_fires as f (schedule, slot, outcome, run_id, owner)
    select
        p_name,
        u.slot,
        case when p_runs[u.n] is null then 'skipped' else 'started' end,
        p_runs[u.n],
        session_user
    from pg_catalog.unnest(p_slots) with ordinality as u (slot, n)
    on conflict on constraint schedule_fires_pkey do nothing;
    select st.value::integer into v_keep
    from durable._settings as st
    where st.key = 'schedule.keep_fires';
    delete from durable._schedule_fires as f
    where
        f.owner = session_user
        and f.schedule = p_name
        and f.slot < (
            select k.slot from durable._schedule_fires as k
            where k.owner = session_user and k.schedule = p_name
            order by k.slot desc
            offset coalesce(v_keep, 100) limit 1
        );
    return true;
end
$body$;

comment on function durable._schedule_fired(text, timestamptz [], uuid [], timestamptz) is
'Records the fired slots of one of the session user''s schedules (the run of each, null '
'when skipped), advances it to p_next_fire_at and trims its fire history.';

-- Launchers: pg_cron jobs, one per worker. A job is named
-- durable-worker:<database>:<queue>:<n>, the database and the queue as JSON strings and
-- the all-queues pool (queue null) as *, which no JSON string can be; so a name tells its
-- pool apart from every other, and jobs are matched by that exact name and the number
-- after it. pg_cron keys jobs by (jobname, username): the role is its username column.
-- A job name is of type name (63 bytes at most), so a longer one is replaced by an md5 of
-- the same text (md5:<hex>, which no JSON string can be either).

create function durable._worker_job_base(p_queue text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $body$
    select case
        when pg_catalog.octet_length(v.base) + 10 <= 63 then v.base
        else 'durable-worker:md5:' || pg_catalog.md5(v.base) || ':'
    end
    from (
        select pg_catalog.format(
            'durable-worker:%s:%s:',
            pg_catalog.to_json(pg_catalog.current_database()::text),
            coalesce(pg_catalog.to_json(p_queue)::text, '*')
        ) as base
    ) as v;
$body$;

comment on function durable._worker_job_base(text) is
'The pg_cron job name of the workers of one queue (null: all queues) of this database, '
'without the worker''s number.';

create function durable._remove_worker_jobs(p_base text, p_role name) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_removed integer := 0;
    v_job record;
begin
    if pg_catalog.to_regnamespace('cron') is null then
        return 0;
    end if;
    if not pg_catalog.has_schema_privilege('cron', 'USAGE') then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to uninstall workers: role "%s" may not use schema cron',
                current_user
            ),
            hint = 'A superuser removes the workers of any role; a role given USAGE on '
            'schema cron removes only its own pg_cron jobs.';
    end if;
    -- p_base null: every durable worker of this database (also those named by older
    -- versions, durable-worker:<database>:<queue>:<role>:<n>).
    for v_job in execute
        'select j.jobid from cron.job as j'
        ' where j.database = pg_catalog.current_database()'
        ' and ($2 is null or j.username = $2)'
        ' and case when $1 is null'
        ' then pg_catalog.starts_with(j.jobname, ''durable-worker:'')'
        ' else pg_catalog.starts_with(j.jobname, $1)'
        ' and pg_catalog.substr(j.jobname, pg_catalog.length($1) + 1) ~ ''^[0-9]+$'' end'
        using p_base, p_role
    loop
        execute 'select cron.unschedule($1)' using v_job.jobid;
        v_removed := v_removed + 1;
    end loop;
    return v_removed;
end
$body$;

comment on function durable._remove_worker_jobs(text, name) is
'Unschedules the pg_cron worker jobs of this database named p_base and a number (p_base '
'null: all of them), of one role or all; returns how many.';

create function durable.install_workers(
    count integer default 2,
    queue text default null,
    role name default current_user
) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_command text;
    v_base text;
begin
    if pg_catalog.to_regnamespace('cron') is null then
        raise exception using
            errcode = 'feature_not_supported',
            message = pg_catalog.format(
                'pg_cron is not installed in database %s', pg_catalog.current_database()
            ),
            hint = 'Run workers from outside the server instead: durablectl worker '
            '--dsn ... --concurrency N; or install pg_cron here (CREATE EXTENSION pg_cron '
            'in the database named by cron.database_name) and call this again.';
    end if;
    -- pg_cron lets only a superuser create a job that runs as a given role or in a given
    -- database (cron.schedule_in_database); it would fail later, less clearly.
    if not coalesce(
        (select r.rolsuper from pg_catalog.pg_roles as r where r.rolname = current_user),
        false
    ) then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to install workers: role "%s" is not a superuser',
                current_user
            ),
            hint = 'Only a superuser may call durable.install_workers(): pg_cron creates a '
            'job that runs as a given role only for a superuser. Ask one to call '
            'durable.install_workers(count, queue, role => ...) for your role, or run '
            'workers from outside the server with durablectl worker.';
    end if;
    if count is null or count < 1 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format('count of workers must be at least 1, not %s', count),
            hint = 'durable.uninstall_workers() removes the workers.';
    end if;
    if role is null or not exists (
        select from pg_catalog.pg_roles as r where r.rolname = install_workers.role
    ) then
        raise exception using
            errcode = 'undefined_object',
            message = pg_catalog.format(
                'role "%s" of the workers does not exist', coalesce(role::text, 'null')
            ),
            hint = 'Name a role that can log in and was given durable.grant_usage().';
    end if;
    v_base := durable._worker_job_base(queue);
    perform durable._remove_worker_jobs(v_base, role);
    -- One single CALL per job: a multi-statement command runs in an implicit transaction
    -- block, where the worker cannot commit.
    v_command := case
        when queue is null
            then 'CALL durable.run_worker(max_runtime => ''59 seconds'')'
        else pg_catalog.format(
            'CALL durable.run_worker(queue => %L, max_runtime => ''59 seconds'')', queue
        )
    end;
    for i in 1..count loop
        execute 'select cron.schedule_in_database($1, $2, $3, $4, $5)'
        using v_base || i, '* * * * *', v_command, pg_catalog.current_database(), role;
    end loop;
    return count;
end
$body$;

comment on function durable.install_workers(integer, text, name) is
'Creates pg_cron jobs that keep count workers running as role (each job: one CALL of '
'durable.run_worker every minute, for 59 seconds). Replaces the jobs of that queue and role. '
'Superusers only.';

create function durable.uninstall_workers(
    queue text default null,
    role name default null
) returns integer
language sql
set search_path = pg_catalog, pg_temp
as $body$
    select durable._remove_worker_jobs(
        case when queue is not null then durable._worker_job_base(queue) end, role
    );
$body$;

comment on function durable.uninstall_workers(text, name) is
'Removes the pg_cron worker jobs of this database (of exactly one queue, and of one role, '
'or all); returns how many.';
