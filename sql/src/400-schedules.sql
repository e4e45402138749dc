-- Schedules: cron expressions that start runs, fired by the worker loop exactly once per
-- slot (idempotency key schedule:<name>:<slot>, in the transaction that advances
-- next_fire_at), and the pg_cron jobs that launch workers inside the server.

create table durable._schedules (
    name text not null,
    owner name not null default current_user,
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
    owner name not null default current_user,
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
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
declare
    v_workflow text;
    v_next jsonb;
    v_existing durable._schedules;
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
    where s.name = _schedule.name and s.owner = current_user
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
        name, cron, workflow, input, timezone, overlap, catch_up, enabled, next_fire_at
    )
    values (
        _schedule.name,
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
'The body of durable.schedule, with the caller''s schemas.';

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
set search_path = pg_catalog, pg_temp
as $body$
begin
    if unschedule.name is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'schedule name must not be null',
            hint = 'Pass the name given to durable.schedule().';
    end if;
    delete from durable._schedules as s
    where s.name = unschedule.name and s.owner = current_user;
    if not found then
        return false;
    end if;
    delete from durable._schedule_fires as f
    where f.schedule = unschedule.name and f.owner = current_user;
    return true;
end
$body$;

comment on function durable.unschedule(text) is
'Removes a schedule (runs it started are kept); false when there was none.';

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
    v_job text;
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
    if count is null or count < 1 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format('count of workers must be at least 1, not %s', count),
            hint = 'durable.uninstall_workers() removes the workers.';
    end if;
    perform durable._remove_worker_jobs(
        pg_catalog.format(
            'durable-worker:%s:%s:%s:', pg_catalog.current_database(), coalesce(queue, '*'), role
        ),
        role
    );
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
        v_job := durable._worker_job_name(queue, role, i);
        execute 'select cron.schedule_in_database($1, $2, $3, $4, $5)'
        using v_job, '* * * * *', v_command, pg_catalog.current_database(), role;
    end loop;
    return count;
end
$body$;

comment on function durable.install_workers(integer, text, name) is
'Creates pg_cron jobs that keep count workers running as role (each job: one CALL of '
'durable.run_worker every minute, for 59 seconds). Replaces the jobs of that queue and role.';

create function durable._worker_job_name(p_queue text, p_role name, p_number integer)
returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.format(
        'durable-worker:%s:%s:%s:%s',
        pg_catalog.current_database(), coalesce(p_queue, '*'), p_role, p_number
    );
$body$;

comment on function durable._worker_job_name(text, name, integer) is
'The pg_cron job name of one installed worker.';

create function durable._remove_worker_jobs(p_prefix text, p_role name) returns integer
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
    for v_job in execute
        'select jobid from cron.job'
        ' where pg_catalog.starts_with(jobname, $1) and ($2 is null or username = $2)'
        using p_prefix, p_role
    loop
        execute 'select cron.unschedule($1)' using v_job.jobid;
        v_removed := v_removed + 1;
    end loop;
    return v_removed;
end
$body$;

comment on function durable._remove_worker_jobs(text, name) is
'Unschedules the pg_cron jobs whose name starts with p_prefix (of one role, or all).';

create function durable.uninstall_workers(
    queue text default null,
    role name default null
) returns integer
language sql
set search_path = pg_catalog, pg_temp
as $body$
    select durable._remove_worker_jobs(
        pg_catalog.format('durable-worker:%s:', pg_catalog.current_database())
        || coalesce(queue || ':', ''),
        role
    );
$body$;

comment on function durable.uninstall_workers(text, name) is
'Removes the pg_cron worker jobs of this database (of one queue and role, or all); '
'returns how many.';
