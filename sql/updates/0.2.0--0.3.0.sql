-- Incremental part of the update from 0.2.0 to 0.3.0 (the security release): what
-- CREATE OR REPLACE cannot do. tools/build_sql.py appends the idempotent part (every
-- routine, view and their comments from sql/src), the engine loader, then the trailing
-- part 0.2.0--0.3.0.post.sql (column defaults calling the new durable._caller(),
-- policies, privileges). See docs/releasing.md.

-- Take every lock the update needs at once, between two transactions of the workers:
-- a worker inside a step holds locks on durable's tables until its step commits, and
-- an update that took some tables and then waited for that worker on another would
-- deadlock with it when the worker writes its checkpoint. NOWAIT, retried, never
-- holds some tables while waiting for others; after a minute without a free moment
-- the update queues for the locks like any DDL.
do $do$
declare
    v_relations text;
    v_deadline timestamptz := pg_catalog.clock_timestamp() + interval '1 minute';
begin
    select pg_catalog.string_agg(c.oid::regclass::text, ', ' order by c.relname)
    into v_relations
    from pg_catalog.pg_class as c
    where c.relnamespace = 'durable'::regnamespace and c.relkind in ('r', 'v');
    loop
        begin
            execute pg_catalog.format(
                'lock table %s in access exclusive mode nowait', v_relations
            );
            exit;
        exception when lock_not_available then
            if pg_catalog.clock_timestamp() > v_deadline then
                execute pg_catalog.format(
                    'lock table %s in access exclusive mode', v_relations
                );
                exit;
            end if;
            perform pg_catalog.pg_sleep(0.01);
        end;
    end loop;
end
$do$;

-- Routines whose signature changed or that are gone (CREATE OR REPLACE cannot rename
-- a parameter, add one, or change a result type). The idempotent part creates the new
-- ones; the trailing part grants them.
drop function durable._pin_workflow(text, name []);
drop function durable._remove_worker_jobs(text, name);
drop function durable._worker_job_name(text, name, integer);

-- Workers: alive while a backend with their pid, backend_start and login role exists,
-- no longer while they hold an advisory lock. A 0.2.0 worker working during the update
-- holds its lock (1146442306, id) in its backend, logged in as its role: it gets that
-- backend's start time and stays alive for the workers of 0.3.0. Any other row is of a
-- worker that ended: it gets the start of 1970, when no backend started (the next
-- housekeeping deletes it and puts its runs back in line).
alter table durable._workers add column backend_start timestamptz;

update durable._workers as w
set
    backend_start = coalesce(
        (
            select a.backend_start
            from pg_catalog.pg_locks as l
            inner join pg_catalog.pg_stat_activity as a on l.pid = a.pid
            where
                l.locktype = 'advisory'
                and l.granted
                and l.database = (
                    select d.oid from pg_catalog.pg_database as d
                    where d.datname = pg_catalog.current_database()
                )
                and l.classid = 1146442306
                and l.objid = w.id::oid
                and l.objsubid = 2
                and l.pid = w.pid
                and a.usename = w.role
        ),
        pg_catalog.to_timestamp(0)
    );

alter table durable._workers
alter column backend_start set not null,
alter column pid drop default,
alter column role drop default;

comment on table durable._workers is
'Workers, written only by durable._worker_register(): a worker is alive while a backend '
'with its pid and backend_start exists (nothing another role can forge).';

insert into durable._settings (key, value, description) values
(
    'limits.max_payload_depth', '100',
    'deepest nesting of arrays and objects in an input, signal payload or definition'
);

-- Row-level security now only filters what a role reads: no role but the owner writes
-- the tables. A policy's command cannot be altered: each is dropped and created again.
drop policy runs_owner on durable._runs;
create policy runs_owner on durable._runs for select
using (owner = current_user or (select durable._is_admin()));

drop policy steps_owner on durable._steps;
create policy steps_owner on durable._steps for select
using (owner = current_user or (select durable._is_admin()));

drop policy step_attempts_owner on durable._step_attempts;
create policy step_attempts_owner on durable._step_attempts for select
using (owner = current_user or (select durable._is_admin()));

drop policy signals_owner on durable._signals;
create policy signals_owner on durable._signals for select
using (owner = current_user or (select durable._is_admin()));

drop policy workflow_versions_owner on durable._workflow_versions;
create policy workflow_versions_owner on durable._workflow_versions for select
using (owner = current_user or (select durable._is_admin()));

drop policy workflow_options_owner on durable._workflow_options;
create policy workflow_options_owner on durable._workflow_options for select
using (owner = current_user or (select durable._is_admin()));

drop policy sql_workflows_owner on durable._sql_workflows;
create policy sql_workflows_owner on durable._sql_workflows for select
using (owner = current_user or (select durable._is_admin()));

drop policy schedules_owner on durable._schedules;
create policy schedules_owner on durable._schedules for select
using (owner = current_user or (select durable._is_admin()));

drop policy schedule_fires_owner on durable._schedule_fires;
create policy schedule_fires_owner on durable._schedule_fires for select
using (owner = current_user or (select durable._is_admin()));

drop policy workers_role on durable._workers;
create policy workers_role on durable._workers for select
using (role = current_user or (select durable._is_admin()));

drop policy settings_admin on durable._settings;
