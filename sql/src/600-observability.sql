-- Observability and day-2 operations: views of workers, queues, failures and failed
-- attempts; reading and changing settings with validation; purging finished runs.
--
-- Every view is security_invoker: it reads the tables with the privileges (and the
-- row-level security) of the role that queries it. The functions that change settings
-- or purge are SECURITY DEFINER and check the caller themselves: a role purges only its
-- own runs (durable_admin members all), and only durable_admin members change settings.

-- Indexes for the failures view and the purge (on tables written rarely).
create index step_attempts_finished_at_idx on durable._step_attempts (finished_at);

create index signals_run_idx on durable._signals (run_id);

create index schedule_fires_run_idx on durable._schedule_fires (run_id)
where run_id is not null;

insert into durable._settings (key, value, description) values
(
    'retention', '7 days',
    'finished runs older than this are deleted by the workers'' housekeeping'
),
(
    'retention.batch_size', '1000',
    'most runs deleted by one housekeeping pass or one statement of durable.purge(); '
    '0 turns purging by the workers off'
),
(
    'limits.max_payload_bytes', '1048576',
    'largest input, result, step output or signal payload, in bytes of JSON'
)
on conflict do nothing;

-- Workers

create view durable.workers with (security_invoker = true) as
select  -- noqa: ST06
    w.id,
    w.pid,
    w.role,
    w.queue,
    w.started_at,
    w.heartbeat_at,
    -- Alive while the backend that registered it (pid, start time, role) exists; the
    -- columns keep the order of 0.2.0.
    durable._backend_alive(w.pid, w.backend_start, w.role) as alive,
    r.id as run_id,
    r.workflow,
    w.step_deadline
from durable._workers as w
left join durable._runs as r on r.status = 'running' and w.id = r.worker_id;

comment on view durable.workers is
'Registered workers: backend pid, role, queue, heartbeat, whether the backend that '
'registered it is alive, and the run it is executing.';

-- Queues

create view durable.queue_stats with (security_invoker = true) as
with recent as (
    select
        u.queue,
        u.workflow,
        u.wake_at,
        null::interval as duration,
        case
            when u.status = 'running' then 'running'
            when u.wake_at <= pg_catalog.now() then 'ready'
            when u.status = 'pending' then 'scheduled'
            else u.status
        end as state
    from durable._runs as u
    -- Two conditions, so that the partial indexes of ready and of running runs serve.
    where u.status in ('pending', 'sleeping', 'waiting') or u.status = 'running'
    union all
    select
        f.queue,
        f.workflow,
        null::timestamptz as wake_at,
        f.finished_at - f.started_at as duration,
        f.status as state
    from durable._runs as f
    where
        f.status in ('succeeded', 'failed', 'cancelled')
        and f.finished_at >= pg_catalog.now() - interval '1 hour'
)

select
    recent.queue,
    recent.workflow,
    count(*) filter (where recent.state = 'ready') as ready,
    count(*) filter (where recent.state = 'running') as running,
    count(*) filter (where recent.state = 'scheduled') as scheduled,
    count(*) filter (where recent.state = 'sleeping') as sleeping,
    count(*) filter (where recent.state = 'waiting') as waiting,
    count(*) filter (where recent.state = 'succeeded') as succeeded_1h,
    count(*) filter (where recent.state = 'failed') as failed_1h,
    count(*) filter (where recent.state = 'cancelled') as cancelled_1h,
    pg_catalog.now() - min(recent.wake_at) filter (
        where recent.state = 'ready'
    ) as oldest_ready_age,
    percentile_cont(0.5) within group (order by recent.duration) as p50_duration,
    percentile_cont(0.95) within group (order by recent.duration) as p95_duration
from recent
group by recent.queue, recent.workflow;

comment on view durable.queue_stats is
'Per queue and workflow: unfinished runs by state (ready, running, scheduled, sleeping, '
'waiting), runs finished in the last hour, the age of the oldest ready run, and the '
'median and 95th percentile duration of runs finished in the last hour.';

-- Failures

create view durable.step_attempts with (security_invoker = true) as
select
    a.run_id,
    r.workflow,
    a.seq,
    a.name,
    a.run_attempt,
    a.attempt,
    a.error,
    a.started_at,
    a.finished_at,
    a.finished_at - a.started_at as duration,
    a.error ->> 'sqlstate' as sqlstate,
    a.error ->> 'message' as message,
    a.error ->> 'detail' as detail,
    a.error ->> 'hint' as hint,
    a.error ->> 'type' as error_type,
    a.error ->> 'traceback' as traceback
from durable._step_attempts as a
left join durable._runs as r on a.run_id = r.id;

comment on view durable.step_attempts is
'Every failed attempt of every step, with its error fields and duration.';

create view durable.failures with (security_invoker = true) as
with failed as (
    select
        'run' as kind,
        r.workflow,
        r.error ->> 'step' as step,
        r.error ->> 'sqlstate' as sqlstate,
        r.error ->> 'message' as message,
        r.id as run_id,
        r.finished_at as seen_at
    from durable._runs as r
    where
        r.status = 'failed'
        and r.finished_at >= pg_catalog.now() - interval '24 hours'
    union all
    select
        'step' as kind,
        r.workflow,
        a.name as step,
        a.error ->> 'sqlstate' as sqlstate,
        a.error ->> 'message' as message,
        a.run_id,
        a.finished_at as seen_at
    from durable._step_attempts as a
    left join durable._runs as r on a.run_id = r.id
    where a.finished_at >= pg_catalog.now() - interval '24 hours'
)

select
    failed.kind,
    failed.workflow,
    failed.step,
    failed.sqlstate,
    failed.message,
    count(*) as count,
    count(distinct failed.run_id) as runs,
    min(failed.seen_at) as first_seen,
    max(failed.seen_at) as last_seen,
    (array_agg(failed.run_id order by failed.seen_at desc))[1] as example_run
from failed
group by failed.kind, failed.workflow, failed.step, failed.sqlstate, failed.message;

comment on view durable.failures is
'Failed runs (kind run) and failed step attempts (kind step) of the last 24 hours, '
'grouped by workflow, step, SQLSTATE and message, with counts, first and last '
'occurrence and the most recent run as an example.';

-- Settings

create view durable.settings with (security_invoker = true) as
select
    s.key,
    s.value,
    s.description
from durable._settings as s;

comment on view durable.settings is
'Engine settings: key, current value (text) and meaning; change them with '
'durable.set_setting().';

create function durable._unknown_setting(p_key text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
begin
    raise exception using
        errcode = 'invalid_parameter_value',
        message = pg_catalog.format('unknown setting "%s"', p_key),
        hint = 'The settings are: ' || coalesce(
            (select pg_catalog.string_agg(s.key, ', ' order by s.key) from durable._settings as s),
            'none'
        ) || '.';
end
$body$;

comment on function durable._unknown_setting(text) is
'Raises the error for a setting that does not exist (22023), listing the keys.';

create function durable.setting(key text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_value text;
begin
    if setting.key is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'setting key must not be null',
            hint = 'Name a setting, e.g. durable.setting(''retention''); see durable.settings.';
    end if;
    select s.value into v_value from durable._settings as s where s.key = setting.key;
    if not found then
        perform durable._unknown_setting(setting.key);
    end if;
    return v_value;
end
$body$;

comment on function durable.setting(text) is
'The current value (text) of an engine setting; error 22023 for an unknown key.';

create function durable._check_setting(p_key text, p_value text, p_current text)
returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_kind text;
    v_low double precision;
    v_text text := pg_catalog.btrim(p_value);
    v_number double precision;
    v_other double precision;
    v_ok boolean := false;
    v_expected text;
begin
    -- Kinds: number (>= low), positive (> 0), fraction (0 to 1), whole (integer >= low),
    -- bytes (bigint >= low), interval (>= 0).
    select r.kind, r.low into v_kind, v_low
    from (
        values
        ('worker.poll_interval', 'positive', 0), ('worker.statement_timeout_margin', 'number', 0),
        ('worker.housekeeping_interval', 'number', 0), ('step.terminate_after', 'number', 0),
        ('retry.max_attempts', 'whole', 1), ('retry.initial_interval', 'number', 0),
        ('retry.backoff', 'number', 1), ('retry.max_interval', 'number', 0),
        ('retry.jitter', 'fraction', 0), ('schedule.misfire_grace', 'number', 0),
        ('schedule.max_catch_up', 'whole', 1), ('schedule.keep_fires', 'whole', 1),
        ('retention', 'interval', 0), ('retention.batch_size', 'whole', 0),
        ('limits.max_payload_bytes', 'bytes', 1), ('limits.max_steps_per_run', 'whole', 1),
        ('limits.max_children', 'whole', 0), ('limits.max_payload_depth', 'whole', 1)
    ) as r (key, kind, low)
    where r.key = p_key;
    if not found then
        -- A setting without a rule here: a number stays a number (0 or more).
        v_low := 0;
        v_kind := case when p_current ~ '^\s*[0-9.eE+-]+\s*$' then 'number' else 'text' end;
    end if;
    v_expected := case v_kind
        when 'positive' then 'a number greater than 0'
        when 'fraction' then 'a number from 0 to 1'
        when 'interval' then 'an interval, 0 or more'
        when 'text' then 'a non-empty text'
        when 'number' then pg_catalog.format('a number, %s or more', v_low)
        when 'whole' then pg_catalog.format('a whole number from %s to 2147483647', v_low)
        else pg_catalog.format('a whole number, %s or more', v_low)
    end;
    begin
        if v_kind = 'interval' then
            v_number := extract(epoch from v_text::interval);
            v_text := v_text::interval::text;
        elsif v_kind in ('whole', 'bytes') then
            v_ok := v_text::numeric = pg_catalog.trunc(v_text::numeric)
                and (v_kind = 'bytes' or v_text::numeric <= 2147483647);
            v_text := v_text::numeric::bigint::text;
            v_number := v_text::bigint;
        elsif v_kind <> 'text' then
            v_number := v_text::double precision;
            v_text := v_number::text;
        end if;
        v_ok := case
            when v_kind = 'text' then v_text <> ''
            when v_kind in ('whole', 'bytes') and not v_ok then false
            when v_number in ('Infinity', '-Infinity', 'NaN') then false
            when v_kind = 'positive' then v_number > 0
            when v_kind = 'fraction' then v_number between 0 and 1
            else v_number >= v_low
        end;
    exception when data_exception or feature_not_supported then
        v_ok := false;
    end;
    if not v_ok then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'invalid value "%s" for setting "%s": expected %s', p_value, p_key, v_expected
            ),
            hint = pg_catalog.format(
                '%s: %s (now %s).',
                p_key,
                (select s.description from durable._settings as s where s.key = p_key),
                p_current
            );
    end if;
    -- The default retry policy is one layer: its longest wait cannot be below its first.
    if p_key in ('retry.initial_interval', 'retry.max_interval') then
        select s.value::double precision into v_other
        from durable._settings as s
        where
            s.key in ('retry.initial_interval', 'retry.max_interval')
            and s.key <> p_key;
        if
            (p_key = 'retry.max_interval' and v_number < v_other)
            or (p_key = 'retry.initial_interval' and v_number > v_other)
        then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = pg_catalog.format(
                    'invalid value "%s" for setting "%s": retry.max_interval must not be '
                    'less than retry.initial_interval', p_value, p_key
                ),
                hint = pg_catalog.format(
                    'retry.initial_interval is %s and retry.max_interval is %s; change the '
                    'other one first.',
                    (select s.value from durable._settings as s where s.key = 'retry.initial_interval'),
                    (select s.value from durable._settings as s where s.key = 'retry.max_interval')
                );
        end if;
    end if;
    return v_text;
end
$body$;

comment on function durable._check_setting(text, text, text) is
'Validates a new value of a setting and returns it in canonical form, or raises 22023.';

create function durable.set_setting(key text, value text) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_current text;
    v_value text;
begin
    if set_setting.key is null or set_setting.value is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = pg_catalog.format(
                'setting %s: key and value must not be null',
                coalesce('"' || set_setting.key || '"', 'null')
            ),
            hint = 'durable.set_setting(''retention'', ''30 days'')';
    end if;
    select s.value into v_current from durable._settings as s where s.key = set_setting.key;
    if not found then
        perform durable._unknown_setting(set_setting.key);
    end if;
    if not durable._caller_is_admin() then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format('permission denied to change setting "%s"', set_setting.key),
            hint = 'Settings are changed by members of durable_admin.';
    end if;
    v_value := durable._check_setting(set_setting.key, set_setting.value, v_current);
    update durable._settings as s set value = v_value where s.key = set_setting.key;
    return v_value;
end
$body$;

comment on function durable.set_setting(text, text) is
'Validates and stores a new value of an engine setting, returning it in canonical form; '
'workers read settings when a CALL of durable.run_worker() begins.';

-- Retention

create function durable._purge_from(
    older_than interval,
    batch_size integer,
    after timestamptz,
    out deleted bigint,
    out last_finished_at timestamptz
)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_cutoff timestamptz := pg_catalog.now() - older_than;
begin
    if older_than is null or older_than < interval '0' or batch_size is null or batch_size < 0 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'cannot purge runs older than %s in batches of %s',
                coalesce(older_than::text, 'null'), coalesce(batch_size::text, 'null')
            ),
            hint = 'older_than is an interval, 0 or more (0: every finished run); '
            'batch_size is the most runs deleted, 0 or more.';
    end if;
    -- A child goes only after its parent is gone: a parent's checkpoints refer to its
    -- children, and a parent may be retried. Locked rows are left for a later batch.
    with doomed as (
        select r.id, r.finished_at
        from durable._runs as r
        where
            r.status in ('succeeded', 'failed', 'cancelled')
            and r.finished_at < v_cutoff
            and (after is null or r.finished_at >= after)
            and (r.owner = (select durable._caller()) or (select durable._caller_is_admin()))
            and (
                r.parent_id is null
                or not exists (select from durable._runs as p where p.id = r.parent_id)
            )
        order by r.finished_at
        limit batch_size
        for update of r skip locked
    ),

    steps as (
        delete from durable._steps as s using doomed as d where s.run_id = d.id
    ),

    attempts as (
        delete from durable._step_attempts as a using doomed as d where a.run_id = d.id
    ),

    signals as (
        delete from durable._signals as g using doomed as d where g.run_id = d.id
    ),

    fires as (
        delete from durable._schedule_fires as f using doomed as d where f.run_id = d.id
    ),

    runs as (
        delete from durable._runs as r using doomed as d where r.id = d.id returning r.id
    )

    select (select count(*) from runs), (select max(d.finished_at) from doomed as d)
    into deleted, last_finished_at;
end
$body$;

comment on function durable._purge_from(interval, integer, timestamptz) is
'One batch of durable._purge_batch() among the runs finished at or after after (all when '
'null); also returns the last finish time it reached, where the next batch starts.';

create function durable._purge_batch(older_than interval, batch_size integer)
returns bigint
language sql
set search_path = pg_catalog, pg_temp
as $body$
    select p.deleted from durable._purge_from(older_than, batch_size, null) as p;
$body$;

comment on function durable._purge_batch(interval, integer) is
'Deletes at most batch_size runs finished more than older_than ago (oldest first, a '
'child after its parent), with their steps, attempts, signals and schedule fires; '
'returns how many. A worker calls it once per housekeeping pass, in its own transaction.';

create function durable.purge(older_than interval default '7 days') returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_batch integer := coalesce(nullif(durable.setting('retention.batch_size')::integer, 0), 1000);
    v_after timestamptz;
    v_deleted bigint;
    v_pass bigint;
    v_total bigint := 0;
begin
    loop
        -- One pass over the old runs, each batch starting where the last one ended (rows
        -- this transaction deleted stay in the index until it commits).
        v_after := null;
        v_pass := 0;
        loop
            select p.deleted, p.last_finished_at into v_deleted, v_after
            from durable._purge_from(older_than, v_batch, v_after) as p;
            v_pass := v_pass + v_deleted;
            exit when v_deleted < v_batch;
        end loop;
        v_total := v_total + v_pass;
        -- Parents deleted by this pass may have freed children that it had passed.
        exit when v_pass = 0;
    end loop;
    return v_total;
end
$body$;

comment on function durable.purge(interval) is
'Deletes the runs finished more than older_than ago (a child after its parent), with '
'their steps, attempts, signals and schedule fires, in batches of retention.batch_size '
'runs; returns how many runs it deleted.';
